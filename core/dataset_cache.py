"""The dataset cache: datasets prepared for a corpus given by path, kept in the user
cache folder (CLLM_CACHE_DIR overrides it) under a key made of the paths, the globs and
the tokenizer, and used again while the files are unchanged: checked through the
dataset's index of its walk (core/source_index.py), else by walking again and comparing
with its file list (docs/DATASETS.md). After a preparation the cache is kept under its
size cap (core/cache_admin.py), sparing the datasets in use (`hold`, `in_use`).

Processes preparing the same corpus at once (MPI ranks on one machine, two terminals)
take a lock on the key: one prepares, the others wait and then use its dataset. A copy
of every manifest is kept by digest, so that a run resumed on a changed corpus can be
told what changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from cllm.core.atomic_file import write_whole
from cllm.core.dataset import (
    DOCUMENT_SPLITS,
    MANIFEST,
    VERSION,
    Dataset,
    open_dataset,
    read_files,
    read_manifest,
    what_changed,
    write_manifest,
)
from cllm.core.errors import CorpusError
from cllm.core.prepare import Progress, TokenizerPlan, prepare
from cllm.core.run_state import CorpusRef
from cllm.core.source_index import unchanged, write_index
from cllm.core.sources import SourceScan, scan_sources
from cllm.core.tokenizer import Tokenizer

CACHE_ENV = "CLLM_CACHE_DIR"
MANIFESTS_KEPT = 64  # copies of replaced datasets' manifests (each lists every file), the newest kept


def cache_dir() -> Path:
    """Where datasets prepared for a corpus given by path live (CLLM_CACHE_DIR overrides)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("cllm", appauthor=False)) / "datasets"


def data_change(saved: CorpusRef | None, dataset: Dataset) -> str | None:
    """Why `dataset` is not the corpus a run recorded (None if it is, or if the run
    recorded none). A run on one text file before datasets recorded the file's SHA-256,
    which is its one document's."""
    if saved is None or not saved.sha256 or saved.sha256 == dataset.sha256:
        return None
    docs = [f for f in dataset.files if f.get("split") in DOCUMENT_SPLITS]
    if len(docs) == 1 and docs[0]["sha256"] == saved.sha256:
        return None
    old = kept_manifest(saved.sha256)
    return (f"its corpus changed since the run started on {saved.name!r} (dataset {saved.sha256[:12]}, now "
            f"{dataset.sha256[:12]}): {what_changed(old, dataset)}")


