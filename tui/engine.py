"""The one place where the TUI reaches the engine (`core/`).

Screens never import `core` themselves: they call an `Engine` (tests hand the app a
subclass whose trainer is a fake that emits events quickly) and keep the engine's own
objects (`Trainer`, `GPT`, `ModelInfo`) in two small holders defined here:

* `ModelHandle`: the loaded model (its file, header and weights) that the status line
  describes and generation uses;
* `TrainingRun`: a trainer plus the histories that the UI polls on timers (loss and
  validation curves, the log). The trainer thread appends, the UI thread reads; Python
  list appends are atomic, so no lock is needed for append-only lists.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cllm.core.config import ModelConfig, TrainConfig, default_threads
from cllm.core.errors import CllmError, ConfigError, CorpusError, ModelFileError, TokenizerError
from cllm.core.trainer import CheckpointEvent, DoneEvent, EvalEvent, StepEvent

__all__ = [
    "CllmError", "ConfigError", "CorpusError", "ModelFileError", "TokenizerError",
    "ModelConfig", "TrainConfig", "default_threads",
    "StepEvent", "EvalEvent", "CheckpointEvent", "DoneEvent",
    "Engine", "ModelHandle", "TrainingRun", "QUICK_START", "BUILTIN_CORPUS",
]

BUILTIN_CORPUS = "python-docs"
MODEL_SUFFIX = ".cllm"

# The quick start: small enough to train in about a minute on a laptop, big enough to
# produce recognisable Python-documentation-like text.
QUICK_START = {
    "corpus": BUILTIN_CORPUS,
    "tokenizer": "char",
    "vocab_size": None,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 64,
    "ctx": 64,
    "batch": 16,
    "steps": 1500,
    "lr": 3e-3,
    "eval_interval": 250,
    "threads": 0,
}
QUICK_START_EVAL_CHUNKS = 64  # evaluate on 64 held-out windows: a second, not ten
QUICK_START_PROMPT = "The "

# ---------------------------------------------------------------------------------------
class Engine:
    """Thin adapter over core/. Every method may raise CllmError (user-ready message)."""

    def load_corpus(self, source: str | Path | None):
        from cllm.core.corpus import load_corpus

        return load_corpus(source)

    def builtin_corpora(self) -> list[str]:
        from cllm.core.corpus import list_builtin

        return list_builtin()

    def read_info(self, path: Path):
        from cllm.core.model_file import read_info

        return read_info(path)

    def load_model(self, path: Path):
        from cllm.core.model_file import load_model

        return load_model(path)

    def new_trainer(self, corpus, model_config: dict, train_config: TrainConfig, *,
                    tokenizer: str, vocab_size: int | None, out_path: Path):
        from cllm.core.trainer import Trainer

        return Trainer.new(corpus, model_config, train_config, tokenizer=tokenizer,
                           vocab_size=vocab_size, out_path=out_path)

    def resume_trainer(self, model_path: Path, corpus, train_config: TrainConfig, *,
                       out_path: Path | None = None):
        from cllm.core.trainer import Trainer

        return Trainer.resume(model_path, corpus, train_config, out_path=out_path)

    def generate(self, model, prompt: str, *, max_tokens: int, temperature: float, top_k: int,
                 top_p: float, seed: int | None, should_stop: Callable[[], bool]) -> Iterator[str]:
        from cllm.core.sampler import SampleConfig, generate

        config = SampleConfig(max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, seed=seed)
        return generate(model, prompt, config, should_stop=should_stop)

    def kernels_ready(self) -> bool:
        """True when the numba kernels are compiled and cached (start-up takes a second)."""
        from cllm.core.warmup import kernels_cached

        return kernels_cached()

    def compile_kernels(self) -> None:
        """Compile (or load from the cache) every kernel; blocking, for a thread worker."""
        from cllm.core.warmup import compile_kernels

        compile_kernels()

    def fits_corpus(self, handle: "ModelHandle", corpus) -> tuple[bool, str]:
        """Whether `handle`'s model can continue training on `corpus`, and why not: the
        tokenizer's own error names what its vocabulary lacks."""
        if handle.corpus_sha and handle.corpus_sha == corpus.sha256:
            return True, ""
        if handle.model is None:
            return False, "the model's weights are not loaded"
        try:
            handle.model.tokenizer.encode(corpus.text)
        except CllmError as exc:
            return False, f"{corpus.name}: {exc}"
        return True, ""


# ---------------------------------------------------------------------------------------
def tokenizer_label(kind: str | None, vocab_size: int | None) -> str:
    kind = kind or "?"
    return f"{kind} ({vocab_size})" if vocab_size else kind


