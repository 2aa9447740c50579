"""Pick a training text, a folder of texts or a prepared dataset: a directory tree plus a
path you can type. Escape cancels."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Static

from cllm.tui.widgets.text_file_tree import TextFileTree


class FileBrowser(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, start: Path, title: str = "Choose a training text or a folder") -> None:
        super().__init__(classes="dialog")
        self.start = start if start.is_dir() else start.parent
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box browser-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Input(str(self.start), id="browse-path", compact=True,
                        placeholder="type a folder or file path, then enter")
            yield TextFileTree(self.start, id="browse-tree")
            yield Static("", id="browse-error", classes="form-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Use this folder", id="use-folder", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#browse-tree", DirectoryTree).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(Path(event.path))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        error = self.query_one("#browse-error", Static)
        if path.is_file():
            self.dismiss(path)
        elif path.is_dir():
            error.update("")
            tree = self.query_one("#browse-tree", DirectoryTree)
            tree.path = path
            tree.focus()
        else:
            error.update(f"{path}: no such file or folder")

    @on(Button.Pressed, "#use-folder")
    def _use_folder(self) -> None:
        """The folder under the tree's cursor (or the one it shows): read recursively."""
        tree = self.query_one("#browse-tree", DirectoryTree)
        node = tree.cursor_node
        path = node.data.path if node is not None and node.data is not None else Path(tree.path)
        self.dismiss(Path(path) if Path(path).is_dir() else Path(path).parent)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
