"""A run's state as a model file keeps it (the `training` metadata), read in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cllm.core.config import DROPOUT_SETTINGS, DropoutRates, TrainConfig
from cllm.core.errors import ConfigError


@dataclass(frozen=True)
class CorpusRef:
    """Which text a model was trained on: its name and the SHA-256 of its UTF-8 bytes."""

    name: str
    sha256: str


@dataclass(frozen=True)
class ParentRef:
    """The model a fine-tuned model started from: its file name, the SHA-256 of that file
    and the steps it had trained."""

    name: str
    sha256: str
    step: int

    def to_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "step": self.step}

    @classmethod
    def from_dict(cls, data: object) -> ParentRef | None:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        step = data.get("step", 0)
        return cls(data["name"], str(data.get("sha256") or ""),
                   step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0)


def _history(value: object) -> list[list]:
    """[step, value] pairs with an integer step; other entries are dropped."""
    pairs = []
    for item in value if isinstance(value, list) else []:
        if (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)):
            pairs.append([int(item[0]), float(item[1])])
    return pairs


def _count(data: dict, key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the training state's {key!r} must be a whole number of at least 0, got {value!r}")
    return value


@dataclass
class RunState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int = 0
    tokens_seen: int = 0
    loss_history: list = field(default_factory=list)  # [step, loss]
    val_history: list = field(default_factory=list)  # [step, val_loss]
    best_val_loss: float | None = None
    rng_state: dict | None = None
    data_position: int = 0  # batches drawn so far
    created: str | None = None
    corpus: CorpusRef | None = None
    train_config: dict | None = None  # the TrainConfig fields of the run that wrote it
    parent: ParentRef | None = None  # the model a fine-tune started from
    imported: dict | None = None  # where an imported model came from (core/hf_import.py)

    def to_training_dict(self, corpus: CorpusRef, train_config: dict) -> dict:
        data = {
            "step": self.step, "tokens_seen": self.tokens_seen,
            "loss_history": self.loss_history, "val_history": self.val_history,
            "best_val_loss": self.best_val_loss,
            "corpus": {"name": corpus.name, "sha256": corpus.sha256},
            "rng_state": self.rng_state, "data_position": self.data_position,
            "train_config": train_config,
        }
        if self.parent is not None:
            data["parent"] = self.parent.to_dict()
        if self.imported is not None:
            data["imported"] = self.imported
        return data

    @classmethod
    def from_training_dict(cls, data: dict, created: str | None = None) -> RunState:
        """Reads what `to_training_dict` wrote (files from older versions may lack keys).
        ValueError names a value of the wrong kind."""
        best = data.get("best_val_loss")
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise ValueError(f"the training state's 'best_val_loss' must be a number, got {best!r}")
        corpus = data.get("corpus")
        ref = None
        if isinstance(corpus, dict) and isinstance(corpus.get("name"), str):
            ref = CorpusRef(corpus["name"], str(corpus.get("sha256") or ""))
        rng_state = data.get("rng_state")
        train_config = data.get("train_config")
        imported = data.get("imported")
        return cls(
            step=_count(data, "step"), tokens_seen=_count(data, "tokens_seen"),
            loss_history=_history(data.get("loss_history")), val_history=_history(data.get("val_history")),
            best_val_loss=None if best is None or not math.isfinite(best) else float(best),
            rng_state=rng_state if isinstance(rng_state, dict) else None,
            data_position=_count(data, "data_position"), created=created, corpus=ref,
            train_config=train_config if isinstance(train_config, dict) else None,
            parent=ParentRef.from_dict(data.get("parent")),
            imported=imported if isinstance(imported, dict) else None,
        )

    @property
    def dropout_rates(self) -> DropoutRates:
        """The dropout rates the model was trained with: its run's, or for an imported
        model its config.json's (core/hf_import.py, under TrainConfig's names); none
        where neither says or what it says is not a set of rates."""
        for source in (self.train_config, self.imported):
            settings = {name: value for name, value in (source or {}).items() if name in DROPOUT_SETTINGS}
            if not settings:
                continue
            try:
                return TrainConfig(**settings).validate().dropout_rates
            except (TypeError, ConfigError):
                continue
        return TrainConfig().dropout_rates

    @property
    def last_val_loss(self) -> float | None:
        return self.val_history[-1][1] if self.val_history else None
