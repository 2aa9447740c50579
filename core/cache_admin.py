"""Looking after the dataset cache (core/dataset_cache.py): what it holds, and removing
datasets by age or until it fits a size (`cllm cache`). A dataset is removed under its
key's lock, so never while another process prepares it; one that a running training
reads stays readable until that process ends (its shards are memory-mapped)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cllm.core.dataset import MANIFEST, document_count, read_manifest
from cllm.core.dataset_cache import cache_dir, in_use, locked, touched
from cllm.core.errors import ConfigError

CAP_ENV = "CLLM_CACHE_MAX_GB"
DEFAULT_CAP_GB = 20.0  # the dataset cache's size after a preparation, unless CAP_ENV says otherwise


@dataclass(frozen=True)
class CachedDataset:
    """One dataset in the cache: its key folder, bytes on disk, when it was prepared and
    last used (seconds since the epoch), and what it was made from."""

    key: str
    path: Path
    size: int
    created: float
    last_used: float
    sources: list[str]
    tokenizer: str
    files: int
    aliases: list[str] = field(default_factory=list)  # keys linked to it (the same dataset by its tokenizer)
    problem: str | None = None  # why its manifest could not be read (it is listed, and can be removed)


def _size(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def cached_datasets() -> list[CachedDataset]:
    """The datasets in the cache, the most recently used first."""
    cache = cache_dir()
    if not cache.is_dir():
        return []
    links: dict[str, list[str]] = {}
    folders = []
    for entry in sorted(cache.iterdir()):
        if entry.name.startswith(".") or entry.name == "manifests":
            continue
        if entry.is_symlink():
            links.setdefault(os.readlink(entry), []).append(entry.name)
        elif entry.is_dir():
            folders.append(entry)
    out = []
    for folder in folders:
        info: dict = {"sources": [], "tokenizer": "?", "files": 0, "problem": None}
        try:
            m = read_manifest(folder)
            tok = m.get("tokenizer") or {}
            info.update(sources=list(m.get("sources", [])), files=document_count(m),
                        tokenizer=str(tok.get("type", "?")))
        except Exception as exc:  # a damaged or half-removed dataset is still listed, so that it can be removed
            info["problem"] = str(exc)
        created = (folder / MANIFEST).stat().st_mtime if (folder / MANIFEST).exists() else folder.stat().st_mtime
        out.append(CachedDataset(folder.name, folder, _size(folder), created, max(created, touched(folder.name)),
                                 aliases=links.get(folder.name, []), **info))
    return sorted(out, key=lambda d: -d.last_used)


def remove(datasets: Iterable[CachedDataset], *, spare_in_use: bool = False) -> int:
    """Removes these datasets and the links to them (`spare_in_use`: not one a process
    uses, checked under its lock); returns the bytes freed."""
    cache = cache_dir()
    freed = 0
    for d in datasets:
        with locked(cache / f"{d.key}.lock"):
            if not d.path.is_dir() or (spare_in_use and in_use(d.key)):
                continue
            gone = cache / f".{d.key}.tmp-clean-{os.getpid()}"  # a manifest-less name first: never seen half removed
            os.rename(d.path, gone)
            shutil.rmtree(gone, ignore_errors=True)
            freed += d.size
        for alias in d.aliases:
            link = cache / alias
            if link.is_symlink() and os.readlink(link) == d.key:
                link.unlink(missing_ok=True)
    return freed


def cache_cap() -> int | None:
    """The most bytes the cache keeps after a preparation (CAP_ENV, in GB; "off": no
    cap). ConfigError names a value that is not a size."""
    value = os.environ.get(CAP_ENV, "").strip()
    if not value:
        return int(DEFAULT_CAP_GB * 1e9)
    if value.lower() in ("off", "none"):
        return None
    try:
        gb = float(value)
    except ValueError:
        gb = -1.0
    if not gb >= 0 or gb == float("inf"):
        raise ConfigError(f"{CAP_ENV}={value!r}: give the dataset cache's size cap in GB (a number, 0 or more) "
                          "or 'off'")
    return int(gb * 1e9)


def keep_under_cap(keep: str) -> list[str]:
    """After a preparation: removes the least recently used datasets until the cache
    fits its cap, never `keep` (the new one) nor one in use; returns what to say."""
    cap = cache_cap()
    if cap is None:
        return []
    datasets = cached_datasets()
    total = sum(d.size for d in datasets)
    if total <= cap:
        return []
    gone = []
    for d in sorted(datasets, key=lambda d: d.last_used):  # the least recently used first
        if total <= cap:
            break
        if d.key != keep and not in_use(d.key):
            gone.append(d)
            total -= d.size
    freed = remove(gone, spare_in_use=True)
    now = time.time()
    lines = [f"the dataset cache is over its {cap / 1e9:g} GB cap ({CAP_ENV}): removed {len(gone)} least recently "
             f"used dataset{'s' * (len(gone) != 1)}, {freed / 1e6:,.1f} MB"]
    lines += ["  " + describe(d, now) for d in gone]
    if total > cap:
        lines.append(f"the cache still holds {total / 1e9:,.1f} GB: the rest is in use or just prepared")
    return lines


def describe(d: CachedDataset, now: float) -> str:
    """One line: key, size, last use, and what it is (or its problem)."""
    what = d.problem or f"{d.files:,} files, {d.tokenizer}: {', '.join(d.sources)}"
    return f"{d.key}  {d.size / 1e6:9,.1f} MB  used {age(now - d.last_used):>6} ago  {what}"


def age(seconds: float) -> str:
    """"3 min", "5 h", "2 d" (or "now")."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return "now"


def to_remove(datasets: list[CachedDataset], *, older_than_days: float | None = None,
              max_bytes: int | None = None, now: float | None = None) -> list[CachedDataset]:
    """Which datasets a clean removes: those unused for `older_than_days`, then the least
    recently used until the rest fit in `max_bytes`."""
    now = time.time() if now is None else now
    keep = sorted(datasets, key=lambda d: -d.last_used)
    gone = []
    if older_than_days is not None:
        gone = [d for d in keep if now - d.last_used > older_than_days * 86400]
        keep = [d for d in keep if d not in gone]
    if max_bytes is not None:
        while keep and sum(d.size for d in keep) > max_bytes:
            gone.append(keep.pop())
    return gone
