"""Model and training hyper-parameters, with checks that explain what is wrong, and the
rules of a run that every front end takes from here: the learning-rate schedule with its
warm-up, and how often a run saves."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

from cllm.core.errors import ConfigError


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a GPT-2 style model. Defaults are nanoGPT's CPU configuration."""

    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    ctx: int = 64

    def validate(self) -> ModelConfig:
        _require(self.vocab_size >= 2, f"vocab_size must be at least 2, got {self.vocab_size}")
        _require(1 <= self.n_layer <= 64, f"layers must be between 1 and 64, got {self.n_layer}")
        _require(1 <= self.n_head <= 64, f"heads must be between 1 and 64, got {self.n_head}")
        _require(1 <= self.n_embd <= 4096, f"width must be between 1 and 4096, got {self.n_embd}")
        _require(
            self.n_embd % self.n_head == 0,
            f"heads must divide width: {self.n_embd} is not a multiple of {self.n_head}",
        )
        _require(2 <= self.ctx <= 4096, f"context must be between 2 and 4096, got {self.ctx}")
        return self

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("vocab_size", "n_layer", "n_head", "n_embd", "ctx") if n not in data]
        if missing:
            raise ConfigError(f"model config lacks {', '.join(missing)}")
        try:
            return cls(**{k: int(v) for k, v in data.items() if k in names})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model config has a value that is not an integer: {exc}") from None


WARMUP_SHARE = 10  # the default warm-up is a tenth of the run...
WARMUP_CAP = 100  # ...and at most nanoGPT's 100 steps


