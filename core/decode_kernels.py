"""One decoding step for N sequences at once, on every core.

Decoding a token reads every weight once and does two flops per weight per sequence: it
is bound by memory bandwidth, and one core cannot draw all of it. A step is one parallel
region of one task per thread (`decode_rows`); the tasks meet at a spin barrier
(`core.spin_barrier`) after each phase of a layer, where a `prange` launch per product
cost about 40 microseconds each on two threads (61 launches a step for GPT-2 small).
Each product is split by ranges of outputs: every thread streams its own share of the
weight once, for all N rows (the samples of `--samples N`), up to four rows per pass
over a weight row (`core.row_dots`). The weights are read as rows of outputs (a linear
layer's (in, out) weight transposed, the embedding as it is), each output a dot product
over one contiguous row. Splitting the outputs, never the sums, and summing in an order
written out (`core.row_dots`) keep every output's arithmetic the same whatever the
thread count and whatever N: a sample's logits are bit-identical alone and in a batch,
on 1 thread or 2 (the tests hold both).

The prompt's keys and values are held once for all sequences (the shared caches), the
positions after it in each sequence's own caches.

Weights are float32, or int8 with one float32 scale per output (`core.quantize`): an
int8 weight row is widened to float32 in a loop of its own, the output's sum is taken
over the raw integers and scaled once at the end.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from cllm.core.kernels import GELU_CUBE, GELU_SCALE, JIT, exp_shifted, fast_tanh, layernorm_forward, row_max
from cllm.core.row_dots import MAX_ROWS, row_dots
from cllm.core.spin_barrier import barrier, barrier_state

F = np.float32


SET, ADD, GELU = 0, 1, 2  # what a product does with its outputs: store, add into, store GELU of


@njit(**JIT)
def _outputs(out, x, wt, scale, bias, N, mode, j0, j1):
    """Outputs j0:j1 of out[:N] = (x[:N] @ wt.T) * scale + bias (added into out for mode ADD,
    through GELU for mode GELU): x (N, IC); wt (OC, IC) the weight as rows of outputs,
    float32 or int8; scale (OC,) for int8 weights, else empty; bias (OC,) or empty. Each
    weight row is read once for every row of x, up to `MAX_ROWS` rows at a time
    (`core.row_dots`: the same bits for a row alone or among others). An int8 row is
    widened into a float32 row first, in a loop of its own."""
    sums = np.empty(MAX_ROWS, F)
    wide = np.empty(wt.shape[1] if wt.itemsize == 1 else 0, F)
    for j in range(j0, j1):
        if wt.itemsize == 1:
            row = wt[j]
            for i in range(wide.shape[0]):
                wide[i] = row[i]
        for n0 in range(0, N, MAX_ROWS):
            rows = min(MAX_ROWS, N - n0)
            if wt.itemsize == 1:
                row_dots(sums, x, n0, rows, wide)
            else:
                row_dots(sums, x, n0, rows, wt[j])
            for r in range(rows):
                v = sums[r]
                if scale.shape[0] > 0:
                    v *= scale[j]
                if bias.shape[0] > 0:
                    v += bias[j]
                if mode == ADD:
                    out[n0 + r, j] += v
                elif mode == GELU:
                    out[n0 + r, j] = F(0.5) * v * (F(1) + fast_tanh(GELU_SCALE * (v + GELU_CUBE * v * v * v)))
                else:
                    out[n0 + r, j] = v


@njit(**JIT)
def _share(count, t, tasks):
    """Task t's range of `count` items split into `tasks` contiguous ranges."""
    width = (count + tasks - 1) // tasks
    start = min(t * width, count)
    return start, min(start + width, count)


@njit(**JIT)
def _product(out, x, wt, scale, bias, N, mode, t, tasks):
    """Task t's share of the outputs of `_outputs`."""
    j0, j1 = _share(wt.shape[0], t, tasks)
    _outputs(out, x, wt, scale, bias, N, mode, j0, j1)


@njit(parallel=True, **JIT)
def rows_times_weight(out, x, wt, scale, bias, N, accumulate, tasks):
    """out[:N] (+)= (x[:N] @ wt.T) * scale + bias (`_outputs`), `tasks` tasks, each a
    contiguous range of outputs."""
    for t in prange(tasks):
        _product(out, x, wt, scale, bias, N, ADD if accumulate else SET, t, tasks)


