"""A real `cllm-tui` whose terminal goes away mid-run (an SSH link drops, `tmux
kill-server`): the app exits within seconds, leaves no process behind, and the run is
saved."""

from __future__ import annotations

import pytest

from cllm.core.model_file import read_info
from tests.pty_app import PtyApp

pytestmark = pytest.mark.engine


@pytest.fixture
def app_home(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    env = {"CLLM_CONFIG_DIR": str(tmp_path / "config"), "CLLM_HOME": str(tmp_path / "home")}
    return tmp_path, models, env


def test_a_hung_up_terminal_ends_the_app_within_5_s_and_the_run_is_saved(app_home):
    root, models, env = app_home
    app = PtyApp(root, env)
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
    saved = list(models.glob("quickstart*.cllm"))
    assert len(saved) == 1 and read_info(saved[0]).run.step > 0
