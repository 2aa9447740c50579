"""Keeps numba's on-disk cache honest across files.

numba stamps each cached function with its own file's modification time only, so after
an edit of `kernels.py` the compiled `passes.py` functions that call into it would still
load from the cache, with the old layer code inside. This module records a hash of the
layer kernels' source beside the cache and drops the cached whole-model passes when it
changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def drop_stale_pass_cache(dependency: str = "kernels.py", dependent: str = "passes") -> bool:
    """Removes the cached code of `dependent`.py if `dependency` changed since it was
    compiled. Returns True if anything was removed. Never raises: a read-only install
    simply keeps numba's own behaviour."""
    try:
        digest = hashlib.sha256((HERE / dependency).read_bytes()).hexdigest()
        cache = HERE / "__pycache__"
        stamp = cache / f"{dependent}.{dependency}.sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return False
        removed = False
        for path in cache.glob(f"{dependent}.*.nb[ic]"):
            path.unlink()
            removed = True
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
        return removed
    except OSError:
        return False
