"""A barrier for the tasks of one `prange` launch, so that a whole decoding step can be one
parallel region instead of five launches per layer.

Every launch of a parallel kernel is a fork and join of numba's thread pool; with
OpenMP's threads sleeping between regions (OMP_WAIT_POLICY=PASSIVE, `core/threads.py`)
one costs about 40 microseconds on two threads here, and a step of GPT-2 small launched
61 of them: 2.4 ms of a 19 ms step. Tasks that wait at this barrier instead spin on
one shared counter (a few hundred nanoseconds when both threads are running), yielding
the core after a while so that a descheduled partner gets it back.

A barrier needs every task of the launch running at once: OpenMP gives a launch of
`tasks` iterations on `tasks` threads one iteration per thread (numba splits the range
into one chunk per thread, and OpenMP's static schedule gives each thread one chunk).
TBB may run two iterations one after the other on one thread, so `barrier_safe` says
where the decoder may use it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from cllm.core.kernels import JIT

_sched_yield = types.ExternalFunction("sched_yield", types.intc())
SPINS_BEFORE_YIELD = 2000


@intrinsic
def _atomic_add(typingctx, address, value):
    """*address += value (int64, sequentially consistent); returns the old value."""
    sig = types.int64(types.uintp, types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "seq_cst")
    return sig, codegen


@intrinsic
def _atomic_load(typingctx, address):
    """*address (int64, sequentially consistent)."""
    sig = types.int64(types.uintp)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(ptr, "seq_cst", 8)
    return sig, codegen


SLOTS = 3  # work counters: phase k takes slot k % 3 (see `take`)


def barrier_state() -> np.ndarray:
    """A barrier's state: arrivals, generation and `SLOTS` work counters (`take`), each on
    its own cache line."""
    return np.zeros(8 * (2 + SLOTS), np.int64)


@njit(**JIT)
def barrier(state, tasks):
    """Returns when all `tasks` tasks have called it (state: `barrier_state()`, the same
    for all of them). Memory written before it is seen by every task after it."""
    if tasks <= 1:
        return
    arrived = state.ctypes.data
    generation = arrived + 64
    gen: int = _atomic_load(generation)
    if _atomic_add(arrived, 1) == tasks - 1:
        _atomic_add(arrived, -tasks)
        _atomic_add(generation, 1)
    else:
        spins = 0
        while _atomic_load(generation) == gen:
            spins += 1
            if spins >= SPINS_BEFORE_YIELD:
                _sched_yield()
                spins = 0


@njit(**JIT)
def clear_slot(state, slot):
    """Sets work counter `slot` back to 0: by one task, while no task takes from it."""
    state[8 * (2 + slot)] = 0


@njit(**JIT)
def take(state, slot, total, tasks, least):
    """The next range (j0, j1) of items 0..total-1 shared out through work counter `slot`
    (j0 >= total: none left): the tasks of a phase take pieces until the items run out,
    so a task that is slowed (another process on its core, a slower core, work before
    the phase) takes fewer and none waits long at the barrier after. Pieces shrink as the
    items run out (a quarter of what is left on two tasks, at least `least` items), so
    there are few of them and the last ones are small. The counter must start the phase
    at 0 (`clear_slot` before the barrier that opens the phase)."""
    counter = state.ctypes.data + 8 * 8 * (2 + slot)
    size = max(least, (total - _atomic_load(counter)) // (2 * tasks))
    j0: int = _atomic_add(counter, size)
    return j0, min(j0 + size, total)
