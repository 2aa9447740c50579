"""Runs: every training run the journal knows (core/journal.py), newest first, live.

The highlighted run's curves are drawn, or, when runs are selected (space), theirs on
shared axes with each one's settings beside, in its colour. A run another process trains
(`cllm train`, `--background`, or a run this app handed over when it detached) is
followed as it goes: step, loss, tokens/s and ETA in the table, its curves in the chart;
Pause pauses or resumes it, Stop asks it to stop and save, Take over stops it and
continues it in the app.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plot import HiResMode

from cllm.core.journal import Journal, JournalError, RunRow, journal_path
from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.formatting import format_duration, format_loss
from cllm.tui.messages import Followed, RunsRead
from cllm.tui.widgets.loss_chart import LossChart, decimate
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.worker_errors import ReportWorkerErrors

if TYPE_CHECKING:
    from cllm.tui.app import CllmApp

READ_S = 1.0  # the journal is read again this often
COLOURS = ["bright_cyan", "bright_magenta", "bright_green", "bright_yellow", "bright_red", "bright_blue"]
COLUMNS = ("id", "name", "state", "step", "loss", "best val", "tok/s", "ETA")


@dataclass
class RunCurves:
    """A run's train and validation losses by step, from the journal."""

    loss_steps: list[int]
    loss_values: list[float]
    val_steps: list[int]
    val_values: list[float]


def read_journal(shown: list[str], choose: Callable[[list[RunRow]], list[str]] | None = None) -> RunsRead:
    """The journal's runs and the curves of the runs `shown` (ids), or of those `choose`
    picks from the runs just read; a missing journal is an empty one."""
    if not journal_path().exists():
        return RunsRead([], {}, None)
    try:
        journal = Journal.for_reading()
    except JournalError as exc:
        return RunsRead([], {}, f"the run journal cannot be read: {exc}")
    try:
        rows = journal.runs(200)
        if choose is not None:
            shown = choose(rows)
        curves = {}
        for run_id in shown:
            steps, evals = journal.curve(run_id)
            curves[run_id] = RunCurves([s for s, _ in steps], [v for _, v in steps], [s for s, _ in evals],
                                       [v for _, v in evals])
    except Exception as exc:
        return RunsRead([], {}, f"the run journal cannot be read: {exc}")
    finally:
        journal.close()
    return RunsRead(rows, curves, None)


def read_followed() -> Followed:
    """The newest live run of another process, for the Train screen to follow."""
    def newest_other(rows: list[RunRow]) -> list[str]:
        return [r.id for r in rows if r.live and r.pid != os.getpid()][:1]

    found = read_journal([], newest_other)  # one read of the journal per poll: rows and curve together
    row = next((r for r in found.rows if r.id in found.curves), None)
    return Followed(row, None if row is None else found.curves[row.id])


def settings_line(row: RunRow) -> str:
    m, t = row.model, row.training
    shape = (f"{m.get('n_layer', '?')}L {m.get('n_head', '?')}H width {m.get('n_embd', '?')} ctx {m.get('ctx', '?')}"
             if m else "shape not known yet")
    training = f"batch {t.get('batch', '?')}, lr {t.get('lr', '?')}" if t else ""
    parent = f", from {row.parent.get('name')}" if row.parent else ""
    return (f"{row.name} ({row.id}) {row.state}, step {row.step:,}/{row.steps:,}; {shape}; {training}{parent}; "
            f"corpus {row.corpus or '-'}; best val {format_loss(row.best_val)}")


class RunsScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("space", "select", "Select", id="runs.select"),
        Binding("f5", "pause", "Pause", id="runs.pause"),
        Binding("f6", "take_over", "Take over", id="runs.take_over"),
        Binding("f7", "stop", "Stop", id="runs.stop"),
    ]

    app: CllmApp

    def __init__(self) -> None:
        super().__init__(id="runs")
        self.rows: list[RunRow] = []
        self.selected: list[str] = []  # run ids, in the order selected

    def compose(self) -> ComposeResult:
        yield ModelBar(classes="model-bar")
        with Horizontal(id="runs-body"):
            table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            table.add_columns(*COLUMNS)
            yield table
            with Vertical(id="runs-side"):
                yield LossChart(id="runs-chart")
                with VerticalScroll(id="runs-settings-scroll"):
                    yield Static("", id="runs-settings", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.set_interval(READ_S, self.read)
        self._read([])

    def on_screen_resume(self) -> None:
        self.read()

    @property
    def highlighted(self) -> RunRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def shown(self) -> list[str]:
        if self.selected:
            return list(self.selected)
        row = self.highlighted
        return [row.id] if row else []

    def read(self) -> None:
        if self.is_current:
            self._read(self.shown())

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs", name="read journal")
    def _read(self, shown: list[str]) -> None:
        self.post_message(read_journal(shown))

    def on_runs_read(self, message: RunsRead) -> None:
        message.stop()  # the app's own RunsRead is its look for runs at start-up
        status = self.query_one("#runs-settings", Static)
        if message.problem:
            status.update(message.problem)
            return
        self.rows = message.rows
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for row in message.rows:
            mark = "● " if row.id in self.selected else ""
            table.add_row(mark + row.id, row.name, row.state, f"{row.step:,}/{row.steps:,}", format_loss(row.loss),
                          format_loss(row.best_val), f"{row.tokens_per_s:,.0f}" if row.tokens_per_s else "-",
                          format_duration(row.eta) if row.live and row.eta is not None else "-", key=row.id)
        if message.rows:
            table.move_cursor(row=min(max(cursor, 0), len(message.rows) - 1), animate=False)
        shown = [r for r in message.rows if r.id in message.curves]
        self._draw(shown, message.curves)
        if not message.rows:
            status.update("No runs yet: a run started here, with `cllm train` or `--background` shows here, live.")
        else:
            status.update("\n".join(settings_line(r) for r in shown) or "")

    def _draw(self, rows: list[RunRow], curves: dict[str, RunCurves]) -> None:
        chart = self.query_one(LossChart)
        chart.clear()
        for i, row in enumerate(rows):
            curve, colour = curves[row.id], COLOURS[i % len(COLOURS)]
            if curve.loss_steps:
                x, y = decimate(curve.loss_steps, curve.loss_values)
                chart.plot(x, y, line_style=colour, hires_mode=HiResMode.BRAILLE, label=f"{row.name} train")
            if curve.val_steps:
                x, y = decimate(curve.val_steps, curve.val_values)
                chart.scatter(x, y, marker="o", marker_style=colour, label=f"{row.name} val")

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        if not self.selected:
            self._read(self.shown())

    def action_select(self) -> None:
        row = self.highlighted
        if row is None:
            return
        if row.id in self.selected:
            self.selected.remove(row.id)
        else:
            self.selected.append(row.id)
        self._read(self.shown())

    def _live_other(self, what: str) -> RunRow | None:
        """The highlighted run, if another process trains it."""
        row = self.highlighted
        if row is None or not row.live:
            self.app.notify(f"{what}: highlight a running run first.", severity="warning")
            return None
        session = self.app.training.session if self.app.training is not None else None
        if row.pid == os.getpid() or (session is not None and session.run_id == row.id and self.app.run_active):
            self.app.notify(f"{row.name} is this app's run: the Train screen stops it.", severity="warning")
            return None
        return row

    def action_stop(self) -> None:
        row = self._live_other("Stop")
        if row is not None:
            self.app.request_run(row.id, "stop")
            self.app.notify(f"Asked {row.name} ({row.id}) to stop: it saves at its next step.", markup=False)

    def action_pause(self) -> None:
        row = self._live_other("Pause")
        if row is not None:
            what = "resume" if row.state == "paused" else "pause"
            self.app.request_run(row.id, what)
            self.app.notify(f"Asked {row.name} ({row.id}) to {what}.", markup=False)

    def action_take_over(self) -> None:
        row = self._live_other("Take over")
        if row is None:
            return
        self.app.take_over(row)
