"""One decoding step for N sequences at once, on every core.

Decoding a token reads every weight once and does two flops per weight per sequence: it
is bound by memory bandwidth, and one core cannot draw all of it. Each product here is a
`prange` over ranges of outputs: every thread streams its own share of the weight once,
for all N rows (the samples of `--samples N`), so N rows cost little more than one.
float32 weights are read in panels (`core.panel_dots`: outputs side by side, the sums in
vector registers, each output's sum a plain sequential sum in input order); int8 weights
as rows of outputs (a linear layer's (in, out) weight transposed, the embedding as it
is), each output an integer dot product over one contiguous row, for every sample row
while the weight row is in L1. Splitting the outputs, never the sums, keeps every
output's arithmetic the same whatever the thread count and whatever N: a sample's
logits are bit-identical alone and in a batch, on 1 thread or 2 (the tests hold both).

int8 weights have one float32 scale per output (`core.quantize`): each input row is
rounded to int8 too (one scale per row) and the products run on integers
(`core.int8_dots`), each output scaled once at the end.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from cllm.core.int8_dots import int8_rows, quantize_activations
from cllm.core.kernels import JIT, exp_shifted, gelu_forward, layernorm_forward, row_max
from cllm.core.panel_dots import PANEL, panel_rows, panel_weight
from cllm.core.spin_barrier import SLOTS, barrier, clear_slot, take

F = np.float32


@njit(**JIT)
def _rounded_inputs(x, wt, N):
    """x's N rows as a product with wt reads them: for int8 weights rounded to int8, with
    one scale per row (each task rounds its own copy: the same values on any thread, a
    few microseconds), once for all the units it takes; for float32 weights nothing."""
    if wt.itemsize == 1:
        xu, xs = np.empty((N, x.shape[1]), np.uint8), np.empty(N, F)
        quantize_activations(xu, xs, x, N)
        return xu, xs
    return np.empty((0, 0), np.uint8), np.empty(0, F)


@njit(**JIT)
def _dot_units(out, x, xu, xs, wt, scale, bias, N, accumulate, j0, j1):
    """`rows_times_weight` for units j0:j1 of wt (float32: panels of outputs; int8:
    rows), each weight read once from memory; xu, xs: `_rounded_inputs`."""
    if wt.itemsize == 1:
        int8_rows(out, xu, xs, wt, scale, bias, N, accumulate, j0, j1)
    else:
        panel_rows(out, x, wt, scale, bias, N, accumulate, j0, j1)


@njit(**JIT)
def _dot_rows(out, x, wt, scale, bias, N, accumulate, j0, j1):
    """`_dot_units` of units j0:j1, the inputs rounded for them first."""
    xu, xs = _rounded_inputs(x, wt, N)
    _dot_units(out, x, xu, xs, wt, scale, bias, N, accumulate, j0, j1)


@njit(**JIT)
def _share(count, t, tasks):
    """Task t's contiguous range (j0, j1) of `count` items split among `tasks`."""
    width = (count + tasks - 1) // tasks
    j0 = min(t * width, count)
    return j0, min(j0 + width, count)


@njit(**JIT)
def _outputs(wt, j0, j1, oc):
    """The outputs (o0, o1) that units j0:j1 of wt (`_dot_rows`) compute, of oc."""
    if wt.itemsize == 1:
        return j0, j1
    return min(j0 * PANEL, oc), min(j1 * PANEL, oc)


@njit(parallel=True, **JIT)
def rows_times_weight(out, x, wt, scale, bias, N, accumulate, tasks):
    """out[:N] (+)= (x[:N] @ w.T) * scale + bias for a weight w (OC, IC) given as wt: float32
    in panels (`core.panel_dots.panel_form`), or int8 rows of outputs (OC, IC) with its
    scales `scale` (OC,) (float32: empty); bias (OC,) or empty; x (N, IC); out (N, OC).
    `tasks` (the thread count) tasks, each a contiguous range of wt's units (panels
    or rows)."""
    for t in prange(tasks):
        j0, j1 = _share(wt.shape[0], t, tasks)
        _dot_rows(out, x, wt, scale, bias, N, accumulate, j0, j1)


ATTEND_BLOCK = 32  # positions per block of attention: the split of the cache, whatever the threads
ATTEND_RUN = 4  # blocks a sequence reads before the next one's turn: 768 KB of GPT-2's cache, in L2


