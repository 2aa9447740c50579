"""Thread settings for the kernels: numba threads per launching thread, BLAS kept to one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import os

import numba

import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS numba's np.dot uses, so the limit covers it)
from threadpoolctl import threadpool_limits

# Training and the sampler may launch parallel kernels from two threads at once (a
# Textual worker each); numba's fallback "workqueue" layer aborts on that, OpenMP and TBB
# do not.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while the numba threads run: each shard's matmuls stay on its
    own core instead of every core fighting over every matmul."""
    with threadpool_limits(limits=1):
        yield


def numba_threads(shards: int) -> int:
    """Threads to run `shards` shards on: one each, as far as numba has threads. The
    shard count alone decides the arithmetic, so results do not depend on this number."""
    return max(1, min(shards, numba.config.NUMBA_NUM_THREADS))
