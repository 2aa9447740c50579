"""Textual's Linux driver, made to survive its terminal going away.

When an SSH link drops or `tmux kill-server` runs, the terminal hangs up: the app gets
SIGHUP and, as the session's processes are cleaned up, SIGCONT. Textual's LinuxDriver
(8.x) then hung the app at exit, for two reasons this driver removes:

- it takes every SIGCONT for the end of its own Ctrl+Z suspension and starts
  application mode again: a second output writer thread (and input thread), although
  nothing was suspended;
- its writer thread dies at the first write the hung-up terminal refuses (EIO), and the
  writes after it fill the writer's bounded queue (30 items), so the next write, or the
  `None` that `close()` queues to stop the thread, blocks the main thread forever.

Here output to a terminal that is gone is dropped, so the writer thread lives until it
is stopped, and SIGCONT restarts application mode only after this driver's own SIGTSTP.
"""

from __future__ import annotations

from typing import IO, Any

from textual.drivers.linux_driver import LinuxDriver


class TerminalOutput:
    """The file Textual's writer thread writes to: a write or flush that fails because
    the terminal is gone is dropped (and so is every later one)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> None:
        if self.gone:
            return
        try:
            self._stream.write(text)
        except (OSError, ValueError):
            self.gone = True

    def flush(self) -> None:
        if self.gone:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.gone = True

    def fileno(self) -> int:
        return self._stream.fileno()


class TerminalDriver(LinuxDriver):
    """LinuxDriver whose output survives a hang-up and which resumes only what it suspended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self._file is not None, "no standard error to draw on"
        self._output = TerminalOutput(self._file)
        self._file = self._output  # type: ignore[assignment]  # the writer thread uses write, flush and fileno
        self._suspended_by_us = False

    def _sigtstp_application(self, *args: Any) -> None:
        self._suspended_by_us = True
        super()._sigtstp_application(*args)

    def _sigcont_application(self, *args: Any) -> None:
        if self._suspended_by_us:
            self._suspended_by_us = False
            super()._sigcont_application(*args)
