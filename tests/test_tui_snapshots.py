"""Snapshots of each screen at 80x24 and 120x40 (cursor blink off, no toasts).

Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update` after a deliberate
change, and look at the report before accepting it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from cllm.tui.widgets.model_tree import ModelTree
from tests.tui_helpers import FakeEngine, make_app, make_model_file, wait_for

SIZES = [(80, 24), (120, 40)]
FIXED_DATE = "2026-01-02T03:04:05Z"


class SnapshotEngine(FakeEngine):
    """Header dates fixed, so the details pane does not change with the clock."""

    def read_info(self, path):
        info = super().read_info(path)
        info.updated = FIXED_DATE
        return info


def still(app) -> None:
    for screen in app.screen_stack:
        for field in screen.query(Input):
            field.cursor_blink = False
    app.clear_notifications()


def relative_app(ws, **kwargs):
    """Paths relative to tmp_path (the working directory), so they are the same every run."""
    return make_app(ws, engine=SnapshotEngine(), **kwargs)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_train_screen(snap_compare, tui_home, size):
    app = relative_app(tui_home, autoload=False, models_dir=Path("models"))

    async def run_before(pilot):
        await pilot.press("ctrl+t")
        await pilot.pause()
        still(app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_screen_without_a_model(snap_compare, tui_home, size):
    app = relative_app(tui_home, autoload=False)

    async def run_before(pilot):
        await pilot.pause()
        still(app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_screen_with_a_model(snap_compare, tui_home, size):
    make_model_file(tui_home["models"] / "saved_model.cllm", steps=40, best=1.25)
    app = relative_app(tui_home, models_dir=Path("models"))

    async def run_before(pilot):
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await pilot.pause()
        still(app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_models_screen(snap_compare, tui_home, size):
    models = tui_home["models"]
    make_model_file(models / "alpha.cllm", steps=40, best=1.25)
    make_model_file(models / "beta.cllm", steps=7, n_embd=32)
    (models / "archive").mkdir()
    app = make_app(tui_home, engine=SnapshotEngine(), models_dir=Path("models"), autoload=False)

    async def run_before(pilot):
        await pilot.press("ctrl+o")
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 3, what="the listing")
        await pilot.press("down", "down")
        details = app.screen.query_one("#model-details")
        await wait_for(pilot, lambda: "alpha.cllm" in details.plain and "all finite" in details.plain)
        await pilot.pause()
        still(app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_replace_dialog(snap_compare, tui_home):
    base = make_model_file(tui_home["models"] / "base.cllm", steps=40, best=1.25)
    app = relative_app(tui_home, models_dir=Path("models"), model_path=Path("models") / base.name)

    async def run_before(pilot):
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await pilot.press("ctrl+t")
        await pilot.pause()
        app.clear_notifications()  # the toasts of the screen behind the dialog
        app.screen.query_one("#corpus", Input).value = "tiny.txt"
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.screen.id == "replace-dialog", what="the dialog")
        await pilot.pause(0.2)
        still(app)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
