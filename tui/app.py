"""CLLM's terminal app: Train, Generate and Models, one key apart (`cllm-tui`, or
`python -m cllm.tui`: tui/__main__.py).

Without --model it loads the model used last time (remembered in the settings file),
else MODELS_DIR/saved_model.cllm if it exists, else starts empty and offers a quick
start. The settings file also holds a "keymap" (binding id -> keys) that remaps any
binding below; see tui/settings.py.

The app owns what outlives a screen: the loaded model and the training run. Screens ask
for things with messages (`RunRequested`, `StopRequested`, `LoadRequested`, ...); the
app runs the workers, and the screens watch its reactive attributes. Beside it:
tui/modes.py (the screens), tui/commands.py (the command palette), tui/training_worker.py
(what the training worker does and the notice a run's end gets).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import ModalScreen, Screen
from textual.worker import get_current_worker

from cllm.tui import modes
from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.commands import app_commands
from cllm.tui.engine import QUICK_START_PROMPT, CllmError, EndReason, Engine, RunStatus, StepEvent
from cllm.tui.messages import (
    Activity,
    Imported,
    ImportRequested,
    KernelsCompiled,
    LoadRequested,
    ModelLoaded,
    ModelLoadFailed,
    PauseRequested,
    ReadProgress,
    RunRequested,
    RunSavedAs,
    StopRequested,
    TrainEval,
    TrainFinished,
    TrainSaved,
    TrainSaveFailed,
    TrainStarted,
    TrainStep,
)
from cllm.tui.model_handle import ModelHandle
from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog
from cllm.tui.screens.save_as_dialog import SaveAsDialog
from cllm.tui.settings import Settings
from cllm.tui.training_run import RunPlan, TrainingRun, quick_start_plan
from cllm.tui.training_worker import end_notice, train
from cllm.tui.worker_errors import ReportWorkerErrors, describe_error

DEFAULT_MODEL_NAME = "saved_model.cllm"
PROGRESS_HZ = 10  # a reading worker posts at most this many progress messages a second
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class CllmApp(ReportWorkerErrors, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "CLLM"
    MODES = {mode.name: mode.screen_class() for mode in modes.MODES}  # tui/modes.py's table
    DEFAULT_MODE = modes.DEFAULT_MODE
    NOTIFICATION_TIMEOUT = 6

    BINDINGS = [
        # Shown in the Generate screen's footer (while there is no model), works everywhere.
        Binding("ctrl+n", "quick_start", "Quick start", id="app.quick_start", show=False),
        Binding("f1", "keys", "Keys", id="app.keys", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    # var, not reactive: a change repaints only what watches it, not the app.
    model_summary: var[str] = var("no model loaded")
    activity: var[str] = var("")  # what the app is busy with, in words (`_busy` says which activity)
    run_status: var[RunStatus] = var(RunStatus.IDLE)  # the training run's
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
        self._busy: Activity | None = None

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
        except Exception:  # a broken engine must not stop the UI from starting
            self.kernels_ready = True
        if not self.kernels_ready and self.compile_on_start:
            self._show_activity(Activity.COMPILING)
            self._compile_kernels()
        if self.autoload:
            path = self.startup_model()
            if path is not None:
                self.load_model(path, remember=self.model_path is not None)

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
        self._clear_activity(Activity.COMPILING)
        self.notify(f"Kernels compiled in {message.seconds:.0f} s (cached for next time).")

    # -- what the app is busy with (the model bar) --------------------------------------
    def _show_activity(self, kind: Activity, detail: str = "", done: str = "…") -> None:
        self._busy = kind
        self.activity = f"{kind}{' ' + detail if detail else ''}{done}"

    def _clear_activity(self, kind: Activity) -> None:
        if self._busy is kind:
            self._busy = None
            self.activity = ""

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
        waits for that after the screen is gone, and says where it went); a generation just
        stops with the app."""
        if self.run_active and self.training is not None:
            self.training.stop(why)
        self.exit()

    # -- the loaded model --------------------------------------------------------------
    def load_model(self, path: Path, *, remember: bool = True, then_generate: str | None = None) -> None:
        """Load `path` on a worker thread; errors become notifications naming the file."""
        self._show_activity(Activity.LOADING, Path(path).name)
        self._load_model(Path(path), remember, then_generate)

    @on(LoadRequested)
    def _load_requested(self, message: LoadRequested) -> None:
        self.load_model(message.path)

    def _progress_poster(self, what: Activity, name: str) -> Callable[[int, int], None]:
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
        if message.total and self._busy is message.what:
            self._show_activity(message.what, message.name, f"… {100 * message.done // message.total}%")

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", name="load model")
    def _load_model(self, path: Path, remember: bool, then_generate: str | None) -> None:
        try:
            loaded = self.engine.load_model(path, self._progress_poster(Activity.LOADING, path.name))
        except Exception as exc:
            self.post_message(ModelLoadFailed(path, describe_error(exc, f"loading {path}")))
            raise  # the notification comes from on_worker_state_changed
        self.post_message(ModelLoaded(ModelHandle.from_loaded(path, loaded), remember, then_generate))

    @on(ImportRequested)
    def _import_requested(self, message: ImportRequested) -> None:
        self._show_activity(Activity.IMPORTING, message.folder.name)
        self._import(message.folder, message.out)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import", name="import")
    def _import(self, folder: Path, out: Path) -> None:
        try:
            self.engine.import_hf_folder(folder, out, self._progress_poster(Activity.IMPORTING, folder.name))
        except Exception as exc:  # reported in a message, the user's words
            self.post_message(Imported(folder, out, describe_error(exc, f"importing {folder}")))
            return
        self.post_message(Imported(folder, out, None))

    def on_imported(self, message: Imported) -> None:
        self._clear_activity(Activity.IMPORTING)
        if message.error is not None:
            self.notify(message.error, title="Import failed", severity="error", timeout=15, markup=False)
            return
        self.models_saved += 1
        self.notify(f"Imported {message.folder} as {message.out}", markup=False)
        self.load_model(message.out)

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self._clear_activity(Activity.LOADING)
        self.load_failure = (message.path, message.message)

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        self._clear_activity(Activity.LOADING)
        handle = message.handle
        self.set_loaded(handle, remember=message.remember)
        self.notify(f"Loaded {handle.path}", markup=False)
        if message.then_generate is not None:
            await self.action_mode("generate")
            await self.run_action(f"generate({message.then_generate!r})", self.screen)

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

    def _run_model(self) -> ModelHandle | None:
        """The loaded model if it is the one the current run trains, else None."""
        run, loaded = self.training, self.loaded
        if run is None or run.trainer is None or loaded is None:
            return None
        return loaded if loaded.model is run.trainer.model else None

    # -- the training run --------------------------------------------------------------
    @property
    def run_active(self) -> bool:
        """Whether a run is preparing, training, paused or stopping."""
        return self.run_status.active

    @on(RunRequested)
    def _run_requested(self, message: RunRequested) -> None:
        if self.run_active:
            self.notify("A run is already in progress: stop it first.", severity="warning")
            return
        self.start_training(message.plan)

    def start_training(self, plan: RunPlan) -> None:
        """Start the training worker for a decided plan."""
        assert plan.out_path is not None
        run = TrainingRun(plan=plan, name=plan.out_path.stem)
        if plan.action == "continue" and self.loaded is not None and self.loaded.info is not None:
            run.continue_curves(self.loaded.info.run)  # the chart continues the saved curves
        source = plan.start_from.name if plan.start_from else ""
        run.log.append({"new": "new model", "overwrite": "new model, will overwrite", "continue": "continuing",
                        "fine-tune": f"fine-tuning {source}"}[plan.action] + f" → {plan.out_path.name}")
        self.training = run
        self.train_step = None
        self.train_log_size = len(run.log)
        self._show_activity(Activity.PREPARING if self.kernels_ready else Activity.COMPILING)
        self.run_status = RunStatus.PREPARING
        self._train(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train", name="train")
    def _train(self, run: TrainingRun) -> None:
        worker = get_current_worker()
        train(self.engine, run, self.post_message, lambda: worker.is_cancelled)

    def on_train_started(self, message: TrainStarted) -> None:
        run = message.run
        trainer = run.trainer
        assert trainer is not None
        previous = self.loaded if run.plan.action == "continue" else None
        handle = ModelHandle(path=run.out_path, model=trainer.model,
                             info=previous.info if previous is not None else None, steps=trainer.step,
                             best_val=previous.best_val if previous is not None else None, corpus=run.corpus)
        self.set_loaded(handle, remember=False)
        if self.run_status is RunStatus.PREPARING:
            self.run_status = RunStatus.PAUSED if trainer.paused else RunStatus.RUNNING

    def on_train_step(self, message: TrainStep) -> None:
        if (followed := self._run_model()) is not None:
            followed.steps = message.event.step
            self.refresh_summary()
        self.train_step = message.event
        if self.run_status is RunStatus.RUNNING:
            self._show_activity(Activity.TRAINING, done="")

    def on_train_eval(self, message: TrainEval) -> None:
        if (followed := self._run_model()) is not None:
            followed.best_val = message.event.best_val_loss
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
        if run is None or run.trainer is None or self.run_status not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return
        if run.paused:
            run.unpause()
            self.notify("Training resumed.")
            self.run_status = RunStatus.RUNNING
            self._show_activity(Activity.TRAINING, done="")
        else:
            run.pause()
            self.notify("Training paused (the current step finishes first).")
            self.run_status = RunStatus.PAUSED
            self._show_activity(Activity.PAUSED, done="")

    @on(StopRequested)
    def _stop_requested(self) -> None:
        run = self.training
        if run is None or not self.run_active:
            return
        run.stop()
        self.run_status = RunStatus.STOPPING
        self._show_activity(Activity.STOPPING)

    def on_train_finished(self, message: TrainFinished) -> None:
        run = message.run
        self._sync_log()
        self.run_status = RunStatus.IDLE
        self._busy, self.activity = None, ""
        done = run.done
        if done is not None and done.save_failed:
            self._offer_save_as(run)
        else:
            notice = end_notice(run)
            if notice is not None:
                self.notify(notice.text, title=notice.title, severity=notice.severity,
                            timeout=notice.timeout, markup=False)
        # What is on disk is the truth now: reload it (the run's in-memory weights may be NaN).
        if done is not None and done.saved_to is not None and done.saved_to.exists():
            quick = (run.plan.quick_start and done.reason in (EndReason.FINISHED, EndReason.STOPPED)
                     and done.saved_to == run.out_path)
            self.load_model(done.saved_to, then_generate=QUICK_START_PROMPT if quick else None)
        elif self._run_model() is not None:
            self.set_loaded(None, remember=False)
        if self.quit_after_run:
            self.exit()

    def _offer_save_as(self, run: TrainingRun) -> None:
        done = run.done
        assert done is not None
        failure = next(f for f in run.save_failures if f.final)
        notice = end_notice(run)
        if notice is not None:
            self.notify(notice.text, title=notice.title, severity="error", timeout=notice.timeout, markup=False)

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
            screens = [binding for mode in modes.MODES for binding in mode.screen_class().BINDINGS]
            for binding in [*MODE_BINDINGS, *self.BINDINGS, *screens]:
                if isinstance(binding, Binding) and binding.id == binding_id:
                    keys = binding.key
                    break
        if not keys:
            return "?"
        return self.get_key_display(Binding(keys.split(",")[0], ""))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("mode", "quick_start") and isinstance(self.screen, ModalScreen):
            return False
        if action == "quick_start":
            # Offered (and shown in the footer) while there is nothing to generate from.
            if self.loaded is not None:
                return False
            if self.run_active:
                return None
        return True

    async def action_mode(self, mode: str) -> None:
        if mode != self.current_mode:
            await self.switch_mode(mode)

    async def action_quick_start(self) -> None:
        """Train the quick start's small model (its settings: tui/engine.py), then generate."""
        if self.run_active:
            self.notify("A run is already in progress.", severity="warning")
            return
        self.start_training(quick_start_plan(self.models_dir))
        await self.action_mode("train")

    def action_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        run = self.training
        if run is None or not self.run_active:
            self.exit()
            return

        def answer(choice: str | None) -> None:
            if choice == "stop" and self.run_active:
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

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from app_commands(self)
        yield from super().get_system_commands(screen)

    # -- errors ------------------------------------------------------------------------
    def notify(self, message: str, *, title: str = "", severity="information",
               timeout: float | None = None, markup: bool = True) -> None:
        self.notices.append(message)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def on_unmount(self) -> None:
        self._remove_signal_handlers()
        # Thread workers cannot be killed: ask the trainer to stop so the process can exit.
        if self.training is not None and self.run_active:
            self.training.stop()
