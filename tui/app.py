"""CLLM's terminal app: Train, Generate and Models, one key apart.

    cllm-tui [--models-dir DIR] [--model FILE]

Without --model it loads the model used last time (remembered in the settings file),
else MODELS_DIR/saved_model.cllm if it exists, else starts empty and offers a quick
start. The settings file also holds a "keymap" (binding id -> keys) that remaps any
binding below; see tui/settings.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("TEXTUAL_FPS", "20")  # before Textual is imported (see tui/__init__.py)

from textual import work  # noqa: E402
from textual.app import App, SystemCommand  # noqa: E402
from textual.binding import Binding  # noqa: E402
from textual.reactive import var  # noqa: E402
from textual.screen import ModalScreen, Screen  # noqa: E402

from cllm.tui.bindings import MODE_BINDINGS  # noqa: E402
from cllm.tui.engine import QUICK_START_PROMPT, Engine, ModelHandle, TrainingRun  # noqa: E402
from cllm.tui.screens.choice_dialog import Choice, ChoiceDialog  # noqa: E402
from cllm.tui.screens.generate import GenerateScreen  # noqa: E402
from cllm.tui.screens.models import ModelsScreen  # noqa: E402
from cllm.tui.screens.train import TrainScreen  # noqa: E402
from cllm.tui.settings import Settings  # noqa: E402
from cllm.tui.worker_errors import ReportWorkerErrors, describe_error  # noqa: E402

DEFAULT_MODEL_NAME = "saved_model.cllm"


class CllmApp(ReportWorkerErrors, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "CLLM"
    MODES = {"train": TrainScreen, "generate": GenerateScreen, "models": ModelsScreen}
    DEFAULT_MODE = "generate"
    NOTIFICATION_TIMEOUT = 6

    BINDINGS = [
        # Shown in the Generate screen's footer (while there is no model), works everywhere.
        Binding("ctrl+n", "quick_start", "Quick start", id="app.quick_start", show=False),
        Binding("f1", "keys", "Keys", id="app.keys", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    # var, not reactive: a change must repaint only the status bars that watch it, not the app.
    model_summary: var[str] = var("no model loaded")
    activity: var[str] = var("")

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
        self.compiling = threading.Event()  # set while the compile thread runs (it cannot be stopped)
        self.quit_after_run = False
        self.notices: list[str] = []  # every notification, for tests and the log

    # -- start-up ----------------------------------------------------------------------
    async def on_mount(self) -> None:
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
        if self.autoload:
            path = self.startup_model()
            if path is not None:
                self.load_model(path, remember=self.model_path is not None)

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
        self.compiling.set()
        try:
            self.engine.compile_kernels()
        finally:
            self.compiling.clear()
        self.call_from_thread(self._kernels_compiled, time.monotonic() - started)

    def _kernels_compiled(self, seconds: float) -> None:
        self.kernels_ready = True
        if self.activity.startswith("compiling"):
            self.activity = ""
        self.notify(f"Kernels compiled in {seconds:.0f} s (cached for next time).")

    # -- the loaded model --------------------------------------------------------------
    def load_model(self, path: Path, *, remember: bool = True,
                   on_loaded: Callable[[], object] | None = None,
                   on_error: Callable[[str], None] | None = None) -> None:
        """Load `path` on a worker thread; errors become notifications naming the file."""
        self.activity = f"loading {Path(path).name}…"
        self._load_model(Path(path), remember, on_loaded, on_error)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", name="load model")
    def _load_model(self, path: Path, remember: bool, on_loaded, on_error) -> None:
        try:
            loaded = self.engine.load_model(path)
        except Exception as exc:
            self.call_from_thread(self._clear_activity, "loading")
            if on_error is not None:
                self.call_from_thread(on_error, describe_error(exc, f"loading {path}"))
            raise  # the notification comes from on_worker_state_changed
        handle = ModelHandle.from_loaded(path, loaded)
        self.call_from_thread(self._model_loaded, handle, remember, on_loaded)

    def _clear_activity(self, prefix: str) -> None:
        if self.activity.startswith(prefix):
            self.activity = ""

    def _model_loaded(self, handle: ModelHandle, remember: bool, on_loaded) -> None:
        self._clear_activity("loading")
        self.set_loaded(handle, remember=remember)
        self.notify(f"Loaded {handle.path}", markup=False)
        if on_loaded is not None:
            self.call_later(on_loaded)

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

    async def after_quick_start(self) -> None:
        await self.action_mode("generate")
        screen = self.screen
        if isinstance(screen, GenerateScreen):
            screen.generate_now(QUICK_START_PROMPT)

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
                self.training.stop()
                self.activity = "stopping, then quitting…"
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
        # Thread workers cannot be killed: ask the trainer to stop so the process can exit.
        if self.training is not None and self.training.active:
            self.training.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cllm-tui", description="CLLM's terminal app.")
    parser.add_argument("--models-dir", default="models", metavar="DIR",
                        help="folder of .cllm model files (default: ./models)")
    parser.add_argument("--model", default=None, metavar="FILE", help="model to load at start-up")
    args = parser.parse_args(argv)
    app = CllmApp(models_dir=args.models_dir, model_path=args.model)
    app.run()
    code = app.return_code or 0
    if app.compiling.is_set():
        # Quitting during the first kernel compilation: numba cannot be interrupted and the
        # interpreter would wait for it (up to a minute) after the screen is gone. Nothing
        # is lost by not waiting: a run, if any, was stopped and saved before exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
