"""The run journal: every training run on this machine, in one SQLite database.

A run (from `cllm train`, the app, or rank 0 of an MPI run) records who it is (id, name,
output file, corpus, model and training settings, parent model, host, pid), its state,
and as it goes each step's loss, learning rate and tokens per second, each evaluation and
each checkpoint. `cllm runs` and the app's Runs screen read it; a run that is not in the
app's process can be followed (attached to) through it.

The database is `journal.sqlite3` in the user data folder (platformdirs), or in
`$CLLM_HOME` when that is set. It is opened in WAL mode, so readers never block the
writer. Writes are batched by `core/runs.py` (one transaction every half second), so a
tiny model's thousands of steps a second cost next to nothing.

A run whose process died cannot say so: a reader sees it as lost when its process is gone
(same machine) or when it has not written for `LOST_AFTER` seconds (another machine
sharing the journal).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from cllm.core.errors import CllmError

LOST_AFTER = 120.0  # seconds without a heartbeat after which a live-looking run is lost
LIVE_STATES = ("running", "paused")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, file TEXT NOT NULL, corpus TEXT, origin TEXT,
    model TEXT, training TEXT, parent TEXT, host TEXT, pid INTEGER,
    started REAL NOT NULL, ended REAL, heartbeat REAL,
    state TEXT NOT NULL, -- running, paused, finished, stopped, failed or lost
    step INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL DEFAULT 0,
    loss REAL, best_val REAL, tokens_per_s REAL, eta REAL, message TEXT, request TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, lr REAL, tokens_per_s REAL, at REAL,
    PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evals (
    run TEXT NOT NULL, step INTEGER NOT NULL, val_loss REAL, PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT NOT NULL, step INTEGER NOT NULL, path TEXT, reason TEXT, at REAL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
"""


class JournalError(CllmError):
    """The journal cannot be opened or read (the message names the file and why)."""


def journal_path() -> Path:
    home = os.environ.get("CLLM_HOME")
    folder = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("cllm", appauthor=False))
    return folder / "journal.sqlite3"


@dataclass
class RunRow:
    """One run as the journal holds it."""

    id: str
    name: str
    file: str
    corpus: str | None
    origin: str | None  # "cli", "tui", "mpi" or "background"
    model: dict
    training: dict
    parent: dict | None
    host: str | None
    pid: int | None
    started: float
    ended: float | None
    heartbeat: float | None
    state: str
    step: int
    steps: int
    loss: float | None
    best_val: float | None
    tokens_per_s: float | None
    eta: float | None
    message: str | None
    request: str | None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "state": self.state, "step": self.step, "steps": self.steps,
                "file": self.file, "pid": self.pid, "host": self.host, "corpus": self.corpus, "origin": self.origin,
                "started": self.started, "ended": self.ended, "loss": self.loss, "best_val_loss": self.best_val,
                "tokens_per_s": self.tokens_per_s, "eta": self.eta, "model": self.model, "training": self.training,
                "parent": self.parent, "message": self.message}


def _row(r: sqlite3.Row) -> RunRow:
    def loads(text: str | None) -> dict | None:
        try:
            value = json.loads(text) if text else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    return RunRow(r["id"], r["name"], r["file"], r["corpus"], r["origin"], loads(r["model"]) or {},
                  loads(r["training"]) or {}, loads(r["parent"]), r["host"], r["pid"], r["started"], r["ended"],
                  r["heartbeat"], r["state"], r["step"], r["steps"], r["loss"], r["best_val"], r["tokens_per_s"],
                  r["eta"], r["message"], r["request"])


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # a zombie has exited
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


