"""What a model file's header says (core.model_file.read_info), whether its values were
checked, or why it is unusable."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from cllm.tui.formatting import format_loss, format_params, tokenizer_label


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _date(text: str) -> str:
    return text.replace("T", " ").replace("Z", " UTC") if text else "—"


class ModelDetails(Static):
    """`show_info(info)`, `show_error(path, message)` or `show_hint(text)`.

    `plain` holds the same content as plain text (what tests and a copy would read)."""

    plain = ""

    def on_mount(self) -> None:
        self.show_hint("Highlight a .cllm file to see its details; Enter loads it.")

    def show_hint(self, text: str) -> None:
        self.remove_class("invalid")
        self.plain = text
        self.update(Text(text, style="italic"))

    def show_error(self, path: Path, message: str, cannot: str = "Cannot be loaded") -> None:
        self.add_class("invalid")
        body = Text()
        body.append(f"{path.name}\n", style="bold")
        body.append(f"{cannot}\n\n", style="bold")
        body.append(message)
        self.plain = body.plain
        self.update(body)

    def _table(self, rows: list[tuple[str, str]]) -> None:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for name, value in rows:
            table.add_row(name, value)
        self.plain = "\n".join(f"{name}: {value}" for name, value in rows)
        self.update(table)

    def show_hf_folder(self, info) -> None:
        """A Hugging Face GPT-2 folder (core.hf_import.HfFolderInfo): what an import makes
        of it, or every reason it cannot be imported."""
        if info.problems:
            self.show_error(Path(info.path), "\n".join(info.problems), "Cannot be imported")
            return
        self.remove_class("invalid")
        cfg = info.config
        rows = [
            ("Folder", Path(info.path).name),
            ("Kind", "Hugging Face GPT-2: Import makes it a .cllm model"),
            ("Config", f"{cfg.n_layer} layers · {cfg.n_head} heads · width {cfg.n_embd} · ctx {cfg.ctx}"),
            ("Params", f"{format_params(info.n_params)} ({info.n_params:,})"),
            ("Tokenizer", tokenizer_label(info.tokenizer_kind, cfg.vocab_size)),
            ("Weights", f"{', '.join(info.weight_files)} ({info.dtype})"),
        ]
        rows += [("Note", note) for note in info.notes]
        self._table(rows)

    def show_info(self, info, values: str) -> None:
        """The header's details; `values` says where the check of the values stands."""
        self.remove_class("invalid")
        cfg = info.config
        run = info.run
        rows: list[tuple[str, str]] = [
            ("Model", Path(info.path).name),
            ("Config", f"{cfg.n_layer} layers · {cfg.n_head} heads · width {cfg.n_embd} · ctx {cfg.ctx}"),
            ("Params", f"{format_params(info.n_params)} ({info.n_params:,})"),
            ("Tokenizer", tokenizer_label(info.tokenizer.get("type"), cfg.vocab_size)),
            ("Steps", f"{run.step:,}" + (f" ({run.tokens_seen:,} tokens seen)" if run.tokens_seen else "")),
            ("Best val", format_loss(run.best_val_loss)),
        ]
        if run.val_history:
            rows.append(("Last val", format_loss(run.last_val_loss)))
        if run.corpus is not None:
            sha = run.corpus.sha256[:12]
            rows.append(("Corpus", run.corpus.name + (f" (sha256 {sha}…)" if sha else "")))
        if run.parent is not None:
            rows.append(("Parent", f"{run.parent.name} ({run.parent.step:,} steps)"))
        if run.imported:
            rows.append(("Imported", f"from {run.imported.get('folder', '?')}"))
        rows += [
            ("Created", _date(info.created)),
            ("Updated", _date(info.updated)),
            ("File", _size(info.file_size) + (", with optimizer state" if info.has_optimizer else ", weights only")),
            ("Values", values),
        ]
        self._table(rows)
