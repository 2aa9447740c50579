"""A prepared dataset: token shards and the manifest that describes them (docs/DATASETS.md).

A folder with `manifest.json` is one of CLLM's: the sources (size, mtime, SHA-256), the
tokenizer, the shards of each split and their token counts. A folder of llm.c's own
shards (names with "train" and "val", no manifest) is read too; it has no tokenizer, so
it trains a model that brings one (an imported GPT-2). Tokens are read through memory
maps: opening a dataset of any size takes milliseconds and little memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cllm.core.atomic_file import write_whole
from cllm.core.errors import CorpusError, TokenizerError
from cllm.core.shards import Shard, is_shard
from cllm.core.tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "cllm-dataset"
VERSION = 2  # 2: the file list in FILE_LIST (1: inside the manifest, still read)
DIGEST_VERSION = 1  # in the digest, which names the tokens: version 2 moved the file list, not a token
MANIFEST = "manifest.json"
FILE_LIST = "files.json"
DOCUMENT_SPLITS = ("train", "val", "tail")  # a manifest file entry's split when it is a document trained on
# Windows read between two `release` calls of the shards. A page fault may map a whole
# large folio of the page cache (2 MB on this ext4), so resident memory between two
# releases is up to this many folios: 64 bounds it at about 128 MB whatever the corpus,
# at the cost of one madvise every few steps.
RELEASE_EVERY = 64


class TokenView:
    """Some shards' tokens as one sequence (or a stretch of it): `len`, and slices
    `view[a:b]` that may cross from one shard into the next. Every RELEASE_EVERY slices
    the shards' pages are dropped from resident memory (Shard.release)."""

    def __init__(self, shards: list[Shard], start: int = 0, stop: int | None = None) -> None:
        self.shards = shards
        self._ends = np.cumsum([len(s) for s in shards], dtype=np.int64)
        total = int(self._ends[-1]) if shards else 0
        self.start, self.stop = start, total if stop is None else stop
        self._reads = 0

    def __len__(self) -> int:
        return self.stop - self.start

    def part(self, start: int, stop: int) -> TokenView:
        return TokenView(self.shards, self.start + start, self.start + stop)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a TokenView is read in contiguous slices")
        a, b, _ = key.indices(len(self))
        a, b = a + self.start, max(a, b) + self.start
        self._reads += 1
        if self._reads % RELEASE_EVERY == 0:
            for shard in self.shards:
                shard.release()
        i = int(np.searchsorted(self._ends, a, side="right"))
        pieces = []
        while a < b:
            begin = int(self._ends[i - 1]) if i else 0
            end = min(b, int(self._ends[i]))
            pieces.append(self.shards[i].tokens[a - begin:end - begin])
            a, i = end, i + 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.uint16)

    def max_token(self) -> int:
        """The largest token id (reads every token: for a folder without a manifest)."""
        return max((int(s.tokens.max()) for s in self.shards if len(s)), default=-1)


@dataclass
class Dataset:
    """What a trainer needs from a prepared dataset: the splits, the tokenizer (None for
    llm.c's shards), and the name and digest a model file records."""

    path: Path
    train: TokenView
    val: TokenView
    tokenizer: Tokenizer | None
    manifest: dict | None  # None: a folder of llm.c's shards
    sha256: str
    _files: list[dict] | None = field(default=None, repr=False, compare=False)  # read when first asked
    holds: list = field(default_factory=list, repr=False, compare=False)  # open lock files: in use while it lives

    @property
    def name(self) -> str:
        """The sources' names (a model file records it), or the folder's."""
        sources = [Path(p).name for p in (self.manifest or {}).get("sources", [])]
        if not sources:
            return self.path.name
        return ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")

    @property
    def files(self) -> list[dict]:
        """Every source file's entry (a large corpus's is long: read from FILE_LIST when
        first asked, not at each start)."""
        if self._files is None:
            self._files = read_files(self.path, self.manifest) if self.manifest is not None else []
        return self._files

    @property
    def documents(self) -> int:
        """The files trained on (skipped ones not counted)."""
        return document_count(self.manifest) if self.manifest is not None else 0

    def describe(self) -> str:
        """One line: files, skipped files, tokens, the split."""
        tokens = f"{len(self.train):,} training and {len(self.val):,} validation tokens"
        if self.manifest is None:
            n = len(self.train.shards) + len(self.val.shards)
            return f"{self.name}: {n} llm.c token shard{'s' if n != 1 else ''}, {tokens}"
        docs = self.documents
        skipped = sum(self.manifest.get("skipped", {}).values())
        how = {"documents": "whole documents held out", "tail": "the last 10% of each document held out"}
        return (f"{self.name}: {docs:,} file{'s' if docs != 1 else ''}"
                + (f" ({skipped:,} skipped)" if skipped else "") + f", {tokens} "
                + f"({how.get(self.manifest['split']['method'], '')})")


