"""Generate: a prompt, sampling settings, and the output streaming in token by token."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import get_current_worker

from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.engine import ConfigError, SampleConfig
from cllm.tui.formatting import format_rate
from cllm.tui.messages import GenerationFinished, GenerationProgress
from cllm.tui.validators import ConfigValidator, parse_float, parse_int, sample_check
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.widgets.transcript import Sample, Transcript
from cllm.tui.worker_errors import ReportWorkerErrors

if TYPE_CHECKING:
    from cllm.tui.app import CllmApp

POST_EVERY_S = 0.05  # the worker posts the text so far at most 20 times a second

STARTING = SampleConfig(temperature=0.8, top_p=0.95)  # the settings the screen starts with
# input id -> (label, SampleConfig field, number kind); each is checked by SampleConfig.validate
SETTINGS = {
    "temperature": ("temp", "temperature", "float"),
    "top-k": ("top-k", "top_k", "int"),
    "top-p": ("top-p", "top_p", "float"),
    "max-tokens": ("max", "max_tokens", "int"),
    "seed": ("seed", "seed", "int"),
}


def parse_stop(text: str) -> str | None:
    r"""The stop text as typed, with \n and \t for a newline and a tab (an input has no
    newline key); empty: none."""
    return text.replace("\\n", "\n").replace("\\t", "\t") or None


class GenerateScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("f5", "generate", "Generate", id="generate.run"),
        Binding("escape", "stop", "Stop", id="generate.stop"),
        Binding("f8", "copy", "Copy", id="generate.copy"),
        Binding("f9", "clear", "Clear", id="generate.clear"),
        Binding("ctrl+n", "app.quick_start", "Quick start", id="app.quick_start"),
    ]
    PALETTE = [  # the command palette's entries for this screen: name, help, action
        ("Generate text", "Generate from the prompt box", "generate"),
        ("Stop generation", "Stop the text being generated", "stop"),
        ("Copy last output", "Copy the last prompt and output to the clipboard", "copy"),
    ]

    app: CllmApp

    def __init__(self) -> None:
        super().__init__(id="generate")
        self._stop = threading.Event()
        self._sample: Sample | None = None
        self._generating = False

    def compose(self) -> ComposeResult:
        yield ModelBar(classes="model-bar")
        yield Static("", id="welcome")
        yield Transcript(id="transcript")
        with Horizontal(id="sample-settings"):
            for field_id, (label, field, number) in SETTINGS.items():
                default = getattr(STARTING, field)
                yield Label(label, classes="setting-label")
                yield Input("" if default is None else f"{default:g}", id=field_id, compact=True, classes="setting",
                            placeholder="random" if field == "seed" else "",
                            validators=[ConfigValidator(label, sample_check(field), number=number,
                                                        allow_empty=field == "seed")])
            yield Label("stop", classes="setting-label")
            yield Input("", id="stop", compact=True, classes="setting", placeholder="none")
        yield Input(placeholder="Type a prompt, then enter to generate (esc stops)", id="prompt")
        yield Static("", id="gen-status", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.watch(self.app, "model_summary", self._model_changed)
        self.query_one("#prompt", Input).focus()

    def _model_changed(self, _summary: str) -> None:
        welcome = self.query_one("#welcome", Static)
        keys = self.app.key_for
        loaded = self.app.loaded
        welcome.set_class(loaded is not None, "hint")
        if loaded is None:
            welcome.update(
                "[b]No model loaded.[/b]\n\n"
                f"  [b]{keys('app.quick_start')}[/b]  Quick start: train a small model on the built-in "
                "python-docs corpus (about a minute), then generate from it\n"
                f"  [b]{keys('mode.train')}[/b]  Train: choose a corpus and a model size\n"
                f"  [b]{keys('mode.models')}[/b]  Models: load a saved .cllm file"
            )
        else:
            welcome.update(
                f"Type a prompt below and press enter to continue it with {escape(loaded.name)}. "
                f"Esc stops, {keys('generate.copy')} copies the last sample; earlier ones stay here."
            )
        welcome.display = loaded is None or not self.query(Sample)

    # -- bindings ----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("generate", "copy", "clear", "stop") and self.app.loaded is None and not self._generating:
            return False  # nothing to generate from: the footer offers the quick start instead
        if action == "stop":
            return True if self._generating else None
        if action == "generate":
            return None if self._generating else True
        return True

    @on(Input.Submitted)
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in SETTINGS:
            result = event.validation_result
            if result is not None and not result.is_valid:
                self._status("; ".join(result.failure_descriptions))
            else:
                self._status("")

    # -- actions -----------------------------------------------------------------------
    def _sample_config(self) -> SampleConfig | None:
        """The settings, checked by SampleConfig.validate; None (and a notice) if wrong."""
        problems = []
        for field_id in SETTINGS:
            box = self.query_one(f"#{field_id}", Input)
            result = box.validate(box.value)
            if result is not None and not result.is_valid:
                problems.extend(result.failure_descriptions)
        values: dict[str, Any] = {}
        if not problems:
            for field_id, (_, field, number) in SETTINGS.items():
                text = self.query_one(f"#{field_id}", Input).value.strip()
                values[field] = None if not text else parse_int(text) if number == "int" else parse_float(text)
            values["stop"] = parse_stop(self.query_one("#stop", Input).value)
            try:
                return SampleConfig(**values).validate()
            except ConfigError as exc:
                problems.append(str(exc))
        self.app.notify("; ".join(problems), title="Check the settings", severity="error", markup=False)
        return None

    def action_generate(self, prompt: str | None = None) -> None:
        app = self.app
        if self._generating:
            app.notify("Already generating: esc stops it.", severity="warning")
            return
        handle = app.loaded
        if handle is None or handle.model is None:
            app.notify(f"No model loaded: press {app.key_for('app.quick_start')} for a quick start, or load "
                       f"one in Models ({app.key_for('mode.models')}).", severity="warning", markup=False)
            return
        config = self._sample_config()
        if config is None:
            return
        box = self.query_one("#prompt", Input)
        if prompt is None:
            prompt = box.value
        box.value = ""
        model, from_file, note = handle.model, None, ""
        run = app.training
        if run is not None and app.run_active and run.trainer is not None and handle.model is run.trainer.model:
            # The trainer is changing these weights: read the last saved ones instead.
            if not run.saved:
                app.notify(f"{run.name} is training and has not been saved yet, so there are no "
                           "finished weights to generate from. Wait for the first checkpoint "
                           f"(every {run.plan.train_config.checkpoint_every} steps) or stop the run.",
                           title="Generation refused", severity="warning", markup=False)
                box.value = prompt
                return
            from_file = run.out_path
            note = f"(training is running: this uses the last saved weights in {run.out_path.name})"
        self._start(prompt, config, model, from_file, note)

    def _start(self, prompt: str, config: SampleConfig, model, from_file, note: str) -> None:
        self._stop.clear()
        self._generating = True
        self.refresh_bindings()
        self._status("generating…")
        sample = Sample(prompt, note)
        self._sample = sample
        transcript = self.query_one(Transcript)
        self.query_one("#welcome", Static).display = False
        transcript.mount(sample)
        transcript.scroll_end(animate=False)
        self._generate(prompt, config, model, from_file)

    def action_stop(self) -> None:
        if not self._generating:
            return
        self._stop.set()
        self._status("stopping…")

    def action_copy(self) -> None:
        sample = self.query_one(Transcript).last()
        if sample is None or not (sample.prompt or sample.output):
            self.app.notify("Nothing to copy yet.", severity="warning")
            return
        text = sample.prompt + sample.output
        self.app.copy_to_clipboard(text)
        self.app.notify(f"Copied the last prompt and output ({len(text)} characters).")

    async def action_clear(self) -> None:
        if self._generating:
            self.app.notify("Stop the generation first (esc).", severity="warning")
            return
        await self.query_one(Transcript).clear()
        self._status("")
        self._model_changed(self.app.model_summary)

    def _status(self, text: str) -> None:
        self.query_one("#gen-status", Static).update(text)

    # -- the worker --------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="generate", name="generate")
    def _generate(self, prompt: str, config: SampleConfig, model, from_file) -> None:
        worker = get_current_worker()
        stop = self._stop
        engine = self.app.engine
        parts: list[str] = []
        tokens, rate, reason = 0, 0.0, "done"
        started = time.monotonic()
        try:
            if from_file is not None:
                model = engine.load_model(from_file).model
                started = time.monotonic()
            last_post = 0.0
            pieces = engine.generate(model, prompt, config,
                                     should_stop=lambda: stop.is_set() or worker.is_cancelled)
            for piece in pieces:
                parts.append(piece)
                tokens += 1
                now = time.monotonic()
                rate = tokens / max(now - started, 1e-9)
                if stop.is_set() or worker.is_cancelled:
                    break
                if now - last_post >= POST_EVERY_S:
                    last_post = now
                    self.post_message(GenerationProgress("".join(parts), tokens, rate))
            if stop.is_set() or worker.is_cancelled:
                reason = "stopped"
        except BaseException:
            reason = "error"
            raise
        finally:
            self.post_message(GenerationFinished("".join(parts), tokens, rate, reason))

    def on_generation_progress(self, message: GenerationProgress) -> None:
        if self._sample is not None and self._generating:
            self._sample.set_output(message.text)
            self.query_one(Transcript).scroll_end(animate=False)
            self._status(f"generating… {message.tokens} tokens · {format_rate(message.tokens_per_s)} tok/s")

    def on_generation_finished(self, message: GenerationFinished) -> None:
        self._generating = False
        self.refresh_bindings()
        sample = self._sample
        what = {"done": "done", "stopped": "stopped", "error": "failed"}[message.reason]
        status = f"{what} · {message.tokens} tokens · {format_rate(message.tokens_per_s)} tok/s"
        if sample is not None:
            sample.set_output(message.text)
            sample.set_status(status)
        self._status(status)
        self.query_one(Transcript).scroll_end(animate=False)
