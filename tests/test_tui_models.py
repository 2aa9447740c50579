"""The Models screen, start-up autoload and the settings file."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Static

from tests.test_tui_fakes import (  # noqa: F401 - workspace is a fixture
    fill,
    goto,
    make_app,
    make_model_file,
    press,
    settle,
    wait_for,
    workspace,
)
from cllm.tui.screens.models import ModelsScreen
from cllm.tui.settings import Settings
from cllm.tui.widgets.model_details import ModelDetails
from cllm.tui.widgets.model_tree import ModelTree


def details_text(app) -> str:
    return app.screen.query_one(ModelDetails).plain


async def highlight(pilot, name: str) -> None:
    """Move the tree cursor down, one key at a time, until `name` is highlighted."""
    tree = pilot.app.screen.query_one(ModelTree)
    tree.focus()
    await wait_for(pilot, lambda: tree.has_focus, what="focus on the tree")
    await settle(pilot)
    await press(pilot, "home")
    await wait_for(pilot, lambda: tree.cursor_line == 0, what="the cursor on the first line")
    for line in range(1, tree.last_line + 2):
        node = tree.cursor_node
        if node is not None and node.data is not None and Path(node.data.path).name == name:
            return
        await press(pilot, "down")
        await wait_for(pilot, lambda: tree.cursor_line == min(line, tree.last_line), what=f"the cursor on line {line}")
    raise AssertionError(f"{name} not found in the tree")


def test_filter_paths_keeps_folders_and_model_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.cllm", "notes.txt", ".hidden.cllm", "b.cllm.tmp"):
        (tmp_path / name).write_text("x")
    tree = ModelTree(tmp_path)
    kept = tree.filter_paths(sorted(tmp_path.iterdir()))
    assert [p.name for p in kept] == ["a.cllm", "sub"]


async def test_browse_inspect_and_load_a_model(workspace):
    models = workspace["models"]
    make_model_file(models / "alpha.cllm", steps=40, best=1.25)
    make_model_file(models / "beta.cllm", steps=7, n_embd=32)
    (models / "readme.txt").write_text("not a model")
    (models / "old").mkdir()
    app = make_app(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 3, what="the listing")
        assert sorted(str(n.label) for n in tree.root.children) == ["alpha.cllm", "beta.cllm", "old"]
        await highlight(pilot, "beta.cllm")
        await wait_for(pilot, lambda: "beta.cllm" in details_text(app), what="details")
        text = details_text(app)
        assert "1 layers · 2 heads · width 32 · ctx 16" in text
        assert "char (28)" in text and "tiny.txt" in text and "2026-01-02 03:04:05 UTC" in text
        await highlight(pilot, "alpha.cllm")
        await wait_for(pilot, lambda: "alpha.cllm" in details_text(app), what="details")
        assert "1.250" in details_text(app)
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")
        assert app.loaded.path == models / "alpha.cllm"
        assert app.model_summary.startswith("alpha · ") and "40 steps" in app.model_summary
        assert Settings.load(workspace["config"]).last_model == str((models / "alpha.cllm").resolve())


async def test_a_broken_file_shows_why_and_the_app_goes_on(workspace):
    models = workspace["models"]
    good = make_model_file(models / "good.cllm")
    (models / "broken.cllm").write_bytes(b"PK\x03\x04 this is a zip, not a model")
    truncated = models / "truncated.cllm"
    truncated.write_bytes(good.read_bytes()[:-100])
    app = make_app(workspace, model_path=good)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 3, what="the listing")
        await highlight(pilot, "broken.cllm")
        await wait_for(pilot, lambda: "Cannot be loaded" in details_text(app), what="the error")
        assert "broken.cllm" in details_text(app) and "zip archive" in details_text(app)
        assert app.screen.query_one(ModelDetails).has_class("invalid")
        await press(pilot, "enter")
        await pilot.pause(0.1)
        assert app.loaded.path == good  # refused
        assert any(n.startswith("Cannot load:") and "broken.cllm" in n for n in app.notices)
        # a file whose header reads fine but whose data is cut short fails on load
        await highlight(pilot, "truncated.cllm")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: any("truncated" in n and "Error" not in n for n in app.notices[-2:]),
                       what="the load error")
        assert app.loaded.path == good
        await wait_for(pilot, lambda: "Cannot be loaded" in details_text(app), what="the error in details")
        await goto(pilot, "generate")  # the app goes on: keys still switch screens
        assert app.is_running


async def test_typed_path_jumps_to_another_folder(workspace):
    elsewhere = workspace["root"] / "elsewhere"
    elsewhere.mkdir()
    make_model_file(elsewhere / "far.cllm")
    app = make_app(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        await press(pilot, "f2")
        await fill(pilot, "#models-path", "elsewhere")
        await press(pilot, "enter")
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: [str(n.label) for n in tree.root.children] == ["far.cllm"], what="the jump")
        await fill(pilot, "#models-path", "elsewhere/far.cllm")
        await press(pilot, "enter")  # a file path loads it
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")
        assert app.loaded.path.name == "far.cllm"


# -- start-up -----------------------------------------------------------------------
async def test_autoload_prefers_the_last_model(workspace):
    make_model_file(workspace["models"] / "saved_model.cllm")
    last = make_model_file(workspace["models"] / "last.cllm")
    settings = Settings.load(workspace["config"])
    settings.remember_model(last)
    app = make_app(workspace)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        assert app.loaded.path.resolve() == last.resolve()
        assert "last · " in app.model_summary


async def test_autoload_falls_back_to_saved_model(workspace):
    saved = make_model_file(workspace["models"] / "saved_model.cllm")
    settings = Settings.load(workspace["config"])
    settings.last_model = str(workspace["models"] / "deleted.cllm")  # gone since
    settings.save()
    app = make_app(workspace)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        assert app.loaded.path == saved


async def test_explicit_model_wins_and_a_bad_one_is_reported(workspace):
    make_model_file(workspace["models"] / "saved_model.cllm")
    bad = workspace["root"] / "bad.cllm"
    bad.write_text("nope")
    app = make_app(workspace, model_path=bad)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: any("bad.cllm" in n for n in app.notices), what="the error")
        assert app.loaded is None and app.is_running
        assert "no model loaded" in app.model_summary
        welcome = str(app.screen.query_one("#welcome", Static).render())
        assert "Quick start" in welcome


async def test_no_model_at_all_starts_empty(workspace):
    app = make_app(workspace)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.loaded is None and app.current_mode == "generate"


async def test_keymap_from_the_settings_file_remaps_bindings(workspace):
    workspace["config"].mkdir()
    (workspace["config"] / "settings.json").write_text(json.dumps({"keymap": {"mode.train": "f12"}}))
    app = make_app(workspace)
    async with app.run_test() as pilot:
        await press(pilot, "ctrl+t")
        await settle(pilot)
        assert app.current_mode == "generate"  # no longer bound
        await press(pilot, "f12")
        await wait_for(pilot, lambda: app.current_mode == "train", what="f12 to switch to Train")
        assert app.key_for("mode.train") == "f12"


async def test_a_broken_settings_file_is_reported_and_ignored(workspace):
    workspace["config"].mkdir()
    (workspace["config"] / "settings.json").write_text("{not json")
    app = make_app(workspace)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert any("cannot read settings" in n for n in app.notices)
        await goto(pilot, "models")  # and the app goes on


def test_settings_default_to_the_env_folder(workspace):
    settings = Settings.load()
    assert settings.path == workspace["config"] / "settings.json"
    settings.remember_model(Path("x.cllm"))
    assert json.loads(settings.path.read_text())["last_model"].endswith("x.cllm")