def is_dataset(path: Path) -> bool:
    """Whether `path` is a folder holding a prepared dataset or llm.c's shards."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MANIFEST).is_file():
        return True
    return any(is_shard(p) for p in sorted(path.glob("*.bin"))[:4])


def read_manifest(path: Path) -> dict:
    """The manifest in folder `path`, checked; CorpusError names the file and the problem."""
    file = Path(path) / MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path}: not a prepared dataset (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{file}: the manifest cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorpusError(f"{file}: not a CLLM dataset manifest (its 'format' is not {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION or version < 1:
        raise CorpusError(f"{file}: dataset format version {version!r} is not supported (this CLLM reads "
                          f"version {VERSION}); prepare the corpus again")
    try:
        for split in ("train", "val"):
            for entry in data["shards"][split]:
                if not isinstance(entry["file"], str) or not isinstance(entry["tokens"], int):
                    raise TypeError
        if version == 1 and not isinstance(data["files"], list):
            raise TypeError
        if version > 1:
            listed = data["file_list"]
            if not (listed["file"] == FILE_LIST and isinstance(listed["sha256"], str)
                    and all(isinstance(listed[k], int) for k in ("files", "documents"))):
                raise TypeError
        if not isinstance(data["split"]["method"], str):
            raise TypeError
        data["digest"] + ""
    except (KeyError, TypeError):
        raise CorpusError(f"{file}: the manifest lacks a part or has one of the wrong kind "
                          "(shards, files, file_list, split or digest)") from None
    return data


def write_manifest(folder: Path, manifest: dict) -> None:
    """Writes `folder`'s manifest whole or not at all (a temporary file renamed over it):
    a reader, a kill or a full disk meets the old one or the new one."""
    write_whole(Path(folder) / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))


def document_count(manifest: dict) -> int:
    """The files a manifest's dataset trained on, without reading its file list."""
    if "file_list" in manifest:
        return manifest["file_list"]["documents"]
    return sum(1 for f in manifest["files"] if f["split"] in DOCUMENT_SPLITS)


def read_files(path: Path, manifest: dict) -> list[dict]:
    """The file list of the dataset in folder `path`: in FILE_LIST, checked against the
    SHA-256 and count its manifest records (version 1: in the manifest itself).
    CorpusError names a list that is missing, cut short or garbled."""
    if "file_list" not in manifest:
        return manifest["files"]
    listed = manifest["file_list"]
    file = Path(path) / FILE_LIST
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{file}: the dataset's file list cannot be read ({exc.strerror or exc}); "
                          "prepare the corpus again") from None
    if hashlib.sha256(data).hexdigest() != listed["sha256"]:
        raise CorpusError(f"{file}: the dataset's file list is damaged (not the one its manifest records: cut "
                          "short or changed); prepare the corpus again")
    files = json.loads(data)
    if not isinstance(files, list) or len(files) != listed["files"]:
        raise CorpusError(f"{file}: the dataset's file list does not hold the {listed['files']:,} files its "
                          "manifest counts; prepare the corpus again")
    return files


def _open_shards(folder: Path, entries: list[dict]) -> list[Shard]:
    shards = []
    for entry in entries:
        name = entry["file"]
        if "/" in name or name.startswith("."):
            raise CorpusError(f"{folder / MANIFEST}: shard name {name!r} is not a file in the dataset's folder")
        shard = Shard(folder / name)
        if len(shard) != entry["tokens"]:
            raise CorpusError(f"{shard.path}: holds {len(shard):,} tokens but the manifest counts {entry['tokens']:,}")
        shards.append(shard)
    return shards


