"""The corpus arguments of `cllm train`, `cllm eval` and `cllm prepare`: paths (files,
folders, a prepared dataset) or a built-in corpus, turned into what the trainer reads,
with a progress bar (MB/s, ETA) while a corpus is tokenized."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cllm.core.corpus import BUILTIN_CORPORA, Corpus, load_corpus
from cllm.core.dataset import Dataset, is_dataset, open_dataset
from cllm.core.dataset_cache import dataset_for
from cllm.core.errors import ConfigError, TokenizerError
from cllm.core.prepare import DEFAULT_SAMPLE_MB, TokenizerPlan, prepare
from cllm.core.prepare import Progress as PrepareProgress
from cllm.core.tokenizer import TRAINABLE_KINDS, Tokenizer

PHASES = {"checking": "checking files", "tokenizer": "training the tokenizer", "encoding": "tokenizing"}


def add_source_args(p: argparse.ArgumentParser, *, sample: bool = True) -> None:
    """--include, --exclude (and --tokenizer-sample) for a command that reads a corpus."""
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="in folders, read only files whose name or relative path matches (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="in folders, skip files and folders whose name or relative path matches (repeatable)")
    if sample:
        p.add_argument("--tokenizer-sample", type=float, default=DEFAULT_SAMPLE_MB, metavar="MB",
                       help=f"a word or bpe tokenizer is trained on at most this much of the corpus (default "
                            f"{DEFAULT_SAMPLE_MB:g} MB)")


def _sample_mb(a: argparse.Namespace) -> float:
    mb = getattr(a, "tokenizer_sample", DEFAULT_SAMPLE_MB)
    if not mb > 0:
        raise ConfigError(f"--tokenizer-sample must be more than 0 MB, got {mb:g}")
    return mb


@contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Callable[[PrepareProgress], None] | None]:
    if quiet:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, refresh_per_second=8, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def show(p: PrepareProgress) -> None:
            if p.phase not in tasks:
                for task in tasks.values():
                    progress.update(task, visible=False)
                tasks[p.phase] = progress.add_task(PHASES.get(p.phase, p.phase), total=p.total)
            progress.update(tasks[p.phase], completed=p.done, total=p.total)

        yield show


def training_data(paths: list[str], tokenizer: Tokenizer | TokenizerPlan, a: argparse.Namespace, *,
                  console: Console, quiet: bool) -> Corpus | Dataset:
    """The corpus `paths` name: the built-in one (none given, or its name), a prepared
    dataset folder, or files and folders tokenized with `tokenizer` (from the cache
    when they have not changed)."""
    if not paths:
        return load_corpus(None)
    if len(paths) == 1 and paths[0] in BUILTIN_CORPORA and not Path(paths[0]).exists():
        return load_corpus(paths[0])
    if len(paths) == 1 and is_dataset(Path(paths[0]).expanduser()):
        dataset = open_dataset(Path(paths[0]))
        if isinstance(tokenizer, TokenizerPlan) and getattr(a, "tokenizer", None) and dataset.tokenizer is not None \
                and dataset.tokenizer.kind != a.tokenizer:
            raise ConfigError(f"{dataset.path} was prepared with a {dataset.tokenizer.kind} tokenizer, not "
                              f"{a.tokenizer}; leave out --tokenizer, or prepare the corpus again")
        if not quiet:
            _note(console, dataset.describe())
        return dataset
    with _progress(console, quiet) as show:
        return dataset_for(paths, tokenizer, include=a.include, exclude=a.exclude, on_progress=show,
                           on_note=None if quiet else (lambda line: _note(console, line)))


def run_data(a: argparse.Namespace, *, console: Console, quiet: bool) -> Corpus | Dataset:
    """`cllm train`'s corpus, tokenized with the model's tokenizer to resume or fine-tune
    it (TokenizerError names the model and the file it cannot encode), else with a new
    one trained on the corpus."""
    from cllm.core.model_file import read_info
    from cllm.core.tokenizer import tokenizer_from_json

    model = a.output if a.resume else a.init
    if model is None:
        return training_data(a.corpus, plan_from(a), a, console=console, quiet=quiet)
    tokenizer = tokenizer_from_json(read_info(model).tokenizer)
    try:
        return training_data(a.corpus, tokenizer, a, console=console, quiet=quiet)
    except TokenizerError as exc:
        names = ", ".join(Path(p).name for p in a.corpus)
        verb = "continue" if a.resume else "be fine-tuned"
        raise TokenizerError(f"{model} cannot {verb} on {names}: {exc}") from None


def _note(console: Console, line: str) -> None:
    try:
        console.print(escape(line), highlight=False, soft_wrap=True)
    except (OSError, ValueError):
        pass


def plan_from(a: argparse.Namespace) -> TokenizerPlan:
    return TokenizerPlan(a.tokenizer or "char", a.vocab_size, _sample_mb(a))


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize files and folders once into a dataset folder (token shards)",
                       description="Tokenize a corpus into DIR: token shards in llm.c's format and a manifest "
                                   "(docs/DATASETS.md). `cllm train DIR` trains from it.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="text files and folders (read recursively)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="the dataset folder")
    p.add_argument("--tokenizer", choices=TRAINABLE_KINDS, default=None, help="default char")
    p.add_argument("--vocab-size", type=int, default=None, help="for word and bpe tokenizers")
    p.add_argument("--model", type=Path, default=None,
                   help="tokenize with this model's tokenizer (to fine-tune or resume it on the dataset)")
    p.add_argument("--json", action="store_true", help="print one JSON line of results")
    add_source_args(p)


def cmd_prepare(a: argparse.Namespace, console: Console) -> int:
    import json
    import resource
    import time

    from cllm.core.model_file import read_info
    from cllm.core.tokenizer import tokenizer_from_json

    if a.model is not None:
        if a.tokenizer or a.vocab_size:
            raise ConfigError("--tokenizer and --vocab-size cannot be used with --model: the tokenizer is the model's")
        tokenizer: Tokenizer | TokenizerPlan = tokenizer_from_json(read_info(a.model).tokenizer)
    else:
        tokenizer = plan_from(a)
    started = time.perf_counter()
    with _progress(console, a.json) as show:
        dataset = prepare(a.paths, a.output, tokenizer, include=a.include, exclude=a.exclude, on_progress=show,
                          on_note=None if a.json else (lambda line: _note(console, line)))
    seconds = time.perf_counter() - started
    usage, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = sum(f["size"] for f in dataset.files if f["split"] != "skipped")
    if a.json:
        print(json.dumps({"dataset": str(dataset.path), "digest": dataset.sha256, "bytes": total,
                          "train_tokens": len(dataset.train), "val_tokens": len(dataset.val), "seconds": seconds,
                          "cpu_seconds": usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime,
                          "skipped": (dataset.manifest or {}).get("skipped", {})}))
    else:
        _note(console, f"{dataset.describe()}; {total / 1e6:,.1f} MB in {seconds:.1f} s "
                       f"({total / 1e6 / max(seconds, 1e-9):,.1f} MB/s)")
    return 0


def dataset_info(a: argparse.Namespace) -> int:
    """`cllm info DIR` for a dataset folder: files, skipped files, tokens, the split."""
    import json

    dataset = open_dataset(a.model)
    manifest = dataset.manifest or {}
    data = {"path": str(dataset.path), "format": "dataset" if dataset.manifest else "llm.c shards",
            "digest": dataset.sha256, "tokenizer": dataset.tokenizer.kind if dataset.tokenizer else None,
            "vocab_size": dataset.tokenizer.vocab_size if dataset.tokenizer else None,
            "train_tokens": len(dataset.train), "val_tokens": len(dataset.val),
            "files": dataset.documents, "skipped": manifest.get("skipped", {}),
            "split": manifest.get("split", {}).get("method"), "sources": manifest.get("sources", []),
            "created": manifest.get("created")}
    if a.json:
        print(json.dumps(data))
        return 0
    lines = [f"{dataset.path}", f"  {dataset.describe()}"]
    if dataset.tokenizer is not None:
        lines.append(f"  tokenizer  {dataset.tokenizer.kind} ({dataset.tokenizer.vocab_size} tokens)")
    if data["sources"]:
        lines.append(f"  sources    {', '.join(data['sources'])}")
    if data["skipped"]:
        lines.append(f"  skipped    {', '.join(f'{n} {why}' for why, n in sorted(data['skipped'].items()))}")
    lines.append(f"  digest     {dataset.sha256}")
    print("\n".join(lines))
    return 0
