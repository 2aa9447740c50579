"""What a model file's header says (core.model_file.read_info), or why it is unusable."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from cllm.tui.engine import format_loss, format_params, tokenizer_label


def _size(n: int) -> str:
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

    def show_error(self, path: Path, message: str) -> None:
        self.add_class("invalid")
        body = Text()
        body.append(f"{path.name}\n", style="bold")
        body.append("Cannot be loaded\n\n", style="bold")
        body.append(message)
        self.plain = body.plain
        self.update(body)

    def show_info(self, info) -> None:
        self.remove_class("invalid")
        cfg = info.config
        training = info.training or {}
        corpus = training.get("corpus") or {}
        rows: list[tuple[str, str]] = []

        def add(name: str, value: str) -> None:
            rows.append((name, value))

        add("Model", Path(info.path).name)
        add("Config", f"{cfg.n_layer} layers · {cfg.n_head} heads · width {cfg.n_embd} · ctx {cfg.ctx}")
        add("Params", f"{format_params(info.n_params)} ({info.n_params:,})")
        add("Tokenizer", tokenizer_label(info.tokenizer.get("type"), cfg.vocab_size))
        steps = int(training.get("step", 0) or 0)
        seen = training.get("tokens_seen")
        add("Steps", f"{steps:,}" + (f" ({int(seen):,} tokens seen)" if seen else ""))
        add("Best val", format_loss(training.get("best_val_loss")))
        history = training.get("val_history") or []
        if history:
            last = history[-1]
            value = last[1] if isinstance(last, (list, tuple)) and len(last) > 1 else last
            if isinstance(value, dict):
                value = value.get("val_loss", value.get("loss"))
            add("Last val", format_loss(value if isinstance(value, (int, float)) else None))
        if isinstance(corpus, dict) and corpus:
            sha = str(corpus.get("sha256", ""))[:12]
            add("Corpus", f"{corpus.get('name', '?')}" + (f" (sha256 {sha}…)" if sha else ""))
        add("Created", _date(info.created))
        add("Updated", _date(info.updated))
        add("File", f"{_size(info.file_size)}"
            + (", with optimizer state" if info.has_optimizer else ", weights only"))
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for name, value in rows:
            table.add_row(name, value)
        self.plain = "\n".join(f"{name}: {value}" for name, value in rows)
        self.update(table)
