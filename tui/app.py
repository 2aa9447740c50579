"""CLLM's terminal app: Train, Generate and Models, one key apart.

    cllm-tui [--models-dir DIR] [--model FILE]

Without --model it loads the model used last time (remembered in the settings file),
else MODELS_DIR/saved_model.cllm if it exists, else starts empty and offers a quick
start. The settings file also holds a "keymap" (binding id -> keys) that remaps any
binding below; see tui/settings.py.

The app owns what outlives a screen: the loaded model and the training run. Screens ask
for things with messages (`RunRequested`, `StopRequested`, `LoadRequested`, ...); the
app runs the workers, and the screens watch its reactive attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("TEXTUAL_FPS", "20")  # before Textual is imported (see tui/__init__.py)

from textual import on, work  # noqa: E402
from textual.app import App, SystemCommand  # noqa: E402
from textual.binding import Binding  # noqa: E402
from textual.driver import Driver  # noqa: E402
from textual.reactive import var  # noqa: E402
from textual.screen import ModalScreen, Screen  # noqa: E402
from textual.worker import get_current_worker  # noqa: E402

from cllm.core.stop_signals import flush_or_drop_output, stop_on_signals  # noqa: E402
from cllm.tui.bindings import MODE_BINDINGS  # noqa: E402
from cllm.tui.detach import hand_over  # noqa: E402
from cllm.tui.engine import (  # noqa: E402
    QUICK_START_PROMPT, CheckpointEvent, CllmError, CorpusRef, Engine, EvalEvent, SaveFailedEvent, StepEvent,
    TrainConfig,
)
from cllm.tui.formatting import format_loss  # noqa: E402
from cllm.tui.messages import (  # noqa: E402
    Imported, ImportRequested, KernelsCompiled, LoadRequested, ModelLoaded, ModelLoadFailed, PauseRequested,
    ReadProgress, RunRequested, RunSavedAs, RunsRead, StopRequested, TakeOverRequested, TrainEval, TrainFinished, TrainSaved, TrainSaveFailed,
    TrainStarted, TrainStep,
)
from cllm.tui.model_handle import ModelHandle  # noqa: E402
from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog  # noqa: E402
from cllm.tui.screens.generate import GenerateScreen  # noqa: E402
from cllm.tui.screens.models import ModelsScreen  # noqa: E402
from cllm.tui.screens.runs import RunsScreen, read_journal  # noqa: E402
from cllm.tui.screens.save_as_dialog import SaveAsDialog  # noqa: E402
from cllm.tui.screens.train import TrainScreen  # noqa: E402
from cllm.tui.settings import Settings  # noqa: E402
from cllm.tui.training_run import RunPlan, TrainingRun  # noqa: E402
from cllm.tui.worker_errors import ReportWorkerErrors, describe_error  # noqa: E402

DEFAULT_MODEL_NAME = "saved_model.cllm"
STEP_MESSAGES_HZ = 20  # the training worker posts at most this many step messages a second
PROGRESS_HZ = 10  # and a reading worker this many progress messages
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class CllmApp(ReportWorkerErrors, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "CLLM"
    MODES = {"train": TrainScreen, "generate": GenerateScreen, "models": ModelsScreen, "runs": RunsScreen}
    DEFAULT_MODE = "generate"
    NOTIFICATION_TIMEOUT = 6

    BINDINGS = [
        # Shown in the Generate screen's footer (while there is no model), works everywhere.
        Binding("ctrl+n", "quick_start", "Quick start", id="app.quick_start", show=False),
        Binding("f1", "keys", "Keys", id="app.keys", show=False),
        # While a run goes on (check_action), ahead of the Input's delete-right.
        Binding("ctrl+d", "detach", "Detach", id="app.detach", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    # var, not reactive: a change repaints only what watches it, not the app.
    model_summary: var[str] = var("no model loaded")
    activity: var[str] = var("")
    train_state: var[str] = var("idle")  # idle, preparing, running, paused, stopping
    train_step: var[StepEvent | None] = var(None)  # the run's latest step
    train_log_size: var[int] = var(0)  # lines in the run's log
    models_saved: var[int] = var(0)  # counts the model files this app wrote: the Models tree refreshes
    load_failure: var[tuple[Path, str] | None] = var(None)  # the last file that failed to load, and why

    def __init__(
        self,
        *,
        models_dir: Path | str = "models",
        model_path: Path | str | None = None,
        settings: Settings | None = None,
        config_dir: Path | str | None = None,
        engine: Engine | None = None,
        autoload: bool = True,
        compile_kernels: bool = True,
        prewarm: bool = True,
    ) -> None:
        super().__init__()
        self.models_dir = Path(models_dir).expanduser()
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.settings = settings if settings is not None else Settings.load(config_dir)
        self.engine = engine if engine is not None else Engine()
        self.autoload = autoload
        self.compile_on_start = compile_kernels
        self.prewarm = prewarm
        self.loaded: ModelHandle | None = None
        self.training: TrainingRun | None = None
        self.kernels_ready = True
        self.compiling = False  # the compile thread cannot be stopped: main() does not wait for it
        self.quit_after_run = False
        self.notices: list[str] = []  # every notification, for tests and the log

    def get_driver_class(self) -> type[Driver]:
        """On Linux and macOS, a driver that exits cleanly when the terminal hangs up
        (tui/terminal_driver.py); elsewhere, or with TEXTUAL_DRIVER set, Textual's choice."""
        chosen = super().get_driver_class()
        if chosen.__name__ != "LinuxDriver":
            return chosen
        from cllm.tui.terminal_driver import TerminalDriver  # termios: not on Windows

        return TerminalDriver

    # -- start-up ----------------------------------------------------------------------
    async def on_mount(self) -> None:
        self._install_signal_handlers()
        self._make_models_dir()
        if self.prewarm:
            # Build every screen now, while nothing else runs: the first visit to a screen
            # during a training run is then as quick as any other switch.
            with self.batch_update():
                for mode in self.MODES:
                    await self.switch_mode(mode)
                await self.switch_mode(self.DEFAULT_MODE)
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        if self.settings.problem:
            self.notify(self.settings.problem, severity="warning", markup=False)
        try:
            self.kernels_ready = self.engine.kernels_ready()
        except Exception:  # noqa: BLE001 - a broken engine must not stop the UI from starting
            self.kernels_ready = True
        if not self.kernels_ready and self.compile_on_start:
            self.activity = "compiling kernels…"
            self._compile_kernels()
        self._look_for_runs()
        if self.autoload:
            path = self.startup_model()
            if path is not None:
                self.load_model(path, remember=self.model_path is not None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-at-start", name="look for runs")
    def _look_for_runs(self) -> None:
        """Runs other processes train (a detached run, `cllm train`): the app opens on the
        Runs screen, which follows them."""
        found = read_journal([])
        if any(row.live and row.pid != os.getpid() for row in found.rows):
            self.post_message(found)

    async def on_runs_read(self, message: RunsRead) -> None:
        live = [row for row in message.rows if row.live]
        if not live:
            return
        newest = live[0]
        self.notify(f"{len(live)} run{'s are' if len(live) > 1 else ' is'} going (newest: {newest.name}, step "
                    f"{newest.step:,}/{newest.steps:,}); the Runs screen ({self.key_for('mode.runs')}) follows "
                    "them: Stop, Take over.", markup=False)
        if self.model_path is None and self.training is None:
            await self.action_mode("runs")

    @on(TakeOverRequested)
    async def _take_over(self, message: TakeOverRequested) -> None:
        """Continues here a run another process trained, which has stopped and saved."""
        row = message.row
        path = Path(row.file)
        if row.live or not path.exists():
            self.notify(f"{row.name} did not stop in time; it goes on where it is." if row.live
                        else f"{path}: no model file to continue.", severity="error", markup=False)
            return
        if self.training is not None and self.training.active:
            self.notify("A run is already in progress: stop it first.", severity="warning")
            return
        plan = RunPlan(corpus=row.corpus or "python-docs", tokenizer="char", vocab_size=None, model_config={},
                       train_config=TrainConfig.from_dict(row.training), action="continue", out_path=path,
                       start_from=path, journal_id=row.id)
        await self.action_mode("train")
        self.start_training(plan)
        self.notify(f"Took over {row.name} at step {row.step:,}.", markup=False)

    def _make_models_dir(self) -> None:
        """The Models tree is rooted at the models folder from the first start."""
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.notify(f"{self.models_dir}: cannot create the models folder ({exc.strerror or exc})",
                        severity="warning", markup=False)

    def startup_model(self) -> Path | None:
        """--model, else the last model (if its file still exists), else saved_model.cllm."""
        if self.model_path is not None:
            return self.model_path
        last = self.settings.last_model
        if last and Path(last).is_file():
            return Path(last)
        default = self.models_dir / DEFAULT_MODEL_NAME
        return default if default.is_file() else None

    @work(thread=True, exclusive=True, exit_on_error=False, group="kernels", name="compile kernels")
    def _compile_kernels(self) -> None:
        started = time.monotonic()
        self.compiling = True
        try:
            self.engine.compile_kernels()
        finally:
            self.compiling = False
        self.post_message(KernelsCompiled(time.monotonic() - started))

    def on_kernels_compiled(self, message: KernelsCompiled) -> None:
        self.kernels_ready = True
        if self.activity.startswith("compiling"):
            self.activity = ""
        self.notify(f"Kernels compiled in {message.seconds:.0f} s (cached for next time).")

    # -- signals: the terminal went away (SIGHUP), or the system asks to stop (SIGTERM) --
    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in TERMINATING_SIGNALS:
            try:
                loop.add_signal_handler(sig, self.terminate, signal.Signals(sig).name)
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no such signal
                continue

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in TERMINATING_SIGNALS:
            try:
                loop.remove_signal_handler(sig)
            except (RuntimeError, ValueError, NotImplementedError):
                continue

    def terminate(self, why: str) -> None:
        """Stop what runs and leave: a training run stops at its next step and saves (main()
        waits for that after the screen is gone, and says where it went); on SIGHUP (the
        terminal went away) it then goes on in the background (tui/detach.py). A
        generation just stops with the app."""
        run = self.training
        if run is not None and run.active:
            if why == "SIGHUP":
                run.request_detach(why)
            else:
                run.stop(why)
        self.exit()

    def action_detach(self) -> None:
        """Leave the app; the run goes on in the background (tui/detach.py)."""
        run = self.training
        if run is None or not run.active or run.trainer is None:
            self.notify("No run to detach: start one first.", severity="warning")
            return
        run.request_detach("detach")
        self.exit()

    # -- the loaded model --------------------------------------------------------------
    def load_model(self, path: Path, *, remember: bool = True, then_generate: str | None = None) -> None:
        """Load `path` on a worker thread; errors become notifications naming the file."""
        self.activity = f"loading {Path(path).name}…"
        self._load_model(Path(path), remember, then_generate)

    @on(LoadRequested)
    def _load_requested(self, message: LoadRequested) -> None:
        self.load_model(message.path)

    def _progress_poster(self, what: str, name: str) -> Callable[[int, int], None]:
        """A progress callback for a worker reading a model: posts ReadProgress, at most
        PROGRESS_HZ times a second."""
        last = [0.0]

        def post(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 1 / PROGRESS_HZ or done >= total:
                last[0] = now
                self.post_message(ReadProgress(what, name, done, total))
        return post

    def on_read_progress(self, message: ReadProgress) -> None:
        if message.total and self.activity.startswith(message.what):
            self.activity = f"{message.what} {message.name}… {100 * message.done // message.total}%"

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", name="load model")
    def _load_model(self, path: Path, remember: bool, then_generate: str | None) -> None:
        try:
            loaded = self.engine.load_model(path, self._progress_poster("loading", path.name))
        except Exception as exc:
            self.post_message(ModelLoadFailed(path, describe_error(exc, f"loading {path}")))
            raise  # the notification comes from on_worker_state_changed
        self.post_message(ModelLoaded(ModelHandle.from_loaded(path, loaded), remember, then_generate))

    @on(ImportRequested)
    def _import_requested(self, message: ImportRequested) -> None:
        self.activity = f"importing {message.folder.name}…"
        self._import(message.folder, message.out)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import", name="import")
    def _import(self, folder: Path, out: Path) -> None:
        try:
            self.engine.import_hf_folder(folder, out, self._progress_poster("importing", folder.name))
        except Exception as exc:  # noqa: BLE001 - reported in a message, the user's words
            self.post_message(Imported(folder, out, describe_error(exc, f"importing {folder}")))
            return
        self.post_message(Imported(folder, out, None))

    def on_imported(self, message: Imported) -> None:
        self._clear_activity("importing")
        if message.error is not None:
            self.notify(message.error, title="Import failed", severity="error", timeout=15, markup=False)
            return
        self.models_saved += 1
        self.notify(f"Imported {message.folder} as {message.out}", markup=False)
        self.load_model(message.out)

    def _clear_activity(self, prefix: str) -> None:
        if self.activity.startswith(prefix):
            self.activity = ""

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self._clear_activity("loading")
        self.load_failure = (message.path, message.message)

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        self._clear_activity("loading")
        handle = message.handle
        self.set_loaded(handle, remember=message.remember)
        self.notify(f"Loaded {handle.path}", markup=False)
        if message.then_generate is not None:
            await self.action_mode("generate")
            screen = self.screen
            if isinstance(screen, GenerateScreen):
                screen.generate_now(message.then_generate)

    def set_loaded(self, handle: ModelHandle | None, *, remember: bool = True) -> None:
        had_model = self.loaded is not None
        self.loaded = handle
        self.refresh_summary()
        if had_model != (handle is not None):
            self.refresh_bindings()  # the quick start and Generate's keys depend on it
        if remember and handle is not None and handle.path is not None:
            problem = self.settings.remember_model(handle.path)
            if problem:
                self.notify(problem, severity="warning", markup=False)

    def refresh_summary(self) -> None:
        self.model_summary = self.loaded.summary() if self.loaded else "no model loaded"

    def _follows_run(self) -> bool:
        """Whether the loaded model is the one the current run trains."""
        run, loaded = self.training, self.loaded
        return run is not None and run.trainer is not None and loaded is not None and loaded.model is run.trainer.model

    # -- the training run --------------------------------------------------------------
    @on(RunRequested)
    def _run_requested(self, message: RunRequested) -> None:
        if self.training is not None and self.training.active:
            self.notify("A run is already in progress: stop it first.", severity="warning")
            return
        self.start_training(message.plan)

    def start_training(self, plan: RunPlan) -> None:
        """Start the training worker for a decided plan."""
        assert plan.out_path is not None
        run = TrainingRun(plan=plan, name=plan.out_path.stem)
        if plan.action == "continue" and self.loaded is not None and self.loaded.info is not None:
            run.prefill(self.loaded.info.run)  # the chart continues the saved curves
        source = plan.start_from.name if plan.start_from else ""
        run.log.append({"new": "new model", "overwrite": "new model, will overwrite", "continue": "continuing",
                        "fine-tune": f"fine-tuning {source}"}[plan.action] + f" → {plan.out_path.name}")
        self.training = run
        self.train_step = None
        self.train_log_size = len(run.log)
        self.activity = "preparing run…" if self.kernels_ready else "compiling kernels…"
        self.train_state = "preparing"
        self._train(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train", name="train")
    def _train(self, run: TrainingRun) -> None:
        worker = get_current_worker()
        plan = run.plan
        try:
            if run.stop_requested:
                return
            run.open_session()
            corpus = self.engine.load_corpus(plan.corpus)
            if plan.action == "continue":
                assert plan.start_from is not None
                trainer = self.engine.resume_trainer(plan.start_from, corpus, plan.train_config,
                                                     out_path=plan.out_path)
            elif plan.action == "fine-tune":
                assert plan.start_from is not None and plan.out_path is not None
                trainer = self.engine.fine_tune_trainer(plan.start_from, corpus, plan.train_config,
                                                        out_path=plan.out_path)
            else:
                trainer = self.engine.new_trainer(corpus, plan.model_config, plan.train_config,
                                                  tokenizer=plan.tokenizer, vocab_size=plan.vocab_size,
                                                  out_path=plan.out_path)
            run.trainer, run.corpus = trainer, CorpusRef(corpus.name, corpus.sha256)
            run.describe_to_journal()
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
                    self.post_message(TrainSaved(event))
                elif isinstance(event, SaveFailedEvent):
                    self.post_message(TrainSaveFailed(event))

            trainer.run(on_event)
        except BaseException as exc:
            run.error = describe_error(exc, "training")
            raise
        finally:
            run.close_session()
            run.finished.set()
            self.post_message(TrainFinished(run))

    def on_train_started(self, message: TrainStarted) -> None:
        run = message.run
        trainer = run.trainer
        assert trainer is not None
        previous = self.loaded
        continuing = run.plan.action == "continue" and previous is not None
        handle = ModelHandle(path=run.out_path, model=trainer.model,
                             info=previous.info if continuing else None, steps=trainer.step,
                             best_val=previous.best_val if continuing else None, corpus=run.corpus)
        self.set_loaded(handle, remember=False)
        self.train_state = "paused" if trainer.paused else "running"
        for note in run.session.notes if run.session else []:
            self.notify(note, severity="warning", markup=False)

    def on_train_step(self, message: TrainStep) -> None:
        if self._follows_run():
            self.loaded.steps = message.event.step
            self.refresh_summary()
        self.train_step = message.event
        if self.train_state == "running":
            self.activity = "training"

    def on_train_eval(self, message: TrainEval) -> None:
        if self._follows_run():
            self.loaded.best_val = message.event.best_val_loss
            self.refresh_summary()
        self._sync_log()

    def on_train_saved(self, message: TrainSaved) -> None:
        self.models_saved += 1
        self._sync_log()

    def on_train_save_failed(self, message: TrainSaveFailed) -> None:
        event = message.event
        then = ("The run goes to a fallback file." if event.final
                else "Training goes on; the next checkpoint tries again.")
        self.notify(f"{event.message}. {then}", title="Save failed", severity="error", timeout=15, markup=False)
        self._sync_log()

    def _sync_log(self) -> None:
        if self.training is not None:
            self.train_log_size = len(self.training.log)

    @on(PauseRequested)
    def _pause_requested(self) -> None:
        run = self.training
        if run is None or not run.active or run.trainer is None or self.train_state == "stopping":
            return
        if run.paused:
            run.unpause()
            self.notify("Training resumed.")
            self.train_state = "running"
            self.activity = "training"
        else:
            run.pause()
            self.notify("Training paused (the current step finishes first).")
            self.train_state = "paused"
            self.activity = "paused"

    @on(StopRequested)
    def _stop_requested(self) -> None:
        run = self.training
        if run is None or not run.active:
            return
        run.stop()
        self.train_state = "stopping"
        self.activity = "stopping…"

    def on_train_finished(self, message: TrainFinished) -> None:
        run = message.run
        self._sync_log()
        self.train_state = "idle"
        self.activity = ""
        done = run.done
        path = run.out_path
        if done is None:
            if run.stop_requested and run.error is None:
                self.notify("Run cancelled before it started: no file was touched.")
        elif done.reason == "nan":
            if run.checkpoints:
                kept = f"Last good checkpoint: {path} (step {run.last_checkpoint_step})."
            elif path.exists():
                kept = f"Nothing was saved: {path} is unchanged."
            else:
                kept = "Nothing was saved."
            self.notify(f"{path.name}: {done.message.rstrip('.')}. Try a lower learning rate. {kept}",
                        title="Training stopped", severity="error", timeout=15, markup=False)
        elif any(failure.final for failure in run.save_failures):
            self._offer_save_as(run)
        elif done.reason == "stopped":
            self.notify(f"Stopped at step {done.step}; everything learned so far is saved in {path}.",
                        markup=False)
        else:
            self.notify(f"Training finished: {path} ({done.step} steps, best val loss "
                        f"{format_loss(run.best_val)}).", markup=False)
        # What is on disk is the truth now: reload it (the run's in-memory weights may be NaN).
        if done is not None and done.saved_to is not None and done.saved_to.exists():
            quick = run.plan.quick_start and done.reason in ("finished", "stopped") and done.saved_to == path
            self.load_model(done.saved_to, then_generate=QUICK_START_PROMPT if quick else None)
        elif self._follows_run():
            self.set_loaded(None, remember=False)
        if self.quit_after_run:
            self.exit()

    def _offer_save_as(self, run: TrainingRun) -> None:
        done = run.done
        assert done is not None
        failure = next(f for f in run.save_failures if f.final)
        where = (f"The run was saved to {done.saved_to} instead." if done.saved_to
                 else f"It could not be saved anywhere ({done.message}).")
        self.notify(f"{failure.message}. {where}", title="Save failed", severity="error", timeout=20,
                    markup=False)

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._save_as(run, path)

        self.push_screen(SaveAsDialog(failure.message, done.saved_to, run.out_path), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="save-as", name="save as")
    def _save_as(self, run: TrainingRun, path: Path) -> None:
        assert run.trainer is not None
        try:
            run.trainer.save(path)
        except CllmError as exc:
            self.post_message(RunSavedAs(path, str(exc)))
            return
        self.post_message(RunSavedAs(path, None))

    def on_run_saved_as(self, message: RunSavedAs) -> None:
        if message.error is not None:
            self.notify(message.error, title="Save as failed", severity="error", timeout=15, markup=False)
            run = self.training
            if run is not None:
                self._offer_save_as(run)
            return
        self.models_saved += 1
        self.notify(f"Saved {message.path}", markup=False)
        self.load_model(message.path)

    # -- modes and actions -------------------------------------------------------------
    def key_for(self, binding_id: str) -> str:
        """The keys bound to `binding_id` (after the user's keymap), for messages."""
        keys = self._keymap.get(binding_id)
        if keys is None:
            for binding in [*MODE_BINDINGS, *self.BINDINGS, *GenerateScreen.BINDINGS,
                            *TrainScreen.BINDINGS, *ModelsScreen.BINDINGS]:
                if isinstance(binding, Binding) and binding.id == binding_id:
                    keys = binding.key
                    break
        if not keys:
            return "?"
        return self.get_key_display(Binding(keys.split(",")[0], ""))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("mode", "quick_start") and isinstance(self.screen, ModalScreen):
            return False
        if action == "detach":
            return self.training is not None and self.training.active
        if action == "quick_start":
            # Offered (and shown in the footer) while there is nothing to generate from.
            if self.loaded is not None:
                return False
            if self.training is not None and self.training.active:
                return None
        return True

    async def action_mode(self, mode: str) -> None:
        if mode != self.current_mode:
            await self.switch_mode(mode)

    async def action_quick_start(self) -> None:
        if self.training is not None and self.training.active:
            self.notify("A run is already in progress.", severity="warning")
            return
        await self.action_mode("train")
        screen = self.screen
        if isinstance(screen, TrainScreen):
            screen.quick_start()

    def action_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        run = self.training
        if run is None or not run.active:
            self.exit()
            return

        def answer(choice: str | None) -> None:
            if choice == "stop" and self.training is not None and self.training.active:
                self.quit_after_run = True
                self.post_message(StopRequested())
                self.notify("Stopping: saving the model, then quitting…")

        self.push_screen(ChoiceDialog(
            "Training is running",
            f"{run.name} is training. Quit now?",
            [Choice("stop", "Stop, save and quit", "s", "error"),
             Choice("keep", "Keep training", "k", "primary")],
            cancel_id="keep", id="quit-dialog",
        ), answer)

    def _run_on(self, mode: str, action: str) -> Callable[[], object]:
        async def run() -> None:
            await self.action_mode(mode)
            await self.run_action(action, self.screen)
        return run

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Train", "Training screen: corpus, model size, start/pause/stop",
                            lambda: self.run_action("mode('train')"))
        yield SystemCommand("Generate", "Generation screen: prompt and sampling settings",
                            lambda: self.run_action("mode('generate')"))
        yield SystemCommand("Runs", "Every training run, live: follow, compare, stop or take over (ctrl+r)",
                            lambda: self.run_action("mode('runs')"))
        yield SystemCommand("Models", "Browse, inspect and load .cllm model files",
                            lambda: self.run_action("mode('models')"))
        yield SystemCommand("Quick start", "Train a small model on python-docs (about a minute)",
                            self.action_quick_start)
        yield SystemCommand("Start training", "Start a run with the form's settings",
                            self._run_on("train", "start"))
        yield SystemCommand("Pause or resume training", "Pause the run, or resume it",
                            self._run_on("train", "pause"))
        yield SystemCommand("Stop training", "Stop the run and save what it learned",
                            self._run_on("train", "stop"))
        yield SystemCommand("Detach", "Leave the app; the run goes on in the background (cllm runs follows it)",
                            self.action_detach)
        yield SystemCommand("Browse for a corpus", "Pick the training text in a file browser",
                            self._run_on("train", "browse"))
        yield SystemCommand("Generate text", "Generate from the prompt box",
                            self._run_on("generate", "generate"))
        yield SystemCommand("Stop generation", "Stop the text being generated",
                            self._run_on("generate", "stop"))
        yield SystemCommand("Copy last output", "Copy the last prompt and output to the clipboard",
                            self._run_on("generate", "copy"))
        yield SystemCommand("Load highlighted model", "Load the model highlighted in Models",
                            self._run_on("models", "load"))
        yield SystemCommand("Keys", "Show or hide the key bindings panel", self.action_keys)
        yield from super().get_system_commands(screen)

    # -- errors ------------------------------------------------------------------------
    def notify(self, message: str, *, title: str = "", severity="information",
               timeout: float | None = None, markup: bool = True) -> None:
        self.notices.append(message)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def on_unmount(self) -> None:
        self._remove_signal_handlers()
        # Thread workers cannot be killed: ask the trainer to stop so the process can exit.
        if self.training is not None and self.training.active:
            self.training.stop()


def wait_for_training(app: CllmApp) -> str:
    """After the screen is gone: a run still saving is waited for (signals meanwhile do not
    cut the save short). Returns what to tell the user about a run the exit stopped."""
    run = app.training
    if run is None or not run.stop_requested:
        return ""
    with stop_on_signals(lambda why: None):
        run.finished.wait()
    if run.done is not None:
        return f"{run.name}: {run.done.message}"
    return f"{run.name}: {run.error or 'stopped before it started; no file was touched'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cllm-tui", description="CLLM's terminal app.")
    parser.add_argument("--models-dir", default="models", metavar="DIR",
                        help="folder of .cllm model files (default: ./models)")
    parser.add_argument("--model", default=None, metavar="FILE", help="model to load at start-up")
    args = parser.parse_args(argv)
    app = CllmApp(models_dir=args.models_dir, model_path=args.model)
    app.run()
    note = wait_for_training(app)
    note = hand_over(app.training) or note  # a detached run goes on in its own process
    if note:
        try:
            print(note)
        except OSError:  # the terminal is gone (SIGHUP): the file is saved all the same
            pass
    flush_or_drop_output()
    code = app.return_code or 0
    if app.compiling:
        # Quitting during the first kernel compilation: numba cannot be interrupted and the
        # interpreter would wait for it (up to a minute) after the screen is gone. Nothing
        # is lost by not waiting: a run, if any, was stopped and saved before exit.
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
