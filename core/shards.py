"""Token shards in llm.c's format (docs/DATASETS.md): a header of 256 little-endian
int32 values (magic, version, token count, the rest zero), then the tokens.

Two kinds, as llm.c's dev/data/data_common.py writes them: GPT-2's (magic 20240520,
version 1, uint16 tokens) for vocabularies up to 65536 tokens, and the 32-bit one
(magic 20240801, version 7, uint32 tokens) beyond that. A shard is read through a memory
map, so opening one costs nothing however large it is.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cllm.core.errors import CorpusError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


@dataclass(frozen=True)
class ShardKind:
    magic: int
    version: int
    dtype: type[np.unsignedinteger]


UINT16 = ShardKind(20240520, 1, np.uint16)
UINT32 = ShardKind(20240801, 7, np.uint32)
KINDS = {kind.magic: kind for kind in (UINT16, UINT32)}


def kind_for(vocab_size: int) -> ShardKind:
    """uint16 tokens where every id fits, uint32 beyond."""
    return UINT16 if vocab_size <= 1 << 16 else UINT32


def header(kind: ShardKind, n_tokens: int) -> bytes:
    values = np.zeros(HEADER_INTS, dtype="<i4")
    values[:3] = kind.magic, kind.version, n_tokens
    return values.tobytes()


class ShardWriter:
    """Writes one shard: a placeholder header, the tokens as they come, then the real
    header. The caller renames the finished folder into place (core/prepare.py)."""

    def __init__(self, path: Path, kind: ShardKind) -> None:
        self.path, self.kind, self.n_tokens = path, kind, 0
        self._file = open(path, "wb")
        self._file.write(header(kind, 0))

    def write(self, tokens: np.ndarray) -> None:
        data = np.ascontiguousarray(tokens, dtype=np.dtype(self.kind.dtype).newbyteorder("<")).tobytes()
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._failed(exc) from None
        self.n_tokens += len(tokens)

    def close(self) -> None:
        if self.n_tokens >= 1 << 31:
            raise CorpusError(f"{self.path}: {self.n_tokens} tokens is more than a shard's header can count "
                              "(2**31 - 1)")
        try:
            self._file.seek(0)
            self._file.write(header(self.kind, self.n_tokens))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> CorpusError:
        return CorpusError(f"{self.path}: could not write the dataset ({exc.strerror or exc}); nothing was kept")

    def abandon(self) -> None:
        try:
            self._file.close()
        except OSError:  # the buffered rest cannot be written either: the file is removed anyway
            pass


class Shard:
    """One shard's tokens, memory-mapped (read-only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_BYTES:
                    raise CorpusError(f"{self.path}: cut short: {size} bytes, less than the {HEADER_BYTES}-byte "
                                      "header of a token shard")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CorpusError(f"{self.path}: cannot be read ({exc.strerror or exc})") from None
        magic, version, count = np.frombuffer(self._map, dtype="<i4", count=3)
        kind = KINDS.get(int(magic))
        if kind is None:
            raise CorpusError(f"{self.path}: not a token shard (magic number {int(magic)}; expected "
                              f"{UINT16.magic} or {UINT32.magic})")
        if int(version) != kind.version:
            raise CorpusError(f"{self.path}: token shard version {int(version)} is not supported (magic {kind.magic} "
                              f"goes with version {kind.version})")
        itemsize = np.dtype(kind.dtype).itemsize
        expected = HEADER_BYTES + int(count) * itemsize
        if size < expected:
            raise CorpusError(f"{self.path}: cut short: the header counts {int(count):,} tokens "
                              f"({expected:,} bytes) but the file has {size:,} bytes")
        if size > expected:
            raise CorpusError(f"{self.path}: {size - expected:,} bytes after the {int(count):,} tokens its header "
                              "counts")
        self.kind = kind
        self.tokens = np.frombuffer(self._map, dtype=np.dtype(kind.dtype).newbyteorder("<"), count=int(count),
                                    offset=HEADER_BYTES)

    def __len__(self) -> int:
        return len(self.tokens)

    def release(self) -> None:
        """Drops the pages read so far from this process's resident memory (they stay in
        the page cache): random reads over a long run would otherwise keep every page
        touched, until the whole file is resident (nanoGPT issue 287)."""
        self._map.madvise(mmap.MADV_DONTNEED)


def is_shard(path: Path) -> bool:
    """Whether `path` starts like a token shard (either magic)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and int(np.frombuffer(head, dtype="<i4")[0]) in KINDS
