"""`cllm cache`: the datasets prepared for corpora given by path (core/dataset_cache.py),
listed with their size, age and sources, and `cllm cache clean` to remove them by age,
until the cache fits a size, or all."""

from __future__ import annotations

import argparse
import json
import time

from cllm.core.cache_admin import CachedDataset, cached_datasets, describe, remove, to_remove
from cllm.core.dataset_cache import cache_dir
from cllm.core.errors import ConfigError


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clean the datasets prepared for corpora given by path",
                       description="The datasets `cllm train PATH...` prepared and keeps in the cache folder "
                                   "(CLLM_CACHE_DIR overrides it), the most recently used first.")
    p.add_argument("action", nargs="?", choices=("list", "clean"), default="list")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="clean: remove datasets unused for DAYS days")
    p.add_argument("--max-size", type=float, metavar="GB",
                   help="clean: remove the least recently used datasets until the cache holds at most GB")
    p.add_argument("--all", action="store_true", help="clean: remove every dataset")
    p.add_argument("--dry-run", action="store_true", help="clean: say what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="print JSON")


def _row(d: CachedDataset, now: float) -> dict:
    return {"key": d.key, "path": str(d.path), "bytes": d.size, "created": d.created, "last_used": d.last_used,
            "sources": d.sources, "tokenizer": d.tokenizer, "files": d.files, "aliases": d.aliases,
            "problem": d.problem, "unused_for_s": round(now - d.last_used)}


def cmd_cache(a: argparse.Namespace) -> int:
    now = time.time()
    datasets = cached_datasets()
    if a.action == "list":
        if a.older_than is not None or a.max_size is not None or a.all or a.dry_run:
            raise ConfigError("--older-than, --max-size, --all and --dry-run go with `cllm cache clean`")
        if a.json:
            print(json.dumps({"cache": str(cache_dir()), "datasets": [_row(d, now) for d in datasets]}))
            return 0
        total = sum(d.size for d in datasets)
        print(f"{cache_dir()}: {len(datasets)} dataset{'s' * (len(datasets) != 1)}, {total / 1e6:,.1f} MB")
        for d in datasets:
            print("  " + describe(d, now))
        return 0
    if not (a.all or a.older_than is not None or a.max_size is not None):
        raise ConfigError("cllm cache clean: say what to remove: --older-than DAYS, --max-size GB or --all")
    for flag, value in (("--older-than", a.older_than), ("--max-size", a.max_size)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must be 0 or more, got {value:g}")
    max_bytes = None if a.max_size is None else int(a.max_size * 1e9)
    gone = datasets if a.all else to_remove(datasets, older_than_days=a.older_than, max_bytes=max_bytes, now=now)
    freed = sum(d.size for d in gone) if a.dry_run else remove(gone)
    if a.json:
        print(json.dumps({"removed": [_row(d, now) for d in gone], "bytes": freed, "dry_run": a.dry_run}))
        return 0
    verb = "would remove" if a.dry_run else "removed"
    print(f"{verb} {len(gone)} dataset{'s' * (len(gone) != 1)}, {freed / 1e6:,.1f} MB; "
          f"{len(datasets) - len(gone)} kept")
    for d in gone:
        print("  " + describe(d, now))
    return 0
