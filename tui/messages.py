"""Messages that workers post to the UI (post_message is thread-safe).

Progress messages define `can_replace`: when the UI is busy, a newer one replaces an
older one still in the queue, so a slow screen shows the latest numbers instead of
working through a backlog. Messages that must not be lost (evaluations, checkpoints,
the end of a run) do not.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class TrainStarted(Message):
    """The trainer is built (corpus tokenized, model created): `run.trainer` is set."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run


class TrainStep(Message):
    """A training step finished (a core.trainer.StepEvent)."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainStep)


class TrainEval(Message):
    """An evaluation on held-out text finished (EvalEvent)."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class TrainCheckpoint(Message):
    """The model was saved (CheckpointEvent)."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class TrainFinished(Message):
    """The training worker ended: `run.done` holds the DoneEvent, or `run.error` why not."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run


class GenerationProgress(Message):
    """The text generated so far (whole, so that replacing an older one loses nothing)."""

    def __init__(self, text: str, tokens: int, tokens_per_s: float) -> None:
        super().__init__()
        self.text = text
        self.tokens = tokens
        self.tokens_per_s = tokens_per_s

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GenerationProgress)


class GenerationFinished(Message):
    """Generation ended: `reason` is "done", "stopped" or "error"."""

    def __init__(self, text: str, tokens: int, tokens_per_s: float, reason: str) -> None:
        super().__init__()
        self.text = text
        self.tokens = tokens
        self.tokens_per_s = tokens_per_s
        self.reason = reason
