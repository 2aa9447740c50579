"""Models: browse .cllm files, see what each holds, load one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DirectoryTree, Footer, Input, Tree

from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.engine import CllmError
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.worker_errors import ReportWorkerErrors
from cllm.tui.widgets.model_details import ModelDetails
from cllm.tui.widgets.model_tree import ModelTree

if TYPE_CHECKING:
    from cllm.tui.app import CllmApp


class ModelsScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("f5", "load", "Load", id="models.load"),
        Binding("f2", "focus_path", "Path", id="models.path"),
        Binding("f9", "refresh", "Refresh", id="models.refresh"),
    ]

    app: "CllmApp"

    def __init__(self) -> None:
        super().__init__(id="models")
        self.highlighted: Path | None = None
        self.problems: dict[Path, str] = {}  # files whose header cannot be read, and why
        self.load_failures: dict[Path, str] = {}  # header fine, data not (until refreshed)

    def compose(self) -> ComposeResult:
        root = self.app.models_dir
        yield ModelBar(classes="model-bar")
        with Horizontal(id="models-body"):
            with Vertical(id="models-browser"):
                yield Input(str(root), id="models-path", compact=True,
                            placeholder="a folder or .cllm file, then enter")
                yield ModelTree(root if root.is_dir() else Path.cwd(), id="model-tree")
            with VerticalScroll(id="details-scroll"):
                yield ModelDetails(id="model-details")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(ModelTree).focus()

    # -- browsing ----------------------------------------------------------------------
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        entry = event.node.data
        path = getattr(entry, "path", None)
        if path is None:
            return
        path = Path(path)
        if path.suffix == ".cllm" and not path.is_dir():
            self.highlighted = path
            self._read_info(path)
        else:
            self.highlighted = None
            self.query_one(ModelDetails).show_hint(f"{path}\n\nA folder: open it with enter or space.")

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def _read_info(self, path: Path) -> None:
        try:
            info = self.app.engine.read_info(path)
        except CllmError as exc:
            self.app.call_from_thread(self._show_problem, path, str(exc))
            return
        self.app.call_from_thread(self._show_info, path, info)

    def _show_problem(self, path: Path, message: str) -> None:
        self.problems[path] = message
        if path == self.highlighted:
            self.query_one(ModelDetails).show_error(path, message)

    def _show_info(self, path: Path, info) -> None:
        self.problems.pop(path, None)
        if path != self.highlighted:
            return
        if path in self.load_failures:  # the header reads, but loading failed: say why
            self.query_one(ModelDetails).show_error(path, self.load_failures[path])
        else:
            self.query_one(ModelDetails).show_info(info)

    def _load_failed(self, path: Path, message: str) -> None:
        self.load_failures[path] = message
        if path == self.highlighted:
            self.query_one(ModelDetails).show_error(path, message)

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.load(Path(event.path))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        tree = self.query_one(ModelTree)
        if path.is_dir():
            tree.path = path
            tree.focus()
        elif path.is_file():
            tree.path = path.parent
            self.highlighted = path
            self._read_info(path)
            self.load(path)
        else:
            self.query_one(ModelDetails).show_error(path, f"{path}: no such file or folder")

    # -- actions -----------------------------------------------------------------------
    def load(self, path: Path) -> None:
        if path.suffix != ".cllm":
            self.app.notify(f"{path}: not a .cllm model file", severity="warning", markup=False)
            return
        problem = self.problems.get(path)
        if problem:
            self.app.notify(f"Cannot load: {problem}", severity="error", markup=False)
            return
        self.app.load_model(path, on_error=lambda message: self._load_failed(path, message))

    def action_load(self) -> None:
        if self.highlighted is None:
            self.app.notify("Highlight a .cllm file first.", severity="warning")
            return
        self.load(self.highlighted)

    def action_focus_path(self) -> None:
        self.query_one("#models-path", Input).focus()

    def action_refresh(self) -> None:
        self.problems.clear()
        self.load_failures.clear()
        self.query_one(ModelTree).reload()
