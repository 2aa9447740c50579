"""Training and validation loss against step, redrawn at most once a second.

The run's histories are append-only lists filled by the trainer thread; a timer checks
whether they grew and, if so, redraws from a decimated copy (at most MAX_POINTS per
line), so a long run costs the same to draw as a short one.
"""

from __future__ import annotations

import numpy as np
from textual.timer import Timer
from textual_plot import HiResMode, PlotWidget

REDRAW_S = 1.0
MAX_POINTS = 400
TRAIN_STYLE = "bright_cyan"
VAL_STYLE = "bright_yellow"


def decimate(xs: list, ys: list, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` evenly spaced points, always keeping the first and the last."""
    n = min(len(xs), len(ys))
    x = np.asarray(xs[:n], dtype=np.float64)
    y = np.asarray(ys[:n], dtype=np.float64)
    if n <= max_points:
        return x, y
    index = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return x[index], y[index]


class LossChart(PlotWidget, can_focus=False):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, allow_pan_and_zoom=False)
        self.run = None
        self._drawn = (-1, -1)
        self._timer: Timer | None = None
        self._shown: tuple | None = None  # what show() drew: (key, counts)

    def on_mount(self) -> None:
        self.margin_top = 0
        self.margin_bottom = 2
        self.margin_left = 7
        self.set_xlabel("step")

    def attach(self, run) -> None:
        self.run = run
        self._drawn = (-1, -1)
        self._shown = None
        if self._timer is None:
            self._timer = self.set_interval(REDRAW_S, self.redraw)
        self.redraw()

    def show(self, curves, key: str) -> None:
        """Curves read afresh on each poll (a run another process trains, from the journal):
        no redraw timer, since they do not grow in place; redrawn only when `key` (the run)
        or the number of points changed."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        shown = (key, len(curves.loss_steps), len(curves.val_steps))
        self.run = curves
        if shown != self._shown:
            self._shown = shown
            self._drawn = (-1, -1)
            self.redraw()

    def detach(self) -> None:
        """Stop polling (after a final redraw); the last curves stay on screen."""
        self.redraw()
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def redraw(self) -> None:
        run = self.run
        if run is None:
            return
        counts = (len(run.loss_steps), len(run.val_steps))
        if counts == self._drawn:
            return
        self._drawn = counts
        self.clear()
        if counts[0]:
            x, y = decimate(run.loss_steps, run.loss_values)
            self.plot(x, y, line_style=TRAIN_STYLE, hires_mode=HiResMode.BRAILLE, label="train")
        if counts[1]:
            x, y = decimate(run.val_steps, run.val_values)
            self.plot(x, y, line_style=VAL_STYLE, hires_mode=HiResMode.BRAILLE, label="val")
