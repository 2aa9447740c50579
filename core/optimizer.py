"""The optimiser step: the shard gradients summed in a fixed order with their norm, and
AdamW, both `prange` loops over fixed chunks of the flat buffers, so neither result
depends on the number of threads."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from cllm.core.kernels import JIT
from cllm.core.threads import parallel_threads

N_CHUNKS = 256  # fixed partition of the flat buffers


@njit(parallel=True, **JIT)
def reduce_chunks(grads, partial):
    """For each of N_CHUNKS equal pieces c: grads[0] += grads[1:] in shard order, and
    partial[c] = the squared norm of piece c of the sum, accumulated in float64."""
    n_shards, n = grads.shape
    size = (n + N_CHUNKS - 1) // N_CHUNKS
    for c in prange(N_CHUNKS):
        lo, hi = min(c * size, n), min((c + 1) * size, n)
        total = grads[0, lo:hi]  # views from 0: provably non-negative indices, so it vectorises
        for s in range(1, n_shards):
            part = grads[s, lo:hi]
            for i in range(hi - lo):
                total[i] += part[i]
        acc = 0.0
        for i in range(hi - lo):
            acc += np.float64(total[i]) * total[i]
        partial[c] = acc


@njit(parallel=True, **JIT)
def adamw_chunks(params, grad, m, v, segments, coef):
    """One AdamW step over every element, in the parameters' own precision and in
    PyTorch's order of operations (decoupled decay on segments flagged 1). coef, of
    the parameters' dtype: decay factor 1 - lr * wd, 1 - beta1, beta2, 1 - beta2,
    sqrt(bias correction 2), eps, step size lr / bias correction 1, gradient scale."""
    shrink, w1, beta2, w2, bc2_sqrt, eps, step_size, grad_scale = (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7])
    n = params.shape[0]
    size = (n + N_CHUNKS - 1) // N_CHUNKS
    for c in prange(N_CHUNKS):
        lo, hi = min(c * size, n), min((c + 1) * size, n)
        for k in range(segments.shape[0]):
            a, b, decay = max(segments[k, 0], lo), min(segments[k, 1], hi), segments[k, 2]
            if a >= b:
                continue
            # views from 0, so the indices are provably non-negative and the loop vectorises
            P, G, M, V = params[a:b], grad[a:b], m[a:b], v[a:b]
            for i in range(b - a):
                g = G[i] * grad_scale
                mi = M[i] + w1 * (g - M[i])
                vi = V[i] * beta2 + w2 * g * g
                M[i] = mi
                V[i] = vi
                p = P[i] * shrink if decay else P[i]
                P[i] = p - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


def reduce_shards(grads: np.ndarray, threads: int = 0) -> float:
    """Sums every shard's gradient into grads[0], in shard order. Returns the squared norm
    of the sum; neither depends on the thread count."""
    partial = np.zeros(N_CHUNKS, np.float64)
    with parallel_threads(N_CHUNKS, threads):
        reduce_chunks(grads, partial)
    return float(partial.sum())


def adamw_update(params: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, segments: np.ndarray,
                 lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, t: int,
                 grad_scale: float, threads: int = 0) -> None:
    """One AdamW step over every parameter (step number t from 1, gradient times
    `grad_scale` for clipping), on at most `threads` threads (0: all)."""
    coef = np.array([1.0 - lr * weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2 ** t), eps,
                     lr / (1.0 - beta1 ** t), grad_scale], dtype=params.dtype)
    with parallel_threads(N_CHUNKS, threads):
        adamw_chunks(params, grad, m, v, segments, coef)
