"""A directory tree that lists only folders and .cllm model files, and marks the folders
that hold a Hugging Face GPT-2 model (they can be imported)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual.widgets import DirectoryTree
from textual.widgets.directory_tree import DirEntry
from textual.widgets.tree import TreeNode

HF_MARK = " · GPT-2 (Hugging Face)"


class ModelTree(DirectoryTree):
    def __init__(self, path: str | Path, *, is_hf_folder: Callable[[Path], bool] = lambda path: False,
                 id: str | None = None) -> None:
        super().__init__(path, id=id)
        self.is_hf_folder = is_hf_folder
        self.hf_folders: set[Path] = set()  # filled as folders are listed, read when labels are drawn

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        # Runs on a worker thread: DirectoryTree's own I/O, and for each folder a look at
        # its config.json (a small file) to mark Hugging Face folders.
        kept = []
        for path in paths:
            if path.name.startswith("."):
                continue
            if path.suffix == ".cllm" and not _is_dir(path):
                kept.append(path)
            elif _is_dir(path):
                kept.append(path)
                if self.is_hf_folder(path):
                    self.hf_folders.add(path)
        return kept

    def render_label(self, node: TreeNode[DirEntry], base_style: Style, style: Style) -> Text:
        label = super().render_label(node, base_style, style)
        if node.data is not None and Path(node.data.path) in self.hf_folders:
            label.append(HF_MARK, style="dim italic")
        return label


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
