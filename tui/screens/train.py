"""Train: the form on the left, the run on the right (bars per core, loss chart, log)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Log, ProgressBar, Static
from textual.worker import get_current_worker

from cllm.tui.engine import (
    QUICK_START,
    QUICK_START_EVAL_CHUNKS,
    CheckpointEvent,
    CllmError,
    ConfigError,
    DoneEvent,
    EvalEvent,
    ModelHandle,
    RunPlan,
    StepEvent,
    TrainingRun,
    format_duration,
    format_loss,
    format_rate,
)
from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.messages import TrainCheckpoint, TrainEval, TrainFinished, TrainStarted, TrainStep
from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog
from cllm.tui.screens.confirm_dialog import ConfirmDialog
from cllm.tui.screens.file_browser import FileBrowser
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.widgets.core_bars import CoreBars
from cllm.tui.widgets.loss_chart import TRAIN_STYLE, VAL_STYLE, LossChart
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.worker_errors import ReportWorkerErrors
from cllm.tui.widgets.train_form import TrainForm

if TYPE_CHECKING:
    from cllm.tui.app import CllmApp


STEP_MESSAGES_HZ = 20


def free_name(models_dir: Path, base: str) -> str:
    """`base`, or `base-2`, `base-3`, ... whichever has no file yet."""
    base = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base).strip("-") or "model"
    name, n = base, 1
    while (models_dir / f"{name}.cllm").exists():
        n += 1
        name = f"{base}-{n}"
    return name


class TrainScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("f5", "start", "Start", id="train.start"),
        Binding("f6", "pause", "Pause", id="train.pause"),
        Binding("f7", "stop", "Stop", id="train.stop"),
        Binding("f8", "browse", "Browse", id="train.browse"),
    ]

    app: "CllmApp"

    def __init__(self) -> None:
        super().__init__(id="train")
        self._log_seen = 0

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

    @property
    def form(self) -> TrainForm:
        return self.query_one(TrainForm)

    # -- bindings ----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.app.training
        active = run is not None and run.active
        if action in ("start", "browse"):
            return None if active else True
        if action in ("pause", "stop"):
            return True if active else None
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"start": self.action_start, "pause": self.action_pause,
                   "stop": self.action_stop, "browse": self.action_browse}
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()

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

    def action_start(self, quick_start: bool = False) -> None:
        run = self.app.training
        if run is not None and run.active:
            self.app.notify("A run is already in progress: stop it first.", severity="warning")
            return
        try:
            plan = self.form.plan()
        except ConfigError as exc:
            self.app.notify(str(exc), title="Check the form", severity="error", markup=False)
            return
        plan.quick_start = quick_start
        if quick_start:
            plan.train_config = dataclasses.replace(plan.train_config, eval_chunks=QUICK_START_EVAL_CHUNKS)
        self._start_flow(plan)

    def quick_start(self) -> None:
        self.form.set_values(QUICK_START)
        self.form.refresh_errors()
        self.action_start(quick_start=True)

    def action_pause(self) -> None:
        run = self.app.training
        if run is None or not run.active or run.trainer is None:
            return
        if run.paused:
            run.unpause()
            self.app.notify("Training resumed.")
        else:
            run.pause()
            self.app.notify("Training paused (the current step finishes first).")
        self._show_state()

    def action_stop(self) -> None:
        run = self.app.training
        if run is None or not run.active:
            return
        if run.trainer is None:
            run.stop_requested = True
        else:
            run.stop()
        self.query_one("#run-status", Static).update("Stopping: saving what was learned so far…")
        self.app.activity = "stopping…"

    # -- the start dialogs -------------------------------------------------------------
    @work(exclusive=True, group="start-flow", exit_on_error=False)
    async def _start_flow(self, plan: RunPlan) -> None:
        app = self.app
        models_dir = app.models_dir
        handle = app.loaded
        if plan.quick_start:
            plan.action = "new"
            plan.out_path = models_dir / f"{free_name(models_dir, 'quickstart')}.cllm"
        elif handle is not None and handle.path is not None and handle.path.exists():
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
        self.begin(plan)

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
            plan.resume_from = handle.path
            plan.out_path = handle.path
            plan.train_config = dataclasses.replace(plan.train_config, steps=target)
            return True
        return False

    def _fits(self, handle: ModelHandle, corpus_source: str) -> tuple[bool, str]:
        try:
            corpus = self.app.engine.load_corpus(corpus_source)
        except CllmError as exc:
            return False, str(exc)
        return self.app.engine.fits_corpus(handle, corpus)

    # -- the run -----------------------------------------------------------------------
    def begin(self, plan: RunPlan) -> None:
        """Start the training worker for a decided plan."""
        assert plan.out_path is not None
        plan.train_config = dataclasses.replace(
            plan.train_config, checkpoint_interval=plan.train_config.checkpoint_interval
            or plan.train_config.eval_interval)
        run = TrainingRun(trainer=None, plan=plan, name=plan.out_path.stem)
        loaded = self.app.loaded
        if plan.action == "continue" and loaded is not None and loaded.info is not None:
            run.prefill(loaded.info.training)  # the chart continues the saved curves
        self.app.training = run
        self._log_seen = 0
        self.query_one("#run-log", Log).clear()
        self.query_one("#run-log", Log).write_line(
            {"new": "new model", "overwrite": "new model, will overwrite",
             "continue": "continuing"}[plan.action] + f" → {plan.out_path.name}")
        kernels = "" if self.app.kernels_ready else "compiling kernels (first run only)… "
        self.query_one("#run-status", Static).update(f"{kernels}preparing: reading the corpus, building the model…")
        self.app.activity = "compiling kernels…" if kernels else "preparing run…"
        self.form.set_running(True)
        self.refresh_bindings()
        self._train(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train", name="train")
    def _train(self, run: TrainingRun) -> None:
        worker = get_current_worker()
        engine = self.app.engine
        plan = run.plan
        try:
            if run.stop_requested:
                return
            corpus = engine.load_corpus(plan.corpus)
            if plan.action == "continue":
                trainer = engine.resume_trainer(plan.resume_from, corpus, plan.train_config, out_path=plan.out_path)
            else:
                trainer = engine.new_trainer(corpus, plan.model_config, plan.train_config,
                                             tokenizer=plan.tokenizer, vocab_size=plan.vocab_size,
                                             out_path=plan.out_path)
            run.trainer = trainer
            run.corpus_name, run.corpus_sha = corpus.name, corpus.sha256
            self.post_message(TrainStarted(run))
            if run.stop_requested:
                trainer.stop()

            last_post = 0.0

            def on_event(event) -> None:
                nonlocal last_post
                run.record(event)
                if worker.is_cancelled and not run.stop_requested:
                    run.stop()
                if isinstance(event, StepEvent):
                    # at most STEP_MESSAGES_HZ a second; the histories get every step anyway
                    now = time.monotonic()
                    if now - last_post >= 1 / STEP_MESSAGES_HZ or event.step >= event.steps:
                        last_post = now
                        self.post_message(TrainStep(event))
                elif isinstance(event, EvalEvent):
                    self.post_message(TrainEval(event))
                elif isinstance(event, CheckpointEvent):
                    self.post_message(TrainCheckpoint(event))

            done = trainer.run(on_event)
            if run.done is None and isinstance(done, DoneEvent):
                run.record(done)
        except BaseException as exc:
            run.error = str(exc) if isinstance(exc, CllmError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            run.finished.set()
            self.post_message(TrainFinished(run))

    async def on_train_started(self, message: TrainStarted) -> None:
        run = message.run
        trainer = run.trainer
        await self.query_one(CoreBars).attach(trainer)
        self.query_one(LossChart).attach(run)
        self.query_one("#overall", ProgressBar).update(total=trainer.config.steps, progress=trainer.step)
        previous = self.app.loaded
        handle = ModelHandle(path=run.out_path, model=trainer.model,
                             info=previous.info if previous and run.plan.action == "continue" else None,
                             steps=int(trainer.step), corpus_name=run.corpus_name, corpus_sha=run.corpus_sha)
        if run.plan.action == "continue" and previous is not None:
            handle.best_val = previous.best_val
        self.app.set_loaded(handle, remember=False)
        self._show_state()

    def on_train_step(self, message: TrainStep) -> None:
        event = message.event
        run = self.app.training
        self.query_one("#overall", ProgressBar).update(total=event.steps, progress=event.step)
        loaded = self.app.loaded
        if run is not None and loaded is not None and run.trainer is not None and loaded.model is run.trainer.model:
            loaded.steps = int(event.step)
            self.app.refresh_summary()
        self._show_progress(event)

    def on_train_eval(self, message: TrainEval) -> None:
        loaded = self.app.loaded
        run = self.app.training
        if run is not None and loaded is not None and run.trainer is not None and loaded.model is run.trainer.model:
            loaded.best_val = message.event.best_val_loss
            self.app.refresh_summary()
        self._sync_log()

    def on_train_checkpoint(self, message: TrainCheckpoint) -> None:
        self._sync_log()

    def _sync_log(self) -> None:
        run = self.app.training
        if run is None:
            return
        log = self.query_one("#run-log", Log)
        lines = run.log[self._log_seen:]
        self._log_seen += len(lines)
        for line in lines:
            log.write_line(line)

    def _show_state(self, event=None) -> None:
        """Buttons and bindings: call when the run starts, pauses, resumes or ends."""
        run = self.app.training
        if run is None:
            return
        self.form.set_running(run.active, run.paused)
        self.refresh_bindings()
        self._show_progress(event)

    def _show_progress(self, event=None) -> None:
        """The numbers: called for every step message (at most a few dozen a second)."""
        run = self.app.training
        if run is None:
            return
        event = event or run.last_step
        status = self.query_one("#run-status", Static)
        paused = run.paused
        if event is None:
            status.update(("PAUSED · " if paused else "") + "starting: first step (and kernel compilation "
                          "if needed)…", layout=False)
            return
        state = "PAUSED · " if paused else ""
        status.update(
            f"{state}step {event.step:,}/{event.steps:,} · ETA {format_duration(event.eta)}\n"
            f"loss {format_loss(event.loss)} · lr {event.lr:.1e}\n"
            f"{format_rate(event.tokens_per_s)} tokens/s · elapsed {format_duration(event.elapsed)}",
            layout=False,  # fixed size: no layout pass per step
        )
        if not run.stop_requested:
            self.app.activity = "paused" if paused else "training"  # the step is in the model summary

    def on_train_finished(self, message: TrainFinished) -> None:
        run: TrainingRun = message.run
        self.query_one(CoreBars).detach()
        self.query_one(LossChart).detach()
        self._sync_log()
        self.form.set_running(False)
        self.refresh_bindings()
        self.app.activity = ""
        status = self.query_one("#run-status", Static)
        done = run.done
        app = self.app
        path = run.out_path
        if done is None:
            status.update(f"Run failed: {run.error or 'stopped before it started'}")
            if run.stop_requested and run.error is None:
                app.notify("Run cancelled before it started: no file was touched.")
        else:
            message_text = getattr(done, "message", "") or ""
            if done.reason == "nan":
                if run.checkpoints:
                    kept = f"Last good checkpoint: {path} (step {run.last_checkpoint_step})."
                elif path.exists():
                    kept = f"Nothing was saved: {path} is unchanged."
                else:
                    kept = "Nothing was saved."
                what = message_text or f"the loss became NaN or infinite at step {done.step + 1}"
                status.update(f"Stopped after step {done.step}: the loss is not a number.")
                app.notify(f"{path.name}: {what.rstrip('.')}. Try a lower learning rate. {kept}",
                           title="Training stopped", severity="error", timeout=15, markup=False)
            elif done.reason == "stopped":
                status.update(f"Stopped at step {done.step}; saved {path.name}.")
                app.notify(f"Stopped at step {done.step}; everything learned so far is saved in {path}.",
                           markup=False)
            else:
                status.update(f"Finished: {done.step} steps; saved {path.name}.")
                app.notify(f"Training finished: {path} ({done.step} steps, best val loss "
                           f"{format_loss(run.best_val)}).", markup=False)
        # What is on disk is the truth now: reload it (the run's in-memory weights may be NaN).
        if path.exists():
            after = None
            if run.plan.quick_start and done is not None and done.reason in ("finished", "stopped"):
                after = app.after_quick_start
            app.load_model(path, on_loaded=after)
        elif run.trainer is not None and app.loaded is not None and app.loaded.model is run.trainer.model:
            app.set_loaded(None, remember=False)
        if app.quit_after_run:
            app.exit()
