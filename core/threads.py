"""How the kernels share the cores: one Python thread per shard, BLAS kept to one thread.

Every kernel is a plain `nogil` numba function, so Python threads run them truly in
parallel. Keeping the threading in Python rather than in numba's `prange` spares the
compiler a parallel copy of the whole model (about a third of the cold-start compile),
and lets a Textual worker, the CLI and the tests launch kernels from any thread."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterator

import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS the kernels call, so the limit covers it)
from threadpoolctl import threadpool_limits

from core.config import default_threads


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while the shard threads run: each shard's matmuls stay on its
    own core instead of every core fighting over every matmul."""
    with threadpool_limits(limits=1):
        yield


def thread_cap() -> int:
    """Most threads the kernels run on at once: every core, or `NUMBA_NUM_THREADS` where set
    (the variable users of numba code already know)."""
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else default_threads()


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _workers(n: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least `n` threads."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            _pool_size = max(n, default_threads())
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="cllm-shard")
        return _pool


def worker_count(n_tasks: int, threads: int = 0) -> int:
    """Threads that n_tasks tasks run on: at most `threads` (0: `thread_cap()`), never
    more than `thread_cap()` or the number of tasks."""
    return max(1, min(n_tasks, threads or thread_cap(), thread_cap()))


def run_tasks(task: Callable[[int], None], n_tasks: int, threads: int = 0) -> None:
    """Runs task(0) ... task(n_tasks - 1) on `worker_count(n_tasks, threads)` threads, the
    calling thread taking its share, and returns when all are done, re-raising the first
    error. Which thread runs a task never changes what it computes."""
    workers = worker_count(n_tasks, threads)

    def share(first: int) -> None:
        for i in range(first, n_tasks, workers):
            task(i)

    if workers == 1:
        share(0)
        return
    pool = _workers(workers - 1)
    futures = [pool.submit(share, w) for w in range(1, workers)]
    try:
        share(0)
    finally:  # even when this thread's share failed, the others are writing the same buffers
        wait(futures)
    for future in futures:
        future.result()


def run_split(task: Callable[[int, int], None], n: int, threads: int = 0) -> None:
    """Runs task(lo, hi) over contiguous pieces of range(n), one piece per thread."""
    workers = worker_count(n, threads)
    cuts = [n * w // workers for w in range(workers + 1)]
    run_tasks(lambda w: task(cuts[w], cuts[w + 1]), workers)
