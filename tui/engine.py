"""The one place where the TUI reaches the engine (`core/`).

Screens and the app never import `core`'s heavy modules themselves: they call an
`Engine` (tests hand the app a subclass whose trainer is a fake that emits events
quickly), which imports them when first used, so the app starts without loading numba.
The light parts of core that the TUI shows (errors, configs, events, tokenizer rules)
are re-exported here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cllm.core.config import WEIGHTS, ModelConfig, SampleConfig, TrainConfig, default_threads
from cllm.core.errors import Cancelled, CllmError, ConfigError, CorpusError, ModelFileError, TokenizerError
from cllm.core.events import (
    CheckpointEvent,
    DoneEvent,
    EndReason,
    EvalEvent,
    Event,
    RunStatus,
    SaveFailedEvent,
    SaveReason,
    StepEvent,
)
from cllm.core.outcome import Outcome, describe_end
from cllm.core.run_state import CorpusRef, RunState
from cllm.core.tokenizer import DEFAULT_VOCAB, TRAINABLE_KINDS, check_vocab_size

if TYPE_CHECKING:
    from cllm.core.corpus import Corpus
    from cllm.core.dataset import Dataset
    from cllm.core.hf_import import HfFolderInfo, ImportResult
    from cllm.core.model import GPT
    from cllm.core.model_file import LoadedModel, ModelInfo

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

# The engine's modules import numba when first used, from whichever thread asks first.
# numba's modules import each other, and two threads importing them at once can see one
# half-initialised ("cannot import name ... from partially initialized module"): the first
# imports are made one at a time.
IMPORTS = threading.RLock()

__all__ = [
    "CllmError", "ConfigError", "CorpusError", "ModelFileError", "TokenizerError", "Cancelled",
    "ModelConfig", "SampleConfig", "TrainConfig", "WEIGHTS", "default_threads", "CorpusRef", "RunState",
    "StepEvent", "EvalEvent", "CheckpointEvent", "SaveFailedEvent", "DoneEvent", "Event",
    "EndReason", "RunStatus", "SaveReason", "Outcome", "describe_end",
    "DEFAULT_VOCAB", "TRAINABLE_KINDS", "check_vocab_size",
    "Engine", "TrainerLike", "BUILTIN_CORPUS", "QUICK_START", "QUICK_START_EVAL_CHUNKS", "QUICK_START_PROMPT",
]

BUILTIN_CORPUS = "python-docs"

# The quick start: small enough to train in about a minute on a laptop, big enough to
# produce recognisable Python-documentation-like text.
QUICK_START: dict[str, Any] = {  # settings of several types, by name
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
    "dropout": 0.0,
}
QUICK_START_EVAL_CHUNKS = 64  # evaluate on 64 held-out windows: a second, not ten
QUICK_START_PROMPT = "The "


class TrainerLike(Protocol):
    """What the app needs of a trainer (core.trainer.Trainer; the tests' fake)."""

    model: GPT
    config: TrainConfig
    out_path: Path | None
    n_threads: int
    phase: str  # "train", "eval" or "save"

    @property
    def step(self) -> int: ...

    @property
    def paused(self) -> bool: ...

    @property
    def shard_progress(self) -> np.ndarray: ...

    @property
    def phase_totals(self) -> np.ndarray: ...

    def pause(self) -> None: ...

    def unpause(self) -> None: ...

    def stop(self, why: str = "") -> None: ...

    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent: ...

    def save(self, path: Path | None = None) -> Path: ...


class Engine:
    """Thin adapter over core/. Every method may raise CllmError (user-ready message)."""

    def load_corpus(self, source: str | Path | None) -> Corpus:
        with IMPORTS:
            from cllm.core.corpus import load_corpus

        return load_corpus(source)

    def training_data(self, source: str, *, tokenizer: str, vocab_size: int | None, model_path: Path | None,
                      on_progress: Callable[[str, int, int], None], on_note: Callable[[str], None],
                      cancel: threading.Event) -> Corpus | Dataset:
        """What a run trains on: a built-in corpus, a prepared dataset folder, or a file or
        folder tokenized once (core/prepare.py; from the cache while unchanged) with the
        model's tokenizer (`model_path`: to continue or fine-tune it) or a new one.
        Cancelled (a CllmError) when `cancel` is set during the preparation."""
        from cllm.core.corpus import BUILTIN_CORPORA, load_corpus
        from cllm.core.dataset import is_dataset, open_dataset
        from cllm.core.dataset_cache import dataset_for
        from cllm.core.model_file import read_info
        from cllm.core.prepare import TokenizerPlan
        from cllm.core.tokenizer import Tokenizer, tokenizer_from_json

        if source in BUILTIN_CORPORA and not Path(source).exists():
            return load_corpus(source)
        path = Path(source).expanduser()
        if is_dataset(path):
            dataset = open_dataset(path)
            on_note(dataset.describe())
            return dataset
        tok: Tokenizer | TokenizerPlan = (tokenizer_from_json(read_info(model_path).tokenizer) if model_path
                                          else TokenizerPlan(tokenizer, vocab_size))
        return dataset_for([path], tok, on_progress=lambda p: on_progress(p.phase, p.done, p.total), on_note=on_note,
                           cancel=cancel)

    def builtin_corpora(self) -> list[str]:
        with IMPORTS:
            from cllm.core.corpus import list_builtin

        return list_builtin()

    def read_info(self, path: Path) -> ModelInfo:
        """The header, checked (core.model_file.read_info)."""
        with IMPORTS:
            from cllm.core.model_file import read_info

        return read_info(path)

    def check_values(self, path: Path) -> ModelInfo:
        """The header and every value, checked (core.model_file.check_values)."""
        with IMPORTS:
            from cllm.core.model_file import check_values

        return check_values(path)

    def load_model(self, path: Path, progress: Progress | None = None) -> LoadedModel:
        with IMPORTS:
            from cllm.core.model_file import load_model

        return load_model(path, progress)

    def is_hf_folder(self, path: Path) -> bool:
        """A Hugging Face GPT-2 folder (its config.json says so; cheap, never raises)."""
        with IMPORTS:
            from cllm.core.hf_import import is_hf_gpt2_folder

        return is_hf_gpt2_folder(path)

    def inspect_hf_folder(self, path: Path) -> HfFolderInfo:
        """What an import would make of the folder, without reading the weights."""
        with IMPORTS:
            from cllm.core.hf_import import inspect_hf_folder

        return inspect_hf_folder(path)

    def import_hf_folder(self, path: Path, out: Path, progress: Progress | None = None) -> ImportResult:
        with IMPORTS:
            from cllm.core.hf_import import import_hf_folder

        return import_hf_folder(path, out, progress=progress)

    def new_trainer(self, corpus: Corpus | Dataset, model_config: dict, train_config: TrainConfig, *,
                    tokenizer: str, vocab_size: int | None, out_path: Path) -> TrainerLike:
        with IMPORTS:
            from cllm.core.trainer import Trainer

        return Trainer.new(corpus, model_config, train_config, tokenizer=tokenizer,
                           vocab_size=vocab_size, out_path=out_path)

    def resume_trainer(self, model_path: Path, corpus: Corpus | Dataset, train_config: TrainConfig, *,
                       out_path: Path | None = None) -> TrainerLike:
        with IMPORTS:
            from cllm.core.trainer import Trainer

        return Trainer.resume(model_path, corpus, train_config, out_path=out_path)

    def with_saved_dropout(self, train_config: TrainConfig, model_path: Path) -> TrainConfig:
        """`train_config` with the dropout rate of the model at `model_path`."""
        with IMPORTS:
            from cllm.core.trainer import with_saved_dropout

        return with_saved_dropout(train_config, model_path)

    def fine_tune_trainer(self, parent_path: Path, corpus: Corpus | Dataset, train_config: TrainConfig, *,
                          out_path: Path) -> TrainerLike:
        with IMPORTS:
            from cllm.core.trainer import Trainer

        return Trainer.fine_tune(parent_path, corpus, train_config, out_path=out_path)

    def generate(self, model: GPT, prompt: str, config: SampleConfig,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[list[str | None]]:
        """core.sampler.generate_samples: `config.samples` continuations of `prompt`, per
        step a piece for each (None for one that has ended)."""
        with IMPORTS:
            from cllm.core.sampler import generate_samples

        return generate_samples(model, prompt, config, should_stop=should_stop)

    def kernels_ready(self) -> bool:
        """True when the numba kernels are compiled and cached (start-up takes a second)."""
        with IMPORTS:
            from cllm.core.precompile import kernels_cached

        return kernels_cached()

    def compile_kernels(self) -> None:
        """Compile (or load from the cache) every kernel; blocking, for a thread worker."""
        with IMPORTS:
            from cllm.core.precompile import compile_kernels

        compile_kernels()

    def fits_corpus(self, model: GPT, source: str) -> tuple[bool, str]:
        """Whether `model` can go on training (or be fine-tuned) on the corpus at `source`
        (a file, a folder, a prepared dataset or a built-in corpus), and why not: the
        tokenizer's own words name what its vocabulary lacks, and where. Bounded memory
        (core/corpus_fit.py); blocking, for a thread."""
        with IMPORTS:
            from cllm.core.corpus_fit import fit_problem

        try:
            problem = fit_problem(model.tokenizer, source)
        except CllmError as exc:
            return False, str(exc)
        return (False, problem) if problem else (True, "")
