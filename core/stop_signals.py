"""Turning SIGINT, SIGTERM and SIGHUP into a clean stop: the run ends at the next step
boundary and is saved, instead of the process dying with its work.

Job schedulers send SIGTERM before they kill; a closed terminal or a dropped SSH link
sends SIGHUP. A second signal while the run is saving changes nothing: the save
continues (files are written atomically, so even SIGKILL leaves the old file whole).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _to_devnull(streams) -> None:
    """Points the file descriptors of `streams` at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            continue
    os.close(devnull)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def detach_from_terminal() -> None:
    """After SIGHUP the terminal is gone and writing to it fails: standard output and
    error that are still a terminal now go to /dev/null, so the save can finish quietly.
    (One whose terminal has already hung up is no longer a tty: `flush_or_drop_output`
    deals with it at exit.)"""
    _to_devnull([s for s in (sys.stdout, sys.stderr) if _is_terminal(s)])


def flush_or_drop_output() -> None:
    """Flushes standard output and error before the process ends. One that cannot be
    written any more (its terminal hung up, its reader closed the pipe) is pointed at
    /dev/null, so that the interpreter's own flush at exit does not fail too: that
    would turn the exit status into 120 after the work was done and saved."""
    gone = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            gone.append(stream)
    _to_devnull(gone)


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]) -> Iterator[None]:
    """While inside, each of STOP_SIGNALS calls `request_stop(name)` (on the main thread,
    between Python bytecodes) instead of its default action; SIGHUP first detaches from
    the terminal. On exit the previous handlers come back, unless a signal came: the
    process is then on its way out, and more signals are ignored until it is."""
    received: list[str] = []

    def handler(signum: int, frame) -> None:
        if signum == signal.SIGHUP:
            detach_from_terminal()
        received.append(signal.Signals(signum).name)
        request_stop(received[-1])

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_IGN if received else old)
