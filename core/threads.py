"""How the kernels share the cores: numba `prange` loops on a thread-safe threading layer,
BLAS on one thread inside them.

Training steps, evaluations and the sampler's prompt pass run one shard per thread in
one `parallel=True` kernel (`core/workspace.py`); the shard sum and AdamW are `prange`
loops too (`core/optimizer.py`). Three facts of numba's threading shape this module:

- numba's fallback threading layer, workqueue, aborts the process when two Python
  threads launch parallel kernels at once, and the TUI trains in one worker thread while
  another may generate. So the layer is "threadsafe" (oneTBB where it can be loaded,
  else GNU OpenMP: libgomp, which the Linux wheels of numba use). Should neither load,
  this module falls back to workqueue, and every launch then takes one lock.
- `numba.set_num_threads` holds for the calling thread only, so every launch sets it
  (`parallel_threads`), whichever thread it comes from.
- numba cannot stop a parallel kernel, so the shard kernel reads a stop flag between
  groups of sequences.

And one of OpenMP's: by default its idle threads spin for a while after every parallel
region, burning the core that the app's UI (and the trainer's own Python between
kernels) would use; OMP_WAIT_POLICY=PASSIVE, unless the user set it, makes them sleep.
A step launches three regions, and waking a sleeping thread costs microseconds.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS the kernels call, so the limit covers it)
from threadpoolctl import ThreadpoolController

from cllm.core.config import default_threads

if not os.environ.get("NUMBA_THREADING_LAYER"):  # a layer the user chose is theirs
    numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]  # numba.config is filled at run time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when numba first loads OpenMP

_start_lock = threading.Lock()
_launch_lock: threading.Lock | None = None  # only for a layer that is not thread-safe
_started = False


def _start_layer() -> None:
    """Starts numba's thread pool now, with the fallback described above; which layer runs
    is then `threading_layer()`. numba would otherwise start it on the first launch."""
    global _started, _launch_lock
    with _start_lock:
        if _started:
            return
        from numba.np.ufunc import parallel

        try:
            parallel._launch_threads()
        except ValueError:  # neither TBB nor OpenMP could be loaded
            numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # numba.config is filled at run time
            parallel._launch_threads()
        if numba.threading_layer() == "workqueue":
            _launch_lock = threading.Lock()
        _started = True


def threading_layer() -> str:
    """The numba threading layer the kernels run on: "tbb", "omp" or "workqueue"."""
    _start_layer()
    return numba.threading_layer()


def thread_cap() -> int:
    """Most threads the kernels run on at once: every core, or `NUMBA_NUM_THREADS` where set
    (the variable users of numba code already know)."""
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    wanted = max(1, int(value)) if value.strip().isdigit() else default_threads()
    return max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]  # numba.config is filled at run time


def worker_count(n_tasks: int, threads: int = 0) -> int:
    """Threads that n_tasks parallel iterations run on: at most `threads` (0: `thread_cap()`),
    never more than `thread_cap()` or the number of iterations."""
    return max(1, min(n_tasks, threads or thread_cap(), thread_cap()))


@contextmanager
def parallel_threads(n_tasks: int, threads: int = 0) -> Iterator[int]:
    """Around one launch of a parallel kernel from this thread: sets numba's thread count
    for it (`worker_count`) and yields it. Which thread runs an iteration never changes
    what it computes."""
    _start_layer()
    workers = worker_count(n_tasks, threads)
    numba.set_num_threads(workers)
    if _launch_lock is None:
        yield workers
    else:
        with _launch_lock:
            yield workers


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's and scipy's OpenBLAS, both by this module's
    imports), found once: `threadpool_limits` looks for them again on every call (2 ms)."""
    return ThreadpoolController().select(user_api="blas")


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while the kernel's threads run: each shard's matmuls stay on its
    own core instead of every core fighting over every matmul."""
    with _blas().limit(limits=1):
        yield


@contextmanager
def threaded_blas() -> Iterator[None]:
    """BLAS on `thread_cap()` threads, for a pass with one shard whose products are large
    (a long prompt: 1000 rows times GPT-2's weights). Threaded OpenBLAS blocks a product
    differently, so results change at float rounding (measured: 2.5e-6 relative on
    logits). Its thread count is one setting for the whole process."""
    with _blas().limit(limits=thread_cap()):
        yield
