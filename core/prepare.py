"""Preparing a corpus: sources -> tokenizer -> token shards + manifest, once.

Three passes, each streaming the files in chunks of a few megabytes, so memory does not
grow with the corpus (about 0.1-0.5 GB whatever its size; docs/DATASETS.md):

1. check: read every candidate, skip what is not UTF-8 text (counted), take the SHA-256
   of each file, the set of characters (char tokenizer) and a bounded sample (the other
   kinds);
2. the tokenizer, trained on that sample (char: on every character), unless one is given
   (a model's, for --resume, --init and eval);
3. encode: documents in order, the held-out ones to the validation shards, in batches
   encoded on every core (BPE by tiktoken or the `tokenizers` library in threads, the
   word tokenizer in worker processes: core/encode_workers.py).

Everything (shards, the file list, the walk's index: core/source_index.py) is written to
a temporary folder beside the target and renamed into place after the manifest, so a
folder with a manifest is always complete. The datasets made
for a corpus given by path are kept by core/dataset_cache.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cllm.core.atomic_file import write_whole
from cllm.core.config import default_threads
from cllm.core.dataset import (
    FILE_LIST,
    FORMAT,
    MANIFEST,
    VERSION,
    Dataset,
    dataset_digest,
    document_count,
    open_dataset,
    write_manifest,
)
from cllm.core.encode_workers import EncodeWorkers
from cllm.core.errors import Cancelled, ConfigError, CorpusError, TokenizerError
from cllm.core.shards import ShardWriter, kind_for
from cllm.core.source_index import write_index
from cllm.core.sources import NotText, SourceFile, SourceScan, read_text_chunks, scan_sources, skipped_line
from cllm.core.tokenizer import (
    BpeTokenizer,
    CharTokenizer,
    Gpt2Tokenizer,
    Tokenizer,
    WordTokenizer,
    encode_many,
    train_tokenizer,
)

SHARD_TOKENS = 100_000_000  # tokens per shard, as llm.c's FineWeb script
DEFAULT_SAMPLE_MB = 32.0  # of text a word or BPE tokenizer is trained on
ENCODE_BATCH = 4 << 20  # characters encoded in one call (the tokenizers library spreads them over the cores)
VAL_FRACTION = 0.1
FIRST_CHECK = 1 << 20  # characters on which tiktoken's ids are compared with tokenizers' before the first batch
BATCH_CHECK = 1 << 14  # and in every batch (core/fast_bpe.py)
SEPARATOR = "\n\n"  # between documents, for a tokenizer without an end-of-text token
WORKERS_FROM = 8 << 20  # bytes of corpus from which the word tokenizer encodes in worker processes


@dataclass(frozen=True)
class TokenizerPlan:
    """A tokenizer to train on the corpus: its kind, vocabulary size (None: the kind's
    default) and the most text it is trained on."""

    kind: str = "char"
    vocab_size: int | None = None
    sample_mb: float = DEFAULT_SAMPLE_MB

    def key(self) -> dict:
        """What decides the tokenizer (a char tokenizer reads every file: no sample)."""
        sample = None if self.kind == "char" else self.sample_mb
        return {"kind": self.kind, "vocab_size": self.vocab_size, "sample_mb": sample}


@dataclass(frozen=True)
class Progress:
    """Where a preparation is: `phase` is "checking", "tokenizer" or "encoding"; bytes
    of the sources done of the total in that phase."""

    phase: str
    done: int
    total: int


def _order_key(name: str, purpose: str) -> str:
    """A document's place in a fixed pseudo-random order (the sample, the split): the
    same wherever the folder is."""
    return hashlib.sha256(f"{purpose}\0{name}".encode()).hexdigest()


def plan_split(files: Sequence[SourceFile]) -> tuple[str, set[str]]:
    """("documents", names held out) when whole documents can make about 10% of the
    bytes (between 5% and 20%), taken in a fixed pseudo-random order; else ("tail", {}):
    the last 10% of every document is held out (one file, or a few of unequal sizes)."""
    total = sum(f.size for f in files)
    held, size = set(), 0
    for f in sorted(files, key=lambda f: _order_key(f.name, "val")):
        if size >= VAL_FRACTION * total:
            break
        if size + f.size <= 2 * VAL_FRACTION * total:
            held.add(f.name)
            size += f.size
    if size < VAL_FRACTION * total / 2 or len(held) == len(files):
        return "tail", set()
    return "documents", held


def _sample_quota(files: Sequence[SourceFile], budget: int) -> dict[str, int]:
    """Bytes of each document that go into the tokenizer's sample: whole documents in a
    fixed pseudo-random order (the last one cut) until `budget` bytes."""
    quota: dict[str, int] = {}
    left = budget
    for f in sorted(files, key=lambda f: _order_key(f.name, "sample")):
        if left <= 0:
            break
        quota[f.name] = min(f.size, left)
        left -= f.size
    return quota


@dataclass
class _Checked:
    files: list[SourceFile]  # the text ones, in order
    digests: dict[str, str]
    not_text: dict[str, str]  # name -> reason
    chars: set[str]
    sample: list[str]


def _check(scan: SourceScan, kind: str | None, sample_bytes: int, report: Callable[[Progress], None],
           cancel: threading.Event | None) -> _Checked:
    quota = _sample_quota(scan.files, sample_bytes) if kind in ("word", "bpe") else {}
    checked = _Checked([], {}, {}, set(), [])
    done, total = 0, scan.total_bytes
    for f in scan.files:
        digest = hashlib.sha256()
        want = quota.get(f.name, 0)
        taken: list[str] = []
        has_text = False
        try:
            for chunk in read_text_chunks(f, digest):
                _check_cancel(cancel)
                has_text = has_text or not chunk.isspace()
                if kind == "char":
                    checked.chars.update(chunk)
                if want > 0:
                    taken.append(chunk[:want])
                    want -= len(taken[-1])
        except NotText as exc:
            if f.given:
                raise CorpusError(exc.detail) from None
            checked.not_text[f.name] = exc.reason
            continue
        finally:
            done += f.size
            report(Progress("checking", done, total))
        if not has_text:
            if f.given:
                raise CorpusError(f"{f.path}: " + ("the file is empty" if f.size == 0 else "contains only whitespace"))
            checked.not_text[f.name] = "only whitespace"
            continue
        checked.files.append(f)
        checked.digests[f.name] = digest.hexdigest()
        if taken:
            checked.sample.append("".join(taken))
    if not checked.files:
        reasons = Counter(checked.not_text.values()) + scan.skipped
        where = ", ".join(str(r) for r in scan.roots)
        raise CorpusError(f"{where}: no text files to train on ({skipped_line(reasons)})")
    return checked


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("preparation cancelled; nothing was kept")


def _eot_id(tokenizer: Tokenizer) -> int | None:
    return tokenizer.eos_id if isinstance(tokenizer, Gpt2Tokenizer) else None


class _Splits:
    """The shard writers of both splits: a new shard every `shard_tokens` tokens."""

    def __init__(self, folder: Path, vocab_size: int, shard_tokens: int) -> None:
        self.folder, self.kind, self.shard_tokens = folder, kind_for(vocab_size), shard_tokens
        self.writers: dict[str, ShardWriter | None] = {"train": None, "val": None}
        self.shards: dict[str, list[dict]] = {"train": [], "val": []}
        self.tokens = {"train": 0, "val": 0}

    def write(self, split: str, tokens: np.ndarray) -> None:
        while len(tokens):
            writer = self.writers[split]
            if writer is None:
                name = f"{split}_{len(self.shards[split]):06d}.bin"
                writer = self.writers[split] = ShardWriter(self.folder / name, self.kind)
            room = self.shard_tokens - writer.n_tokens
            writer.write(tokens[:room])
            self.tokens[split] += min(room, len(tokens))
            tokens = tokens[room:]
            if writer.n_tokens >= self.shard_tokens:
                self._close(split)

    def _close(self, split: str) -> None:
        writer = self.writers[split]
        if writer is not None:
            writer.close()
            self.shards[split].append({"file": writer.path.name, "tokens": writer.n_tokens})
            self.writers[split] = None

    def close(self) -> None:
        for split in ("train", "val"):
            self._close(split)

    def abandon(self) -> None:
        for writer in self.writers.values():
            if writer is not None:
                writer.abandon()


def _head(texts: Sequence[str], chars: int) -> list[str]:
    """The first `chars` characters of `texts`, as texts."""
    out = []
    for text in texts:
        if chars <= 0:
            break
        out.append(text[:chars])
        chars -= len(out[-1])
    return out


def _fast_differs(tokenizer: Tokenizer, texts: Sequence[str], chars: int) -> str | None:
    """Compares tiktoken's ids with tokenizers' on the first `chars` characters of
    `texts`, where tiktoken encodes; what to say when they differ (tokenizers encodes
    from then on)."""
    if isinstance(tokenizer, BpeTokenizer) and tokenizer.fast is not None and not tokenizer.agrees(_head(texts, chars)):
        return f"encoding with the tokenizers library: {tokenizer.slow_reason}"
    return None


def _encoder_line(tokenizer: Tokenizer) -> str | None:
    if not isinstance(tokenizer, BpeTokenizer) or not tokenizer._chunked:
        return None
    if tokenizer.fast is not None:
        return "encoding with tiktoken (the same ids as the tokenizers library; compared on part of every batch)"
    return f"encoding with the tokenizers library: {tokenizer.slow_reason}"


def _worker_count(tokenizer: Tokenizer, total: int, asked: int | None) -> int:
    """Worker processes that encode (0: this process does). Only the word tokenizer
    needs them: its regex holds the GIL, where tiktoken and tokenizers release it and
    characters are a table lookup. A small corpus is not worth starting them."""
    if not isinstance(tokenizer, WordTokenizer):
        return 0
    if asked is not None:
        return asked
    cores = default_threads()
    return cores if cores > 1 and total >= WORKERS_FROM else 0


def _encode_all(checked: _Checked, tokenizer: Tokenizer, method: str, held: set[str], splits: _Splits,
                report: Callable[[Progress], None], cancel: threading.Event | None,
                note: Callable[[str], None], workers: int | None) -> dict[str, int]:
    """Encodes every document into `splits`; returns tokens per document. A document's
    tokens in a split are preceded by the end-of-text token where the tokenizer has one
    (as llm.c does), else by SEPARATOR's tokens unless it comes first in that split.
    A thread encodes each batch while the next one is read (the word tokenizer's in
    worker processes: `_worker_count`). Where tiktoken encodes BPE,
    part of every batch is also encoded by tokenizers, and the first difference hands
    the rest to tokenizers."""
    eot = _eot_id(tokenizer)
    separator = np.array([eot], np.int32) if eot is not None else None  # SEPARATOR's tokens when first needed
    started = {"train": False, "val": False}
    counts: dict[str, int] = {}
    total = sum(f.size for f in checked.files)
    done = 0
    paths = {f.name: f.path for f in checked.files}
    pending: list[tuple[str, str, str, bool]] = []  # (document, split, text, separator first)
    pending_chars = 0
    check_chars = FIRST_CHECK
    line = _encoder_line(tokenizer)
    if line:
        note(line)
    in_flight: tuple[Future, list[tuple[str, str, str, bool]]] | None = None
    processes = _worker_count(tokenizer, total, workers)
    encoders: EncodeWorkers | None = None

    def encode(texts: list[str], check: int) -> tuple[list[np.ndarray], str | None]:
        """In the encoding thread: the batch's ids, and why tiktoken stopped if it did."""
        if encoders is not None:
            return encoders.encode_many(texts), None
        differs = _fast_differs(tokenizer, texts, check)
        return encode_many(tokenizer, texts), differs

    def finish() -> None:
        """Writes the batch in flight once it is encoded."""
        nonlocal separator
        if in_flight is None:
            return
        future, batch = in_flight
        try:
            encoded, differs = future.result()
        except TokenizerError:  # which document: encoded one by one to find it
            for name, _, text, _ in batch:
                try:
                    tokenizer.encode(text)
                except TokenizerError as exc:
                    raise TokenizerError(f"{paths[name]}: {exc}") from None
            raise
        if differs:
            note(differs)
        for (name, split, _, first), ids in zip(batch, encoded, strict=True):
            if first:
                if separator is None:
                    separator = tokenizer.encode(SEPARATOR)
                splits.write(split, separator)
            splits.write(split, ids)
            counts[name] = counts.get(name, 0) + len(ids)

    def flush() -> None:
        """Hands the pending texts to the encoding thread, and writes the batch before
        (reading the next batch overlaps encoding this one)."""
        nonlocal pending, pending_chars, check_chars, in_flight
        _check_cancel(cancel)
        batch, pending, pending_chars = pending, [], 0
        future = pool.submit(encode, [p[2] for p in batch], check_chars)
        check_chars = BATCH_CHECK
        finish()
        in_flight = future, batch

    with ExitStack() as stack:
        if processes:
            encoders = stack.enter_context(EncodeWorkers(tokenizer, processes))
            note(f"encoding in {processes} worker process{'es' if processes != 1 else ''}")
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="cllm-encode"))  # ends before them
        for f in checked.files:
            split = "val" if f.name in held else "train"
            tail_left = int(f.size * (1 - VAL_FRACTION)) if method == "tail" else None  # bytes before the held-out tail
            opened: set[str] = set()
            for chunk in read_text_chunks(f):
                pieces = [(split, chunk)]
                if tail_left is not None and split == "train":
                    cut = _tail_cut(chunk, tail_left)
                    tail_left -= len(chunk.encode("utf-8"))
                    if cut is not None:
                        pieces = [("train", chunk[:cut]), ("val", chunk[cut:])]
                        split = "val"
                for piece_split, text in pieces:
                    if not text:
                        continue
                    first = piece_split not in opened and (eot is not None or started[piece_split])
                    opened.add(piece_split)
                    started[piece_split] = True
                    pending.append((f.name, piece_split, text, first))
                    pending_chars += len(text)
                if pending_chars >= ENCODE_BATCH:
                    flush()
            done += f.size
            if pending_chars >= ENCODE_BATCH:
                flush()
            report(Progress("encoding", done, total))
        flush()
        finish()
    return counts


