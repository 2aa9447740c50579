"""Asks for a new model's name; refuses names whose file already exists."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from cllm.tui.validators import NewModelName


class NameDialog(ModalScreen[str | None]):
    """Dismisses with the name (without .cllm), or None on Escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, models_dir: Path, suggestion: str = "", title: str = "Create new model") -> None:
        super().__init__(classes="dialog")
        self.models_dir = models_dir
        self.suggestion = suggestion
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(f"Name (saved as {self.models_dir}/NAME.cllm):", classes="dialog-message",
                         markup=False)
            yield Input(self.suggestion, placeholder="name", id="name",
                        validators=[NewModelName(self.models_dir)])
            yield Static("", id="name-error", classes="form-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create (enter)", id="create", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        name = self.query_one("#name", Input)
        name.focus()
        self._show(name.validate(name.value))

    def _show(self, result) -> None:
        error = self.query_one("#name-error", Static)
        error.update("" if result is None or result.is_valid else "; ".join(result.failure_descriptions))
        self.query_one("#create", Button).disabled = not (result is None or result.is_valid)

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(event.validation_result)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    @on(Button.Pressed, "#create")
    def _create(self, event: Button.Pressed) -> None:
        event.stop()
        self._submit()

    def _submit(self) -> None:
        name = self.query_one("#name", Input)
        result = name.validate(name.value)
        if result is not None and not result.is_valid:
            self._show(result)
            return
        self.dismiss(name.value.strip().removesuffix(".cllm"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
