"""The one handler that turns a failed worker into a notification.

Worker.StateChanged does not bubble: it reaches only the node that owns the worker. The
App and every screen mix this class in, so all workers (whoever owns them) report their
errors the same way: the engine's CllmError message as is (it names the file and the
problem), anything else as one line naming the task. Never a traceback.
"""

from __future__ import annotations

from typing import Any, Protocol

from textual.app import App
from textual.worker import Worker, WorkerState

from cllm.tui.engine import CllmError


def describe_error(error: BaseException | None, task: str) -> str:
    if isinstance(error, CllmError):
        return str(error)
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    return f"Unexpected error in {task}: {type(error).__name__}: {error}"


class _InApp(Protocol):
    """What ReportWorkerErrors needs of the App or Screen it is mixed into."""

    @property
    def app(self) -> App[Any]: ...


class ReportWorkerErrors:
    def on_worker_state_changed(self: _InApp, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        text = describe_error(event.worker.error, event.worker.name or "a background task")
        self.app.notify(text, title="Error", severity="error", timeout=12, markup=False)