@njit(**JIT)
def _attend(S, layer, pos, prefix, n_head, task):
    """Sequence n = task // n_head, head task % n_head at position `pos`: stores its key
    and value in the sequence's own caches, then its query against the keys and values
    of positions <= pos of layer `layer`, those before `prefix` from the shared caches
    (the prompt: one copy for every sequence, so that after the first sequence's task
    the others find it in the processor's cache), the rest from the sequence's own;
    S.att[task] its scratch; into S.y[n]."""
    C = S.y.shape[1]
    hs = C // n_head
    scale = F(1.0 / math.sqrt(hs))
    n, hd = task // n_head, task % n_head
    lo = hd * hs
    a = S.att[task]
    row = S.qkv[n]
    keys, values = S.kcache[n, layer], S.vcache[n, layer]
    for i in range(hs):
        keys[pos, lo + i] = row[C + lo + i]
        values[pos, lo + i] = row[2 * C + lo + i]
    q = row[lo:lo + hs]
    shared = min(prefix, pos + 1)
    for part in range(2):  # the shared positions, then the sequence's own (one loop each: no views chosen per position)
        cache = S.pkcache[layer] if part == 0 else keys
        for u in range(0 if part == 0 else shared, shared if part == 0 else pos + 1):
            k = cache[u, lo:lo + hs]
            s = F(0)
            for i in range(hs):
                s += q[i] * k[i]
            a[u] = s * scale
    total = exp_shifted(a, pos + 1, row_max(a, pos + 1, -np.inf))
    out = S.y[n, lo:lo + hs]
    for i in range(hs):
        out[i] = 0.0
    for part in range(2):
        cache = S.pvcache[layer] if part == 0 else values
        for u in range(0 if part == 0 else shared, shared if part == 0 else pos + 1):
            w = F(a[u] / total)
            v = cache[u, lo:lo + hs]
            for i in range(hs):
                out[i] += w * v[i]


class DecodeWeights(NamedTuple):
    """A model's weights as the decoder reads them: each linear layer's weight as rows of
    outputs (L, OC, IC), float32 or int8, with its per-output scales (L, OC) (empty
    (L, 0) for float32); the embedding (V, C) likewise with its per-row scales; the rest
    float32 views of the parameters."""

    wte: np.ndarray
    wte_scale: np.ndarray
    wpe: np.ndarray
    ln1w: np.ndarray
    ln1b: np.ndarray
    qkvw: np.ndarray
    qkvw_scale: np.ndarray
    qkvb: np.ndarray
    attprojw: np.ndarray
    attprojw_scale: np.ndarray
    attprojb: np.ndarray
    ln2w: np.ndarray
    ln2b: np.ndarray
    fcw: np.ndarray
    fcw_scale: np.ndarray
    fcb: np.ndarray
    fcprojw: np.ndarray
    fcprojw_scale: np.ndarray
    fcprojb: np.ndarray
    lnfw: np.ndarray
    lnfb: np.ndarray


class DecodeState(NamedTuple):
    """N sequences' key/value caches and one position's scratch, for up to `tasks` tasks."""

    kcache: np.ndarray  # (N, L, maxT, C) every layer's keys so far, per sequence
    vcache: np.ndarray  # (N, L, maxT, C) and values
    pkcache: np.ndarray  # (L, maxT, C) the keys of a prefix all sequences share (the prompt)
    pvcache: np.ndarray  # (L, maxT, C) and its values
    x: np.ndarray  # (N, C) the residual stream
    xn: np.ndarray  # (tasks, N, C) its LayerNorm, each task's own
    mean: np.ndarray  # (tasks, N) LayerNorm's statistics (unused after)
    rstd: np.ndarray  # (tasks, N)
    qkv: np.ndarray  # (N, 3C)
    att: np.ndarray  # (N * n_head, maxT) attention weights, one row per sequence and head
    y: np.ndarray  # (N, C) attention output
    hg: np.ndarray  # (N, 4C) the MLP's hidden layer, after GELU
    logits: np.ndarray  # (N, V)
    sync: np.ndarray  # `barrier_state()`

    @classmethod
    def create(cls, N: int, n_layer: int, n_head: int, ctx: int, C: int, V: int, tasks: int = 1) -> DecodeState:
        z = np.zeros
        return cls(z((N, n_layer, ctx, C), F), z((N, n_layer, ctx, C), F), z((n_layer, ctx, C), F),
                   z((n_layer, ctx, C), F), z((N, C), F), z((tasks, N, C), F),
                   z((tasks, N), F), z((tasks, N), F), z((N, 3 * C), F), z((N * n_head, ctx), F), z((N, C), F),
                   z((N, 4 * C), F), z((N, V), F), barrier_state())


