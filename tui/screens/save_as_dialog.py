"""After a run's model file could not be written: where to save the run instead."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class SaveAsDialog(ModalScreen[Path | None]):
    """Dismisses with the path typed, or None on Escape (the fallback file, if any, stays)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, problem: str, fallback: Path | None, target: Path) -> None:
        super().__init__(classes="dialog", id="save-as-dialog")
        self.problem = problem
        self.fallback = fallback
        self.target = target

    def compose(self) -> ComposeResult:
        kept = (f"Nothing is lost: the run is in {self.fallback} for now."
                if self.fallback else "The run is only in memory: save it somewhere else now.")
        with Vertical(classes="dialog-box"):
            yield Static("Save the run as…", classes="dialog-title")
            yield Static(f"{self.problem}\n{kept}", classes="dialog-message", markup=False)
            yield Input(str(self.target), id="save-as-path", placeholder="a .cllm file path")
            yield Static("", id="save-as-error", classes="form-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (enter)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#save-as-path", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _submit(self, event: Input.Submitted | Button.Pressed) -> None:
        event.stop()
        text = self.query_one("#save-as-path", Input).value.strip()
        path = Path(text).expanduser()
        if not text:
            self.query_one("#save-as-error", Static).update("type a file path")
        elif path.is_dir():
            self.query_one("#save-as-error", Static).update(f"{path}: is a folder; type a file name in it")
        else:
            self.dismiss(path if path.suffix else path.with_suffix(".cllm"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
