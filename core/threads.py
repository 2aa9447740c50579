"""Thread settings for the kernels: numba threads per launching thread, BLAS kept to one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS numba's np.dot uses, so the limit covers it)
from threadpoolctl import threadpool_limits


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while the numba threads run: each shard's matmuls stay on its
    own core instead of every core fighting over every matmul."""
    with threadpool_limits(limits=1):
        yield
