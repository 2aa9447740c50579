"""Runs that outlive the shell, with real `cllm` processes: one writer per model file,
the run journal (`cllm runs`), background runs, stop, attach, and a killed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cllm.core.file_lock import FileBusyError, LockHolder, lock_model_file
from cllm.core.journal import Journal
from cllm.core.model_file import load_model, read_info

SHAPE = ["--layers", "1", "--heads", "2", "--embd", "32", "--ctx", "32", "--batch", "8", "--threads", "1",
         "--eval-interval", "0"]


def cllm(*args: object, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cllm.core.cli", *map(str, args)], capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cllm.core.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def runs() -> list[dict]:
    return [json.loads(line) for line in cllm("runs", "--json", check=True).stdout.splitlines()]


def wait_until(what, timeout: float = 120, message: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.1)


def running_step(run_id: str, at_least: int) -> dict | None:
    return next((r for r in runs() if r["id"] == run_id and r["state"] == "running" and r["step"] >= at_least),
                None)


@pytest.fixture()
def corpus(tmp_path, small_text) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(small_text)
    return path


def test_a_second_writer_is_refused_at_once_naming_the_first(tmp_path, corpus):
    model = tmp_path / "m.cllm"
    first = start("train", corpus, "-o", model, *SHAPE, "--steps", "1000000", "--checkpoint-interval", "20")
    try:
        row = wait_until(lambda: next((r for r in runs() if r["state"] == "running" and r["step"] > 0), None))
        assert row["pid"] == first.pid and row["file"] == str(model)
        second = cllm("train", corpus, "-o", model, "--layers", "2", *SHAPE[2:], "--steps", "10", "--force")
        assert second.returncode == 2
        message = " ".join(second.stderr.split())
        assert f"run {row['id']} (pid {first.pid} on {row['host']}" in message and str(model) in message
        resume = cllm("train", corpus, "-o", model, *SHAPE, "--steps", "10", "--resume")
        assert resume.returncode == 2 and f"run {row['id']}" in " ".join(resume.stderr.split())
        with pytest.raises(FileBusyError, match=row["id"]):  # this process too (the app, an import)
            lock_model_file(model, LockHolder.this_process("test"))
        stopped = cllm("runs", "stop", row["id"], "--wait", "60", check=True)
        assert "stopped" in stopped.stderr
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.communicate()
    (after,) = [r for r in runs() if r["id"] == row["id"]]
    assert after["state"] == "stopped" and after["step"] == read_info(model).run.step > 0
    with lock_model_file(model, LockHolder.this_process("test")) as lock:  # released at the run's end
        assert lock.held


def test_a_background_run_is_listed_attached_to_and_finishes(tmp_path, corpus):
    model = tmp_path / "bg.cllm"
    started = cllm("train", corpus, "-o", model, *SHAPE, "--steps", "60", "--background", check=True)
    run_id = started.stdout.strip().splitlines()[-1]
    (row,) = [r for r in runs() if r["id"] == run_id]
    assert row["name"] == "bg" and row["steps"] == 60 and row["file"] == str(model)
    attached = cllm("runs", "attach", run_id, timeout=120)
    assert attached.returncode == 0, attached.stderr
    assert "finished at step 60" in attached.stderr
    (row,) = [r for r in runs() if r["id"] == run_id]
    assert row["state"] == "finished" and row["step"] == 60 and read_info(model).run.step == 60
    shown = json.loads(cllm("runs", "show", run_id[:5], "--json", check=True).stdout)
    assert [s for s, _ in shown["loss_curve"]] == list(range(1, 61))
    assert shown["model"]["n_embd"] == 32 and shown["training"]["batch"] == 8
    text = cllm("runs", "show", run_id, check=True).stdout
    assert "train loss" in text and "1 layers, 2 heads, width 32" in text


def test_attach_detaches_on_ctrl_c_and_the_run_goes_on(tmp_path, corpus):
    model = tmp_path / "bg.cllm"
    run_id = cllm("train", corpus, "-o", model, *SHAPE, "--steps", "1000000", "--background",
                  check=True).stdout.split()[-1]
    try:
        watcher = start("runs", "attach", run_id)
        wait_until(lambda: running_step(run_id, 1))
        time.sleep(1.0)
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0 and "detached" in err
        step = wait_until(lambda: running_step(run_id, 1))["step"]
        wait_until(lambda: running_step(run_id, step + 1), message="the run did not go on after the detach")
    finally:
        cllm("runs", "stop", run_id, "--wait", "60")
    (row,) = [r for r in runs() if r["id"] == run_id]
    assert row["state"] == "stopped"


def test_a_killed_background_run_is_lost_and_its_last_checkpoint_intact(tmp_path, corpus):
    model = tmp_path / "bg.cllm"
    run_id = cllm("train", corpus, "-o", model, *SHAPE, "--steps", "1000000", "--checkpoint-interval", "10",
                  "--background", check=True).stdout.split()[-1]
    row = wait_until(lambda: running_step(run_id, 25))
    os.kill(row["pid"], signal.SIGKILL)
    (row,) = wait_until(lambda: [r for r in runs() if r["id"] == run_id and r["state"] == "lost"])
    assert "process is gone" in row["message"]
    checkpoint = load_model(model)  # whole, and resumable
    assert checkpoint.info.run.step >= 20 and checkpoint.optimizer is not None
    resumed = cllm("train", corpus, "-o", model, *SHAPE, "--steps", checkpoint.info.run.step + 5, "--resume",
                   "--json", check=True)  # the dead run's lock does not block
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == checkpoint.info.run.step + 5


def test_a_corrupt_journal_does_not_stop_training_and_is_reported_once(tmp_path, corpus, cllm_home):
    cllm_home.mkdir()
    (cllm_home / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    result = cllm("train", corpus, "-o", tmp_path / "m.cllm", *SHAPE, "--steps", "5", check=True)
    message = " ".join(result.stderr.split())
    assert message.count("not journaled") == 1 and "journal.sqlite3" in message
    assert read_info(tmp_path / "m.cllm").run.step == 5


def test_a_journal_that_cannot_be_created_does_not_stop_training(tmp_path, corpus, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CLLM_HOME", str(blocker / "home"))  # a folder under a file: cannot be made
    result = cllm("train", corpus, "-o", tmp_path / "m.cllm", *SHAPE, "--steps", "5", check=True)
    assert " ".join(result.stderr.split()).count("not journaled") == 1


def _immutable(paths: list[Path], on: bool) -> bool:
    """chattr +i / -i: what makes a file read-only to root as well (the tests run as root here)."""
    flag = "+i" if on else "-i"
    return all(subprocess.run(["chattr", flag, str(p)], capture_output=True).returncode == 0 for p in paths)


def test_a_read_only_journal_does_not_stop_training(tmp_path, corpus, cllm_home):
    Journal().close()
    journal = cllm_home / "journal.sqlite3"
    as_root = os.geteuid() == 0  # root writes to files whatever their mode: the file and its folder made immutable
    if as_root and (shutil.which("chattr") is None or not _immutable([journal, cllm_home], True)):
        _immutable([journal, cllm_home], False)
        pytest.skip("root writes to read-only files, and chattr +i is not available here")
    if not as_root:
        journal.chmod(0o444)
        cllm_home.chmod(0o555)
    try:
        result = cllm("train", corpus, "-o", tmp_path / "m.cllm", *SHAPE, "--steps", "5", check=True)
    finally:
        if as_root:
            _immutable([journal, cllm_home], False)
        else:
            cllm_home.chmod(0o755)
    assert " ".join(result.stderr.split()).count("not journaled") == 1


def test_a_journal_written_by_a_run_is_valid_sqlite_in_wal_mode(tmp_path, corpus, cllm_home):
    cllm("train", corpus, "-o", tmp_path / "m.cllm", *SHAPE, "--steps", "5", check=True)
    db = sqlite3.connect(cllm_home / "journal.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM steps").fetchone()[0] == 5


def test_a_background_run_pauses_and_resumes_on_request(tmp_path, corpus):
    model = tmp_path / "bg.cllm"
    run_id = cllm("train", corpus, "-o", model, *SHAPE, "--steps", "1000000", "--background",
                  check=True).stdout.split()[-1]
    try:
        wait_until(lambda: running_step(run_id, 1))
        cllm("runs", "pause", run_id, check=True)
        paused = wait_until(lambda: [r for r in runs() if r["id"] == run_id and r["state"] == "paused"])[0]
        time.sleep(1.5)
        (still,) = [r for r in runs() if r["id"] == run_id]
        assert still["state"] == "paused" and still["step"] <= paused["step"] + 1
        cllm("runs", "resume", run_id, check=True)
        wait_until(lambda: running_step(run_id, still["step"] + 2), message="no steps after resume")
    finally:
        cllm("runs", "stop", run_id, "--wait", "60")


def test_an_import_into_a_file_a_run_writes_is_refused(tmp_path):
    from cllm.core.hf_import import import_hf_folder

    target = tmp_path / "m.cllm"
    with lock_model_file(target, LockHolder("abcd1234", 77, "host", "now")):
        with pytest.raises(FileBusyError, match="run abcd1234 \\(pid 77 on host"):
            import_hf_folder(tmp_path / "no-such-folder", target)
