"""The Runs screen with the real journal and real `cllm train` processes: runs newest
first, several selected overlay their curves with their settings beside; at start-up the
app follows a run another process trains, and takes it over."""

from __future__ import annotations

import subprocess
import sys

from textual.widgets import DataTable, Static

from cllm.core.journal import Journal
from cllm.core.model_file import read_info
from cllm.tui.screens.runs import RunsScreen
from cllm.tui.screens.train import TrainScreen
from cllm.tui.widgets.loss_chart import LossChart
from tests.tui_helpers import make_app, press, wait_for

SHAPE = ["--layers", "1", "--heads", "2", "--ctx", "16", "--batch", "4", "--threads", "1", "--eval-interval", "5"]


def train(*args: object) -> str:
    result = subprocess.run([sys.executable, "-m", "cllm.core.cli", "train", *map(str, args), *SHAPE],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_the_runs_screen_lists_runs_newest_first_and_overlays_the_selected(tui_home):
    corpus = tui_home["corpus"]
    train(corpus, "-o", tui_home["models"] / "narrow.cllm", "--embd", "16", "--steps", "10")
    train(corpus, "-o", tui_home["models"] / "wide.cllm", "--embd", "32", "--steps", "15")
    app = make_app(tui_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await press(pilot, "ctrl+r")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="two runs")
        assert [r.name for r in screen.rows] == ["wide", "narrow"]
        assert [str(c) for c in table.get_row_at(0)[1:4]] == ["wide", "finished", "15/15"]
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: chart._labels == ["wide train", "wide val"], what="the highlighted run")
        await press(pilot, "space", "down", "space")
        await wait_for(pilot, lambda: len(chart._labels) == 4, what="both runs' curves")
        assert chart._labels == ["wide train", "wide val", "narrow train", "narrow val"]
        assert [len(d.x) for d in chart._datasets] == [15, 3, 10, 2]
        settings = str(screen.query_one("#runs-settings", Static).render())
        assert "wide (" in settings and "width 32" in settings and "narrow (" in settings and "width 16" in settings


async def test_the_app_opens_following_a_background_run_and_takes_it_over(tui_home):
    model = tui_home["models"] / "bg.cllm"
    started = subprocess.run([sys.executable, "-m", "cllm.core.cli", "train", str(tui_home["corpus"]), "-o",
                              str(model), "--embd", "16", "--steps", "1000000", "--checkpoint-interval", "50",
                              "--background", *SHAPE], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[-1]
    try:
        app = make_app(tui_home)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, TrainScreen), timeout=30,
                           what="the Train screen at start-up")
            assert any("1 run is going (newest: bg" in n for n in app.notices)
            screen = app.screen
            await wait_for(pilot, lambda: screen.followed is not None and screen.followed.step > 0, timeout=60,
                           what="the run followed")
            first = screen.followed.step
            await wait_for(pilot, lambda: screen.followed.step > first, timeout=60, what="the run followed live")
            status = str(screen.query_one("#run-status", Static).render())
            assert f"Following bg (run {run_id}" in status and "tokens/s" in status and "ETA" in status
            assert screen.query_one(LossChart)._labels[0] == "train"
            await press(pilot, "f9")
            await wait_for(pilot, lambda: app.training is not None and app.training.trainer is not None,
                           timeout=120, what="the run continued here")
            taken_at = app.training.trainer.step
            await wait_for(pilot, lambda: app.training.trainer.step > taken_at + 3, timeout=60, what="steps here")
            await press(pilot, "f7")
            await wait_for(pilot, lambda: app.training.finished.is_set(), timeout=60, what="the stop")
        journal = Journal()
        try:
            row = journal.run(run_id)
        finally:
            journal.close()
        assert row.origin == "tui" and row.state == "stopped" and row.step == read_info(model).run.step > taken_at
    finally:
        subprocess.run([sys.executable, "-m", "cllm.core.cli", "runs", "stop", run_id, "--wait", "30"],
                       capture_output=True, timeout=60)
