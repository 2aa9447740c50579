"""Signals sent to a real `cllm train` process: it stops at a step boundary, saves a
resumable run, says where and exits 0; a second signal during the save changes nothing;
a closed terminal (SIGHUP, writes failing) still gets the run saved."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cllm.core.model_file import load_model, read_info

SHAPE = ["--layers", "1", "--heads", "2", "--embd", "32", "--ctx", "32", "--batch", "8", "--threads", "2",
         "--eval-interval", "0", "--checkpoint-interval", "5"]


def start_training(tmp_path: Path, text: str, model: Path, **popen) -> subprocess.Popen:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    command = [sys.executable, "-m", "cllm.core.cli", "train", str(corpus), "-o", str(model), *SHAPE,
               "--steps", "1000000"]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    # Output buffered, as from a user's shell, whatever the test runner sets: with a buffer,
    # writes to a hung-up terminal fail at exit too, not only as they happen.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen(command, text=True, env=env, **popen)


def wait_for_training(process: subprocess.Popen, model: Path, timeout: float = 120) -> None:
    """Until the first checkpoint (step 5) is on disk: training is under way."""
    deadline = time.monotonic() + timeout
    while not model.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_stops_saves_and_exits_0(tmp_path, small_text, sig):
    model = tmp_path / "m.cllm"
    process = start_training(tmp_path, small_text, model)
    wait_for_training(process, model)
    time.sleep(0.3)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    name = signal.Signals(sig).name
    assert f"stopped ({name}) at step" in err and f"saved to {model}" in err
    loaded = load_model(model)
    run = loaded.info.run
    assert run.step >= 5 and loaded.optimizer is not None
    assert run.rng_state is not None and run.data_position == run.step
    assert f"stopped ({name}) at step {run.step}," in err


def test_a_second_signal_while_saving_does_not_corrupt_the_file(tmp_path, small_text):
    model = tmp_path / "m.cllm"
    process = start_training(tmp_path, small_text, model)
    wait_for_training(process, model)
    process.send_signal(signal.SIGTERM)
    for _ in range(5):
        time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert load_model(model).info.run.step >= 5


def test_a_closed_terminal_still_gets_the_run_saved(tmp_path, small_text):
    """The output goes to a pseudo-terminal that is closed before SIGHUP, as when an SSH
    link drops: writes fail, and the run must be saved all the same."""
    model = tmp_path / "m.cllm"
    master, slave = pty.openpty()
    process = start_training(tmp_path, small_text, model, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        wait_for_training(process, model)
    finally:
        os.close(master)  # the terminal goes away
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=60) == 0
    assert read_info(model).run.step >= 5


def test_resuming_after_a_signal_continues_the_run(tmp_path, small_text):
    model = tmp_path / "m.cllm"
    process = start_training(tmp_path, small_text, model)
    wait_for_training(process, model)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    stopped = read_info(model).run.step
    corpus = tmp_path / "corpus.txt"
    result = subprocess.run([sys.executable, "-m", "cllm.core.cli", "train", str(corpus), "-o", str(model), *SHAPE,
                             "--steps", str(stopped + 3), "--resume", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["step"] == stopped + 3
