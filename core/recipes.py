"""Recipes: named sets of model and training settings, defined once here for the command
line (`cllm train --recipe NAME`) and the TUI's train form. Settings given beside a
recipe override it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from cllm.core.config import ModelConfig, TrainConfig
from cllm.core.errors import ConfigError

SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "ctx")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    model: dict = field(default_factory=dict)  # ModelConfig fields that differ from its defaults
    train: dict = field(default_factory=dict)  # TrainConfig fields that differ from its defaults

    def shape(self) -> dict[str, int]:
        """The model's shape: n_layer, n_head, n_embd and ctx."""
        defaults = ModelConfig(vocab_size=2)
        return {name: self.model.get(name, getattr(defaults, name)) for name in SHAPE_FIELDS}

    def train_config(self, **overrides) -> TrainConfig:
        """The recipe's TrainConfig, with `overrides` (TrainConfig fields) on top."""
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"not training settings: {', '.join(unknown)}")
        return TrainConfig(**{**self.train, **overrides}).validate()


RECIPES = {recipe.name: recipe for recipe in (
    Recipe("shakespeare-char-cpu",
           "nanoGPT's Shakespeare on a CPU, from its README (CLLM's defaults): 4 layers, 4 heads, width 128, "
           "ctx 64, batch 12, lr 1e-3 to 1e-4 over 2000 steps, no dropout"),
    Recipe("shakespeare-char",
           "nanoGPT's config/train_shakespeare_char.py, its GPU recipe: 6 layers, 6 heads, width 384, ctx 256, "
           "batch 64, dropout 0.2, lr 1e-3 to 1e-4 over 5000 steps (warm-up 100, beta2 0.99), eval every 250",
           model={"n_layer": 6, "n_head": 6, "n_embd": 384, "ctx": 256},
           # nanoGPT's warm-up of 100 steps is core's rule for 5000 steps (TrainConfig.warmup_steps), and
           # stays a tenth of a shorter run asked for beside the recipe
           train={"batch": 64, "steps": 5000, "lr": 1e-3, "min_lr": 1e-4, "beta2": 0.99, "dropout": 0.2,
                  "eval_interval": 250}),
)}


def recipe(name: str) -> Recipe:
    """The recipe called `name`, or ConfigError listing the recipes there are."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"no recipe called {name!r}; there are {', '.join(RECIPES)}") from None