def default_warmup(steps: int) -> int:
    """The learning-rate warm-up of a run of `steps` steps when none is asked for: a tenth
    of the run, at most 100 steps (nanoGPT's). A short run then still reaches its learning
    rate (50 steps warm up for 5), a long one warms up as nanoGPT does."""
    return max(0, min(WARMUP_CAP, steps // WARMUP_SHARE))


def lr_at(step: int, config: TrainConfig) -> float:
    """nanoGPT's schedule: linear warm-up, then cosine decay to the final lr at the last step."""
    warmup = config.warmup_steps
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    if step >= config.steps:
        return config.final_lr
    ratio = (step - warmup) / max(1, config.steps - warmup)
    return config.final_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (config.lr - config.final_lr)


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


DROPOUT_SETTINGS = ("dropout", "embd_dropout", "attn_dropout", "resid_dropout")  # TrainConfig's fields


class DropoutRates(NamedTuple):
    """Dropout's rate at each of the places GPT-2 drops."""

    embd: float  # the token + position embeddings
    attn: float  # the attention probabilities
    resid: float  # both residual branches' outputs


NO_DROPOUT_RATES = DropoutRates(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults follow nanoGPT's character-level Shakespeare config."""

    steps: int = 2000
    batch: int = 12
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    warmup: int | None = None  # learning-rate warm-up steps; None: `default_warmup(steps)`
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum: int = 1
    dropout: float = 0.0  # GPT-2's three rates (embeddings, attention, residual branches) in one, as nanoGPT's
    # one of them where it differs (GPT-2's embd_pdrop, attn_pdrop, resid_pdrop); None: `dropout`
    embd_dropout: float | None = None
    attn_dropout: float | None = None
    resid_dropout: float | None = None
    eval_interval: int = 250
    eval_chunks: int = 256  # held-out chunks each evaluation reads, spread over the split; 0: every one
    checkpoint_interval: int | None = None  # steps; None: with the evaluations; 0: only at the end (and on stop)
    checkpoint_minutes: float = 10.0  # also save when this long has passed since the last save; 0: never
    threads: int = 0  # 0: all cores
    seed: int = 1337

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    @property
    def warmup_steps(self) -> int:
        """The warm-up this run has: the one asked for, else the rule of its length."""
        return default_warmup(self.steps) if self.warmup is None else self.warmup

    @property
    def checkpoint_every(self) -> int:
        """Steps between checkpoints (0: none but the last). By default checkpoints come
        with the evaluations, so every saved file has a validation loss of its weights."""
        return self.eval_interval if self.checkpoint_interval is None else self.checkpoint_interval

    @property
    def dropout_rates(self) -> DropoutRates:
        """The rate at each of GPT-2's three sites."""
        return DropoutRates(*(self.dropout if rate is None else rate
                              for rate in (self.embd_dropout, self.attn_dropout, self.resid_dropout)))

    def with_dropout_rates(self, rates: DropoutRates) -> TrainConfig:
        """This config with `rates`: one `dropout` (the residual branches') and the other
        two sites' only where they differ from it."""
        base = rates.resid
        return replace(self, dropout=base, embd_dropout=None if rates.embd == base else rates.embd,
                       attn_dropout=None if rates.attn == base else rates.attn, resid_dropout=None)

    def dropout_settings(self) -> dict[str, float]:
        """The dropout fields that are set, by name."""
        return {name: getattr(self, name) for name in DROPOUT_SETTINGS if getattr(self, name) is not None}

    @property
    def n_threads(self) -> int:
        return self.threads if self.threads > 0 else default_threads()

    def validate(self) -> TrainConfig:
        _require(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        _require(1 <= self.batch <= 65536, f"batch must be between 1 and 65536, got {self.batch}")
        _require(0 < self.lr < 1, f"learning rate must be between 0 and 1, got {self.lr}")
        _require(0 <= self.final_lr <= self.lr, f"minimum learning rate must be between 0 and lr, got {self.final_lr}")
        _require(self.warmup_steps >= 0, f"warm-up steps cannot be negative, got {self.warmup_steps}")
        _require(self.warmup_steps < self.steps or self.warmup_steps == 0,
                 f"warm-up ({self.warmup_steps} steps) must be shorter than the run ({self.steps} steps)")
        _require(0 <= self.weight_decay < 1, f"weight decay must be in [0, 1), got {self.weight_decay}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "Adam betas must be in [0, 1)")
        _require(self.grad_clip >= 0, f"gradient clip cannot be negative, got {self.grad_clip}")
        _require(self.grad_accum >= 1, f"gradient accumulation must be at least 1, got {self.grad_accum}")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        for site, rate in zip(DropoutRates._fields, (self.embd_dropout, self.attn_dropout, self.resid_dropout),
                              strict=True):
            _require(rate is None or 0 <= rate < 1, f"{site} dropout must be in [0, 1), got {rate}")
        _require(self.eval_interval >= 0, f"eval interval cannot be negative, got {self.eval_interval}")
        _require(self.eval_chunks >= 0, f"eval chunks cannot be negative, got {self.eval_chunks}")
        _require(self.checkpoint_every >= 0, f"checkpoint interval cannot be negative, got {self.checkpoint_every}")
        _require(self.checkpoint_minutes >= 0, f"checkpoint minutes cannot be negative, got {self.checkpoint_minutes}")
        _require(0 <= self.threads <= 1024, f"threads must be between 0 (all) and 1024, got {self.threads}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


WEIGHTS = ("float32", "int8")  # how the decoder may hold the weights of the matrix products
MAX_SAMPLES = 64  # each sample keeps its own key/value cache (GPT-2 small: 75 MB per sample at ctx 1024)


@dataclass(frozen=True)
class SampleConfig:
    """How to sample. `validate` holds the limits every front end shows."""

    max_tokens: int = 200
    temperature: float = 1.0  # 0: always the most likely token
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # 1: no nucleus cut
    seed: int | None = None  # None: a different draw each time; sample n draws from seed + n
    stop: str | None = None  # generation ends before this text
    samples: int = 1  # continuations of the prompt drawn at once (each equals a one-sample run with its seed)
    threads: int = 0  # threads of the prompt pass and the decoding step; 0: every core
    weights: str = "float32"  # "int8": decode with int8 weights (quantized now unless the model file is int8)
    past_end_of_text: bool = False  # go on after the tokenizer's end-of-text token (GPT-2's <|endoftext|>)

    def validate(self) -> SampleConfig:
        _require(self.max_tokens >= 0, f"max tokens cannot be negative, got {self.max_tokens}")
        _require(0 <= self.temperature <= 100, f"temperature must be between 0 and 100, got {self.temperature}")
        _require(self.top_k >= 0, f"top-k cannot be negative, got {self.top_k}")
        _require(0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}")
        _require(self.seed is None or 0 <= self.seed < 2**64, f"seed must be between 0 and 2**64 - 1, got {self.seed}")
        _require(1 <= self.samples <= MAX_SAMPLES, f"samples must be between 1 and {MAX_SAMPLES}, got {self.samples}")
        _require(self.threads >= 0, f"threads cannot be negative, got {self.threads}")
        _require(self.weights in WEIGHTS, f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        return self
