"""One progress bar per core, fed by the trainer's per-shard counters.

The trainer splits each step's batch into one shard per thread; `shard_sizes[i]` is how
many sequences shard i processes per step and `shard_progress[i]` how many it finished
in the current step (updated by the engine as it goes). This widget polls those arrays
on a timer (never per step), so a fast trainer costs the UI nothing extra. Rates come
from the growth of step * shard_size + progress between polls, smoothed.
"""

from __future__ import annotations

import time

import numpy as np
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

POLL_S = 0.25
SMOOTHING = 0.5  # weight of the newest rate in the moving average


class CoreBars(VerticalScroll, can_focus=False):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.trainer = None
        self._timer = None
        self._last_total: np.ndarray | None = None
        self._last_time = 0.0
        self.rates: np.ndarray = np.zeros(0)

    def compose(self) -> ComposeResult:
        yield Static("One bar per core appears here during a run.", id="cores-idle", markup=False)

    async def attach(self, trainer) -> None:
        """Show one bar per thread of `trainer` and start polling it."""
        self.detach()
        self.trainer = trainer
        n = int(getattr(trainer, "n_threads", len(trainer.shard_sizes)))
        await self.remove_children()
        rows = []
        for i in range(n):
            rows.append(Horizontal(
                Label(f"core {i:<2}", classes="core-label"),
                ProgressBar(total=1, show_eta=False, show_percentage=False, id=f"core-bar-{i}",
                            classes="core-bar"),
                Label("", id=f"core-rate-{i}", classes="core-rate"),
                classes="core-row",
            ))
        await self.mount_all(rows)
        self.rates = np.zeros(n)
        self._last_total = None
        self._timer = self.set_interval(POLL_S, self.poll)

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def poll(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        sizes = np.asarray(trainer.shard_sizes, dtype=np.int64).copy()
        progress = np.asarray(trainer.shard_progress, dtype=np.int64).copy()
        step = int(trainer.step)
        now = time.monotonic()
        total = step * sizes + progress
        if self._last_total is not None and self._last_total.shape == total.shape:
            dt = max(now - self._last_time, 1e-6)
            rate = np.maximum(total - self._last_total, 0) / dt
            self.rates = SMOOTHING * rate + (1 - SMOOTHING) * self.rates
        self._last_total = total
        self._last_time = now
        paused = bool(getattr(trainer, "paused", False))
        for i in range(min(len(sizes), len(self.rates))):
            try:
                bar = self.query_one(f"#core-bar-{i}", ProgressBar)
                label = self.query_one(f"#core-rate-{i}", Label)
            except Exception:  # noqa: BLE001 - rows not mounted yet
                return
            bar.update(total=max(int(sizes[i]), 1), progress=min(int(progress[i]), int(sizes[i])))
            label.update("paused" if paused else f"{self.rates[i]:6.1f} seq/s", layout=False)
