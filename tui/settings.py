"""The settings file: the model used last time and the user's key map.

A small JSON file in platformdirs' user config folder (``~/.config/cllm/settings.json``
on Linux). ``CLLM_CONFIG_DIR`` or the ``config_dir`` argument put it elsewhere (tests
do). A missing file means defaults; a broken one also means defaults, and ``problem``
says why so the app can tell the user (once) instead of failing; a broken file is then
left as it is, never overwritten.

    {
      "last_model": "/home/me/models/shakespeare.cllm",
      "keymap": {"mode.train": "f2", "train.start": "f5,ctrl+r"}
    }
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from cllm.core.atomic_file import write_whole

ENV_VAR = "CLLM_CONFIG_DIR"
FILE_NAME = "settings.json"


def default_config_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("cllm", appauthor=False))


@dataclass
class Settings:
    path: Path
    last_model: str | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # why the file could not be read, if it could not

    @classmethod
    def load(cls, config_dir: Path | str | None = None) -> Settings:
        folder = Path(config_dir) if config_dir is not None else default_config_dir()
        path = folder / FILE_NAME
        settings = cls(path)
        if not path.exists():
            return settings
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("the top level is not an object")
        except (OSError, ValueError) as exc:
            settings.problem = f"{path}: cannot read settings ({exc}); using defaults"
            return settings
        last = data.get("last_model")
        settings.last_model = last if isinstance(last, str) and last else None
        keymap = data.get("keymap", {})
        if isinstance(keymap, dict):
            settings.keymap = {str(k): str(v) for k, v in keymap.items() if isinstance(v, str)}
        else:
            settings.problem = f"{path}: \"keymap\" must be an object of binding id -> keys; ignored"
        return settings

    def save(self) -> str | None:
        """Write the file (atomically). Returns a message if it could not be written."""
        data = {"last_model": self.last_model, "keymap": self.keymap}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_whole(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
        except OSError as exc:
            return f"{self.path}: cannot save settings ({exc.strerror or exc})"
        return None

    def remember_model(self, path: Path | str) -> str | None:
        """Remember the model for the next start. A file that could not be read is the
        user's to mend: it is not overwritten (the model is remembered for this session)."""
        self.last_model = str(Path(path).resolve())
        if self.problem:
            return None
        return self.save()