@njit(**JIT)
def attend_blocks(pos):
    """How many blocks of ATTEND_BLOCK positions cover positions 0..pos."""
    return pos // ATTEND_BLOCK + 1


@njit(**JIT)
def _attend_run(part_y, top, total, a, q, keys, values, first_keys, first_values, shared, b0, b1, pos, hs, scale):
    """Every head of one query q (C,) over keys and values (maxT, C) at the positions
    <= pos of blocks b0:b1, each block's softmax on its own: top (n_head, blocks) each
    head's largest score in the block, a[hd, u] exp(score - top), total (n_head, blocks)
    their sums, part_y (blocks, C) the values weighted by them; positions < shared read
    from first_keys and first_values instead (the first sequence's cache, which holds the
    same numbers: the prompt of every sample). The run's keys (then
    values) are read as one stream, each position's row for all heads at once (a pass
    per head read the cache in 256-byte pieces 3 KB apart: GPT-2 at 559 positions, 5.9
    ms a step on one thread against 1.9 ms; a block's keys then its values, block after
    block, 15% slower than one stream); a block's arithmetic is the same in any run, so
    the bits do not depend on how the blocks are shared out. Its loops index views from
    0: an index LLVM cannot prove non-negative (i + offset) keeps numba's wraparound
    test, and LLVM then vectorises with gathers (five times slower)."""
    n_head = top.shape[0]
    u0, u1 = b0 * ATTEND_BLOCK, min(b1 * ATTEND_BLOCK, pos + 1)
    for u in range(u0, u1):
        krow = first_keys[u] if u < shared else keys[u]
        for hd in range(n_head):
            qh, k = q[hd * hs:(hd + 1) * hs], krow[hd * hs:(hd + 1) * hs]
            s = F(0)
            for i in range(hs):
                s += qh[i] * k[i]
            a[hd, u] = s * scale
    for b in range(b0, b1):
        v0, v1 = b * ATTEND_BLOCK, min((b + 1) * ATTEND_BLOCK, pos + 1)
        for hd in range(n_head):
            row = a[hd, v0:v1]
            top[hd, b] = row_max(row, v1 - v0, -np.inf)
            total[hd, b] = exp_shifted(row, v1 - v0, top[hd, b])
        out = part_y[b]
        for i in range(out.shape[0]):
            out[i] = 0.0
    for u in range(u0, u1):
        vrow, out = first_values[u] if u < shared else values[u], part_y[u // ATTEND_BLOCK]
        for hd in range(n_head):
            w = a[hd, u]
            o, v = out[hd * hs:(hd + 1) * hs], vrow[hd * hs:(hd + 1) * hs]
            for i in range(hs):
                o[i] += w * v[i]


@njit(**JIT)
def _attend_items(S, qkv, layer, pos, n_head, b0, b1):
    """Blocks b0:b1 of every sequence's attention: each block's partial output, maxima
    and sums into S.part_y, S.part_top, S.part_total. One sequence reads its blocks as
    one run; several take turns at runs of ATTEND_RUN blocks, so that the prompt's rows,
    which they all read from the first sequence's cache (S.shared), come from memory
    once and from L2 for the others. The last block's reader first stores this
    position's key and value (only that block reads them)."""
    N, C, blocks = qkv.shape[0], S.y.shape[1], attend_blocks(pos)
    hs, shared = C // n_head, S.shared[0]
    scale = F(1.0 / math.sqrt(hs))
    run = max(b1 - b0, 1) if N == 1 else ATTEND_RUN
    for r0 in range(b0, b1, run):
        r1 = min(r0 + run, b1)
        for n in range(N):
            if r1 == blocks:
                _store_kv(S, qkv, layer, pos, n)
            _attend_run(S.part_y[n], S.part_top[n], S.part_total[n], S.att[n * n_head:(n + 1) * n_head], qkv[n],
                        S.kcache[n, layer], S.vcache[n, layer], S.kcache[0, layer], S.vcache[0, layer], shared, r0,
                        r1, pos, hs, scale)


@njit(**JIT)
def _merge_blocks(S, pos, n_head, j0, j1):
    """Items j0:j1 of the merge: item j is head j % n_head of sequence j // n_head, its
    output S.y from the blocks' partial outputs, each rescaled to the largest maximum,
    summed in block order (the bits do not depend on which task took which block)."""
    C = S.y.shape[1]
    hs, blocks = C // n_head, attend_blocks(pos)
    for j in range(j0, j1):
        n, hd = j // n_head, j % n_head
        top, total, o = S.part_top[n, hd], S.part_total[n, hd], S.y[n, hd * hs:(hd + 1) * hs]
        exp_shifted(top, blocks, row_max(top, blocks, -np.inf))  # each block's factor, in place of its maximum
        for i in range(hs):
            o[i] = 0.0
        whole = F(0)
        for b in range(blocks):
            f, part = top[b], S.part_y[n, b, hd * hs:(hd + 1) * hs]
            whole += f * total[b]
            for i in range(hs):
                o[i] += f * part[i]
        inverse = F(1) / whole
        for i in range(hs):
            o[i] *= inverse


@njit(parallel=True, **JIT)
def cached_attention(S, qkv, layer, pos, n_head, tasks):
    """Each of N sequences' query at position `pos` (qkv[n]'s q) against its cached keys
    and values of positions <= pos of layer `layer`, into S.y (N, C); stores this
    position's keys and values first. The cache is cut into blocks of ATTEND_BLOCK
    positions (flash-decoding's split): each block's softmax and weighted values on
    their own, then the blocks merged in order. The tasks split the blocks, so two
    threads each stream whole rows of their own blocks of one sequence (splitting the
    heads, each thread streaming half of every row, took 3.2 ms on 2 threads against
    2.0 ms on one, GPT-2 at 559 positions); the blocks do not depend on the tasks, so
    neither do the bits."""
    for t in prange(tasks):
        b0, b1 = _share(attend_blocks(pos), t, tasks)
        _attend_items(S, qkv, layer, pos, n_head, b0, b1)
    for t in prange(tasks):
        j0, j1 = _share(qkv.shape[0] * n_head, t, tasks)
        _merge_blocks(S, pos, n_head, j0, j1)


class DecodeWeights(NamedTuple):
    """A model's weights as the decoder reads them: each linear layer's weight float32 in
    panels (L, ceil(OC / PANEL), IC * PANEL) (`core.panel_dots.panel_form`) with empty scales
    (L, 0), or int8 as rows of outputs (L, OC, IC) with its per-output scales (L, OC);
    the embedding, which is also the logits' weight, likewise ((ceil(V / PANEL), C * PANEL) or
    (V, C) with per-row scales); the rest float32 views of the parameters."""

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
    """N sequences' key/value caches and one position's scratch."""

    kcache: np.ndarray  # (N, L, maxT, C) every layer's keys so far, per sequence
    vcache: np.ndarray  # (N, L, maxT, C) and values
    x: np.ndarray  # (N, C) the residual stream
    xn: np.ndarray  # (N, C) its LayerNorm
    mean: np.ndarray  # (N,) LayerNorm's statistics (unused after)
    rstd: np.ndarray  # (N,)
    qkv: np.ndarray  # (N, 3C)
    att: np.ndarray  # (N * n_head, maxT) attention weights, one row per sequence and head
    part_y: np.ndarray  # (N, blocks, C) each block's attention output (`cached_attention`)
    part_top: np.ndarray  # (N, n_head, blocks) and each head's largest score in the block
    part_total: np.ndarray  # (N, n_head, blocks) and the sum of its weights
    shared: np.ndarray  # (1,) int64: how many first positions every sequence's cache holds alike (one prompt)
    y: np.ndarray  # (N, C) attention output
    h: np.ndarray  # (N, 4C) MLP hidden layer
    hg: np.ndarray  # (N, 4C) after GELU
    logits: np.ndarray  # (N, V)

    @classmethod
    def create(cls, N: int, n_layer: int, n_head: int, ctx: int, C: int, V: int) -> DecodeState:
        z, blocks = np.zeros, attend_blocks(ctx - 1)
        return cls(z((N, n_layer, ctx, C), F), z((N, n_layer, ctx, C), F), z((N, C), F), z((N, C), F), z(N, F),
                   z(N, F), z((N, 3 * C), F), z((N * n_head, ctx), F), z((N, blocks, C), F),
                   z((N, n_head, blocks), F), z((N, n_head, blocks), F), z(1, np.int64), z((N, C), F),
                   z((N, 4 * C), F), z((N, 4 * C), F), z((N, V), F))


@njit(**JIT)
def _embed(W, x, tokens, pos):
    """x[n] = the embedding of tokens[n] at position `pos`: read from the decoder's copy of
    the table, which the logits read too (an int8 table's row scaled; a float32 table's
    row gathered from its panels: 768 reads once a step)."""
    C = W.wpe.shape[1]
    for n in range(tokens.shape[0]):
        p, xr = W.wpe[pos], x[n]
        if W.wte.itemsize == 1:
            e, s = W.wte[tokens[n]], W.wte_scale[tokens[n]]
            for i in range(C):
                xr[i] = F(e[i]) * s + p[i]
        else:
            for i in range(C):
                xr[i] = panel_weight(W.wte, tokens[n], i) + p[i]


@njit(**JIT)
def _store_kv(S, qkv, layer, pos, n):
    """Sequence n's key and value at `pos` of `layer` (from its qkv row) into the caches."""
    C = S.kcache.shape[3]
    k, v, row = S.kcache[n, layer, pos], S.vcache[n, layer, pos], qkv[n]
    for i in range(C):
        k[i] = row[C + i]
        v[i] = row[2 * C + i]


@njit(**JIT)
def decode_rows(W, S, tokens, pos, n_head, tasks):
    """Logits (into S.logits) for tokens[n] at position `pos` of sequence n, attending over
    that sequence's cached keys and values of positions < pos; stores this position's keys
    and values in the caches. The products and attention are parallel kernels."""
    N = tokens.shape[0]
    L = W.ln1w.shape[0]
    x, xn, qkv = S.x, S.xn, S.qkv
    _embed(W, x, tokens, pos)
    for layer in range(L):
        layernorm_forward(xn, S.mean, S.rstd, x, W.ln1w[layer], W.ln1b[layer], N)
        rows_times_weight(qkv, xn, W.qkvw[layer], W.qkvw_scale[layer], W.qkvb[layer], N, False, tasks)
        if tasks == 1:  # no parallel launch (waking a sleeping thread costs tens of microseconds)
            _attend_items(S, qkv, layer, pos, n_head, 0, attend_blocks(pos))
            _merge_blocks(S, pos, n_head, 0, N * n_head)
        else:
            cached_attention(S, qkv, layer, pos, n_head, tasks)
        rows_times_weight(x, S.y, W.attprojw[layer], W.attprojw_scale[layer], W.attprojb[layer], N, True, tasks)
        layernorm_forward(xn, S.mean, S.rstd, x, W.ln2w[layer], W.ln2b[layer], N)
        rows_times_weight(S.h, xn, W.fcw[layer], W.fcw_scale[layer], W.fcb[layer], N, False, tasks)
        gelu_forward(S.hg, S.h, N)
        rows_times_weight(x, S.hg, W.fcprojw[layer], W.fcprojw_scale[layer], W.fcprojb[layer], N, True, tasks)
    layernorm_forward(xn, S.mean, S.rstd, x, W.lnfw, W.lnfb, N)
    rows_times_weight(S.logits, xn, W.wte, W.wte_scale, W.lnfb[:0], N, False, tasks)



PIECE_BYTES = 1 << 15  # the least of a weight a region's task takes at a time (`take`)


@njit(**JIT)
def _product_in_pieces(out, x, wt, scale, bias, N, accumulate, sync, phase, tasks, gelu, hg):
    """`rows_times_weight` of a region's task (then GELU of its outputs into hg, if `gelu`):
    one task takes every output; several take pieces of them from `sync`'s work counter
    for `phase` until none are left (`core.spin_barrier.take`), so tasks that run at
    different speeds end the phase together. Which task computes an output never changes
    its arithmetic: the bits are the same on any number of tasks."""
    total = wt.shape[0]  # units: panels of outputs (float32) or rows (int8)
    xu, xs = _rounded_inputs(x, wt, N)  # once for all the pieces this task takes
    if tasks == 1:
        j0, j1 = 0, total
    else:
        least = max(1, PIECE_BYTES // (wt.shape[1] * wt.itemsize))
        j0, j1 = take(sync, phase % SLOTS, total, tasks, least)
    while j0 < total:
        _dot_units(out, x, xu, xs, wt, scale, bias, N, accumulate, j0, j1)
        if gelu:
            o0, o1 = _outputs(wt, j0, j1, out.shape[1])
            gelu_forward(hg[:, o0:o1], out[:, o0:o1], N)
        if tasks == 1:
            break
        j0, j1 = take(sync, phase % SLOTS, total, tasks, least)


@njit(**JIT)
def _end_phase(sync, phase, t, tasks):
    """The barrier that ends a product's `phase`; task 0 first clears the work counter that
    phase + 1 will take from (its last user, phase + 1 - SLOTS, ended at an earlier barrier)."""
    if t == 0:
        clear_slot(sync, (phase + 1) % SLOTS)
    barrier(sync, tasks)


@njit(parallel=True, **JIT)
def decode_rows_region(W, S, tokens, pos, n_head, tasks, sync):
    """`decode_rows` (the same bits) as one parallel region of `tasks` tasks that meet at a
    spin barrier (`core.spin_barrier`, state `sync`) after each phase, instead of a
    launch per product and attention: a launch that wakes the sleeping threads costs
    ~40 us on two threads here, and a step of GPT-2 small had 49 of them. Every task
    takes its own LayerNorm of x (768 numbers, less than a barrier), pieces of each
    product's outputs until none are left (`_product_in_pieces`), its share of
    attention's blocks of positions and then of its heads' merges (`cached_attention`).
    Every task must run at once (see `core.spin_barrier`): at most as many tasks as numba
    has threads, and never on TBB. Measured in one process on GPT-2 small (559 positions,
    quiet machine): 1 sample 21.2 -> 19.6 ms on 1 thread, 18.8 -> 16.5 ms on 2; 4 samples
    44.3 -> 42.1 and 27.7 -> 24.3 ms; taking the outputs in pieces then took 1 sample on 2
    threads from 16.1 to 15.8 ms on rows (1 thread unchanged)."""
    N = tokens.shape[0]
    L, C = W.ln1w.shape[0], W.wpe.shape[1]
    x, qkv, h = S.x, S.qkv, S.h
    for t in prange(tasks):
        xn, mean, rstd = np.empty((N, C), F), np.empty(N, F), np.empty(N, F)
        if t == 0:
            _embed(W, x, tokens, pos)
            for slot in range(SLOTS):
                clear_slot(sync, slot)
        barrier(sync, tasks)
        for layer in range(L):
            p = 4 * layer
            layernorm_forward(xn, mean, rstd, x, W.ln1w[layer], W.ln1b[layer], N)
            _product_in_pieces(qkv, xn, W.qkvw[layer], W.qkvw_scale[layer], W.qkvb[layer], N, False, sync, p, tasks,
                               False, h)
            _end_phase(sync, p, t, tasks)
            b0, b1 = _share(attend_blocks(pos), t, tasks)
            _attend_items(S, qkv, layer, pos, n_head, b0, b1)
            barrier(sync, tasks)
            j0, j1 = _share(N * n_head, t, tasks)
            _merge_blocks(S, pos, n_head, j0, j1)
            barrier(sync, tasks)
            _product_in_pieces(x, S.y, W.attprojw[layer], W.attprojw_scale[layer], W.attprojb[layer], N, True, sync,
                               p + 1, tasks, False, h)
            _end_phase(sync, p + 1, t, tasks)
            layernorm_forward(xn, mean, rstd, x, W.ln2w[layer], W.ln2b[layer], N)
            _product_in_pieces(h, xn, W.fcw[layer], W.fcw_scale[layer], W.fcb[layer], N, False, sync, p + 2, tasks,
                               True, S.hg)
            _end_phase(sync, p + 2, t, tasks)
            _product_in_pieces(x, S.hg, W.fcprojw[layer], W.fcprojw_scale[layer], W.fcprojb[layer], N, True, sync,
                               p + 3, tasks, False, h)
            _end_phase(sync, p + 3, t, tasks)
        layernorm_forward(xn, mean, rstd, x, W.lnfw, W.lnfb, N)
        _product_in_pieces(S.logits, xn, W.wte, W.wte_scale, W.lnfb[:0], N, False, sync, 4 * L, tasks, False, h)
