"""The Train screen with folders and prepared datasets: the corpus field and the browser
take them, the run log shows what was read, and Stop cancels a preparation. The corpus
code is the real one (core/prepare.py); the trainer is the fake of tui_helpers."""

from __future__ import annotations

import threading

from textual.widgets import Button, DirectoryTree, Input

from cllm.core.prepare import TokenizerPlan, prepare
from cllm.tui.screens.file_browser import FileBrowser
from cllm.tui.screens.train import TrainScreen
from tests.helpers import make_text
from tests.tui_helpers import FakeEngine, goto, make_app, press, start_new_run, wait_for


def make_folder(root, n: int = 8) -> None:
    for i in range(n):
        path = root / ("sub" if i % 2 else ".") / f"doc{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make_text(300, seed=i))
    (root / "logo.png").write_bytes(b"\x89PNG\0")


async def test_a_folder_trains_and_the_log_says_what_was_read(tui_home):
    make_folder(tui_home["root"] / "texts")
    engine = FakeEngine()
    app = make_app(tui_home, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await start_new_run(pilot, {**tui_home, "corpus": tui_home["root"] / "texts"}, "folder", steps=20, eval=10)
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run's end")
        log = "\n".join(app.training.log)
        assert "skipped 1 file: 1 binary" in log
        assert "texts: 8 files (1 skipped)" in log and "training and" in log and "validation tokens" in log
        assert app.training.done is not None and app.training.done.reason == "finished"


async def test_a_prepared_dataset_trains_with_its_tokenizer(tui_home):
    make_folder(tui_home["root"] / "texts")
    prepare([tui_home["root"] / "texts"], tui_home["root"] / "ds", TokenizerPlan("bpe", 280))
    engine = FakeEngine()
    app = make_app(tui_home, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await start_new_run(pilot, {**tui_home, "corpus": tui_home["root"] / "ds"}, "from-ds", steps=10, eval=5)
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run's end")
        assert engine.trainers[0].model.tokenizer.kind == "bpe"
        assert any("texts: 8 files (1 skipped)" in line for line in app.training.log)  # named by its sources


class GatedEngine(FakeEngine):
    """Holds the preparation at its first encoding progress until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.reached, self.go = threading.Event(), threading.Event()

    def training_data(self, source, *, on_progress, **kwargs):
        def gated(phase, done, total):
            if phase == "encoding" and not self.reached.is_set():
                self.reached.set()
                self.go.wait(10)
            on_progress(phase, done, total)

        return super().training_data(source, on_progress=gated, **kwargs)


async def test_stop_cancels_a_preparation_and_keeps_nothing(tui_home, dataset_cache):
    make_folder(tui_home["root"] / "texts", n=12)
    before = set(dataset_cache.iterdir())
    engine = GatedEngine()
    app = make_app(tui_home, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await start_new_run(pilot, {**tui_home, "corpus": tui_home["root"] / "texts"}, "cancelled", steps=20)
        await wait_for(pilot, engine.reached.is_set, what="the preparation")
        await press(pilot, "f7")  # Stop
        await wait_for(pilot, lambda: app.training is not None and app.training.cancel.is_set(), what="the cancel")
        engine.go.set()
        await wait_for(pilot, lambda: not app.run_active, what="the worker's end")
        await wait_for(pilot, lambda: any("Run cancelled before it started" in n for n in app.notices),
                       what="the notification")
        assert engine.trainers == [] and not (tui_home["models"] / "cancelled.cllm").exists()
    left = {p for p in set(dataset_cache.iterdir()) - before if not p.name.endswith(".lock")}
    assert left == set(), left


async def test_the_browser_picks_a_folder_and_the_field_accepts_it(tui_home):
    make_folder(tui_home["root"] / "texts")
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        await press(pilot, "f8")
        await wait_for(pilot, lambda: isinstance(app.screen, FileBrowser) and app.screen.query("#browse-tree"))
        tree = app.screen.query_one("#browse-tree", DirectoryTree)
        await wait_for(pilot, lambda: any(str(n.label) == "texts" for n in tree.root.children), what="the tree")
        tree.move_cursor(next(n for n in tree.root.children if str(n.label) == "texts"))
        app.screen.query_one("#use-folder", Button).press()
        await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), what="the train screen")
        field = app.screen.query_one("#corpus", Input)
        assert field.value.endswith("texts") and field.is_valid


async def test_continue_checks_folders_and_datasets_against_the_model_s_tokenizer(tui_home):
    """The continue/fine-tune offer reads a folder in chunks and a dataset's manifest:
    a folder in the model's characters fits; one file with others names that file; a
    dataset made with another tokenizer is refused with the reason."""
    from textual.widgets import Static

    from cllm.tui.screens.choice_dialog import ChoiceDialog
    from tests.tui_helpers import TEXT, fill, make_model_file, short, wait_screen

    fits = tui_home["root"] / "fits"
    for i in range(3):
        (fits / f"part{i}").mkdir(parents=True)
        (fits / f"part{i}" / "a.txt").write_text(TEXT[i * 40:] * 3)
    bad = tui_home["root"] / "bad"
    bad.mkdir()
    (bad / "a.txt").write_text(TEXT)
    (bad / "z.txt").write_text(TEXT[:100] + " \u00e9\u00e8 ")  # characters the model has never seen
    prepare([fits], tui_home["root"] / "ds", TokenizerPlan("bpe", 280))
    make_model_file(tui_home["models"] / "base.cllm", steps=40, text=TEXT + "\n")  # "\n": files are joined by it
    app = make_app(tui_home, engine=FakeEngine(step_time=0.002), model_path=tui_home["models"] / "base.cllm")
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "train")
        for corpus, why in ((fits, None), (bad, "z.txt"), (tui_home["root"] / "ds", "prepared with another tokenizer")):
            await fill(pilot, "#corpus", short(corpus))
            await press(pilot, "f5")
            await wait_screen(pilot, ChoiceDialog)
            dialog = app.screen
            notes = " ".join(str(note.render()) for note in dialog.query(".dialog-note").results(Static))
            assert dialog.query_one("#choice-continue", Button).disabled == (why is not None), notes
            if why is not None:
                assert "cannot continue" in notes and why in notes
            await press(pilot, "escape")
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), what="the dialog closed")
