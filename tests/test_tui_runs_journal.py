"""The app's runs in the journal and the lock: a run the app trains is recorded (with
its settings and every step), and a run into a file another live run writes is refused
with who holds it."""

from __future__ import annotations

from textual.widgets import Input

from cllm.core.file_lock import LockHolder, lock_model_file
from cllm.core.journal import Journal
from cllm.tui.engine import RunStatus
from tests.tui_helpers import FakeEngine, fill, goto, make_app, press, start_new_run, wait_for


async def test_a_run_in_the_app_is_journaled_with_its_settings_and_steps(tui_home):
    app = make_app(tui_home, engine=FakeEngine(step_time=0.002))
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "journaled", steps=40, eval=20)
        await wait_for(pilot, lambda: app.training is not None and app.training.done is not None, what="the end")
        await wait_for(pilot, lambda: app.training.finished.is_set(), what="the session closed")
    journal = Journal()
    try:
        (row,) = journal.runs()
        steps, evals = journal.curve(row.id)
    finally:
        journal.close()
    assert (row.name, row.origin, row.state, row.step, row.steps) == ("journaled", "tui", "finished", 40, 40)
    assert row.file == str((tui_home["models"] / "journaled.cllm").absolute())
    assert row.model["n_layer"] >= 1 and row.training["steps"] == 40
    assert [s for s, _ in steps] == list(range(1, 41)) and [s for s, _ in evals] == [20, 40]


async def test_a_run_into_a_file_another_run_writes_is_refused_naming_it(tui_home):
    target = tui_home["models"] / "busy.cllm"
    with lock_model_file(target, LockHolder("0badc0de", 4242, "elsewhere", "2026-01-01 00:00:00")):
        app = make_app(tui_home, engine=FakeEngine(step_time=0.002))
        async with app.run_test() as pilot:
            await start_new_run(pilot, tui_home, "busy", steps=40, eval=20)
            await wait_for(pilot, lambda: any("0badc0de" in n for n in app.notices), what="the refusal")
            await wait_for(pilot, lambda: not app.run_active, what="no run")
    assert not target.exists()
    assert any("pid 4242 on elsewhere" in n for n in app.notices)


async def test_detach_stops_the_run_at_a_step_saves_it_and_leaves_the_app(tui_home):
    engine = FakeEngine(step_time=0.004)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "detached", steps=100000, eval=1000)
        await wait_for(pilot, lambda: engine.trainers and engine.trainers[0].step > 5, what="steps")
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: app.training.finished.is_set(), what="the save")
    run = app.training
    assert run.detach_requested and run.done.reason == "stopped" and run.done.saved_to == run.out_path
    journal = Journal()
    try:
        (row,) = journal.runs()
    finally:
        journal.close()
    # the record stays open for the process that continues the run (tui/detach.py)
    assert row.state == "running" and row.message == "handed over to a detached process"
    assert row.step == run.done.step


async def test_ctrl_d_is_the_inputs_delete_right_while_no_run_goes_on(tui_home):
    app = make_app(tui_home, engine=FakeEngine())
    async with app.run_test() as pilot:
        await goto(pilot, "train")
        await fill(pilot, "#corpus", "abcd")
        await press(pilot, "home", "ctrl+d")
        await wait_for(pilot, lambda: app.screen.query_one("#corpus", Input).value == "bcd", what="delete right")
        assert app.is_running


async def test_an_unusable_journal_is_reported_once_and_the_run_goes_on(tui_home, cllm_home):
    cllm_home.mkdir()
    (cllm_home / "journal.sqlite3").write_bytes(b"not a database" * 200)
    app = make_app(tui_home, engine=FakeEngine(step_time=0.002))
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "unjournaled", steps=30, eval=10)
        await wait_for(pilot, lambda: app.training is not None and app.training.finished.is_set(), what="the end")
        await wait_for(pilot, lambda: app.training.done is not None, what="done")
    assert app.training.done.step == 30 and (tui_home["models"] / "unjournaled.cllm").exists()
    warnings = [n for n in app.notices if "not journaled" in n]
    assert len(warnings) == 1 and "journal.sqlite3" in warnings[0]


async def test_requests_through_the_journal_pause_and_stop_the_apps_run_as_its_keys_do(tui_home):
    engine = FakeEngine(step_time=0.004)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "asked", steps=100000, eval=1000)
        await wait_for(pilot, lambda: engine.trainers and engine.trainers[0].step > 5, what="steps")
        journal = Journal()
        try:
            (row,) = journal.runs()
            journal.request(row.id, "pause")  # as `cllm runs pause` does
            await wait_for(pilot, lambda: app.run_status is RunStatus.PAUSED, what="paused")
            assert engine.trainers[0].paused
            journal.request(row.id, "stop")
            await wait_for(pilot, lambda: app.training.finished.is_set(), what="the stop")
            await wait_for(pilot, lambda: journal.run(row.id).state == "stopped", what="stopped in the journal")
        finally:
            journal.close()
    assert app.training.done.reason == "stopped"
