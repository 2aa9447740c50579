"""One progress bar per core, fed by the trainer's per-shard counters.

The trainer splits each step's batch (and each evaluation's held-out chunks) into one
shard per thread; `phase_totals[i]` is how many rows shard i does in the current phase
and `shard_progress[i]` how many it has finished (updated by the kernels as they go).
This widget polls those arrays on a timer (never per step), so a fast trainer costs the
UI nothing extra. Rates are rows finished between polls, smoothed.
"""

from __future__ import annotations

import time

import numpy as np
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.timer import Timer
from textual.widgets import Label, ProgressBar, Static

from cllm.tui.engine import TrainerLike

POLL_S = 0.25
SMOOTHING = 0.5  # weight of the newest rate in the moving average
PHASE_NOTE = {"train": "", "eval": "eval ", "save": "saving "}


class CoreBars(VerticalScroll, can_focus=False):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.trainer: TrainerLike | None = None
        self._timer: Timer | None = None
        self._last: tuple[str, int, np.ndarray] | None = None  # phase, step, progress at the last poll
        self._last_time = 0.0
        self.rates: np.ndarray = np.zeros(0)

    def compose(self) -> ComposeResult:
        yield Static("One bar per core appears here during a run.", id="cores-idle", markup=False)

    async def attach(self, trainer: TrainerLike) -> None:
        """Show one bar per thread of `trainer` and start polling it."""
        self.detach()
        self.trainer = trainer
        n = trainer.n_threads
        await self.remove_children()
        await self.mount_all(Horizontal(
            Label(f"core {i:<2}", classes="core-label"),
            ProgressBar(total=1, show_eta=False, show_percentage=False, id=f"core-bar-{i}", classes="core-bar"),
            Label("", id=f"core-rate-{i}", classes="core-rate"),
            classes="core-row",
        ) for i in range(n))
        self.rates = np.zeros(n)
        self._last = None
        self._timer = self.set_interval(POLL_S, self.poll)

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _rows_since_last_poll(self, phase: str, step: int, progress: np.ndarray, totals: np.ndarray) -> np.ndarray:
        if self._last is None:
            return np.zeros_like(progress)
        last_phase, last_step, last_progress = self._last
        if phase != last_phase:
            return progress
        if step != last_step:  # whole steps finished in between
            return (step - last_step) * totals - last_progress + progress
        return np.maximum(progress - last_progress, 0)

    def poll(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        phase, step = trainer.phase, trainer.step
        totals = np.array(trainer.phase_totals, dtype=np.int64)
        progress = np.array(trainer.shard_progress, dtype=np.int64)
        now = time.monotonic()
        rows = self._rows_since_last_poll(phase, step, progress, totals)
        if self._last is not None:
            rate = np.maximum(rows, 0) / max(now - self._last_time, 1e-6)
            self.rates = SMOOTHING * rate + (1 - SMOOTHING) * self.rates
        self._last, self._last_time = (phase, step, progress), now
        note = "paused" if trainer.paused else None
        for i in range(min(len(totals), len(self.rates))):
            bars = self.query(f"#core-bar-{i}")
            labels = self.query(f"#core-rate-{i}")
            if not bars or not labels:  # rows not mounted yet
                return
            bars.first(ProgressBar).update(total=max(int(totals[i]), 1), progress=min(int(progress[i]), int(totals[i])))
            text = note or f"{PHASE_NOTE.get(phase, '')}{self.rates[i]:6.1f} seq/s"
            labels.first(Label).update(text, layout=False)