def kept_manifest(digest: str) -> dict | None:
    """The manifest of the dataset with this digest, if the cache still keeps it."""
    try:
        return json.loads((cache_dir() / "manifests" / f"{digest}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def keep_manifest(manifest: dict) -> None:
    """A copy of each manifest by digest, so that a resumed run can be told what changed
    in its corpus after the dataset it started on was replaced."""
    folder = cache_dir() / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    write_whole(folder / f"{manifest['digest']}.json", json.dumps(manifest).encode("utf-8"))
    kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[MANIFESTS_KEPT:]:
        old.unlink(missing_ok=True)


def touched(key: str) -> float:
    """When the dataset under `key` was last used (0.0: never said): the mtime of its
    lock file, which `dataset_for` touches at each use."""
    try:
        return (cache_dir() / f"{key}.lock").stat().st_mtime
    except OSError:
        return 0.0


def cache_key(paths: Sequence[str | Path], tokenizer: Tokenizer | TokenizerPlan, include: Sequence[str],
              exclude: Sequence[str]) -> str:
    spec = tokenizer.key() if isinstance(tokenizer, TokenizerPlan) else {
        "sha256": hashlib.sha256(json.dumps(tokenizer.to_json(), sort_keys=True).encode()).hexdigest()}
    text = json.dumps({"paths": [str(Path(p).expanduser().resolve()) for p in paths], "include": list(include),
                       "exclude": list(exclude), "tokenizer": spec, "version": VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def changed_sources(files: list[dict], scan: SourceScan) -> str | None:
    """What differs between the files a manifest lists and those a walk found now (by
    path, size, modification time and inode: a file replaced by another of the same size
    and time), in words; None if nothing. A version 1 list has no inodes."""
    before = {f["path"]: (f["size"], f["mtime_ns"], f.get("inode")) for f in files}
    now = {f.location: (f.size, f.mtime_ns, f.inode) for f in scan.files}
    added = len(now.keys() - before.keys())
    removed = len(before.keys() - now.keys())
    changed = sum(1 for p in now.keys() & before.keys()
                  if now[p][:2] != before[p][:2] or before[p][2] not in (None, now[p][2]))
    parts = [f"{n} {label}" for n, label in ((changed, "changed"), (added, "added"), (removed, "removed")) if n]
    return ", ".join(parts) + " since it was prepared" if parts else None


def hold(dataset: Dataset, key: str) -> Dataset:
    """Marks the dataset under `key` in use while `dataset` lives (a run holds it to its
    end): a shared lock on `KEY.use`, under which the cache's size cap never removes it
    (`in_use`)."""
    f = open(cache_dir() / f"{key}.use", "a")
    fcntl.flock(f, fcntl.LOCK_SH)  # released when the file closes, with the dataset
    dataset.holds.append(f)
    return dataset


def in_use(key: str) -> bool:
    """Whether a process uses the dataset under `key` (this one too, through another
    Dataset object: flock locks belong to open files)."""
    path = cache_dir() / f"{key}.use"
    try:
        f = open(path)
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@contextmanager
def locked(path: Path):
    """An exclusive lock on `path` (created): a second process preparing the same corpus
    (another MPI rank, another terminal) waits here, then finds the dataset ready."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def dataset_for(paths: Sequence[str | Path], tokenizer: Tokenizer | TokenizerPlan, *,
                include: Sequence[str] = (), exclude: Sequence[str] = (),
                on_progress: Callable[[Progress], None] | None = None, on_note: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None) -> Dataset:
    """The dataset of the corpus at `paths` tokenized with `tokenizer`: the one in the
    cache if its sources are unchanged, else prepared now (and cached). A dataset made
    with a new tokenizer is also found under its tokenizer's key (a link), so resuming
    the model trained on it reuses it."""
    from cllm.core.cache_admin import cache_cap, keep_under_cap  # cache_admin builds on this module

    cache_cap()  # a bad setting is said before a preparation, not after
    note = on_note or (lambda s: None)
    cache = cache_dir()
    key = cache_key(paths, tokenizer, include, exclude)
    folder = cache / key
    scan: SourceScan | None = None
    with locked(cache / f"{key}.lock"):
        if (folder / MANIFEST).exists():
            listed: list[dict] | None = None  # the file list, where the walk's index cannot vouch for the files
            try:
                manifest = read_manifest(folder)
                why = _other_tokenizer(manifest, tokenizer)
                if why is None and not unchanged(folder, manifest.get("source_index")):
                    listed = read_files(folder, manifest)
            except CorpusError as exc:
                why = f"the cached dataset is damaged ({exc})"
            if why is None and listed is not None:
                scan = scan_sources(paths, include, exclude)
                why = changed_sources(listed, scan)
                if why is None:  # the index was stale or missing: the next start need not walk
                    manifest = refresh_index(folder.resolve(), manifest, scan)
            if why is None:
                try:
                    dataset = open_dataset(folder, manifest)  # the manifest read once, not again
                    for used in {key, folder.resolve().name}:  # the link's and its dataset's: last used
                        (cache / f"{used}.lock").touch()
                    note(f"using the prepared dataset {folder}")
                    return hold(dataset, folder.resolve().name)
                except CorpusError as exc:
                    why = f"the cached dataset is damaged ({exc})"
            note(f"the corpus changed ({why}): tokenizing it again")
        if folder.is_symlink():  # the link belongs to another dataset: this one gets its own folder
            folder.unlink()
        for stale in cache.glob(f".{key}.tmp-*"):  # left by a preparation that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        started = time.perf_counter()
        dataset = prepare(paths, folder, tokenizer, include=include, exclude=exclude, on_progress=on_progress,
                          on_note=note, cancel=cancel, scan=scan or scan_sources(paths, include, exclude))
        keep_manifest({**(dataset.manifest or {}), "files": dataset.files})
        hold(dataset, folder.name)
        note(f"prepared {dataset.describe()} in {time.perf_counter() - started:.1f} s")
    if isinstance(tokenizer, TokenizerPlan) and dataset.tokenizer is not None:
        alias = cache / cache_key(paths, dataset.tokenizer, include, exclude)
        with locked(cache / f"{alias.name}.lock"):
            if alias.is_symlink() or not alias.exists():
                tmp = alias.with_name(f".{alias.name}.link-{os.getpid()}")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(folder.name)
                os.replace(tmp, alias)
    for line in keep_under_cap(keep=folder.name):
        note(line)
    return dataset


def refresh_index(folder: Path, manifest: dict, scan: SourceScan) -> dict:
    """The manifest with a new index of `scan` (a walk that found the dataset's files
    unchanged although its index said otherwise, e.g. a hidden file added to a folder),
    written beside it: the index first, then the manifest, each whole or not at all, so
    a kill in between leaves an index the manifest does not vouch for (walked, never
    trusted). Unchanged, and nothing written, when the walk cannot be indexed (see
    `write_index`) or the folder cannot be written: the next start walks again."""
    try:
        record = write_index(folder, scan)
        if record is None:
            return manifest
        refreshed = {**manifest, "source_index": record}
        write_manifest(folder, refreshed)
    except OSError:
        return manifest
    return refreshed


def _other_tokenizer(manifest: dict, tokenizer: Tokenizer | TokenizerPlan) -> str | None:
    """Why the cached dataset cannot serve this tokenizer (None: it can)."""
    if not isinstance(tokenizer, TokenizerPlan) and manifest["tokenizer"] != tokenizer.to_json():
        return "the cached dataset was made with another tokenizer"
    return None
