"""Encoding on every core for a tokenizer that holds the GIL while it encodes (the word
tokenizer's regex): worker processes, each given the tokenizer once, encode groups of
texts and send the ids back.

A batch's texts are cut into pieces where encoding them separately gives the ids of
encoding them whole (`split_pieces`), so one long document is spread over the workers
too, and the pieces are dealt out in contiguous groups of about equal length. The ids
are those of `tokenizer.encode`, text by text, whatever the number of workers. Memory
stays bounded by the batch: a worker holds one group at a time.

The workers are spawned (not forked): the parent may run threads (the TUI's, numba's,
the tokenizers library's), which a fork would copy half-way. They ignore Ctrl-C: the
parent hears it, stops handing out batches and shuts them down.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType

import numpy as np

from cllm.core.errors import CorpusError
from cllm.core.fast_bpe import deal
from cllm.core.tokenizer import Tokenizer, join_pieces, pieces_of, tokenizer_from_json

GROUPS_PER_WORKER = 2  # groups a batch is dealt into, per worker: a slow group holds less back
PIECE_CHARS = 1 << 18  # long texts are cut into pieces of at least this many characters

_tokenizer: Tokenizer | None = None  # in a worker: the tokenizer it encodes with


def _start_worker(spec: dict) -> None:
    global _tokenizer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _tokenizer = tokenizer_from_json(spec)


def _encode_group(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """In a worker: the group's ids, all in one array, and how many belong to each text."""
    assert _tokenizer is not None
    ids = [_tokenizer.encode(text) for text in texts]
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    return (np.concatenate(ids) if ids else np.zeros(0, np.int32)).astype(np.int32, copy=False), lengths


class EncodeWorkers:
    """`workers` processes that encode with `tokenizer`; a context manager (the processes
    end when it closes)."""

    def __init__(self, tokenizer: Tokenizer, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(tokenizer.to_json(),))

    def __enter__(self) -> EncodeWorkers:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids, as `tokenizer.encode` gives them."""
        pieces, per_text = pieces_of(texts, PIECE_CHARS)
        groups = deal([len(p) for p in pieces], self.workers * GROUPS_PER_WORKER)
        try:
            futures = [self._pool.submit(_encode_group, pieces[a:b]) for a, b in groups]
            results = [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise CorpusError(f"an encoding worker process ended unexpectedly ({exc}); was it killed for "
                              "memory? Prepare the corpus again") from None
        piece_ids: list[np.ndarray] = []
        for ids, lengths in results:
            piece_ids += np.split(ids, np.cumsum(lengths)[:-1])
        return join_pieces(piece_ids, per_text)
