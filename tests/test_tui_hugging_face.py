"""Hugging Face folders in the TUI: the Models screen marks them, says what an import
would make of them (or why it cannot), and imports with a key; the start dialog offers to
fine-tune the loaded model on the form's corpus."""

from __future__ import annotations

from pathlib import Path

from cllm.core.hf_export import export_model
from cllm.core.model_file import read_info
from cllm.tui.screens.choice_dialog import ChoiceDialog
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.widgets.model_tree import HF_MARK, ModelTree
from tests.test_tui_models import details_text, highlight
from tests.tui_helpers import (
    TEXT,
    FakeEngine,
    fill_form,
    goto,
    make_app,
    make_model_file,
    press,
    wait_for,
    wait_screen,
)


def exported_folder(home: dict, name: str = "hf-small") -> Path:
    model = make_model_file(home["root"] / "source.cllm", steps=12)
    folder = home["models"] / name
    export_model(model, folder)
    return folder


async def test_a_folder_is_marked_described_and_imported_with_a_key(tui_home):
    exported_folder(tui_home)
    app = make_app(tui_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        screen = app.screen
        tree = screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 1, what="the listing")
        node = tree.root.children[0]
        assert HF_MARK in tree.render_label(node, tree.rich_style, tree.rich_style).plain
        await highlight(pilot, "hf-small")
        await wait_for(pilot, lambda: "Kind: Hugging Face GPT-2" in details_text(app), what="the folder's details")
        text = details_text(app)
        assert "1 layers · 2 heads · width 16 · ctx 16" in text and "model.safetensors (float32)" in text
        assert screen.check_action("import", ()) is True
        await press(pilot, "f6")
        await wait_screen(pilot, NameDialog, selector="Input")
        await press(pilot, "ctrl+u", *"imported", "enter")
        out = tui_home["models"] / "imported.cllm"
        await wait_for(pilot, lambda: app.loaded is not None and app.loaded.path == out, timeout=30, what="the import")
        imported = read_info(out).run.imported
        assert imported is not None and imported["folder"].endswith("hf-small")


async def test_a_folder_that_cannot_be_imported_says_why(tui_home):
    folder = tui_home["models"] / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, '
                                        '"n_positions": 16, "vocab_size": 28}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    app = make_app(tui_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 1, what="the listing")
        await highlight(pilot, "pickled")
        await wait_for(pilot, lambda: "Cannot be imported" in details_text(app), what="the reason")
        assert "pytorch_model.bin" in details_text(app)
        assert app.screen.check_action("import", ()) is None


async def test_the_start_dialog_offers_a_fine_tune_into_a_new_file(tui_home):
    base = make_model_file(tui_home["models"] / "base.cllm", steps=40)
    engine = FakeEngine(step_time=0.002)
    app = make_app(tui_home, engine=engine, model_path=base)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "train")
        await fill_form(pilot, tui_home["corpus"], steps=30, eval=10)
        await press(pilot, "f5")
        await wait_screen(pilot, ChoiceDialog)
        await press(pilot, "f")
        await wait_screen(pilot, NameDialog, selector="Input")
        await press(pilot, "ctrl+u", *"tuned", "enter")
        await wait_for(pilot, lambda: engine.trainers and not app.run_active, what="the fine-tune")
        trainer = engine.trainers[0]
        assert trainer.parent == base and app.training.plan.action == "fine-tune"
        assert (tui_home["models"] / "tuned.cllm").exists() and base.exists()
        assert app.training.log[0] == "fine-tuning base.cllm → tuned.cllm"


async def test_fine_tuning_is_refused_when_the_corpus_does_not_fit(tui_home):
    base = make_model_file(tui_home["models"] / "base.cllm", text=TEXT)
    other = tui_home["root"] / "other.txt"
    other.write_text("ZZZ unseen characters: ¿¡ " * 50)
    app = make_app(tui_home, model_path=base)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "train")
        await fill_form(pilot, other)
        await press(pilot, "f5")
        await wait_screen(pilot, ChoiceDialog)
        button = app.screen.query_one("#choice-fine-tune")
        assert button.disabled
        assert any("cannot fine-tune" in str(s.render()) for s in app.screen.query(".dialog-note"))
