"""The TUI on the real engine (core.trainer, core.sampler, core.model_file): one or
more flows per screen with a tiny model (1 layer, 2 heads, width 16, ctx 16, batch 4,
20 steps) on a small text written to tmp_path, plus the responsiveness check.

Marked `engine` (so `-m "not engine"` can skip them) but part of the normal suite. The
first test compiles the numba kernels if their cache is stale (about a minute, once).
"""

from __future__ import annotations

import threading
import time

import pytest
from textual.widgets import ProgressBar

from cllm.core.model_file import read_info
from cllm.tui.engine import Engine
from cllm.tui.screens.generate import GenerateScreen
from cllm.tui.screens.models import ModelsScreen
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.screens.train import TrainScreen
from cllm.tui.widgets.core_bars import CoreBars
from cllm.tui.widgets.loss_chart import LossChart
from cllm.tui.widgets.model_details import ModelDetails
from cllm.tui.widgets.model_tree import ModelTree
from cllm.tui.widgets.transcript import Sample
from tests.tui_helpers import (
    fill,
    fill_form,
    goto,
    make_app,
    model_step,
    press,
    start_new_run,
    wait_for,
    wait_screen,
)

pytestmark = pytest.mark.engine

TINY = {"layers": 1, "heads": 2, "width": 16, "ctx": 16, "batch": 4, "threads": 2}
# Waits for the UI are hang guards, not speed claims: the UI's independence from the
# training thread is shown by holding that thread inside a step while the UI works.
HANG_GUARD_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def kernels():
    engine = Engine()
    if not engine.kernels_ready():
        engine.compile_kernels()
    else:
        engine.compile_kernels()  # loads the cached code (about a second) so runs start at once


@pytest.fixture
def real(tui_home):
    text = ("def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n    y: int\n\n" * 60)
    tui_home["corpus"].write_text(text)
    return tui_home


async def train_tiny(pilot, home: dict, name: str, steps: int, eval_every: int = 10, **fields) -> None:
    await start_new_run(pilot, home, name, **TINY, steps=steps, eval=eval_every, **fields)


async def test_real_training_run_writes_the_model(real):
    app = make_app(real, engine=Engine())
    async with app.run_test(size=(100, 30)) as pilot:
        await train_tiny(pilot, real, "real", steps=20, dropout=0.1)
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, timeout=60,
                       what="the run")
        run = app.training
        assert run.done.reason == "finished", run.error
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        bars = screen.query_one(CoreBars)
        assert len(bars.query(ProgressBar)) == run.trainer.n_threads == 2
        assert list(run.trainer.shard_sizes) == [2, 2]
        assert run.loss_steps == list(range(1, 21))
        assert run.loss_values[-1] < run.loss_values[0]
        assert run.val_steps == [10, 20]
        chart = screen.query_one(LossChart)  # redraws on its timer: the last points come within a tick
        await wait_for(pilot, lambda: chart._drawn == (20, 2), what="the chart to draw 20 + 2 points")
        path = real["models"] / "real.cllm"
        assert path.exists() and model_step(path) == 20 and read_info(path).run.dropout_rates == (0.1, 0.1, 0.1)
        await wait_for(pilot, lambda: app.loaded is not None and app.loaded.info is not None, what="reload")
        assert app.loaded.path == path and "20 steps" in app.model_summary


