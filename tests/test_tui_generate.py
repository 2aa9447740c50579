"""The Generate screen with a fake sampler: streaming, Escape, copy, the empty state,
and generating while a run is training."""

from __future__ import annotations

import time

from textual.widgets import Static

from cllm.tui.screens.generate import GenerateScreen
from cllm.tui.widgets.transcript import Sample
from tests.tui_helpers import (
    FakeEngine,
    fill,
    goto,
    make_app,
    make_model_file,
    press,
    start_new_run,
    wait_for,
)


def app_with_model(ws, engine=None):
    path = make_model_file(ws["models"] / "base.cllm")
    return make_app(ws, engine=engine or FakeEngine(token_time=0.003), model_path=path)


async def test_generation_streams_and_escape_stops_at_once(tui_home):
    app = app_with_model(tui_home, FakeEngine(token_time=0.005))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        screen = app.screen
        assert isinstance(screen, GenerateScreen)
        await fill(pilot, "#max-tokens", "5000")
        await fill(pilot, "#prompt", "Hello")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: screen.query(Sample) and len(screen.query_one(Sample).output) > 20,
                       what="streamed text")
        sample = screen.query_one(Sample)
        first = len(sample.output)
        await wait_for(pilot, lambda: len(sample.output) > first, what="more text")  # it streams
        pressed = time.monotonic()
        await press(pilot, "escape")
        await wait_for(pilot, lambda: not screen._generating, what="the stop")
        assert time.monotonic() - pressed < 0.5  # stated bound: Escape stops within 0.5 s
        stopped_at = len(sample.output)
        await pilot.pause(0.1)
        assert len(sample.output) == stopped_at
        assert sample.prompt == "Hello"
        assert "stopped" in sample.status and "tok/s" in sample.status
        assert sample.output.count(" ") < 5000  # far from max tokens: it really stopped
        # a second prompt: the first stays visible above it
        await fill(pilot, "#max-tokens", "12")
        await fill(pilot, "#prompt", "Again")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: not screen._generating and len(screen.query(Sample)) == 2, what="second")
        samples = list(screen.query(Sample))
        assert [s.prompt for s in samples] == ["Hello", "Again"]
        assert samples[1].output.split() == "lorem ipsum dolor sit amet lorem ipsum dolor sit amet lorem ipsum".split()
        assert "done · 12 tokens" in samples[1].status
        await press(pilot, "f8")
        assert app.clipboard == "Again" + samples[1].output


async def test_bad_settings_are_explained_and_nothing_runs(tui_home):
    app = app_with_model(tui_home)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await fill(pilot, "#top-p", "1.5")
        assert "top-p must be in (0, 1], got 1.5" in str(app.screen.query_one("#gen-status", Static).render())
        await fill(pilot, "#prompt", "x")
        await press(pilot, "enter")
        assert not app.screen.query(Sample)
        assert any("top-p" in n for n in app.notices)


async def test_without_a_model_it_offers_the_quick_start(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await pilot.pause()
        screen = app.screen
        welcome = str(screen.query_one("#welcome", Static).render())
        assert "No model loaded" in welcome and "Quick start" in welcome
        keys = {b.binding.action: b for b in screen.active_bindings.values()}
        assert "app.quick_start" in keys and keys["app.quick_start"].enabled
        await fill(pilot, "#prompt", "hi")
        await press(pilot, "enter")
        assert not screen.query(Sample)
        assert any("No model loaded" in n for n in app.notices)


async def test_quick_start_trains_then_generates(tui_home):
    engine = FakeEngine(step_time=0.0005, token_time=0.0005)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await pilot.pause()
        await press(pilot, "ctrl+n")
        await wait_for(pilot, lambda: app.training is not None, what="the quick start run")
        run = app.training
        assert run.plan.quick_start and run.plan.corpus == "python-docs"
        assert run.plan.model_config == {"n_layer": 2, "n_head": 2, "n_embd": 64, "ctx": 64}
        await wait_for(pilot, lambda: not app.run_active, timeout=30, what="the run")
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen) and app.screen.query(Sample),
                       what="the first sample")
        assert (tui_home["models"] / "quickstart.cllm").exists()
        await wait_for(pilot, lambda: not app.screen._generating, what="generation")
        assert app.screen.query_one(Sample).output


async def test_generating_while_training_uses_the_last_saved_weights(tui_home):
    engine = FakeEngine(step_time=0.01, token_time=0.001)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "live", steps=100000, eval=25)
        await wait_for(pilot, lambda: engine.trainers, what="the trainer")
        trainer = engine.trainers[0]
        await press(pilot, "f6")  # hold the run before its first checkpoint
        assert trainer.step < 25
        await goto(pilot, "generate")
        screen = app.screen
        await fill(pilot, "#max-tokens", "5")
        # before the first checkpoint: refused, with the reason
        await fill(pilot, "#prompt", "early")
        await press(pilot, "enter")
        assert not screen.query(Sample)
        assert any("has not been saved yet" in n for n in app.notices)
        # after it: generated from the file, and the run goes on
        await goto(pilot, "train")
        await press(pilot, "f6")
        await goto(pilot, "generate")
        await wait_for(pilot, lambda: app.training.checkpoints > 0, what="a checkpoint")
        await fill(pilot, "#prompt", "later")
        await press(pilot, "enter")
        await wait_for(pilot, lambda: screen.query(Sample) and not screen._generating, what="generation")
        sample = screen.query_one(Sample)
        assert "last saved weights" in sample.note and "live.cllm" in sample.note
        assert sample.output
        step = trainer.step
        await wait_for(pilot, lambda: trainer.step > step, what="training to go on")
        assert app.run_active
        app.training.stop()
        await wait_for(pilot, lambda: not app.run_active, what="the stop")
