"""Bindings shared by the three screens: one key to each screen.

They sit first in every screen's BINDINGS so that the footer shows them first. Every
binding in the app has an `id`; the settings file's "keymap" maps ids to other keys.
"""

from __future__ import annotations

from textual.binding import Binding

MODE_BINDINGS = [
    Binding("ctrl+t", "app.mode('train')", "Train", id="mode.train"),
    Binding("ctrl+g", "app.mode('generate')", "Generate", id="mode.generate"),
    Binding("ctrl+o", "app.mode('models')", "Models", id="mode.models"),
    Binding("ctrl+r", "app.mode('runs')", "Runs", id="mode.runs", show=False),
]