class Journal:
    """An open journal. Thread-safe enough for one writer thread and readers: each call
    is one transaction on one connection (made with check_same_thread=False, and used by
    one thread at a time by its owner)."""

    def __init__(self, path: Path | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else journal_path()
        try:
            if readonly:
                if not self.path.exists():
                    raise JournalError(f"{self.path}: no journal yet (no run has been recorded)")
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5,
                                          check_same_thread=False, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=5, check_same_thread=False, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
            else:
                self.db.execute("SELECT count(*) FROM runs").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"{self.path}: {getattr(exc, 'strerror', None) or exc}") from None

    @classmethod
    def for_reading(cls) -> Journal:
        """The journal to read runs from: read-write when it can be (a run found dead is
        then written lost), else read-only (a journal this user cannot write)."""
        try:
            return cls()
        except JournalError:
            return cls(readonly=True)

    def close(self) -> None:
        self.db.close()

    # -- writing (a run's own process) -----------------------------------------------
    def begin(self, row: dict) -> None:
        """Records a run that starts, or a run that another process continues (the same
        id: its name, start and settings are kept)."""
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        again = ", ".join(f"{k} = excluded.{k}" for k in ("origin", "host", "pid", "heartbeat", "state", "request"))
        self.db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {again}, "
                        "ended = NULL, message = NULL", list(row.values()))

    def update(self, run_id: str, **values: object) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*values.values(), run_id])

    def write_batch(self, run_id: str, steps: list[tuple], evals: list[tuple], checkpoints: list[tuple],
                    summary: dict) -> str | None:
        """One transaction: the steps, evaluations and checkpoints since the last batch,
        and the run's summary columns. Returns a request another process left for the
        run ("stop"), if any."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if steps:
                self.db.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?)",
                                    [(run_id, *s) for s in steps])
            if evals:
                self.db.executemany("INSERT OR REPLACE INTO evals VALUES (?, ?, ?)", [(run_id, *e) for e in evals])
            if checkpoints:
                self.db.executemany("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                                    [(run_id, *c) for c in checkpoints])
            sets = ", ".join(f"{k} = ?" for k in summary)
            self.db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*summary.values(), run_id])
            found = self.db.execute("SELECT request FROM runs WHERE id = ?", (run_id,)).fetchone()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return found["request"] if found else None

    # -- reading ------------------------------------------------------------------------
    def runs(self, limit: int | None = None) -> list[RunRow]:
        """Newest first; runs whose process is gone are marked lost (and written so)."""
        sql = "SELECT * FROM runs ORDER BY started DESC" + (f" LIMIT {int(limit)}" if limit else "")
        rows = [_row(r) for r in self.db.execute(sql)]
        for row in rows:
            self._notice_lost(row)
        return rows

    def run(self, key: str) -> RunRow:
        """A run by id, unique id prefix, or name (the newest of that name)."""
        found = self.db.execute("SELECT * FROM runs WHERE id = ?", (key,)).fetchall()
        if not found:
            found = self.db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC",
                                    (key.replace("%", "") + "%",)).fetchall()
            if len(found) > 1:
                raise JournalError(f"run {key!r} is ambiguous: {', '.join(r['id'] for r in found[:5])}")
        if not found:
            found = self.db.execute("SELECT * FROM runs WHERE name = ? ORDER BY started DESC LIMIT 1",
                                    (key,)).fetchall()
        if not found:
            raise JournalError(f"no run {key!r} in {self.path} (cllm runs lists them)")
        row = _row(found[0])
        self._notice_lost(row)
        return row

    def _notice_lost(self, row: RunRow) -> None:
        if not row.live:
            return
        here = row.host == socket.gethostname()
        dead = here and row.pid is not None and not _process_alive(row.pid)
        silent = not here and row.heartbeat is not None and time.time() - row.heartbeat > LOST_AFTER
        if dead or silent:
            row.state = "lost"
            why = "its process is gone" if dead else f"no sign of life for {LOST_AFTER:.0f} s"
            row.message = f"lost at step {row.step}: {why}"
            try:
                self.db.execute("UPDATE runs SET state = 'lost', message = ? WHERE id = ? AND state IN "
                                "('running', 'paused')", (row.message, row.id))
            except sqlite3.Error:  # a read-only journal: the state is right in what is shown
                pass

    def curve(self, run_id: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(step, loss) and (step, val loss) of a run, by step."""
        steps = [(r[0], r[1]) for r in self.db.execute(
            "SELECT step, loss FROM steps WHERE run = ? ORDER BY step", (run_id,))]
        evals = [(r[0], r[1]) for r in self.db.execute(
            "SELECT step, val_loss FROM evals WHERE run = ? ORDER BY step", (run_id,))]
        return steps, evals

    def checkpoints(self, run_id: str) -> list[tuple[int, str, str, float]]:
        return [tuple(r) for r in self.db.execute(
            "SELECT step, path, reason, at FROM checkpoints WHERE run = ? ORDER BY at", (run_id,))]

    def request(self, run_id: str, what: str) -> None:
        """Leaves a request for a live run ("stop", "pause" or "resume"); the run reads it
        within a second."""
        try:
            self.db.execute("UPDATE runs SET request = ? WHERE id = ?", (what, run_id))
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot leave the run a request: {exc}") from None