def open_dataset(path: Path, manifest: dict | None = None) -> Dataset:
    """A prepared dataset or a folder of llm.c's shards. CorpusError names what is wrong.
    `manifest`: the one `read_manifest` already gave for this folder (not read again)."""
    path = Path(path).expanduser()
    if manifest is None:
        if not (path / MANIFEST).exists():
            return _open_llmc_folder(path)
        manifest = read_manifest(path)
    try:
        tokenizer = tokenizer_from_json(manifest["tokenizer"])
    except Exception as exc:  # a TokenizerError, or a KeyError for a missing one
        raise CorpusError(f"{path / MANIFEST}: its tokenizer cannot be read ({exc})") from None
    train = TokenView(_open_shards(path, manifest["shards"]["train"]))
    val = TokenView(_open_shards(path, manifest["shards"]["val"]))
    return Dataset(path, train, val, tokenizer, manifest, manifest["digest"])


def _open_llmc_folder(path: Path) -> Dataset:
    """llm.c's shards: files named *val*.bin are the validation split, the other *.bin
    files the training split, each in name order. Without a val shard the last 10% of
    the training tokens are held out."""
    if not path.is_dir():
        raise CorpusError(f"{path}: not a prepared dataset (not a folder)")
    bins = sorted(p for p in path.glob("*.bin") if p.is_file())
    if not bins:
        raise CorpusError(f"{path}: not a prepared dataset (no {MANIFEST} and no token shards *.bin)")
    val_files = [p for p in bins if "val" in p.name]
    train_files = [p for p in bins if "val" not in p.name]
    if not train_files:
        raise CorpusError(f"{path}: has validation shards ({val_files[0].name}) but no training shards")
    train = TokenView([Shard(p) for p in train_files])
    if val_files:
        val = TokenView([Shard(p) for p in val_files])
    else:
        n_val = len(train) // 10
        train, val = train.part(0, len(train) - n_val), train.part(len(train) - n_val, len(train))
    digest = hashlib.sha256()
    for p in bins:
        st = p.stat()
        digest.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Dataset(path, train, val, None, None, digest.hexdigest())


def dataset_digest(files: list[dict], tokenizer: dict, split_method: str) -> str:
    """What identifies a dataset's tokens: each document's name, content digest and
    split, the tokenizer and the format. Where the folders are, or when the files were
    touched, does not enter."""
    docs = [[f["name"], f["sha256"], f["split"]] for f in files if f["split"] in DOCUMENT_SPLITS]
    text = json.dumps({"format": FORMAT, "version": DIGEST_VERSION, "documents": docs, "tokenizer": tokenizer,
                       "split": split_method}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_fits(dataset: Dataset, tokenizer: Tokenizer, vocab_size: int) -> None:
    """TokenizerError unless the dataset's tokens are a model's with this tokenizer: the
    same tokenizer in the manifest, or (llm.c's shards) every id within the vocabulary."""
    if dataset.manifest is not None:
        if dataset.manifest["tokenizer"] != tokenizer.to_json():
            raise TokenizerError(f"{dataset.path} was prepared with another tokenizer than the model's "
                                 f"({dataset.manifest['tokenizer'].get('type')} tokenizer); give the corpus's files "
                                 "instead, and it is tokenized for the model")
        return
    largest = max(dataset.train.max_token(), dataset.val.max_token())
    if largest >= vocab_size:
        raise TokenizerError(f"{dataset.path}: its shards hold token id {largest}, outside the model's vocabulary "
                             f"of {vocab_size}; they were made with another tokenizer")


def what_changed(old: dict | None, new: Dataset) -> str:
    """In words, how dataset `new` differs from the one described by manifest `old`."""
    if old is None or new.manifest is None:
        return "its description is no longer in the cache, so what changed is not known"
    parts = []
    if old.get("tokenizer") != new.manifest.get("tokenizer"):
        parts.append("the tokenizer differs")
    before = {f["name"]: f for f in old.get("files", []) if f.get("split") in DOCUMENT_SPLITS}
    now = {f["name"]: f for f in new.files if f.get("split") in DOCUMENT_SPLITS}
    for label, names in (("added", sorted(now.keys() - before.keys())), ("removed", sorted(before.keys() - now.keys())),
                         ("changed", sorted(n for n in now.keys() & before.keys()
                                            if now[n]["sha256"] != before[n]["sha256"]))):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} file{'s' if len(names) != 1 else ''} {label} ({shown})")
    if old.get("split", {}).get("method") != new.manifest["split"]["method"]:
        parts.append("the train/validation split differs")
    return "; ".join(parts) or "the documents' split differs"
