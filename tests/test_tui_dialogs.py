"""Each dialog on its own, in a bare host app: push it with a callback that records the
result, press keys, check the result."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import Button, DirectoryTree, Static

from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog
from cllm.tui.screens.confirm_dialog import ConfirmDialog
from cllm.tui.screens.file_browser import FileBrowser
from cllm.tui.screens.name_dialog import NameDialog
from tests.tui_helpers import fill, press, wait_for


class Host(App):
    CSS_PATH = str(Path(__file__).parents[1] / "tui" / "app.tcss")

    def __init__(self, dialog) -> None:
        super().__init__()
        self.dialog = dialog
        self.results: list = []

    def on_mount(self) -> None:
        self.push_screen(self.dialog, self.results.append)


def replace_dialog(can_continue: bool = True) -> ChoiceDialog:
    return ChoiceDialog("A model is loaded", "what now?", [
        Choice("new", "Create new model…", "n", "primary"),
        Choice("overwrite", "Overwrite base…", "o", "error"),
        Choice("continue", "Continue training base", "c", "success",
               disabled_reason="" if can_continue else "cannot continue: no"),
        Choice("cancel", "Cancel", "escape"),
    ])


async def run_keys(dialog, *keys: str):
    app = Host(dialog)
    async with app.run_test() as pilot:
        await pilot.pause()
        await press(pilot, *keys)
        await wait_for(pilot, lambda: app.results, what="a result")
    return app.results


async def test_choice_dialog_keys_pick_and_escape_cancels():
    assert await run_keys(replace_dialog(), "n") == ["new"]
    assert await run_keys(replace_dialog(), "o") == ["overwrite"]
    assert await run_keys(replace_dialog(), "c") == ["continue"]
    assert await run_keys(replace_dialog(), "escape") == ["cancel"]
    # a disabled choice cannot be picked by its key; the focused (first) button by enter
    assert await run_keys(replace_dialog(can_continue=False), "c", "enter") == ["new"]


async def test_choice_dialog_shows_why_a_choice_is_disabled():
    app = Host(replace_dialog(can_continue=False))
    async with app.run_test() as pilot:
        await pilot.pause()
        dialog = app.screen
        assert dialog.query_one("#choice-continue", Button).disabled
        assert "cannot continue: no" in str(dialog.query_one(".dialog-note", Static).render())
        assert "Cancel (esc)" in str(dialog.query_one("#choice-cancel", Button).label)


async def test_confirm_dialog():
    assert await run_keys(ConfirmDialog("Overwrite?", "lost: all", danger=True), "y") == [True]
    assert await run_keys(ConfirmDialog("Overwrite?", "lost: all", danger=True), "escape") == [False]
    # danger: the focused button is the safe one, so enter does not overwrite
    assert await run_keys(ConfirmDialog("Overwrite?", "lost: all", danger=True), "enter") == [False]


async def test_name_dialog_refuses_existing_names(tmp_path):
    (tmp_path / "taken.cllm").write_bytes(b"x")
    app = Host(NameDialog(tmp_path, "taken"))
    async with app.run_test() as pilot:
        await pilot.pause()
        dialog = app.screen
        assert "already exists" in str(dialog.query_one("#name-error", Static).render())
        await press(pilot, "enter")
        assert not app.results
        await press(pilot, "ctrl+u", *"a/b")
        assert "without slashes" in str(dialog.query_one("#name-error", Static).render())
        await press(pilot, "ctrl+u", *"new-one", "enter")
        await wait_for(pilot, lambda: app.results)
    assert app.results == ["new-one"]
    assert await run_keys(NameDialog(tmp_path, "x"), "escape") == [None]


async def test_file_browser_picks_with_keys_and_escape_cancels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    app = Host(FileBrowser(tmp_path))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.screen.query("#browse-tree"))
        tree = app.screen.query_one("#browse-tree", DirectoryTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 1, what="the listing")
        await press(pilot, "down", "enter")
        await wait_for(pilot, lambda: app.results)
    assert app.results == [tmp_path / "a.txt"]
    app = Host(FileBrowser(tmp_path))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.screen.query("#browse-path"))
        await fill(pilot, "#browse-path", "missing.txt")
        await press(pilot, "enter")
        assert "no such file" in str(app.screen.query_one("#browse-error", Static).render())
        await press(pilot, "escape")
        await wait_for(pilot, lambda: app.results)
    assert app.results == [None]
