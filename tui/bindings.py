"""Bindings shared by every screen: one key to each screen (tui/modes.py).

They sit first in every screen's BINDINGS so that the footer shows them first. Every
binding in the app has an `id`; the settings file's "keymap" maps ids to other keys.
"""

from __future__ import annotations

from textual.binding import Binding

from cllm.tui.modes import MODES

MODE_BINDINGS = [Binding(mode.key, f"app.mode('{mode.name}')", mode.title, id=f"mode.{mode.name}") for mode in MODES]