async def test_real_engine_stays_responsive_and_stops_cleanly(real):
    app = make_app(real, engine=Engine(), prewarm=True)  # as the app really starts
    async with app.run_test(size=(100, 30)) as pilot:
        await train_tiny(pilot, real, "long", steps=1_000_000, eval_every=0)
        await wait_for(pilot, lambda: app.training is not None and app.training.trainer is not None
                       and app.training.trainer.step > 10,
                       timeout=60, what="steps")
        trainer = app.training.trainer
        bars = app.screen.query_one(CoreBars)
        chart = app.screen.query_one(LossChart)
        # the per-core bars and the loss chart advance on their timers
        rates, draws = [], set()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            rates.append(float(bars.rates.sum()))
            draws.add(chart._drawn)
            await pilot.pause(0.1)
        assert max(rates) > 0 and len(draws) >= 2
        # the training thread held inside a step: screens switch and keys land all the same,
        # so nothing in the UI waits on that thread (its kernels' GIL release: test_threads)
        inside, release = threading.Event(), threading.Event()
        real_step = trainer.train_step

        def held_step():
            inside.set()
            release.wait(HANG_GUARD_S)
            return real_step()

        trainer.train_step = held_step
        try:
            await wait_for(pilot, inside.is_set, timeout=HANG_GUARD_S, what="a step")
            held_at = trainer.step
            for key, check in [
                ("ctrl+g", lambda: isinstance(app.screen, GenerateScreen)),
                ("ctrl+o", lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree)),
                ("ctrl+g", lambda: isinstance(app.screen, GenerateScreen)),
            ]:
                await press(pilot, key)
                await wait_for(pilot, check, timeout=HANG_GUARD_S, what=key)
            prompt = app.screen.query_one("#prompt")
            prompt.focus()
            for i, char in enumerate("responsive"):
                await press(pilot, char)
                await wait_for(pilot, lambda i=i: len(prompt.value) == i + 1, timeout=HANG_GUARD_S, what="typing")
            assert trainer.step == held_at and not release.is_set()  # all of it while the step was held
        finally:
            del trainer.train_step
            release.set()
        await wait_for(pilot, lambda: trainer.step > held_at + 2, timeout=HANG_GUARD_S, what="training going on")
        assert app.run_active
        await goto(pilot, "train")
        await press(pilot, "f6")
        await wait_for(pilot, lambda: trainer.paused, what="the pause")
        held = trainer.step
        await pilot.pause(0.3)
        assert trainer.step <= held + 1  # the step in flight may finish
        await press(pilot, "f7")
        await wait_for(pilot, lambda: not app.run_active, timeout=30, what="the stop")
        assert app.training.done.reason == "stopped"
        path = real["models"] / "long.cllm"
        assert path.exists() and model_step(path) == trainer.step


@pytest.fixture
def real_model(real):
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.trainer import Trainer

    path = real["models"] / "tiny.cllm"
    trainer = Trainer.new(load_corpus(real["corpus"]), {"n_layer": 1, "n_head": 2, "n_embd": 16, "ctx": 16},
                          TrainConfig(steps=20, batch=4, eval_interval=10, threads=2, dropout=0.1), out_path=path)
    trainer.run()
    return path


async def test_real_generation_streams_and_stops(real, real_model):
    app = make_app(real, engine=Engine(), model_path=real_model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        screen = app.screen
        await fill(pilot, "#max-tokens", "40")
        await fill(pilot, "#seed", "7")
        await fill(pilot, "#prompt", "def ")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: screen.query(Sample) and not screen._generating, timeout=120,
                       what="generation (its kernels may compile first)")
        sample = screen.query_one(Sample)
        assert sample.prompt == "def " and len(sample.output) == 40  # char tokenizer: 40 pieces
        assert "done · 40 tokens" in sample.status
        # a long generation stops on Escape
        await fill(pilot, "#max-tokens", "100000")
        await fill(pilot, "#prompt", "class ")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: len(screen.query(Sample)) == 2 and screen.query(Sample)[1].output,
                       what="streaming")
        await press(pilot, "escape")
        await wait_for(pilot, lambda: not screen._generating, what="the stop")
        second = screen.query(Sample)[1]
        assert "stopped" in second.status and len(second.output) < 100000


