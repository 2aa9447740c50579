"""The decoding region's meeting points (core/spin_barrier.py): the barrier, the work
counters its tasks take pieces of a product from."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from cllm.core.kernels import JIT
from cllm.core.spin_barrier import SLOTS, barrier, barrier_state, clear_slot, take
from cllm.core.threads import parallel_threads, threading_layer


@njit(parallel=True, **JIT)
def _take_all(state, owner, pieces, tasks, least):
    """Every task takes pieces of owner's items through each slot in turn, marking each
    item it gets with its task number + 1 (owner (SLOTS, total), pieces (SLOTS, tasks)
    counted); a barrier between slots, the slot after cleared before it."""
    total = owner.shape[1]
    for t in prange(tasks):
        if t == 0:
            for slot in range(SLOTS):
                clear_slot(state, slot)
        barrier(state, tasks)
        for slot in range(SLOTS):
            j0, j1 = take(state, slot, total, tasks, least)
            while j0 < total:
                pieces[slot, t] += 1
                for j in range(j0, j1):
                    owner[slot, j] += t + 1
                j0, j1 = take(state, slot, total, tasks, least)
            barrier(state, tasks)


@pytest.mark.parametrize("total, least", [(1, 1), (7, 1), (1000, 3), (50257, 10)])
def test_the_tasks_take_every_item_once(total, least):
    """On 2 tasks (where OpenMP runs them at once) or 1, each item of every slot goes to
    exactly one task, in pieces that shrink as the items run out and are never fewer
    than `least` items but the last."""
    tasks = 2 if threading_layer() == "omp" else 1
    state = barrier_state()
    for _ in range(2):  # the counters start each use at 0 again
        with parallel_threads(tasks, tasks) as workers:
            owner = np.zeros((SLOTS, total), np.int64)
            pieces = np.zeros((SLOTS, workers), np.int64)
            _take_all(state, owner, pieces, workers, least)
        assert ((owner >= 1) & (owner <= workers)).all()
        assert (pieces.sum(axis=1) <= total // least + 2 * workers * np.log2(total + 1) + 2).all()
