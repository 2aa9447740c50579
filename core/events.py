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


@dataclass
class DoneEvent:
    step: int
    reason: str  # "finished", "stopped" or "nan"
    message: str


Event = StepEvent | EvalEvent | CheckpointEvent | DoneEvent
