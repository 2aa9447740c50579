"""The status line at the top of every screen: the loaded model, and what is going on."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static


class ModelBar(Horizontal):
    """Shows `app.model_summary` on the left and `app.activity` on the right."""

    def compose(self) -> ComposeResult:
        yield Static("CLLM", id="bar-title", markup=False)
        yield Static("", id="bar-model", markup=False)
        yield Static("", id="bar-activity", markup=False)

    def on_mount(self) -> None:
        self.watch(self.app, "model_summary", self._model_changed)
        self.watch(self.app, "activity", self._activity_changed)

    def _model_changed(self, summary: str) -> None:
        self.query_one("#bar-model", Static).update(summary, layout=False)

    def _activity_changed(self, activity: str) -> None:
        # `activity` is a var: this runs only when the text changes (not once per step)
        widget = self.query_one("#bar-activity", Static)
        widget.update(activity)
        widget.display = bool(activity)
