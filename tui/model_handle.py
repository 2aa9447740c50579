"""The loaded model as the app holds it: its file, what its header says, its weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cllm.tui.engine import CorpusRef
from cllm.tui.formatting import format_loss, format_params, tokenizer_label

if TYPE_CHECKING:
    from cllm.core.config import ModelConfig
    from cllm.core.model import GPT
    from cllm.core.model_file import LoadedModel, ModelInfo


@dataclass
class ModelHandle:
    """`model` is None while only the header is known; `info` is None before the first
    save. Steps and the best loss follow a run that trains this model."""

    path: Path | None
    model: GPT | None = None
    info: ModelInfo | None = None
    steps: int = 0
    best_val: float | None = None
    corpus: CorpusRef | None = None

    @classmethod
    def from_loaded(cls, path: Path, loaded: LoadedModel) -> ModelHandle:
        run = loaded.info.run
        return cls(Path(path), loaded.model, loaded.info, run.step, run.best_val_loss, run.corpus)

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "unsaved model"

    @property
    def n_params(self) -> int | None:
        if self.model is not None:
            return int(self.model.n_params)
        return self.info.n_params if self.info is not None else None

    @property
    def config(self) -> ModelConfig | None:
        if self.model is not None:
            return self.model.config
        return self.info.config if self.info is not None else None

    @property
    def tokenizer(self) -> str:
        config = self.config
        vocab = config.vocab_size if config is not None else None
        if self.model is not None:
            return tokenizer_label(self.model.tokenizer.kind, vocab)
        if self.info is not None:
            return tokenizer_label(self.info.tokenizer.get("type"), vocab)
        return "?"

    def summary(self) -> str:
        return (f"{self.name} · {format_params(self.n_params)} params · {self.tokenizer} · "
                f"{self.steps} steps · best val {format_loss(self.best_val)}")
