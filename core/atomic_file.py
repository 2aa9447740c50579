"""Writing a file whole or not at all: the data goes to a temporary file beside the
target, reaches the disk, and is renamed over the target, so a reader, a kill or a full
disk meets the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, data: bytes) -> None:
    """Replaces `path` with `data` atomically (the folder must exist)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
