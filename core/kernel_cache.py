"""Keeps numba's on-disk cache honest across files.

numba stamps each cached function with its own file's modification time only. A kernel
that calls kernels of another file has their code compiled into it, so after an edit of
`kernels.py` the cached `passes.py` functions would still load, with the old layer code
inside. `DEPENDS` lists, for each module with cached code, the other files compiled into
it; `drop_stale` keeps a hash of those files beside the module's cache and drops the
module's cached code when the hash changes. It runs once per process, before the first
kernel is used (`Workspace.create`, `Decoder` and the warm-up call it).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from numba.core.dispatcher import Dispatcher

HERE = Path(__file__).resolve().parent

# module -> the files whose kernels it calls (and so compiles into itself). The parallel
# shard kernel calls the shard pass through a function pointer, which compiles nothing in.
DEPENDS: dict[str, tuple[str, ...]] = {
    "passes": ("kernels.py", "attention_kernels.py", "layout.py", "cpu_features.py"),
    "attention_kernels": ("kernels.py", "cpu_features.py"),
    "layout": ("kernels.py",),
    "optimizer": ("kernels.py",),
    "decode_kernels": ("kernels.py", "spin_barrier.py", "int8_dots.py", "panel_dots.py", "cpu_features.py"),
    "spin_barrier": ("kernels.py",),
    "int8_dots": ("kernels.py", "cpu_features.py"),
    "panel_dots": ("kernels.py", "int8_dots.py", "cpu_features.py"),
    "prompt_pass": ("kernels.py", "attention_kernels.py", "cpu_features.py"),
}

_checked = False


def drop_stale_module(cache_dir: Path, module: str, dependencies: tuple[str, ...], source_dir: Path = HERE) -> bool:
    """Removes the cached code of `module` in `cache_dir` if any of `dependencies` changed
    since it was compiled. Returns True if anything was removed. Never raises: a
    read-only install simply keeps numba's own behaviour."""
    try:
        digest = hashlib.sha256()
        for name in dependencies:
            digest.update(name.encode() + b"\0" + (source_dir / name).read_bytes())
        stamp = cache_dir / f"{module}.depends.sha256"
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return False
        removed = False
        for path in cache_dir.glob(f"{module}.*.nb[ic]"):
            path.unlink()
            removed = True
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest.hexdigest())
        return removed
    except OSError:
        return False


def cache_dir_of(module_name: str) -> Path | None:
    """Where numba caches the kernels of `cllm.core.<module_name>` (beside the source, in
    NUMBA_CACHE_DIR, or in the user's cache folder for a read-only install)."""
    module = importlib.import_module(f"cllm.core.{module_name}")
    for value in vars(module).values():
        cache = getattr(value, "_cache", None)  # numba's, private (so not in its stubs)
        if isinstance(value, Dispatcher) and value.__module__ == module.__name__ and cache is not None:
            path = getattr(cache, "_cache_path", None)
            if path:
                return Path(path)
    return None


def drop_stale() -> bool:
    """`drop_stale_module` for every module of DEPENDS, once per process."""
    global _checked
    if _checked:
        return False
    _checked = True
    removed = False
    for module, dependencies in DEPENDS.items():
        cache_dir = cache_dir_of(module)
        if cache_dir is not None:
            removed |= drop_stale_module(cache_dir, module, dependencies)
    return removed
