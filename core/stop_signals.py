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


def detach_from_terminal() -> None:
    """After SIGHUP the terminal is gone and writing to it fails: standard output and
    error that were a terminal now go to /dev/null, so the save can finish quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            continue
    os.close(devnull)


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
