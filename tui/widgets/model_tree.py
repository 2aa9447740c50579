"""A directory tree that lists only folders and .cllm model files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.widgets import DirectoryTree


class ModelTree(DirectoryTree):
    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        # Runs on a worker thread: no I/O beyond what DirectoryTree already did, no state.
        return [
            path for path in paths
            if not path.name.startswith(".")
            and (path.suffix == ".cllm" or _is_dir(path))
        ]


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
