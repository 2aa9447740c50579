"""Nothing lost in the TUI: SIGTERM and SIGHUP stop the run and save it before the app
exits (signals sent to this very process, through the handler the app installs); a
failed final save offers Save as; the core bars follow an evaluation."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from cllm.tui.__main__ import wait_for_training
from cllm.tui.engine import Engine
from cllm.tui.screens.save_as_dialog import SaveAsDialog
from cllm.tui.widgets.core_bars import CoreBars
from tests.tui_helpers import FakeEngine, fill, goto, make_app, model_step, press, start_new_run, wait_for, wait_screen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
async def test_a_signal_stops_the_run_saves_it_and_exits(tui_home, sig):
    engine = FakeEngine(step_time=0.004)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "long", steps=100000, eval=1000)
        await wait_for(pilot, lambda: engine.trainers and engine.trainers[0].step > 20, what="steps")
        os.kill(os.getpid(), sig)  # as the system or the terminal would
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    note = wait_for_training(app)  # what main() does once the screen is gone
    trainer = engine.trainers[0]
    path = tui_home["models"] / "long.cllm"
    name = signal.Signals(sig).name
    assert app.training.done.reason == "stopped" and trainer.stop_reason == name
    assert path.exists() and model_step(path) == trainer.step > 20
    assert f"stopped ({name}) at step {trainer.step}" in note and str(path) in note


async def test_a_signal_while_generating_just_stops(tui_home):
    from tests.test_tui_generate import app_with_model

    engine = FakeEngine(token_time=0.01)
    app = app_with_model(tui_home, engine)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await fill(pilot, "#max-tokens", "100000")
        await fill(pilot, "#prompt", "go")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.screen._generating, what="generation")
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert wait_for_training(app) == ""


@pytest.mark.engine
async def test_a_failed_final_save_offers_save_as_with_the_real_engine(tui_home, monkeypatch):
    from cllm.core import trainer as trainer_module
    from cllm.core.errors import ModelFileError
    from cllm.core.model_file import load_model

    tui_home["corpus"].write_text("def add(a, b):\n    return a + b\n\n" * 120)
    target = tui_home["models"] / "full.cllm"
    real_save = trainer_module.save_model

    def disk_full_for_the_target(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(target):
            raise ModelFileError(f"{path}: cannot save: No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_model", disk_full_for_the_target)
    app = make_app(tui_home, engine=Engine())
    async with app.run_test(size=(100, 30)) as pilot:
        await start_new_run(pilot, tui_home, "full", layers=1, heads=2, width=16, ctx=16, batch=4, steps=12, eval=6)
        await wait_screen(pilot, SaveAsDialog, selector="Input", timeout=120)
        dialog = app.screen
        assert "No space left on device" in dialog.problem and dialog.fallback is not None
        assert load_model(dialog.fallback).info.run.step == 12  # nothing lost meanwhile
        assert not target.exists()
        chosen = tui_home["models"] / "elsewhere.cllm"
        await fill(pilot, "#save-as-path", str(chosen))
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.loaded is not None and app.loaded.path == chosen, what="the Save as")
        assert load_model(chosen).info.run.step == 12


class EvaluatingTrainer:
    """A trainer caught in the middle of an evaluation."""

    n_threads = 2
    phase = "eval"
    step = 40
    paused = False
    phase_totals = np.array([30, 30])
    shard_progress = np.array([12, 9])


async def test_the_core_bars_follow_an_evaluation(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        bars = app.screen.query_one(CoreBars)
        trainer = EvaluatingTrainer()
        await bars.attach(trainer)
        bars.poll()
        trainer.shard_progress = np.array([20, 18])
        bars.poll()
        first = bars.query_one("#core-bar-0")
        assert first.total == 30 and first.progress == 20
        assert str(bars.query_one("#core-rate-1").render()).startswith("eval")
        assert bars.rates[1] > 0
