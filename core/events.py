"""What a training run reports as it goes: plain dataclasses, with no numba behind them,
so a front end can import them at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    reason: str = "interval"  # "interval" (steps), "time" (minutes) or "final"


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
    reason: str  # "finished", "stopped" or "nan"
    message: str
    saved_to: Path | None = None  # where the run's last state is: the model file, a fallback, or nowhere


Event = StepEvent | EvalEvent | CheckpointEvent | SaveFailedEvent | DoneEvent
