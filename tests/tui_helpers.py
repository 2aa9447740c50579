"""Helpers for the TUI tests: a fake trainer and sampler, real model files, and Pilot
helpers that wait for what a flow shows.

The fake trainer provides what the app needs of a trainer (`TrainerLike`) and the real
Trainer's events, but takes milliseconds per step; it builds a real model and writes real
.cllm files (core.model_file), so loading, the Models screen and the replace dialog see
exactly what the real engine would write.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cllm.core.config import ModelConfig, TrainConfig
from cllm.core.dataset import Dataset
from cllm.core.model import GPT
from cllm.core.model_file import load_model, save_model
from cllm.core.tokenizer import train_tokenizer
from cllm.tui.engine import CheckpointEvent, DoneEvent, EndReason, Engine, EvalEvent, SaveReason, StepEvent
from cllm.tui.settings import Settings

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


class FakeTrainer:
    """What the app needs of a trainer (cllm.tui.engine.TrainerLike), with the real
    Trainer's events; `step_time` seconds per step."""

    step_time = 0.004

    def __init__(self, model: GPT, config: TrainConfig, out_path: Path, corpus, *, step: int = 0,
                 created: str | None = None, best: float | None = None, nan_at: int | None = None,
                 n_threads: int = 2) -> None:
        self.model = model
        self.config = config
        self.out_path = Path(out_path)
        self.corpus = corpus
        self.n_threads = n_threads
        self.phase = "train"
        self.phase_totals = np.array([(config.batch + i) // n_threads for i in range(n_threads)], dtype=np.int64)
        self.shard_progress = np.zeros(n_threads, dtype=np.int64)
        self.step = step
        self.best = best
        self.parent: Path | None = None  # the model a fine-tune starts from
        self.created = created
        self.nan_at = nan_at
        self.stop_reason = ""
        self._pause = threading.Event()
        self._stop = threading.Event()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    def pause(self) -> None:
        self._pause.set()

    def unpause(self) -> None:
        self._pause.clear()

    def stop(self, why: str = "") -> None:
        self.stop_reason = self.stop_reason or why
        self._stop.set()
        self._pause.clear()

    def save(self, path: Path | None = None) -> Path:
        training = {"step": self.step, "tokens_seen": self.step * self.config.batch * self.model.config.ctx,
                    "best_val_loss": self.best,
                    "corpus": {"name": self.corpus.name, "sha256": self.corpus.sha256}}
        return save_model(path or self.out_path, self.model, training=training, created=self.created)

    def _finish(self, emit, reason: EndReason) -> DoneEvent:
        path = self.save()
        emit(CheckpointEvent(self.step, path, SaveReason.FINAL))
        how = f" ({self.stop_reason})" if self.stop_reason else ""
        done = DoneEvent(self.step, reason, f"{reason}{how} at step {self.step}, saved to {path}", path)
        emit(done)
        return done

    def run(self, on_event=None) -> DoneEvent:
        emit = on_event or (lambda event: None)
        cfg = self.config
        started = time.monotonic()
        while self.step < cfg.steps:
            while self._pause.is_set() and not self._stop.is_set():
                time.sleep(0.005)
            if self._stop.is_set():
                return self._finish(emit, EndReason.STOPPED)
            for part in range(1, 3):  # half the sequences done, then all (as a real step's counters rise)
                self.shard_progress[:] = self.phase_totals * part // 2
                time.sleep(self.step_time / 2)
            loss = 4.0 * math.exp(-self.step / 50) + 1.0
            if self.nan_at is not None and self.step + 1 >= self.nan_at:
                message = f"loss became nan at step {self.step + 1}; training stopped and the last checkpoint was kept"
                done = DoneEvent(self.step, EndReason.NAN, message, self.out_path if self.out_path.exists() else None)
                emit(done)
                return done
            self.step += 1
            elapsed = time.monotonic() - started
            emit(StepEvent(self.step, cfg.steps, loss, cfg.lr, 1.0, 1000.0, elapsed,
                           elapsed / self.step * (cfg.steps - self.step), self.step * 100))
            if cfg.eval_interval and self.step % cfg.eval_interval == 0:
                self.best = min(self.best or loss + 0.1, loss + 0.1)
                emit(EvalEvent(self.step, loss + 0.1, self.best))
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                emit(CheckpointEvent(self.step, self.save(), SaveReason.INTERVAL))
        return self._finish(emit, EndReason.FINISHED)


class FakeEngine(Engine):
    """The real corpus and model-file code; a fake trainer, sampler and kernels."""

    def __init__(self, *, step_time: float = 0.004, nan_at: int | None = None,
                 token_time: float = 0.002, kernels_ready: bool = True) -> None:
        self.step_time = step_time
        self.nan_at = nan_at
        self.token_time = token_time
        self._kernels_ready = kernels_ready
        self.trainers: list[FakeTrainer] = []
        self.compiled = threading.Event()
        self.compile_gate = threading.Event()  # compile_kernels waits for the test to set it

    def new_trainer(self, corpus, model_config, train_config, *, tokenizer, vocab_size, out_path):
        if isinstance(corpus, Dataset):
            assert corpus.tokenizer is not None
            tok = corpus.tokenizer
        else:
            tok = train_tokenizer(tokenizer, corpus.text, vocab_size)
        model = GPT.create(ModelConfig(vocab_size=tok.vocab_size, **model_config), tok, seed=1)
        trainer = FakeTrainer(model, train_config, out_path, corpus, nan_at=self.nan_at)
        trainer.step_time = self.step_time
        self.trainers.append(trainer)
        return trainer

    def resume_trainer(self, model_path, corpus, train_config, *, out_path=None):
        loaded = load_model(model_path)
        run = loaded.info.run
        trainer = FakeTrainer(loaded.model, train_config, out_path or model_path, corpus,
                              step=run.step, created=loaded.info.created, best=run.best_val_loss, nan_at=self.nan_at)
        trainer.step_time = self.step_time
        self.trainers.append(trainer)
        return trainer

    def fine_tune_trainer(self, parent_path, corpus, train_config, *, out_path):
        loaded = load_model(parent_path)
        trainer = FakeTrainer(loaded.model, train_config, out_path, corpus, nan_at=self.nan_at)
        trainer.step_time = self.step_time
        trainer.parent = parent_path
        self.trainers.append(trainer)
        return trainer

    def generate(self, model, prompt, config, should_stop=None) -> Iterator[list[str | None]]:
        words = "lorem ipsum dolor sit amet ".split()
        for i in range(config.max_tokens):
            if should_stop():
                return
            time.sleep(self.token_time)
            yield [words[(i + n) % len(words)] + " " for n in range(config.samples)]

    def kernels_ready(self) -> bool:
        return self._kernels_ready

    def compile_kernels(self) -> None:
        self.compile_gate.wait(10)
        self._kernels_ready = True
        self.compiled.set()


def make_model_file(path: Path, *, steps: int = 40, text: str = TEXT, best: float = 1.5,
                    n_embd: int = 16, corpus_name: str = "tiny.txt", dropout: float | None = None) -> Path:
    """A real, small .cllm file (trained with `dropout`, where given)."""
    import hashlib

    tok = train_tokenizer("char", text)
    model = GPT.create(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=n_embd, ctx=16), tok)
    sha = hashlib.sha256(text.encode()).hexdigest()
    save_model(path, model, training={"step": steps, "best_val_loss": best, "tokens_seen": steps * 64,
                                      "corpus": {"name": corpus_name, "sha256": sha},
                                      "loss_history": [[i, 4.0 - i / 100] for i in range(1, steps + 1)],
                                      "val_history": [[steps, best]],
                                      **({} if dropout is None else {"train_config": {"dropout": dropout}})},
               created="2026-01-02T03:04:05Z")
    return path


def make_app(ws: dict, engine: Engine | None = None, **kwargs):
    from cllm.tui.app import CllmApp

    kwargs.setdefault("compile_kernels", False)
    kwargs.setdefault("prewarm", False)  # saves ~1 s per test; the real-engine tests keep it
    kwargs.setdefault("models_dir", ws["models"])
    return CllmApp(settings=Settings.load(ws["config"]), engine=engine or FakeEngine(), **kwargs)


async def wait_screen(pilot, cls, selector: str = "Button", timeout: float = 10.0) -> None:
    """Wait until a screen of type `cls` is on top, composed (has `selector`) and focused."""

    def ready() -> bool:
        screen = pilot.app.screen
        focused = screen.focused
        return isinstance(screen, cls) and bool(screen.query(selector)) and focused is not None

    await wait_for(pilot, ready, timeout=timeout, what=f"the {cls.__name__}")


async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            app = pilot.app
            workers = ", ".join(f"{w.name or w.group}: {w.state.name}" for w in app.workers)
            threads = ", ".join(t.name for t in threading.enumerate())
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(screen {app.screen!r}, focus {app.focused!r}, notices {app.notices}; "
                                 f"workers: {workers}; threads: {threads})")
        await pilot.pause(0.02)


def short(path: Path) -> str:
    """`path` relative to the working directory when that is shorter (less to type)."""
    import os

    relative = os.path.relpath(path)
    return relative if len(relative) < len(str(path)) else str(path)


async def press(pilot, *keys: str) -> None:
    """Like pilot.press, but waits only until the screen has handled each key, not for
    the whole process to go idle (which it never does while a trainer thread is busy)."""
    import unicodedata

    from textual import events
    from textual.keys import _character_to_key, _get_unicode_name_from_key

    app = pilot.app
    for key in keys:
        char: str | None = key if len(key) == 1 else None
        if char is not None and not char.isalnum():
            key = _character_to_key(char)
        elif char is None:
            try:
                char = unicodedata.lookup(_get_unicode_name_from_key(key))
            except KeyError:
                char = None
        app.post_message(events.Key(key, char))
        await pilot._wait_for_screen()
        await pilot._wait_for_screen()


MODE_KEYS = {"train": "ctrl+t", "generate": "ctrl+g", "models": "ctrl+o"}


async def goto(pilot, mode: str):
    """Press `mode`'s key and wait until its screen is on top and has focused a widget.
    A mode switch travels through more than one message queue, so without this wait the
    next key or query can still reach the screen being left."""
    app = pilot.app
    await press(pilot, MODE_KEYS[mode])
    await wait_for(pilot, lambda: app.current_mode == mode and app.screen.id == mode and app.screen.is_mounted
                   and app.screen.focused is not None, what=f"the {mode} screen, focused")
    await settle(pilot)
    return app.screen


async def settle(pilot, rounds: int = 3) -> None:
    """Let messages that post further messages run their course."""
    for _ in range(rounds):
        await pilot._wait_for_screen()


async def fill(pilot, selector: str, text: str) -> None:
    """Focus an input, clear it and type `text`, key by key."""
    from textual.widgets import Input

    # Focus changes travel through several queues (a screen switch's resume, focus() itself,
    # the input's Focus handler). That handler selects all the text when it runs: on a loaded
    # machine it ran after the first typed key, which the second then replaced. The helper
    # clears the input with ctrl+u anyway, so the selection on focus is switched off here.
    await settle(pilot)
    widget = pilot.app.screen.query_one(selector, Input)
    widget.select_on_focus = False
    widget.focus()
    await wait_for(pilot, lambda: widget.has_focus, what=f"focus on {selector}")
    await settle(pilot)
    await press(pilot, "end", "ctrl+u", *text)
    await wait_for(pilot, lambda: widget.value == text, timeout=5,
                   what=f"{text!r} in {selector} (it holds {widget.value!r})")


async def fill_form(pilot, corpus: Path, **fields: object) -> None:
    """On the Train screen: the corpus path and any of steps, eval, batch, ... by input id."""
    await fill(pilot, "#corpus", short(corpus))
    for field_id, value in fields.items():
        await fill(pilot, f"#{field_id}", str(value))


async def start_new_run(pilot, home: dict, name: str, **fields) -> None:
    """ctrl+t, fill the form (the corpus and `fields`), f5, name the model, enter."""
    from cllm.tui.screens.name_dialog import NameDialog

    await goto(pilot, "train")
    await fill_form(pilot, home["corpus"], **fields)
    await press(pilot, "f5")
    await wait_screen(pilot, NameDialog)
    await press(pilot, "ctrl+u", *name, "enter")


def model_step(path: Path) -> int:
    from cllm.core.model_file import read_info

    return read_info(path).run.step
