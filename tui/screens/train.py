"""Train: the form on the left, the run on the right (bars per core, loss chart, log).

The screen decides a run's plan with the user (the start dialogs) and asks the app to
run it; what it shows of the run comes from the app's reactive attributes. While the app
has no run of its own, it follows the newest run another process trains (a detached
run, `cllm train`) from the run journal: step, ETA, loss, tokens/s and the loss chart,
with Pause, Stop and Take over (the app continues it)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Log, ProgressBar, Static

from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.engine import ConfigError, RunStatus, StepEvent, describe_end
from cllm.tui.formatting import format_duration, format_loss, format_rate
from cllm.tui.messages import Followed, PauseRequested, RunRequested, StopRequested
from cllm.tui.model_handle import ModelHandle
from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog
from cllm.tui.screens.confirm_dialog import ConfirmDialog
from cllm.tui.screens.file_browser import FileBrowser
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.screens.runs import read_followed
from cllm.tui.training_run import RunPlan, TrainingRun
from cllm.tui.validators import free_name
from cllm.tui.widgets.core_bars import CoreBars
from cllm.tui.widgets.loss_chart import TRAIN_STYLE, VAL_STYLE, LossChart
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.widgets.train_form import TrainForm
from cllm.tui.worker_errors import ReportWorkerErrors

if TYPE_CHECKING:
    from cllm.core.journal import RunRow
    from cllm.tui.app import CllmApp

FOLLOW_S = 1.0  # how often the journal is read for a run another process trains


class TrainScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("f5", "start", "Start", id="train.start"),
        Binding("f6", "pause", "Pause", id="train.pause"),
        Binding("f7", "stop", "Stop", id="train.stop"),
        Binding("f8", "browse", "Browse", id="train.browse"),
        Binding("f9", "take_over", "Take over", id="train.take_over"),
    ]
    PALETTE = [  # the command palette's entries for this screen: name, help, action
        ("Start training", "Start a run with the form's settings", "start"),
        ("Pause or resume training", "Pause the run, or resume it", "pause"),
        ("Stop training", "Stop the run and save what it learned", "stop"),
        ("Browse for a corpus", "Pick the training text in a file browser", "browse"),
    ]

    app: CllmApp

    def __init__(self) -> None:
        super().__init__(id="train")
        self._log_seen = 0
        self._attached: TrainingRun | None = None  # the run the bars and the chart follow
        self.followed: RunRow | None = None  # a run another process trains, from the journal

    def compose(self) -> ComposeResult:
        yield ModelBar(classes="model-bar")
        with Horizontal(id="train-body"):
            yield TrainForm(self.app.engine.builtin_corpora(), id="train-form")
            with Vertical(id="run-panel"):
                yield Static("No run yet: fill in the form, then Start.", id="run-status", markup=False)
                yield ProgressBar(total=1, show_eta=False, id="overall")
                yield CoreBars(id="cores")
                yield Static(f"[{TRAIN_STYLE}]━ train loss[/]  [{VAL_STYLE}]━ val loss[/]", id="chart-title")
                yield LossChart(id="loss-chart")
                yield Log(id="run-log", max_lines=200)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.watch(self.app, "run_status", self._state_changed)
        self.watch(self.app, "train_step", self._show_progress)
        self.watch(self.app, "train_log_size", self._sync_log)
        self.set_interval(FOLLOW_S, self._follow)

    @property
    def form(self) -> TrainForm:
        return self.query_one(TrainForm)

    # -- bindings ----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "browse"):
            return None if self.app.run_active else True
        if action in ("pause", "stop"):
            return True if self.app.run_active or self.followed is not None else None
        if action == "take_over":
            return self.followed is not None and not self.app.run_active
        return True

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#pause")
    def _pause_pressed(self) -> None:
        self.action_pause()

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#browse")
    def _browse_pressed(self) -> None:
        self.action_browse()

    # -- actions -----------------------------------------------------------------------
    def action_browse(self) -> None:
        corpus = self.query_one("#corpus", Input)
        current = Path(corpus.value.strip()).expanduser()
        start = current.parent if current.parent.is_dir() and str(current.parent) != "." else Path.cwd()

        def chosen(path: Path | None) -> None:
            if path is not None:
                corpus.value = str(path)
                corpus.focus()

        self.app.push_screen(FileBrowser(start), chosen)

    def action_start(self) -> None:
        if self.app.run_active:
            self.app.notify("A run is already in progress: stop it first.", severity="warning")
            return
        try:
            plan = self.form.plan()
        except ConfigError as exc:
            self.app.notify(str(exc), title="Check the form", severity="error", markup=False)
            return
        self._start_flow(plan)

    def action_pause(self) -> None:
        if not self.app.run_active and self.followed is not None:
            self.app.request_run(self.followed.id, "resume" if self.followed.state == "paused" else "pause")
            return
        self.post_message(PauseRequested())

    def action_take_over(self) -> None:
        if self.followed is not None and not self.app.run_active:
            self.app.take_over(self.followed)

    def action_stop(self) -> None:
        if not self.app.run_active and self.followed is not None:
            self.app.request_run(self.followed.id, "stop")
            self.query_one("#run-status", Static).update(f"Asked {self.followed.name} to stop and save…")
            return
        if self.app.run_active:
            self.query_one("#run-status", Static).update("Stopping: saving what was learned so far…")
            self.post_message(StopRequested())

    # -- the start dialogs -------------------------------------------------------------
    @work(exclusive=True, group="start-flow", exit_on_error=False)
    async def _start_flow(self, plan: RunPlan) -> None:
        app = self.app
        models_dir = app.models_dir
        handle = app.loaded
        if handle is not None and handle.path is not None and handle.path.exists():
            if not await self._ask_replace(plan, handle):
                app.notify("Cancelled: no file was touched.")
                return
        else:
            name = await app.push_screen_wait(NameDialog(models_dir, free_name(models_dir, Path(plan.corpus).stem)))
            if name is None:
                app.notify("Cancelled: no file was touched.")
                return
            plan.action = "new"
            plan.out_path = models_dir / f"{name}.cllm"
        self.post_message(RunRequested(plan))

    async def _ask_replace(self, plan: RunPlan, handle: ModelHandle) -> bool:
        """The replace dialog. Fills in plan.action/out_path; False means cancel."""
        app = self.app
        name = handle.name
        fits, why = await asyncio.to_thread(self._fits, handle, plan.corpus)
        target = handle.steps + plan.train_config.steps
        choice = await app.push_screen_wait(ChoiceDialog(
            "A model is loaded",
            f"{name} ({handle.steps} steps, best val loss {format_loss(handle.best_val)}) is loaded "
            f"from {handle.path}. What should this run do?",
            [
                Choice("new", "Create new model…", "n", "primary"),
                Choice("fine-tune", f"Fine-tune {name} on this corpus (new file)…", "f", "primary",
                       disabled_reason="" if fits else f"cannot fine-tune: {why}"),
                Choice("overwrite", f"Overwrite {name}…", "o", "error"),
                Choice("continue", f"Continue training {name} ({handle.steps} → {target} steps)", "c",
                       "success", disabled_reason="" if fits else f"cannot continue: {why}"),
                Choice("cancel", "Cancel", "escape"),
            ],
            id="replace-dialog",
        ))
        if choice == "new":
            new_name = await app.push_screen_wait(NameDialog(app.models_dir, free_name(app.models_dir, name)))
            if new_name is None:
                return False
            plan.action = "new"
            plan.out_path = app.models_dir / f"{new_name}.cllm"
            return True
        if choice == "fine-tune" and fits:
            # A new run from the loaded weights and tokenizer: its shape is the model's own.
            suggestion = free_name(app.models_dir, f"{name}-{Path(plan.corpus).stem}")
            new_name = await app.push_screen_wait(NameDialog(app.models_dir, suggestion))
            if new_name is None:
                return False
            plan.action = "fine-tune"
            plan.start_from = handle.path
            plan.out_path = app.models_dir / f"{new_name}.cllm"
            return True
        if choice == "overwrite":
            confirmed = await app.push_screen_wait(ConfirmDialog(
                f"Overwrite {name}?",
                f"{handle.path} will be replaced by a new, untrained model the first time this run "
                f"saves. Lost for good: its {handle.steps} steps of training (best val loss "
                f"{format_loss(handle.best_val)}) and its optimiser state.",
                yes="Overwrite", danger=True,
            ))
            if not confirmed:
                return False
            plan.action = "overwrite"
            plan.out_path = handle.path
            return True
        if choice == "continue" and fits:
            plan.action = "continue"
            plan.start_from = handle.path
            plan.out_path = handle.path
            plan.train_config = dataclasses.replace(plan.train_config, steps=target)
            return True
        return False

    def _fits(self, handle: ModelHandle, corpus_source: str) -> tuple[bool, str]:
        if handle.model is None:
            return False, "the model's weights are not loaded"
        return self.app.engine.fits_corpus(handle.model, corpus_source)

    # -- what the run shows ------------------------------------------------------------
    def _state_changed(self, state: RunStatus) -> None:
        """Buttons, bindings, bars and chart: when the run starts, pauses, resumes or ends."""
        run = self.app.training
        self.form.set_running(state.active, state is RunStatus.PAUSED)
        self.refresh_bindings()
        if run is None:
            return
        if state is RunStatus.PREPARING:
            self._log_seen = 0
            self.query_one("#run-log", Log).clear()
            kernels = "" if self.app.kernels_ready else "compiling kernels (first run only)… "
            self.query_one("#run-status", Static).update(
                f"{kernels}preparing: reading the corpus, building the model…")
        elif state in (RunStatus.RUNNING, RunStatus.PAUSED) and run.trainer is not None and self._attached is not run:
            self._attached = run
            self.run_worker(self.query_one(CoreBars).attach(run.trainer), exclusive=True, group="attach")
            self.query_one(LossChart).attach(run)
            self.query_one("#overall", ProgressBar).update(total=run.trainer.config.steps, progress=run.trainer.step)
        if state is RunStatus.IDLE:
            self._finished(run)
        else:
            self._show_progress(self.app.train_step)

    def _show_progress(self, event: StepEvent | None) -> None:
        """The numbers: for every step message (at most a few dozen a second)."""
        run = self.app.training
        state = self.app.run_status
        if run is None or state in (RunStatus.IDLE, RunStatus.PREPARING, RunStatus.STOPPING):
            return
        status = self.query_one("#run-status", Static)
        paused = "PAUSED · " if state is RunStatus.PAUSED else ""
        if event is None:
            status.update(paused + "starting: first step (and kernel compilation if needed)…", layout=False)
            return
        self.query_one("#overall", ProgressBar).update(total=event.steps, progress=event.step)
        status.update(
            f"{paused}step {event.step:,}/{event.steps:,} · ETA {format_duration(event.eta)}\n"
            f"loss {format_loss(event.loss)} · lr {event.lr:.1e}\n"
            f"{format_rate(event.tokens_per_s)} tokens/s · elapsed {format_duration(event.elapsed)}",
            layout=False,  # fixed size: no layout pass per step
        )

    # -- a run another process trains --------------------------------------------------
    def _follow(self) -> None:
        if self.is_current and not self.app.run_active:
            self._read_followed()

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow", name="follow a run")
    def _read_followed(self) -> None:
        self.post_message(read_followed())

    def on_followed(self, message: Followed) -> None:
        if self.app.run_active:
            return
        was, self.followed = self.followed, message.row
        if (was is None) != (message.row is None):
            self.refresh_bindings()
        row, chart = message.row, self.query_one(LossChart)
        if row is None:
            if was is not None:
                chart.detach()
                self.query_one("#run-status", Static).update(f"{was.name} ended (the Runs screen, ctrl+r, has it).")
            return
        if message.curves is not None:
            chart.show(message.curves, row.id)
        self.query_one("#overall", ProgressBar).update(total=row.steps or None, progress=row.step)
        paused = "PAUSED · " if row.state == "paused" else ""
        self.query_one("#run-status", Static).update(
            f"Following {row.name} (run {row.id}, pid {row.pid} on {row.host}), trained by another process\n"
            f"{paused}step {row.step:,}/{row.steps:,} · ETA {format_duration(row.eta)}\n"
            f"loss {format_loss(row.loss)} · {format_rate(row.tokens_per_s or 0)} tokens/s", layout=False)

    def _sync_log(self, size: int) -> None:
        run = self.app.training
        if run is None:
            return
        log = self.query_one("#run-log", Log)
        for line in run.log[self._log_seen:size]:
            log.write_line(line)
        self._log_seen = max(self._log_seen, size)

    def _finished(self, run: TrainingRun) -> None:
        self.query_one(CoreBars).detach()
        self.query_one(LossChart).detach()
        status = self.query_one("#run-status", Static)
        done = run.done
        if done is None:
            status.update(f"Run failed: {run.error or 'stopped before it started'}")
        else:
            status.update(describe_end(done, run.best_val).status)