def _tail_cut(chunk: str, byte_offset: int) -> int | None:
    """Where in `chunk` the held-out tail of its document starts, if it does in this
    chunk: the first newline at or after the byte offset (or the offset itself)."""
    if byte_offset > len(chunk.encode("utf-8")):
        return None
    at = len(chunk.encode("utf-8")[:max(0, byte_offset)].decode("utf-8", "ignore"))
    newline = chunk.find("\n", at)
    return newline if newline >= 0 else at


def prepare(paths: Sequence[str | Path], out: Path, tokenizer: Tokenizer | TokenizerPlan, *,
            include: Sequence[str] = (), exclude: Sequence[str] = (), shard_tokens: int = SHARD_TOKENS,
            on_progress: Callable[[Progress], None] | None = None, on_note: Callable[[str], None] | None = None,
            cancel: threading.Event | None = None, scan: SourceScan | None = None,
            encode_workers: int | None = None) -> Dataset:
    """Tokenizes the corpus at `paths` into the dataset folder `out` (replacing a dataset
    there); returns it opened. `on_note` hears what is worth saying (skipped files, the
    tokenizer's sample). `encode_workers`: worker processes for the word tokenizer
    (None: one per core on a corpus of WORKERS_FROM bytes or more; 0: none)."""
    report = on_progress or (lambda p: None)
    note = on_note or (lambda s: None)
    out = Path(out).expanduser()
    _check_target(out)
    scan = scan or scan_sources(paths, include, exclude)
    plan = tokenizer if isinstance(tokenizer, TokenizerPlan) else None
    sample_bytes = int((plan.sample_mb if plan else 0) * (1 << 20))
    checked = _check(scan, plan.kind if plan else None, sample_bytes, report, cancel)
    skipped = Counter(checked.not_text.values()) + scan.skipped
    if skipped:
        note(skipped_line(skipped))
    if isinstance(tokenizer, TokenizerPlan):
        report(Progress("tokenizer", 0, 1))
        tok = _train(tokenizer, checked, scan.total_bytes, note)
        report(Progress("tokenizer", 1, 1))
    else:
        tok = tokenizer
    method, held = plan_split(checked.files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    splits = _Splits(tmp, tok.vocab_size, shard_tokens)
    try:
        try:
            counts = _encode_all(checked, tok, method, held, splits, report, cancel, note, encode_workers)
            splits.close()
            write_manifest(tmp, _manifest(tmp, scan, checked, tok, plan, method, held, splits, counts))
            _swap_in(tmp, out)
        except OSError as exc:
            where = exc.filename or tmp
            why = exc.strerror or exc
            raise CorpusError(f"{where}: could not write the dataset ({why}); nothing was kept") from None
    except BaseException:
        splits.abandon()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_dataset(out)


def _train(plan: TokenizerPlan, checked: _Checked, total: int, note: Callable[[str], None]) -> Tokenizer:
    if plan.kind == "char":
        chars = checked.chars | (set(SEPARATOR) if len(checked.files) > 1 else set())
        char = CharTokenizer(sorted(chars))
        note(f"char tokenizer: {char.vocab_size} characters, from every file")
        return char
    text = SEPARATOR.join(checked.sample)
    tok = train_tokenizer(plan.kind, text, plan.vocab_size)
    size = len(text.encode("utf-8"))
    note(f"{plan.kind} tokenizer ({tok.vocab_size} tokens) trained on a sample of {_mb(size)} of the "
         f"corpus's {_mb(total)}"
         + (" (all of it)" if size >= total else f" (--tokenizer-sample {plan.sample_mb:g} MB)"))
    differs = _fast_differs(tok, checked.sample, FIRST_CHECK)
    if differs:
        note(differs)
    return tok


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MB" if n >= 1 << 20 else f"{n / 1024:,.1f} KB"


def _manifest(folder: Path, scan: SourceScan, checked: _Checked, tok: Tokenizer, plan: TokenizerPlan | None,
              method: str, held: set[str], splits: _Splits, counts: dict[str, int]) -> dict:
    """The manifest, once the file list (FILE_LIST) and the walk's index are written
    beside it in `folder`: a start reads neither whole."""
    files = []
    for f in scan.files:
        entry = {"name": f.name, "path": f.location, "size": f.size, "mtime_ns": f.mtime_ns, "inode": f.inode}
        if f.name in checked.not_text:
            entry.update(split="skipped", reason=checked.not_text[f.name])
        else:
            split = "val" if f.name in held else ("tail" if method == "tail" else "train")
            entry.update(sha256=checked.digests[f.name], split=split, tokens=counts.get(f.name, 0))
        files.append(entry)
    tokenizer = tok.to_json()
    skipped = Counter(checked.not_text.values()) + scan.skipped
    listed = _write_file_list(folder / FILE_LIST, files)
    documents = document_count({"files": files})
    return {
        "format": FORMAT, "version": VERSION, "digest": dataset_digest(files, tokenizer, method),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sources": [str(r) for r in scan.roots], "skipped": dict(skipped),
        "file_list": {"file": FILE_LIST, "sha256": listed, "files": len(files), "documents": documents},
        "source_index": write_index(folder, scan),
        "tokenizer": tokenizer, "tokenizer_sample": plan.key() if plan else None,
        "separator": "eot" if _eot_id(tok) is not None else SEPARATOR,
        "split": {"method": method, "val_fraction": VAL_FRACTION},
        "tokens": dict(splits.tokens), "shards": splits.shards,
        "shard_format": {"magic": splits.kind.magic, "version": splits.kind.version,
                         "dtype": np.dtype(splits.kind.dtype).name},
    }


def _write_file_list(path: Path, files: list[dict]) -> str:
    """Writes the file list, one entry a line; returns its SHA-256."""
    data = ("[\n" + ",\n".join(json.dumps(f) for f in files) + "\n]\n").encode("utf-8")
    write_whole(path, data)
    return hashlib.sha256(data).hexdigest()



def _check_target(out: Path) -> None:
    """A dataset may replace a dataset, or go into a new or empty folder: nothing else is
    overwritten."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose a new folder for the dataset")
    if out.is_dir() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: is a folder that is not empty and holds no prepared dataset; "
                          "choose a new or empty folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Renames the finished folder to `out`; an old dataset there is removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{threading.get_ident()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