async def test_real_model_browser_details_and_load(real, real_model):
    (real["models"] / "broken.cllm").write_bytes(real_model.read_bytes()[:200])
    app = make_app(real, engine=Engine())
    async with app.run_test(size=(100, 30)) as pilot:
        await goto(pilot, "models")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.query(ModelTree))
        tree = app.screen.query_one(ModelTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 2, what="the listing")
        tree.focus()
        details = app.screen.query_one(ModelDetails)
        await press(pilot, "down")  # broken.cllm
        await wait_for(pilot, lambda: "Cannot be loaded" in details.plain, what="the error")
        assert "broken.cllm" in details.plain
        await press(pilot, "down")  # tiny.cllm
        await wait_for(pilot, lambda: "tiny.cllm" in details.plain and "Config" in details.plain, what="details")
        assert "1 layers · 2 heads · width 16 · ctx 16" in details.plain
        assert "Steps: 20" in details.plain and "with optimizer state" in details.plain
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.loaded is not None, what="the load")
        assert app.loaded.path == real_model and app.loaded.model.n_params == app.loaded.info.n_params


async def test_real_fine_tune_records_its_parent(real, real_model):
    from cllm.tui.screens.choice_dialog import ChoiceDialog

    app = make_app(real, engine=Engine(), model_path=real_model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "train")
        await fill_form(pilot, real["corpus"], steps=6, eval=3)
        await press(pilot, "f5")
        await wait_screen(pilot, ChoiceDialog)
        await press(pilot, "f")
        await wait_screen(pilot, NameDialog, selector="Input")
        await press(pilot, "ctrl+u", *"tuned", "enter")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, timeout=60,
                       what="the fine-tune")
        run = read_info(real["models"] / "tuned.cllm").run
        assert run.parent is not None
        assert run.step == 6 and run.parent.name == "tiny.cllm" and run.parent.step == 20
        assert run.dropout_rates == (0.1, 0.1, 0.1)  # the parent's, the form's Dropout field untouched


async def test_real_generation_ends_before_the_stop_text(real, real_model):
    """The stop field reaches the engine (SampleConfig.stop): the same seeded generation
    with a stop text ends just before the text's first appearance."""
    app = make_app(real, engine=Engine(), model_path=real_model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        screen = app.screen
        await fill(pilot, "#max-tokens", "60")
        await fill(pilot, "#seed", "3")
        await fill(pilot, "#prompt", "def ")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: screen.query(Sample) and not screen._generating, timeout=120,
                       what="generation (its kernels may compile first)")
        whole = screen.query_one(Sample).output
        stop = next(ch for ch in whole[5:] if ch.strip() and ch != "\\")  # appears, and not at once
        await fill(pilot, "#stop", stop)
        await fill(pilot, "#prompt", "def ")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: len(screen.query(Sample)) == 2 and not screen._generating, timeout=120,
                       what="generation (its kernels may compile first)")
        assert screen.query(Sample)[1].output == whole[:whole.index(stop)]


async def test_real_generation_of_several_samples_with_int8_weights(real, real_model):
    """The samples and weights settings reach the engine: two samples at once with int8
    weights show as two outputs, each the text core.sampler.generate gives alone with its
    seed (7, then 8) and int8 weights."""
    from textual.widgets import Select

    from cllm.core.config import SampleConfig
    from cllm.core.model_file import load_model
    from cllm.core.sampler import generate

    app = make_app(real, engine=Engine(), model_path=real_model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        screen = app.screen
        await fill(pilot, "#max-tokens", "30")
        await fill(pilot, "#seed", "7")
        await fill(pilot, "#samples", "2")
        screen.query_one("#weights", Select).value = "int8"
        await fill(pilot, "#prompt", "def ")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: len(screen.query(Sample)) == 2 and not screen._generating, timeout=120,
                       what="generation (its kernels may compile first)")
        outputs = [s.output for s in screen.query(Sample)]
        assert "sample 2 of 2" in screen.query(Sample)[1].note
    model = load_model(real_model).model
    for n, output in enumerate(outputs):
        config = SampleConfig(max_tokens=30, temperature=0.8, top_p=0.95, seed=7 + n, weights="int8")
        assert output == "".join(generate(model, "def ", config))
