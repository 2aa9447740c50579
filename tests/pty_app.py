"""A real `cllm-tui` process on a pseudo-terminal, for the tests of a terminal that goes away."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

APP = str(Path(sys.executable).with_name("cllm-tui"))  # the installed command, as a user runs it


# The login shell of the terminal: it starts cllm-tui in its own (foreground) process group
# and, when the terminal hangs up, takes a second to exit (a shell saving its history, say).
# As it exits, the kernel sends the foreground process group SIGHUP and SIGCONT.
SHELL = """
import signal, subprocess, sys, time, os
signal.signal(signal.SIGHUP, lambda *_: (time.sleep(1.0), os._exit(0)))
sys.exit(subprocess.call(sys.argv[1:]))
"""


class PtyApp:
    """`cllm-tui` on a new pseudo-terminal, under a shell that is the session leader (as
    a terminal emulator or sshd starts a login): `hang_up` closes the terminal's master
    side, as a dropped SSH link or `tmux kill-server` does."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: becomes cllm-tui
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, "-c", SHELL, APP, *args],
                          {**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
            finally:
                os._exit(127)
        self.screen = b""
        self.status: int | None = None  # the shell's
        self._app_pid: int | None = None
        _ = self.app_pid

    def read(self, seconds: float) -> None:
        """Reads what the app draws for `seconds` (the pty's buffer must not fill up)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.master >= 0:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.screen += os.read(self.master, 1 << 16)
                except OSError:
                    return

    def wait_for(self, text: bytes, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen[-200_000:]:
            assert self.alive(), f"cllm-tui exited before showing {text!r}"
            assert time.monotonic() < deadline, f"cllm-tui did not show {text!r} in {timeout} s"
            self.read(0.2)

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def hang_up(self) -> None:
        os.close(self.master)
        self.master = -1

    @property
    def app_pid(self) -> int:
        """cllm-tui's process id (the shell's child)."""
        if self._app_pid is None:
            deadline = time.monotonic() + 30
            while self._app_pid is None:
                children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
                if children:
                    self._app_pid = int(children[0])
                assert time.monotonic() < deadline, "the shell did not start cllm-tui"
                time.sleep(0.05)
        return self._app_pid

    def alive(self) -> bool:
        """Whether cllm-tui is still running (a zombie has exited)."""
        self._reap_shell()
        try:
            state = Path(f"/proc/{self.app_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")

    def _reap_shell(self) -> None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds until the app exited, or None if it is still there after `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                return time.monotonic() - started
            time.sleep(0.02)
        return None

    def kill(self) -> None:
        """Ends what is left of the shell and the app."""
        if self.alive():
            os.kill(self.app_pid, signal.SIGKILL)
        self._reap_shell()
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
