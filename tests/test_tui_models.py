"""The Models screen, start-up autoload and the settings file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from textual.widgets import Static

from cllm.tui.screens.models import ModelsScreen
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.settings import Settings
from cllm.tui.widgets.model_details import ModelDetails
from cllm.tui.widgets.model_tree import ModelTree
from tests.tui_helpers import (
    FakeEngine,
    fill,
    fill_form,
    goto,
    make_app,
    make_model_file,
    press,
    settle,
    wait_for,
    wait_screen,
)


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
        await wait_for(pilot, lambda line=line: tree.cursor_line == min(line, tree.last_line),
                       what=f"the cursor on line {line}")
    raise AssertionError(f"{name} not found in the tree")


def test_filter_paths_keeps_folders_and_model_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.cllm", "notes.txt", ".hidden.cllm", "b.cllm.tmp"):
        (tmp_path / name).write_text("x")
    tree = ModelTree(tmp_path)
    kept = tree.filter_paths(sorted(tmp_path.iterdir()))
    assert [p.name for p in kept] == ["a.cllm", "sub"]


async def test_browse_inspect_and_load_a_model(tui_home):
    models = tui_home["models"]
    make_model_file(models / "alpha.cllm", steps=40, best=1.25)
    make_model_file(models / "beta.cllm", steps=7, n_embd=32)
    (models / "readme.txt").write_text("not a model")
    (models / "old").mkdir()
    app = make_app(tui_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 3, what="the listing")
        assert sorted(str(n.label) for n in tree.root.children) == ["alpha.cllm", "beta.cllm", "old"]
        await highlight(pilot, "beta.cllm")
        await wait_for(pilot, lambda: "Model: beta.cllm" in details_text(app), what="details")
        text = details_text(app)
        assert "1 layers · 2 heads · width 32 · ctx 16" in text
        assert "char (28)" in text and "tiny.txt" in text and "2026-01-02 03:04:05 UTC" in text
        await highlight(pilot, "alpha.cllm")
        await wait_for(pilot, lambda: "Model: alpha.cllm" in details_text(app), what="details")
        assert "1.250" in details_text(app)
        await wait_for(pilot, lambda: "Values: all finite (checked)" in details_text(app), what="the values")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")
        assert app.loaded.path == models / "alpha.cllm"
        assert app.model_summary.startswith("alpha · ") and "40 steps" in app.model_summary
        assert Settings.load(tui_home["config"]).last_model == str((models / "alpha.cllm").resolve())


def break_file(path, how: str) -> str:
    """Damages the model file `path` in one of the ways the details must catch; returns a
    part of the message that says so."""
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    if how == "zip":
        path.write_bytes(b"PK\x03\x04 this is a zip, not a model")
        return "zip archive"
    if how == "cut short":
        path.write_bytes(data[:-100])
        return "truncated"
    if how == "missing tensor":
        header.pop("h.0.ln_1.bias")
        problem = "missing tensor 'h.0.ln_1.bias'"
    elif how == "misshapen tensor":
        header["wpe.weight"]["shape"] = [16, 15]
        problem = "tensor 'wpe.weight' has shape [16, 15]"
    elif how == "newer version":
        header["__metadata__"]["version"] = "9"
        problem = "newer CLLM"
    elif how == "broken metadata":
        header["__metadata__"]["training"] = "{not json"
        problem = "training state is not valid JSON"
    else:  # "nan": a header that is fine, values that are not
        from safetensors import safe_open
        from safetensors.numpy import save_file

        with safe_open(str(path), framework="numpy") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            metadata = f.metadata()
        tensors["wte.weight"][0, 0] = float("nan")
        save_file(tensors, path, metadata=metadata)
        return "non-finite values"
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return problem


@pytest.mark.parametrize("how", ["zip", "cut short", "missing tensor", "misshapen tensor", "newer version",
                                 "broken metadata", "nan"])
async def test_a_broken_file_shows_why_and_is_never_offered_for_loading(tui_home, how):
    models = tui_home["models"]
    good = make_model_file(models / "good.cllm")
    broken = make_model_file(models / "broken.cllm")
    problem = break_file(broken, how)
    app = make_app(tui_home, model_path=good)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        screen = app.screen
        tree = screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 2, what="the listing")
        await highlight(pilot, "broken.cllm")
        await wait_for(pilot, lambda: "Cannot be loaded" in details_text(app), what="the error")
        assert "broken.cllm" in details_text(app) and problem in details_text(app)
        assert "Steps" not in details_text(app)  # none of the broken file's details, as if it were good
        assert screen.query_one(ModelDetails).has_class("invalid")
        assert screen.check_action("load", ()) is None  # Load is not offered
        await press(pilot, "enter")
        await pilot.pause(0.1)
        assert app.loaded.path == good  # refused
        assert any(n.startswith("Cannot load:") and "broken.cllm" in n for n in app.notices)
        await goto(pilot, "generate")  # the app goes on: keys still switch screens
        assert app.is_running


async def test_load_is_offered_once_the_values_are_checked(tui_home):
    models = tui_home["models"]
    make_model_file(models / "good.cllm")
    gate = threading.Event()

    class SlowChecks(FakeEngine):
        def check_values(self, path):
            gate.wait(10)
            return super().check_values(path)

    app = make_app(tui_home, engine=SlowChecks())
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        screen = app.screen
        tree = screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 1, what="the listing")
        await highlight(pilot, "good.cllm")
        await wait_for(pilot, lambda: "Values: checking…" in details_text(app), what="the header's details")
        assert screen.check_action("load", ()) is None
        await press(pilot, "enter")  # asked for early: it loads once the values are known
        await pilot.pause(0.1)
        assert app.loaded is None
        gate.set()
        await wait_for(pilot, lambda: "Values: all finite (checked)" in details_text(app), what="the check")
        assert screen.check_action("load", ()) is True
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")


async def test_first_start_roots_the_tree_at_a_new_models_folder_and_lists_saved_files(tui_home):
    models = tui_home["root"] / "fresh" / "models"
    app = make_app(tui_home, models_dir=models, engine=FakeEngine(step_time=0.002))
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        tree = app.screen.query_one(ModelTree)
        assert models.is_dir() and Path(tree.path) == models
        await goto(pilot, "train")
        await fill_form(pilot, tui_home["corpus"], steps=30, eval=10)
        await press(pilot, "f5")
        await wait_screen(pilot, NameDialog)
        await press(pilot, "ctrl+u", *"saved", "enter")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run")
        await goto(pilot, "models")
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: [str(n.label) for n in tree.root.children] == ["saved.cllm"],
                       what="the new file, without F9")


async def test_typed_path_jumps_to_another_folder(tui_home):
    elsewhere = tui_home["root"] / "elsewhere"
    elsewhere.mkdir()
    make_model_file(elsewhere / "far.cllm")
    app = make_app(tui_home)
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
async def test_autoload_prefers_the_last_model(tui_home):
    make_model_file(tui_home["models"] / "saved_model.cllm")
    last = make_model_file(tui_home["models"] / "last.cllm")
    settings = Settings.load(tui_home["config"])
    settings.remember_model(last)
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        assert app.loaded.path.resolve() == last.resolve()
        assert "last · " in app.model_summary


async def test_autoload_falls_back_to_saved_model(tui_home):
    saved = make_model_file(tui_home["models"] / "saved_model.cllm")
    settings = Settings.load(tui_home["config"])
    settings.last_model = str(tui_home["models"] / "deleted.cllm")  # gone since
    settings.save()
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        assert app.loaded.path == saved


async def test_explicit_model_wins_and_a_bad_one_is_reported(tui_home):
    make_model_file(tui_home["models"] / "saved_model.cllm")
    bad = tui_home["root"] / "bad.cllm"
    bad.write_text("nope")
    app = make_app(tui_home, model_path=bad)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: any("bad.cllm" in n for n in app.notices), what="the error")
        assert app.loaded is None and app.is_running
        assert "no model loaded" in app.model_summary
        welcome = str(app.screen.query_one("#welcome", Static).render())
        assert "Quick start" in welcome


async def test_no_model_at_all_starts_empty(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.loaded is None and app.current_mode == "generate"


async def test_keymap_from_the_settings_file_remaps_bindings(tui_home):
    tui_home["config"].mkdir()
    (tui_home["config"] / "settings.json").write_text(json.dumps({"keymap": {"mode.train": "f12"}}))
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await press(pilot, "ctrl+t")
        await settle(pilot)
        assert app.current_mode == "generate"  # no longer bound
        await press(pilot, "f12")
        await wait_for(pilot, lambda: app.current_mode == "train", what="f12 to switch to Train")
        assert app.key_for("mode.train") == "f12"


async def test_a_broken_settings_file_is_reported_once_and_never_overwritten(tui_home):
    tui_home["config"].mkdir()
    settings_file = tui_home["config"] / "settings.json"
    settings_file.write_text("{not json")
    model = make_model_file(tui_home["models"] / "m.cllm")
    app = make_app(tui_home, model_path=model)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")
        assert sum("cannot read settings" in n for n in app.notices) == 1
        await goto(pilot, "models")  # and the app goes on
    assert settings_file.read_text() == "{not json"  # the user's file, as they left it


def test_settings_default_to_the_env_folder(tui_home):
    settings = Settings.load()
    assert settings.path == tui_home["config"] / "settings.json"
    settings.remember_model(Path("x.cllm"))
    assert json.loads(settings.path.read_text())["last_model"].endswith("x.cllm")