def format_params(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_loss(value: float | None) -> str:
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    return f"{value:.3f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


@dataclass
class ModelHandle:
    """The loaded model: where it lives, what its header says, and its weights."""

    path: Path | None
    model: Any = None  # core.model.GPT, or None while only the header is known
    info: Any = None  # core.model_file.ModelInfo, or None before the first save
    steps: int = 0
    best_val: float | None = None
    corpus_name: str | None = None
    corpus_sha: str | None = None

    @classmethod
    def from_loaded(cls, path: Path, loaded) -> "ModelHandle":
        info = loaded.info
        handle = cls(path=Path(path), model=loaded.model, info=info)
        handle.update_training(info.training)
        return handle

    def update_training(self, training: dict) -> None:
        self.steps = int(training.get("step", 0) or 0)
        best = training.get("best_val_loss")
        self.best_val = float(best) if isinstance(best, (int, float)) else None
        corpus = training.get("corpus") or {}
        if isinstance(corpus, dict):
            self.corpus_name = corpus.get("name") or self.corpus_name
            self.corpus_sha = corpus.get("sha256") or self.corpus_sha

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "unsaved model"

    @property
    def n_params(self) -> int | None:
        if self.model is not None:
            return int(self.model.n_params)
        return int(self.info.n_params) if self.info is not None else None

    @property
    def config(self):
        if self.model is not None:
            return self.model.config
        return self.info.config if self.info is not None else None

    @property
    def tokenizer(self) -> str:
        config = self.config
        vocab = config.vocab_size if config is not None else None
        if self.model is not None and getattr(self.model, "tokenizer", None) is not None:
            return tokenizer_label(getattr(self.model.tokenizer, "kind", None), vocab)
        if self.info is not None:
            return tokenizer_label(self.info.tokenizer.get("type"), vocab)
        return "?"

    def summary(self) -> str:
        return (f"{self.name} · {format_params(self.n_params)} params · {self.tokenizer} · "
                f"{self.steps} steps · best val {format_loss(self.best_val)}")


# ---------------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """What the user asked for when pressing Start (the form's values, checked)."""

    corpus: str
    tokenizer: str
    vocab_size: int | None
    model_config: dict  # n_layer, n_head, n_embd, ctx
    train_config: TrainConfig
    # decided by the replace dialog:
    action: str = "new"  # "new" | "overwrite" | "continue"
    out_path: Path | None = None
    resume_from: Path | None = None
    quick_start: bool = False


@dataclass
class TrainingRun:
    """A trainer and what the UI shows about it. Histories are append-only lists."""

    trainer: Any
    plan: RunPlan
    name: str
    loss_steps: list[int] = field(default_factory=list)
    loss_values: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_values: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    last_step: Any = None  # the latest StepEvent
    best_val: float | None = None
    checkpoints: int = 0
    last_checkpoint_step: int | None = None
    done: Any = None  # the DoneEvent, once run() returned
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)
    stop_requested: bool = False
    corpus_name: str | None = None
    corpus_sha: str | None = None

    @property
    def out_path(self) -> Path:
        if self.trainer is not None and getattr(self.trainer, "out_path", None):
            return Path(self.trainer.out_path)
        assert self.plan.out_path is not None
        return Path(self.plan.out_path)

    @property
    def active(self) -> bool:
        return not self.finished.is_set()

    @property
    def paused(self) -> bool:
        return bool(getattr(self.trainer, "paused", False))

    def prefill(self, training: dict) -> None:
        """Start the curves from a saved model's history ([step, loss] pairs)."""
        for key, steps, values in (("loss_history", self.loss_steps, self.loss_values),
                                   ("val_history", self.val_steps, self.val_values)):
            for item in training.get(key) or []:
                if isinstance(item, (list, tuple)) and len(item) == 2 and all(
                        isinstance(v, (int, float)) for v in item) and math.isfinite(item[1]):
                    steps.append(int(item[0]))
                    values.append(float(item[1]))
        best = training.get("best_val_loss")
        self.best_val = float(best) if isinstance(best, (int, float)) else None

    def record(self, event) -> None:
        """Called on the trainer's thread for every event."""
        if isinstance(event, StepEvent):
            self.last_step = event
            if math.isfinite(event.loss):
                self.loss_steps.append(int(event.step))
                self.loss_values.append(float(event.loss))
        elif isinstance(event, EvalEvent):
            if math.isfinite(event.val_loss):
                self.val_steps.append(int(event.step))
                self.val_values.append(float(event.val_loss))
            self.best_val = event.best_val_loss
            self.log.append(f"step {event.step}: val loss {format_loss(event.val_loss)} "
                            f"(best {format_loss(event.best_val_loss)})")
        elif isinstance(event, CheckpointEvent):
            self.checkpoints += 1
            self.last_checkpoint_step = int(event.step)
            self.log.append(f"step {event.step}: saved {Path(event.path).name}")
        elif isinstance(event, DoneEvent):
            self.done = event
            text = {"finished": "finished", "stopped": "stopped, progress saved",
                    "nan": "stopped: loss is not a number"}.get(event.reason, event.reason)
            message = getattr(event, "message", "") or ""
            self.log.append(f"step {event.step}: {text}" + (f" — {message}" if message else ""))

    def pause(self) -> None:
        if self.trainer is not None:
            self.trainer.pause()

    def unpause(self) -> None:
        if self.trainer is not None:
            self.trainer.unpause()

    def stop(self) -> None:
        self.stop_requested = True
        if self.trainer is not None:
            paused = self.paused
            self.trainer.stop()
            if paused:  # let a paused trainer reach its stop check
                self.trainer.unpause()
