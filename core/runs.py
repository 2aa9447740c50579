"""A training run's life outside the trainer: the lock on the model file it writes, and
its record in the run journal. `cllm train` and the app each start a `RunSession` before
the run and hand it the trainer's events; the trainer knows nothing of either.

Journal writes leave the training thread at once: `record` appends to a list, and a
helper thread writes what came every `FLUSH_SECONDS` in one transaction (and reads any
request another process left, such as `cllm runs stop`). A journal that cannot be opened
or written does not stop the run: the session says why once (`notes`) and goes on.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cllm.core.events import CheckpointEvent, DoneEvent, EvalEvent, Event, StepEvent
from cllm.core.file_lock import LockHolder, ModelFileLock, lock_model_file
from cllm.core.journal import Journal, JournalError

FLUSH_SECONDS = 0.5
DONE_STATES = {"finished": "finished", "stopped": "stopped"}  # any other end is a failure


def obey(request: str, trainer, stop: Callable[[str], None]) -> str | None:
    """Carries out a request another process left in the journal (`cllm runs stop`, the
    app's Runs screen) on `trainer`; returns the run's state afterwards, if it changed."""
    if request == "stop":
        stop("cllm runs stop")
    elif request == "pause":
        trainer.pause()
        return "paused"
    elif request == "resume":
        trainer.unpause()
        return "running"
    return None


def new_run_id() -> str:
    return secrets.token_hex(4)


def corpus_source(corpus: str | list[str] | None) -> str:
    """What the journal records of a corpus: a file, folder or dataset as an absolute path (a
    run continued elsewhere finds it), a built-in corpus by its name; several paths (`cllm
    train a.txt b/`) joined by os.pathsep, as in PATH."""
    if isinstance(corpus, list):
        return os.pathsep.join(corpus_source(one) for one in corpus) if corpus else corpus_source(None)
    if corpus and Path(corpus).expanduser().exists():
        return str(Path(corpus).expanduser().absolute())
    return corpus or "python-docs"


@dataclass
class RunSession:
    """One run's lock and journal record. Use `start`, then `describe` once the trainer
    exists, `record` for each event, and `close` at the end (always)."""

    run_id: str
    out_path: Path
    lock: ModelFileLock
    journal: Journal | None
    notes: list[str] = field(default_factory=list)  # what the user should be told once
    on_request: Callable[[str], None] | None = None  # called (on a helper thread): "stop", "pause", "resume"
    _steps: list[tuple] = field(default_factory=list)
    _evals: list[tuple] = field(default_factory=list)
    _checkpoints: list[tuple] = field(default_factory=list)
    _summary: dict = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)
    _flusher: threading.Thread | None = None
    ended: bool = False  # a DoneEvent or `fail` came: the record has its final state
    handing_over: bool = False  # the run stops here to go on in another process (the same record)

    @classmethod
    def start(cls, out_path: Path, *, name: str | None = None, origin: str = "cli", corpus: str | None = None,
              steps: int = 0, run_id: str | None = None, journal_path: Path | None = None) -> RunSession:
        """Locks `out_path` (FileBusyError if a live run or import holds it) and records the
        run as running. `run_id` continues a run the journal has (a hand-over)."""
        run_id = run_id or new_run_id()
        out_path = Path(out_path).expanduser().absolute()
        lock = lock_model_file(out_path, LockHolder.this_process(run_id))
        session = cls(run_id, out_path, lock, None)
        if lock.problem:
            session.notes.append(lock.problem)
        try:
            session.journal = Journal(journal_path)
            session.journal.begin({
                "id": run_id, "name": name or out_path.stem, "file": str(out_path), "corpus": corpus_source(corpus),
                "origin": origin, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                "heartbeat": time.time(), "state": "running", "steps": steps, "request": None,
            })
        except (JournalError, sqlite3.Error, OSError) as exc:
            session._give_up_journal(exc)
        if session.journal is not None:
            session._flusher = threading.Thread(target=session._flush_loop, name="cllm-journal", daemon=True)
            session._flusher.start()
        return session

    def _give_up_journal(self, exc: BaseException) -> None:
        where = self.journal.path if self.journal is not None else None
        text = str(exc) if isinstance(exc, JournalError) or where is None else f"{where}: {exc}"
        self.notes.append(f"this run is not journaled (cllm runs will not show it): {text}")
        journal, self.journal = self.journal, None
        if journal is not None:
            try:
                journal.close()
            except sqlite3.Error:
                pass

    def describe(self, *, model: dict, training: dict, step: int, parent: dict | None,
                 best_val: float | None) -> None:
        """The run's settings, once its trainer exists."""
        self._set(model=json.dumps(model), training=json.dumps(training), step=step,
                  steps=training.get("steps", 0), parent=json.dumps(parent) if parent else None, best_val=best_val)

    def describe_trainer(self, trainer) -> None:
        """`describe` from a core Trainer."""
        state = trainer.state
        self.describe(model=trainer.model.config.to_dict(), training=trainer.config.to_dict(),
                      step=state.step,
                      parent=state.parent.to_dict() if state.parent else None, best_val=state.best_val_loss)

    def _set(self, **values: object) -> None:
        with self._guard:
            self._summary.update(values)

    # -- events (the training thread) -------------------------------------------------
    def record(self, event: Event) -> None:
        if self.journal is None:
            return
        with self._guard:
            if isinstance(event, StepEvent):
                self._steps.append((event.step, event.loss, event.lr, event.tokens_per_s, time.time()))
                self._summary.update(step=event.step, steps=event.steps, loss=event.loss,
                                     tokens_per_s=event.tokens_per_s, eta=event.eta)
            elif isinstance(event, EvalEvent):
                self._evals.append((event.step, event.val_loss))
                self._summary["best_val"] = event.best_val_loss
            elif isinstance(event, CheckpointEvent):
                self._checkpoints.append((event.step, str(event.path), event.reason, time.time()))
            elif isinstance(event, DoneEvent):
                self.ended = True
                if self.handing_over and event.reason == "stopped":
                    self._summary.update(state="running", message="handed over to a detached process",
                                         step=event.step)
                else:
                    self._summary.update(state=DONE_STATES.get(event.reason, "failed"), message=event.message,
                                         step=event.step, ended=time.time(), eta=0.0)

    def set_state(self, state: str) -> None:
        """The run is "paused" or "running" again (a Pause, here or asked through the journal)."""
        self._set(state=state)

    def fail(self, message: str) -> None:
        self.ended = True
        self._set(state="failed", message=message, ended=time.time())

    # -- the helper thread --------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._closing.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        journal = self.journal
        if journal is None:
            return
        with self._guard:
            steps, self._steps = self._steps, []
            evals, self._evals = self._evals, []
            checkpoints, self._checkpoints = self._checkpoints, []
            summary, self._summary = {**self._summary, "heartbeat": time.time()}, {}
        try:
            request = journal.write_batch(self.run_id, steps, evals, checkpoints, summary)
        except sqlite3.Error as exc:
            self._give_up_journal(exc)
            return
        if request and self.on_request is not None:
            journal.update(self.run_id, request=None)
            self.on_request(request)

    def close(self) -> None:
        """The last batch, then the lock is released. A run that ends without a DoneEvent
        or `fail` (an error it raised) is written as failed."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join()
        if self.journal is not None:
            if not self.ended:
                self.fail("the run ended without finishing")
            self.flush()
            if self.journal is not None:
                self.journal.close()
        self.lock.release()
