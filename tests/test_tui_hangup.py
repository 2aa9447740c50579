"""A real `cllm-tui` whose terminal goes away mid-run (an SSH link drops, `tmux
kill-server`): the app exits within seconds and leaves nothing of itself behind; the run
is saved at the step boundary and goes on, in a detached `cllm train --resume` under the
same journal record, to its last step."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cllm.core.journal import Journal
from cllm.core.model_file import read_info
from tests.pty_app import PtyApp

pytestmark = pytest.mark.engine


def test_a_hung_up_terminal_ends_the_app_within_5_s_and_the_run_goes_on_to_its_end(tmp_path, cllm_home):
    models = tmp_path / "models"
    models.mkdir()
    app = PtyApp(tmp_path, {"CLLM_CONFIG_DIR": str(tmp_path / "config"), "CLLM_HOME": str(cllm_home)})
    try:
        app.wait_for(b"Type a prompt", timeout=60)
        app.press(b"\x0e")  # ctrl+n: the quick start
        app.wait_for(b"ETA", timeout=120)
        app.read(1.0)
        app.hang_up()
        seconds = app.wait_exit(5)
        assert seconds is not None, "cllm-tui is still there 5 s after its terminal went away"
    finally:
        app.kill()
    (saved,) = models.glob("quickstart*.cllm")
    handed_over_at = read_info(saved).run.step
    assert handed_over_at > 0
    journal = Journal()
    try:
        (row,) = journal.runs()
        assert row.state == "running" and row.pid != app.app_pid, row  # another process goes on with it
        try:
            deadline = time.monotonic() + 300
            while row.live and time.monotonic() < deadline:
                time.sleep(0.5)
                row = journal.run(row.id)
        finally:
            if row.live and row.pid:
                os.kill(row.pid, signal.SIGKILL)
    finally:
        journal.close()
    assert row.state == "finished", row
    assert read_info(saved).run.step == row.steps == 1500 > handed_over_at