EMBED, LAST = -1, 5  # the phases of a step besides a layer's five (0-4)


@njit(**JIT)
def _phase(W, S, tokens, pos, prefix, n_head, layer, phase, t, tasks):
    """Task t's share of one phase of a decoding step: EMBED (x = the tokens' embeddings,
    by columns), a layer's 0 (LayerNorm, q|k|v), 1 (attention, by sequence and head),
    2 (attention's projection added into x), 3 (LayerNorm, the MLP's hidden layer through
    GELU), 4 (its projection added into x), LAST (LayerNorm, logits). Products are split
    by outputs, so every output's arithmetic is the same on any number of tasks. Each
    task takes its own LayerNorm of x (768 numbers: less than a barrier costs)."""
    N = tokens.shape[0]
    xn, mean, rstd = S.xn[t], S.mean[t], S.rstd[t]
    if phase == EMBED:
        c0, c1 = _share(W.wte.shape[1], t, tasks)
        for n in range(N):
            e, p, xr = W.wte[tokens[n]], W.wpe[pos], S.x[n]
            s = W.wte_scale[tokens[n]] if W.wte_scale.shape[0] > 0 else F(1)
            for i in range(c0, c1):
                xr[i] = F(e[i]) * s + p[i]
    elif phase == 0:
        layernorm_forward(xn, mean, rstd, S.x, W.ln1w[layer], W.ln1b[layer], N)
        _product(S.qkv, xn, W.qkvw[layer], W.qkvw_scale[layer], W.qkvb[layer], N, SET, t, tasks)
    elif phase == 1:
        a0, a1 = _share(N * n_head, t, tasks)
        for task in range(a0, a1):
            _attend(S, layer, pos, prefix, n_head, task)
    elif phase == 2:
        _product(S.x, S.y, W.attprojw[layer], W.attprojw_scale[layer], W.attprojb[layer], N, ADD, t, tasks)
    elif phase == 3:
        layernorm_forward(xn, mean, rstd, S.x, W.ln2w[layer], W.ln2b[layer], N)
        _product(S.hg, xn, W.fcw[layer], W.fcw_scale[layer], W.fcb[layer], N, GELU, t, tasks)
    elif phase == 4:
        _product(S.x, S.hg, W.fcprojw[layer], W.fcprojw_scale[layer], W.fcprojb[layer], N, ADD, t, tasks)
    else:
        layernorm_forward(xn, mean, rstd, S.x, W.lnfw, W.lnfb, N)
        _product(S.logits, xn, W.wte, W.wte_scale, W.lnfb[:0], N, SET, t, tasks)


@njit(parallel=True, **JIT)
def decode_rows(W, S, tokens, pos, prefix, n_head, tasks):
    """Logits (into S.logits) for tokens[n] at position `pos` of sequence n, attending over
    that sequence's cached keys and values of positions < pos; stores this position's keys
    and values in the caches. One parallel region of `tasks` tasks (at most S.xn's), which
    meet at a barrier after each phase (`core.spin_barrier`: every task must run at once)."""
    for t in prange(tasks):
        _phase(W, S, tokens, pos, prefix, n_head, 0, EMBED, t, tasks)
        barrier(S.sync, tasks)
        for layer in range(W.ln1w.shape[0]):
            for phase in range(5):
                _phase(W, S, tokens, pos, prefix, n_head, layer, phase, t, tasks)
                barrier(S.sync, tasks)
        _phase(W, S, tokens, pos, prefix, n_head, 0, LAST, t, tasks)


@njit(parallel=True, **JIT)
def _phase_tasks(W, S, tokens, pos, prefix, n_head, layer, phase, tasks):
    for t in prange(tasks):
        _phase(W, S, tokens, pos, prefix, n_head, layer, phase, t, tasks)


@njit(**JIT)
def decode_rows_launched(W, S, tokens, pos, prefix, n_head, tasks):
    """`decode_rows` (the same bits) with one launch per phase instead of the barrier, for
    a threading layer that may run two tasks of a launch on one thread (TBB)."""
    _phase_tasks(W, S, tokens, pos, prefix, n_head, 0, EMBED, tasks)
    for layer in range(W.ln1w.shape[0]):
        for phase in range(5):
            _phase_tasks(W, S, tokens, pos, prefix, n_head, layer, phase, tasks)
    _phase_tasks(W, S, tokens, pos, prefix, n_head, 0, LAST, tasks)

