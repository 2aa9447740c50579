"""A yes/no question. Escape answers no."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS = [
        Binding("escape", "answer(False)", "Cancel", id="dialog.cancel"),
        Binding("y", "answer(True)", "Yes", show=False, id="dialog.yes"),
        Binding("n", "answer(False)", "No", show=False, id="dialog.no"),
    ]

    def __init__(self, title: str, message: str, *, yes: str = "Yes", no: str = "Cancel",
                 danger: bool = False) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.message = message
        self.yes_label = yes
        self.no_label = no
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-message", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button(f"{self.no_label} (esc)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no" if self.danger else "#yes", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(False)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
