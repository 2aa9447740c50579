"""The Train screen with a fake trainer: runs, pause/resume/stop, the replace dialog,
NaN, form validation and quitting while training. Every flow is driven by keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from textual.widgets import Button, Input, ProgressBar, Select, Static

from cllm.tui.screens.choice_dialog import ChoiceDialog
from cllm.tui.screens.confirm_dialog import ConfirmDialog
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.screens.train import TrainScreen
from cllm.tui.widgets.core_bars import CoreBars
from cllm.tui.widgets.loss_chart import LossChart
from tests.tui_helpers import (
    FakeEngine,
    fill,
    fill_form,
    goto,
    make_app,
    make_model_file,
    model_step,
    press,
    settle,
    short,
    start_new_run,
    wait_for,
    wait_screen,
)


async def test_run_shows_bars_chart_and_writes_the_model(tui_home):
    engine = FakeEngine(step_time=0.012)
    app = make_app(tui_home, engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await start_new_run(pilot, tui_home, "first", steps=120, eval=20)
        await wait_for(pilot, lambda: app.training is not None and app.training.trainer is not None)
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        bars = screen.query_one(CoreBars)
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: len(bars.query(ProgressBar)) == 2, what="one bar per core")
        seen_progress: set = set()
        seen_rates, chart_draws = set(), set()
        while app.run_active:
            seen_progress.update(int(b.progress) for b in bars.query(ProgressBar))
            seen_rates.add(tuple(np.round(bars.rates, 1)))
            chart_draws.add(chart._drawn)
            await pilot.pause(0.05)
        # per-core bars were fed real counters and showed a rate; the chart redrew as it went
        assert any(p > 0 for p in seen_progress)
        assert any(any(r > 0 for r in rates) for rates in seen_rates)
        assert len(chart_draws) >= 2
        await wait_for(pilot, lambda: app.loaded is not None and app.loaded.info is not None, what="reload")
        path = tui_home["models"] / "first.cllm"
        assert path.exists() and model_step(path) == 120
        assert app.loaded.path == path
        assert "first" in app.model_summary and "120 steps" in app.model_summary
        assert screen.query_one("#overall", ProgressBar).progress == 120
        assert len(app.training.val_steps) == 6 and chart._drawn[1] == 6
        assert app.settings.last_model == str(path.resolve())  # remembered for next time
        assert any("Training finished" in n for n in app.notices)


async def test_pause_resume_and_stop_keep_what_was_learned(tui_home):
    engine = FakeEngine(step_time=0.004)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "long", steps=100000, eval=1000)
        await wait_for(pilot, lambda: engine.trainers and engine.trainers[0].step > 5, what="steps")
        trainer = engine.trainers[0]
        await press(pilot, "f6")
        await wait_for(pilot, lambda: trainer.paused, what="the pause")
        await pilot.pause(0.05)
        held = trainer.step
        await pilot.pause(0.3)
        assert trainer.step == held  # nothing moves while paused
        assert "PAUSED" in str(app.screen.query_one("#run-status", Static).render())
        assert str(app.screen.query_one("#pause", Button).label) == "Resume"
        await press(pilot, "f6")
        await wait_for(pilot, lambda: not trainer.paused, what="the resume")
        await wait_for(pilot, lambda: trainer.step > held + 5, what="resumed steps")
        await press(pilot, "f7")
        await wait_for(pilot, lambda: not app.run_active, what="the run to stop")
        assert app.training.done.reason == "stopped"
        path = tui_home["models"] / "long.cllm"
        assert path.exists() and model_step(path) == trainer.step
        await wait_for(pilot, lambda: any("Training stopped at step" in n for n in app.notices), what="the stop notice")
        assert not app.screen.query_one("#start", Button).disabled


# -- the replace dialog -------------------------------------------------------------
async def open_replace_dialog(pilot, ws, **fields) -> None:
    await goto(pilot, "train")
    await fill_form(pilot, ws["corpus"], **fields)
    await press(pilot, "f5")
    await wait_screen(pilot, ChoiceDialog)


def loaded_app(ws, engine=None):
    base = make_model_file(ws["models"] / "base.cllm", steps=40)
    app = make_app(ws, engine=engine or FakeEngine(step_time=0.002), model_path=base)
    return app, base


async def test_cancel_leaves_the_file_byte_identical(tui_home):
    app, base = loaded_app(tui_home)
    before = base.read_bytes()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await open_replace_dialog(pilot, tui_home, steps=30)
        await press(pilot, "escape")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TrainScreen)
        assert app.training is None
        assert any("Cancelled" in n for n in app.notices)
        # the overwrite path's own cancel: confirmation refused with escape
        await press(pilot, "f5")
        await wait_screen(pilot, ChoiceDialog)
        await press(pilot, "o")
        await wait_screen(pilot, ConfirmDialog)
        assert "Lost for good: its 40 steps" in str(app.screen.query_one(".dialog-message", Static).render())
        await press(pilot, "escape")
        await pilot.pause(0.2)
        assert app.training is None
    assert base.read_bytes() == before
    assert sorted(p.name for p in tui_home["models"].iterdir()) == ["base.cllm"]


async def test_create_new_refuses_existing_names_and_writes_a_new_file(tui_home):
    app, base = loaded_app(tui_home)
    before = base.read_bytes()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await open_replace_dialog(pilot, tui_home, steps=30, eval=10)
        await press(pilot, "n")
        await wait_screen(pilot, NameDialog)
        await press(pilot, "ctrl+u", *"base")
        dialog = app.screen
        assert "already exists" in str(dialog.query_one("#name-error", Static).render())
        assert dialog.query_one("#create", Button).disabled
        await press(pilot, "enter")  # refused: the dialog stays
        assert app.screen is dialog
        await press(pilot, "ctrl+u", *"fresh", "enter")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run")
    fresh = tui_home["models"] / "fresh.cllm"
    assert fresh.exists() and model_step(fresh) == 30
    assert base.read_bytes() == before


async def test_overwrite_replaces_the_file_after_confirmation(tui_home):
    app, base = loaded_app(tui_home)
    before = base.read_bytes()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await open_replace_dialog(pilot, tui_home, steps=25, eval=10)
        await press(pilot, "o")
        await wait_screen(pilot, ConfirmDialog)
        await press(pilot, "y")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run")
        await wait_for(pilot, lambda: app.loaded.info is not None and app.loaded.steps == 25, what="reload")
    assert base.read_bytes() != before
    assert model_step(base) == 25  # a new model, not 40 + 25
    assert sorted(p.name for p in tui_home["models"].iterdir()) == ["base.cllm"]


async def test_continue_training_resumes_the_loaded_model(tui_home):
    app, base = loaded_app(tui_home)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await open_replace_dialog(pilot, tui_home, steps=30, eval=10)
        label = str(app.screen.query_one("#choice-continue", Button).label)
        assert "40 → 70 steps" in label
        await press(pilot, "c")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run")
        run = app.training
        assert run.plan.action == "continue"
        assert run.loss_steps == list(range(1, 71))  # the saved curve, then the new steps
        assert run.val_steps[0] == 40
    assert model_step(base) == 70


async def test_continue_is_refused_when_the_corpus_does_not_fit(tui_home):
    other = tui_home["root"] / "other.txt"
    other.write_text("ZZZ QQQ 123 " * 50)  # characters the model has never seen
    app, base = loaded_app(tui_home)
    before = base.read_bytes()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        await goto(pilot, "train")
        await fill(pilot, "#corpus", short(other))
        await press(pilot, "f5")
        await wait_screen(pilot, ChoiceDialog)
        dialog = app.screen
        assert dialog.query_one("#choice-continue", Button).disabled
        notes = [str(note.render()) for note in dialog.query(".dialog-note").results(Static)]
        assert any("cannot continue" in note for note in notes)
        await press(pilot, "c")  # ignored
        assert app.screen is dialog
        await press(pilot, "escape")
    assert base.read_bytes() == before


# -- failures and validation --------------------------------------------------------
async def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tui_home):
    engine = FakeEngine(step_time=0.002, nan_at=35)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "unstable", steps=100, eval=10)
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the run")
        assert app.training.done.reason == "nan"
        await wait_for(pilot, lambda: any("nan" in n.lower() and "last good checkpoint" in n.lower()
                                          for n in app.notices), what="the NaN notice")
        path = tui_home["models"] / "unstable.cllm"
        assert path.exists() and model_step(path) == 30  # the checkpoint before the NaN
        await wait_for(pilot, lambda: app.loaded is not None and app.loaded.info is not None, what="reload")
        assert app.loaded.steps == 30
        await goto(pilot, "generate")  # the app goes on: keys still switch screens


async def test_engine_error_is_a_notification_not_a_traceback(tui_home):
    empty = tui_home["root"] / "empty.txt"
    empty.write_text("")
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        await fill(pilot, "#corpus", short(empty))
        await press(pilot, "f5")
        await wait_screen(pilot, NameDialog)
        await press(pilot, "enter")
        await wait_for(pilot, lambda: app.training is not None and not app.run_active, what="the failure")
        await wait_for(pilot, lambda: any("empty.txt: the file is empty" in n for n in app.notices),
                       what="the CorpusError message")
        assert not any("Traceback" in n for n in app.notices)
        assert not list(tui_home["models"].iterdir())
        assert not app.screen.query_one("#start", Button).disabled


async def test_form_validates_as_you_type(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        screen = app.screen
        await fill(pilot, "#heads", "3")
        heads, width = screen.query_one("#heads", Input), screen.query_one("#width", Input)
        errors = str(screen.query_one("#form-errors", Static).render())
        assert "heads must divide width: 64 is not a multiple of 3" in errors
        assert heads.has_class("-invalid") and width.has_class("-invalid")
        await fill(pilot, "#width", "66")  # fixing the partner clears both
        assert not heads.has_class("-invalid") and not width.has_class("-invalid")
        await fill(pilot, "#lr", "5")
        assert "learning rate must be between 0 and 1" in str(screen.query_one("#form-errors", Static).render())
        await fill(pilot, "#dropout", "1")
        assert "dropout must be in [0, 1), got 1.0" in str(screen.query_one("#form-errors", Static).render())
        await fill(pilot, "#corpus", "/no/such/file.txt")
        assert "no such file" in str(screen.query_one("#form-errors", Static).render())
        await press(pilot, "f5")  # refused, with the reasons
        await pilot.pause(0.1)
        assert isinstance(app.screen, TrainScreen) and app.training is None
        assert any("learning rate" in n for n in app.notices)


async def test_browse_picks_the_corpus_from_a_file_browser(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        await fill(pilot, "#corpus", "./")
        await press(pilot, "f8")
        from cllm.tui.screens.file_browser import FileBrowser

        await wait_for(pilot, lambda: isinstance(app.screen, FileBrowser) and app.screen.query("#browse-path"))
        await fill(pilot, "#browse-path", short(tui_home["corpus"]))
        await press(pilot, "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen)
                       and app.screen.query_one("#corpus", Input).value == "tiny.txt", what="the chosen file")


async def test_quit_while_training_asks_then_stops_and_saves(tui_home):
    engine = FakeEngine(step_time=0.004)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "bye", steps=100000, eval=1000)
        await wait_for(pilot, lambda: engine.trainers and engine.trainers[0].step > 3, what="steps")
        await press(pilot, "ctrl+q")
        await wait_screen(pilot, ChoiceDialog)
        await press(pilot, "k")  # keep training
        await pilot.pause(0.1)
        assert app.is_running and app.run_active
        await press(pilot, "ctrl+q")
        await wait_screen(pilot, ChoiceDialog)
        await press(pilot, "s")  # stop, save, quit
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.training.done.reason == "stopped"
    path = tui_home["models"] / "bye.cllm"
    assert path.exists() and model_step(path) == engine.trainers[0].step
    assert math.isfinite(float(app.training.loss_values[-1]))


async def test_a_recipe_fills_the_form_and_typed_fields_override_it(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        screen = app.screen
        recipe = screen.query_one("#recipe", Select)
        await settle(pilot)
        recipe.focus()
        await wait_for(pilot, lambda: recipe.has_focus, what="focus on the recipe")
        await press(pilot, "enter", "down", "down", "enter")  # none, shakespeare-char-cpu, shakespeare-char
        await wait_for(pilot, lambda: recipe.value == "shakespeare-char", what="the recipe chosen")
        width = screen.query_one("#width", Input)  # the form is filled when the select's Changed message comes
        await wait_for(pilot, lambda: width.value == "384", what="the recipe's settings in the form")
        values = {i: screen.query_one(f"#{i}", Input).value for i in ("layers", "heads", "width", "ctx", "batch",
                                                                      "steps", "lr", "dropout")}
        assert values == {"layers": "6", "heads": "6", "width": "384", "ctx": "256", "batch": "64",
                          "steps": "5000", "lr": "0.001", "dropout": "0.2"}
        await fill(pilot, "#batch", "8")
        config = screen.form.plan().train_config
        assert (config.batch, config.dropout, config.final_lr, config.warmup_steps, config.steps) == (8, 0.2, 1e-4,
                                                                                                     100, 5000)


@pytest.mark.parametrize("action", ["continue", "fine-tune"])
@pytest.mark.parametrize("typed", [None, "0", "0.1"])
async def test_continue_and_fine_tune_keep_the_models_dropout_unless_the_field_is_changed(tui_home, action, typed):
    """`cllm train --resume/--init`'s rule: the model's own rate unless one is given."""
    base = make_model_file(tui_home["models"] / "base.cllm", steps=40, dropout=0.2)
    engine = FakeEngine(step_time=0.002)
    app = make_app(tui_home, engine=engine, model_path=base)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.loaded is not None, what="autoload")
        fields = {"steps": 10, "eval": 5} | ({} if typed is None else {"dropout": typed})
        await open_replace_dialog(pilot, tui_home, **fields)
        if action == "continue":
            await press(pilot, "c")
        else:
            await press(pilot, "f")
            await wait_screen(pilot, NameDialog, selector="Input")
            await press(pilot, "ctrl+u", *"tuned", "enter")
        await wait_for(pilot, lambda: engine.trainers and not app.run_active, what="the run")
        kept = "dropout 0.2: base.cllm's own (type a rate in the form's Dropout field to change it)"
        assert engine.trainers[0].config.dropout == (0.2 if typed is None else float(typed))
        assert (kept in app.training.log) == (typed is None)
