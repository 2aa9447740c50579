"""The app's screens, one row each: the table that `CllmApp.MODES`, the keys that switch
to a screen (tui/bindings.py), `CllmApp.key_for` and the command palette
(tui/commands.py) all read. Adding a screen is a row here and its own file.

A row names its screen class by module and name, imported when first needed: the screens
import their bindings from this table, so it cannot import them first.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.screen import Screen


@dataclass(frozen=True)
class Mode:
    name: str  # the mode's name and its screen's id
    key: str  # the key that switches to it, from every screen (binding id "mode.<name>")
    title: str  # the footer's and the palette's name for it
    description: str  # the palette's line
    screen: str  # "module:Class" of its Screen

    def screen_class(self) -> type[Screen]:
        module, name = self.screen.split(":")
        return getattr(importlib.import_module(module), name)


MODES = (
    Mode("train", "ctrl+t", "Train", "Training screen: corpus, model size, start/pause/stop",
         "cllm.tui.screens.train:TrainScreen"),
    Mode("generate", "ctrl+g", "Generate", "Generation screen: prompt and sampling settings",
         "cllm.tui.screens.generate:GenerateScreen"),
    Mode("models", "ctrl+o", "Models", "Browse, inspect and load .cllm model files",
         "cllm.tui.screens.models:ModelsScreen"),
)
DEFAULT_MODE = "generate"
