"""A compact record of the walk a dataset was prepared from (`sources.npz` beside its
manifest), so that a start can tell an unchanged corpus without walking it again.

It holds every folder the walk listed with its mtime, and every candidate file with its
size, mtime and inode, as numpy arrays and one blob of paths. A folder's mtime changes
when a name in it is added, removed or renamed, so equal folder mtimes mean the walk
would find the same names; equal file stats mean no file was written since. Checking
is one stat per folder and per file and an array comparison: no listing, sorting or
glob matching, and no file list parsed.

The manifest records the index's SHA-256 and file count: an index cut short, garbled or
from another preparation is never trusted (`unchanged` says False, and the caller walks
and compares as before). A walk that met an unreadable folder or file writes no index:
that folder becoming readable would change no mtime. Nor does a walk that listed a
folder changed in the RACY_NS before it began: a name added in the same tick of the
clock as the listing would leave the folder's mtime as recorded.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from cllm.core.atomic_file import write_whole
from cllm.core.sources import SourceScan

INDEX = "sources.npz"
RACY_NS = 2_000_000_000  # folder mtimes this close to the walk are not trusted (coarse filesystem clocks)
_INODE_BITS = (1 << 63) - 1  # inodes kept to int64's range (an inode number beyond it is rare; a change still shows)


def _blob(paths: list[str]) -> np.ndarray:
    return np.frombuffer(b"\0".join(os.fsencode(p) for p in paths), dtype=np.uint8)


def _paths(blob: np.ndarray, count: int) -> list[bytes]:
    """The paths as bytes, which os.stat takes as they are (no decoding of 100,000 names)."""
    if count == 0:
        return []
    paths = blob.tobytes().split(b"\0")
    if len(paths) != count:
        raise ValueError("path count")
    return paths


def write_index(folder: Path, scan: SourceScan) -> dict | None:
    """Writes `folder`/INDEX for `scan`; returns what the manifest records of it, or None
    (and writes nothing) when the walk cannot be checked this way."""
    if scan.skipped.get("unreadable") or any(m > scan.started_ns - RACY_NS for _, m in scan.folders):
        return None
    files = scan.files
    stats = np.array([(f.size, f.mtime_ns, f.inode & _INODE_BITS) for f in files], dtype=np.int64).reshape(-1, 3)
    buffer = io.BytesIO()
    np.savez(buffer, folders=_blob([f for f, _ in scan.folders]),
             folder_mtimes=np.array([m for _, m in scan.folders], dtype=np.int64),
             paths=_blob([f.location for f in files]), stats=stats)
    data = buffer.getvalue()
    write_whole(folder / INDEX, data)  # a start may be reading the old one
    return {"file": INDEX, "sha256": hashlib.sha256(data).hexdigest(), "files": len(files),
            "folders": len(scan.folders)}


def unchanged(folder: Path, record: dict | None) -> bool:
    """True when the index the manifest records (`record`) is intact and every folder and
    file in it stats as it did: the walk would find the same files, unchanged. False
    otherwise, the index missing or damaged included: then walk and compare."""
    if not isinstance(record, dict) or record.get("file") != INDEX:
        return False
    try:
        data = (folder / INDEX).read_bytes()
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return False
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            folders = _paths(z["folders"], int(record["folders"]))
            folder_mtimes, paths, stats = z["folder_mtimes"], _paths(z["paths"], int(record["files"])), z["stats"]
        if folder_mtimes.shape != (len(folders),) or stats.shape != (len(paths), 3):
            return False
        if any(os.stat(p).st_mtime_ns != m for p, m in zip(folders, folder_mtimes.tolist(), strict=True)):
            return False
        now = np.array([(st.st_size, st.st_mtime_ns, st.st_ino & _INODE_BITS) for st in map(os.stat, paths)],
                       dtype=np.int64).reshape(-1, 3)
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return False
    return bool(np.array_equal(now, stats))
