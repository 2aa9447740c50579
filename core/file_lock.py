"""One writer per model file: an advisory lock that a run, or an import, holds on the
file it writes for as long as it lives.

A model file is replaced by rename at every save, so the lock cannot be on the file
itself: it is on a hidden file beside it (`.NAME.lock`), with `flock`. The kernel drops
the lock when the process dies however it dies (even SIGKILL), so a lock left by a dead
process never blocks anyone: the lock file may remain, but nobody holds it. The holder
writes who it is into the lock file, for the message that refuses a second writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cllm.core.errors import CllmError


class FileBusyError(CllmError):
    """The model file is being written by another live run or import."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a model file: a run's id (or what else writes it), process and machine."""

    run: str
    pid: int
    host: str
    since: str

    @classmethod
    def this_process(cls, run: str) -> LockHolder:
        return cls(run, os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"))

    def describe(self) -> str:
        return f"run {self.run} (pid {self.pid} on {self.host}, since {self.since})"


def lock_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class ModelFileLock:
    """A held lock; `release()` (or leaving the `with`) gives it up."""

    def __init__(self, path: Path, fd: int | None, problem: str | None = None) -> None:
        self.path = path
        self._fd = fd
        self.problem = problem  # why the file could not be locked (the run goes on unlocked)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(lock_path(self.path))  # while still held: a newcomer then locks a new file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> ModelFileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> LockHolder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return LockHolder(str(data["run"]), int(data["pid"]), str(data["host"]), str(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def lock_model_file(path: Path, holder: LockHolder) -> ModelFileLock:
    """Locks `path` for `holder`, at once: FileBusyError names who holds it if anyone
    does. A lock that cannot be made at all (a read-only folder, say) does not stop the
    caller: the returned lock is not held and says why in `problem`."""
    path = Path(path).expanduser().absolute()
    target = lock_path(path)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            return ModelFileLock(path, None, f"{path} is not locked against a second writer: "
                                             f"{target}: {exc.strerror or exc}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(fd)
            os.close(fd)
            who = other.describe() if other else "another process"
            raise FileBusyError(f"{path} is being written by {who}; wait for it to end, stop it "
                                f"(cllm runs stop {other.run if other else 'RUN'}), or choose another file") from None
        except OSError as exc:
            os.close(fd)
            return ModelFileLock(path, None, f"{path} is not locked against a second writer: "
                                             f"{target}: {exc.strerror or exc}")
        try:
            same = os.fstat(fd).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder removed it as we opened it: lock the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
        return ModelFileLock(path, fd)
