"""The command palette: a command per screen (tui/modes.py), then each screen's own
commands (its `PALETTE`: name, help, action), run on that screen."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from textual.app import SystemCommand

from cllm.tui.modes import MODES

if TYPE_CHECKING:
    from cllm.tui.app import CllmApp


def _on_screen(app: CllmApp, mode: str, action: str) -> Callable[[], object]:
    async def run() -> None:
        await app.action_mode(mode)
        await app.run_action(action, app.screen)
    return run


def _switch(app: CllmApp, mode: str) -> Callable[[], object]:
    async def run() -> None:
        await app.action_mode(mode)
    return run


def app_commands(app: CllmApp) -> Iterable[SystemCommand]:
    for mode in MODES:
        yield SystemCommand(mode.title, mode.description, _switch(app, mode.name))
    yield SystemCommand("Quick start", "Train a small model on python-docs (about a minute)", app.action_quick_start)
    for mode in MODES:
        for name, help_text, action in getattr(mode.screen_class(), "PALETTE", ()):
            yield SystemCommand(name, help_text, _on_screen(app, mode.name, action))
    yield SystemCommand("Keys", "Show or hide the key bindings panel", app.action_keys)
