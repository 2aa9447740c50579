"""What a training run reports as it goes: plain dataclasses, with no numba behind them,
so a front end can import them at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class EndReason(StrEnum):
    """Why a run ended."""

    FINISHED = "finished"  # it trained the steps it was asked for
    STOPPED = "stopped"  # a stop request (a key, Ctrl-C, a signal) ended it at a step boundary
    NAN = "nan"  # the loss or the gradient norm became NaN or infinite; the last checkpoint is kept
    LOST = "lost"  # MPI: a rank died, left or did not answer; rank 0 saved the last finished step
    DIVERGED = "diverged"  # MPI: the ranks' parameters differ; the last checkpoint is kept


class RunStatus(StrEnum):
    """Where a front end's training run is (the TUI shows it and keys its actions on it)."""

    IDLE = "idle"  # no run, or the last one has ended
    PREPARING = "preparing"  # reading the corpus, building the model, compiling kernels
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"  # asked to stop: the step finishes, then the run saves

    @property
    def active(self) -> bool:
        return self is not RunStatus.IDLE


class SaveReason(StrEnum):
    """Why a run saved."""

    INTERVAL = "interval"  # every `checkpoint_every` steps
    TIME = "time"  # `checkpoint_minutes` passed since the last save
    FINAL = "final"  # the end of the run


@dataclass
class StepEvent:
    step: int
    steps: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    elapsed: float
    eta: float
    tokens_seen: int


@dataclass
class EvalEvent:
    step: int
    val_loss: float
    best_val_loss: float


@dataclass
class CheckpointEvent:
    step: int
    path: Path
    reason: SaveReason = SaveReason.INTERVAL


@dataclass
class SaveFailedEvent:
    """A save did not happen; the file there is as it was. After a failed checkpoint
    training goes on and the next checkpoint tries again; after a failed final save the
    run's state goes to a fallback file (DoneEvent.saved_to)."""

    step: int
    path: Path
    message: str  # names the file and the operating system's reason
    final: bool


@dataclass
class DoneEvent:
    step: int
    reason: EndReason
    message: str  # what happened and where the run is, in a line (core/outcome.py words it for a front end)
    saved_to: Path | None = None  # where the run's last state is: the model file, a fallback, or nowhere
    save_failed: bool = False  # the model file could not be written at the end (saved_to: a fallback or None)


Event = StepEvent | EvalEvent | CheckpointEvent | SaveFailedEvent | DoneEvent
