"""Models: browse .cllm files, see what each holds, load one; import a Hugging Face
GPT-2 folder.

Highlighting a file reads and checks its header at once (a broken file says why), then
reads every value in a worker: Load is offered once they are known to be finite.
Highlighting a folder that holds a Hugging Face GPT-2 model says what an import would make
of it, or every reason it cannot be imported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DirectoryTree, Footer, Input, Tree
from textual.widgets.directory_tree import DirEntry
from textual.worker import get_current_worker

from cllm.tui.bindings import MODE_BINDINGS
from cllm.tui.engine import CllmError
from cllm.tui.messages import DetailsRead, FolderRead, ImportRequested, LoadRequested, ValuesChecked
from cllm.tui.screens.name_dialog import NameDialog
from cllm.tui.validators import free_name
from cllm.tui.widgets.model_bar import ModelBar
from cllm.tui.widgets.model_details import ModelDetails
from cllm.tui.widgets.model_tree import ModelTree
from cllm.tui.worker_errors import ReportWorkerErrors

if TYPE_CHECKING:
    from cllm.core.model_file import ModelInfo
    from cllm.tui.app import CllmApp

RELOAD_S = 0.5
CHECKING = "checking…"
FINITE = "all finite (checked)"


class ModelsScreen(ReportWorkerErrors, Screen):
    BINDINGS = [
        *MODE_BINDINGS,
        Binding("f5", "load", "Load", id="models.load"),
        Binding("f6", "import", "Import", id="models.import"),
        Binding("f2", "focus_path", "Path", id="models.path"),
        Binding("f9", "refresh", "Refresh", id="models.refresh"),
    ]
    PALETTE = [("Load highlighted model", "Load the model highlighted in Models", "load")]  # name, help, action

    app: CllmApp

    def __init__(self) -> None:
        super().__init__(id="models")
        self.highlighted: Path | None = None
        self.infos: dict[Path, ModelInfo] = {}  # header details of files whose header is fine
        self.problems: dict[Path, str] = {}  # why a file cannot be loaded (header, values or loading)
        self.checked: set[Path] = set()  # files whose values are all finite
        self.load_when_checked: Path | None = None
        self.folder: Path | None = None  # the highlighted folder, if it is an importable Hugging Face one
        self._tree_stale = False  # a file was saved since the tree was read
        self._reload_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        root = self.app.models_dir
        yield ModelBar(classes="model-bar")
        with Horizontal(id="models-body"):
            with Vertical(id="models-browser"):
                yield Input(str(root), id="models-path", compact=True,
                            placeholder="a folder or .cllm file, then enter")
                yield ModelTree(root if root.is_dir() else Path.cwd(), is_hf_folder=self.app.engine.is_hf_folder,
                                id="model-tree")
            with VerticalScroll(id="details-scroll"):
                yield ModelDetails(id="model-details")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(ModelTree).focus()
        self.watch(self.app, "models_saved", self._models_saved, init=False)
        self.watch(self.app, "load_failure", self._load_failed, init=False)

    # -- browsing ----------------------------------------------------------------------
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        entry = event.node.data
        if not isinstance(entry, DirEntry):
            return
        path = Path(entry.path)
        self.folder = None
        if path.suffix == ".cllm" and not path.is_dir():
            self.inspect(path)
        else:
            self.highlighted = None
            self.refresh_bindings()
            self.query_one(ModelDetails).show_hint(f"{path}\n\nA folder: open it with enter or space.")
            self._read_folder(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def _read_folder(self, path: Path) -> None:
        engine = self.app.engine
        if not engine.is_hf_folder(path):
            return
        try:
            self.post_message(FolderRead(path, engine.inspect_hf_folder(path), None))
        except CllmError as exc:
            self.post_message(FolderRead(path, None, str(exc)))

    def on_folder_read(self, message: FolderRead) -> None:
        if self.highlighted is not None or not self._is_highlighted_folder(message.path):
            return
        details = self.query_one(ModelDetails)
        if message.info is None:
            details.show_error(message.path, message.problem or "", "Cannot be imported")
            return
        details.show_hf_folder(message.info)
        self.folder = message.path if message.info.importable else None
        self.refresh_bindings()

    def _is_highlighted_folder(self, path: Path) -> bool:
        node = self.query_one(ModelTree).cursor_node
        return node is not None and isinstance(node.data, DirEntry) and Path(node.data.path) == path

    def inspect(self, path: Path) -> None:
        self.highlighted = path
        self.refresh_bindings()
        self._show(path)
        if path not in self.problems and path not in self.checked:
            self._read_details(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def _read_details(self, path: Path) -> None:
        worker = get_current_worker()
        engine = self.app.engine
        try:
            info = engine.read_info(path)
        except CllmError as exc:
            self.post_message(DetailsRead(path, None, str(exc)))
            return
        self.post_message(DetailsRead(path, info, None))
        if worker.is_cancelled:
            return
        try:
            engine.check_values(path)
        except CllmError as exc:
            self.post_message(ValuesChecked(path, str(exc)))
            return
        self.post_message(ValuesChecked(path, None))

    def on_details_read(self, message: DetailsRead) -> None:
        if message.problem is not None:
            self.problems[message.path] = message.problem
        elif message.info is not None:
            self.infos[message.path] = message.info
        self._show(message.path)

    def on_values_checked(self, message: ValuesChecked) -> None:
        path = message.path
        if message.problem is not None:
            self.problems[path] = message.problem
        else:
            self.checked.add(path)
        self._show(path)
        self.refresh_bindings()
        if self.load_when_checked == path:
            self.load_when_checked = None
            self.load(path)

    def _show(self, path: Path) -> None:
        """The highlighted file's details as far as they are known."""
        if path != self.highlighted:
            return
        details = self.query_one(ModelDetails)
        if path in self.problems:
            details.show_error(path, self.problems[path])
        elif path in self.infos:
            details.show_info(self.infos[path], FINITE if path in self.checked else CHECKING)
        else:
            details.show_hint(f"{path.name}\n\nreading the header…")

    def _load_failed(self, failure: tuple[Path, str] | None) -> None:
        if failure is not None:
            path, message = failure
            self.problems[path] = message
            self.checked.discard(path)
            self._show(path)
            self.refresh_bindings()

    def _models_saved(self, count: int) -> None:
        """A run saved a file: it may be new, or changed. The tree is read again when this
        screen shows (at most every RELOAD_S while it does: saves can come in bursts)."""
        self._tree_stale = True
        if self.is_current and self._reload_timer is None:
            self._reload_timer = self.set_timer(RELOAD_S, self._reload_tree)

    def on_screen_resume(self) -> None:
        if self._tree_stale:
            self._reload_tree()

    def _reload_tree(self) -> None:
        self._reload_timer = None
        self._tree_stale = False
        for table in (self.infos, self.problems):
            table.clear()
        self.checked.clear()
        self.query_one(ModelTree).reload()
        if self.highlighted is not None:
            self.inspect(self.highlighted)

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.load(Path(event.path))

    @on(Input.Submitted, "#models-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        tree = self.query_one(ModelTree)
        if path.is_dir():
            tree.path = path
            tree.focus()
        elif path.is_file():
            tree.path = path.parent
            self.inspect(path)
            self.load(path)
        else:
            self.query_one(ModelDetails).show_error(path, f"{path}: no such file or folder")

    # -- actions -----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "load":
            return True if self.highlighted in self.checked else None
        if action == "import":
            return True if self.folder is not None else None
        return True

    def action_import(self) -> None:
        folder = self.folder
        if folder is None:
            self.app.notify("Highlight a Hugging Face GPT-2 folder first.", severity="warning")
            return
        models_dir = self.app.models_dir

        def named(name: str | None) -> None:
            if name is not None:
                self.post_message(ImportRequested(folder, models_dir / f"{name}.cllm"))

        self.app.push_screen(NameDialog(models_dir, free_name(models_dir, folder.name),
                                        title=f"Import {folder.name}"), named)

    def load(self, path: Path) -> None:
        if path.suffix != ".cllm":
            self.app.notify(f"{path}: not a .cllm model file", severity="warning", markup=False)
            return
        problem = self.problems.get(path)
        if problem:
            self.app.notify(f"Cannot load: {problem}", severity="error", markup=False)
            return
        if path not in self.checked:
            self.load_when_checked = path
            self.app.notify(f"Checking the values of {path.name} first…", markup=False)
            return
        self.post_message(LoadRequested(path))

    def action_load(self) -> None:
        if self.highlighted is None:
            self.app.notify("Highlight a .cllm file first.", severity="warning")
            return
        self.load(self.highlighted)

    def action_focus_path(self) -> None:
        self.query_one("#models-path", Input).focus()

    def action_refresh(self) -> None:
        self._reload_tree()
