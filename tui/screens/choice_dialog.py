"""A question with several answers, one button (and one key) each. Escape cancels."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static
from textual.widgets.button import ButtonVariant


@dataclass(frozen=True)
class Choice:
    id: str
    label: str
    key: str  # one letter; pressing it picks this choice
    variant: ButtonVariant = "default"
    disabled_reason: str = ""  # non-empty: shown, and the choice cannot be picked


class ChoiceDialog(ModalScreen[str]):
    """Dismisses with the picked choice's id, or `cancel_id` on Escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, message: str, choices: list[Choice], *,
                 cancel_id: str = "cancel", id: str | None = None) -> None:
        super().__init__(id=id, classes="dialog")
        self.title_text = title
        self.message = message
        self.choices = choices
        self.cancel_id = cancel_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-message", markup=False)
            with Vertical(classes="dialog-choices"):
                for choice in self.choices:
                    key = "esc" if choice.key == "escape" else choice.key
                    yield Button(f"{choice.label} ({key})", id=f"choice-{choice.id}",
                                 variant=choice.variant, disabled=bool(choice.disabled_reason),
                                 compact=True, classes="choice")
                    if choice.disabled_reason:
                        yield Static(f"  {choice.disabled_reason}", classes="dialog-note", markup=False)

    def on_mount(self) -> None:
        for button in self.query(Button):
            if not button.disabled:
                button.focus()
                break

    @on(Button.Pressed, ".choice")
    def _picked(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss((event.button.id or "").removeprefix("choice-"))

    def on_key(self, event: events.Key) -> None:
        for choice in self.choices:
            if event.key == choice.key and not choice.disabled_reason:
                event.stop()
                self.dismiss(choice.id)
                return

    def action_cancel(self) -> None:
        self.dismiss(self.cancel_id)
