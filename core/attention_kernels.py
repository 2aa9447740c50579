"""Causal self-attention's kernels, heads side by side inside q | k | v.

Two formulations of the same arithmetic. The tiled pair (FlashAttention-2's) never holds
a T x T matrix: blocks of queries meet blocks of keys in a (Br, Bc) tile, tiles above the
diagonal are skipped, the softmax runs online (a running max and sum per query), and the
backward pass recomputes each tile's probabilities from the one log-sum-exp per query
the forward pass kept. The short pair keeps every head's probabilities (T x T) for the
backward pass instead: at short contexts they fit in cache and recomputing them costs
more than it saves. core/layout.py sizes the buffers, and so picks the pair.

The element-wise helpers (the vectorised exp and max, dropout's counter-based masks) and
the BLAS call are core/kernels.py's, shared with the other layers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cllm.core.kernels import (
    JIT,
    KEEP_BITS,
    NOTRANS,
    TRANS,
    _exp_reduced,
    dropout_row,
    exp_shifted,
    gemm,
    keep_threshold,
    row_max,
    stream_key,
)


@njit(inline="always", **JIT)
def _head(x, h, hs, T):
    """Head h's columns [h*hs, (h+1)*hs) of rows :T."""
    return x[:T, h * hs:(h + 1) * hs]


@njit(inline="always", **JIT)
def _causal_width(q, k0, width):
    """How many of the `width` keys from k0 on query position q sees: 0 to width."""
    return max(0, min(width, q - k0 + 1))


# Diagonal strips: the tile on a query block's diagonal, where its later queries see keys
# its earlier ones must not, is cut into strips of this many queries, each meeting only
# the keys up to its last query. A 128-query block then computes four masked triangles
# of 32 x 31 / 2 scores instead of one of 128 x 127 / 2: at ctx 1024, 3% more scores
# than the causal mask keeps instead of 12% (measured at ctx 1024 on (128, 128) tiles: 5%
# faster than whole diagonal tiles, the strips' small products running at about 65% of
# a whole tile's speed; strips of 16 and 64 tie with 32).
DIAGONAL_STRIP = 32


@njit(**JIT)
def _block_tiles(spans, q0, br, Bc):
    """The tiles of query block [q0, q0 + br), in key order, into spans[i] = (first query,
    queries, first key, keys); returns how many. Keys before q0, which every query of the
    block sees, come in (br, Bc) tiles; the diagonal [q0, q0 + br) in strips of
    DIAGONAL_STRIP queries against the keys from q0 to each strip's last query."""
    n = 0
    for k0 in range(0, q0, Bc):
        spans[n, 0], spans[n, 1], spans[n, 2], spans[n, 3] = q0, br, k0, min(Bc, q0 - k0)
        n += 1
    for q1 in range(q0, q0 + br, DIAGONAL_STRIP):
        rows = min(DIAGONAL_STRIP, q0 + br - q1)
        for k0 in range(q0, q1 + rows, Bc):
            spans[n, 0], spans[n, 1], spans[n, 2], spans[n, 3] = q1, rows, k0, min(Bc, q1 + rows - k0)
            n += 1
    return n


@njit(inline="always", **JIT)
def _tile_spans(T, Br, Bc):
    """Room for `_block_tiles` of any block."""
    return np.empty(((T + Bc - 1) // Bc + ((Br + DIAGONAL_STRIP - 1) // DIAGONAL_STRIP) * ((Br + Bc - 1) // Bc), 4),
                    np.int64)


@njit(inline="always", **JIT)
def _zero_rows(x, rows):
    """x[:rows] = 0 (a loop: numba's slice assignment costs compile time)."""
    for r in range(rows):
        row = x[r]
        for i in range(row.shape[0]):
            row[i] = 0.0


@njit(inline="always", **JIT)
def _scale_rows(x, rows, factors):
    """x[r] *= factors[r] for r < rows."""
    for r in range(rows):
        row, f = x[r], x.dtype.type(factors[r])
        for i in range(row.shape[0]):
            row[i] *= f


@njit(inline="always", **JIT)
def _online_softmax_tile(s, br, bc, q0, k0, running_max, running_sum, rescale):
    """Scores s[:br, :bc] (queries q0.., keys k0..) -> exp(s - running max), zero where a
    key lies after its query; updates each row's running max and sum and gives the factor
    rescale[r] = exp(old max - new max) the rows' partial outputs must take."""
    for r in range(br):
        row = s[r]
        n = _causal_width(q0 + r, k0, bc)
        rescale[r] = 1.0
        if n > 0:
            mx = row_max(row, n, running_max[r])
            total = exp_shifted(row, n, mx)
            rescale[r] = math.exp(running_max[r] - mx)
            running_sum[r] = running_sum[r] * rescale[r] + total
            running_max[r] = mx
        for u in range(n, bc):
            row[u] = 0.0


@njit(**JIT)
def attention_forward(out, lse, tiles, qkv, n_head, T, drop_p=0.0, key=0):
    # out (T, C); lse (NH, maxT) each query's log-sum-exp of its scores, for backward;
    # tiles (2, Br, Bc) scratch, the tile shape (the first is used); qkv (T, 3C) with
    # columns q | k | v, head h at [h*hs, (h+1)*hs) inside each; drop_p > 0: dropout on the
    # probabilities, head h's masks from stream_key(key, h) (the sum and lse are those
    # of the probabilities before dropout, as they must be)
    C = out.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    Br, Bc = tiles.shape[1], tiles.shape[2]
    s = tiles[0]
    running_max = np.empty(Br, out.dtype)
    running_sum = np.empty(Br, np.float64)
    factors = np.empty(Br, np.float64)
    spans = _tile_spans(T, Br, Bc)
    threshold, drop_scale = keep_threshold(drop_p), out.dtype.type(1.0 / (1.0 - drop_p))
    for h in range(n_head):
        q, k, v, o = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T), _head(qkv, 2 * n_head + h, hs, T), \
            _head(out, h, hs, T)
        head_key = stream_key(np.uint64(key), h)
        for q0 in range(0, T, Br):
            br = min(Br, T - q0)
            for r in range(br):
                running_max[r] = -np.inf
                running_sum[r] = 0.0
            oi = o[q0:q0 + br]
            _zero_rows(oi, br)
            for i in range(_block_tiles(spans, q0, br, Bc)):
                qa, rows, ka, keys = spans[i, 0], spans[i, 1], spans[i, 2], spans[i, 3]
                r0, oa = qa - q0, o[qa:qa + rows]
                gemm(NOTRANS, TRANS, rows, keys, hs, scale, q[qa:qa + rows], k[ka:ka + keys], 0.0, s)
                _online_softmax_tile(s, rows, keys, qa, ka, running_max[r0:], running_sum[r0:], factors)
                if drop_p > 0.0:
                    for r in range(rows):
                        dropout_row(s[r], _causal_width(qa + r, ka, keys), stream_key(head_key, qa + r), ka, threshold,
                                    drop_scale)
                _scale_rows(oa, rows, factors)
                gemm(NOTRANS, NOTRANS, rows, hs, keys, 1.0, s, v[ka:ka + keys], 1.0, oa)
            for r in range(br):
                factors[r] = 1.0 / running_sum[r]
                lse[h, q0 + r] = running_max[r] + math.log(running_sum[r])
            _scale_rows(oi, br, factors)


@njit(inline="always", **JIT)
def _tile_score_grads(p, dp, br, bc, q0, k0, lse, delta, scale, drop_p, head_key):
    """Recomputed probabilities p = exp(s - lse) from the scores p[:br, :bc], and from
    dp = dO V^T the score gradients dp <- p * (dp - delta) * scale, in one pass over each
    row; both zero where a key lies after its query. float64 tiles take the exact exp,
    as in exp_shifted. With dropout (drop_p > 0) the mask m (0 or 1 / (1 - drop_p)) is
    drawn again: p <- p * m, what multiplied V, and dp <- p * (m * dp - delta) * scale."""
    scale_t = p.dtype.type(scale)
    if drop_p > 0.0:
        _tile_score_grads_dropout(p, dp, br, bc, q0, k0, lse, delta, scale_t, keep_threshold(drop_p),
                                  p.dtype.type(1.0 / (1.0 - drop_p)), head_key)
        return
    for r in range(br):
        prow, dprow = p[r], dp[r]
        n = _causal_width(q0 + r, k0, bc)
        shift, d = lse[q0 + r], delta[r]
        if p.itemsize == 8:
            for u in range(n):
                e = math.exp(prow[u] - shift)
                prow[u] = e
                dprow[u] = e * (dprow[u] - d) * scale_t
        else:
            for u in range(n):
                e = _exp_reduced(prow[u] - shift)
                prow[u] = e
                dprow[u] = e * (dprow[u] - d) * scale_t
        for u in range(n, bc):
            prow[u] = 0.0
            dprow[u] = 0.0


@njit(inline="always", **JIT)
def _tile_score_grads_dropout(p, dp, br, bc, q0, k0, lse, delta, scale_t, threshold, drop_scale, head_key):
    """`_tile_score_grads` under dropout."""
    zero = drop_scale - drop_scale
    for r in range(br):
        prow, dprow = p[r], dp[r]
        n = _causal_width(q0 + r, k0, bc)
        shift, d = lse[q0 + r], delta[r]
        row_key = stream_key(head_key, q0 + r)
        for u in range(n):
            e = math.exp(prow[u] - shift) if p.itemsize == 8 else _exp_reduced(prow[u] - shift)
            m = drop_scale if (stream_key(row_key, k0 + u) >> KEEP_BITS) >= threshold else zero
            prow[u] = e * m
            dprow[u] = e * (m * dprow[u] - d) * scale_t
        for u in range(n, bc):
            prow[u] = 0.0
            dprow[u] = 0.0


@njit(inline="always", **JIT)
def _row_dots(out, a, b, rows):
    """out[r] = <a[r], b[r]> for r < rows, summed in float64."""
    for r in range(rows):
        x, y = a[r], b[r]
        acc = 0.0
        for i in range(x.shape[0]):
            acc += x[i] * y[i]
        out[r] = acc


@njit(**JIT)
def attention_backward(dqkv, tiles, dout, qkv, out, lse, n_head, T, drop_p=0.0, key=0):
    # dqkv (T, 3C) overwritten; tiles (2, Br, Bc) scratch; dout, out (T, C): the output's
    # gradient and the output; qkv (T, 3C); lse (NH, maxT) from the forward pass; drop_p,
    # key as given to it. Under dropout <dO, O> is still <dP, P> of each query: O = (P*M) V.
    C = dout.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    Br, Bc = tiles.shape[1], tiles.shape[2]
    p, dp = tiles[0], tiles[1]
    delta = np.empty(Br, dout.dtype)
    spans = _tile_spans(T, Br, Bc)
    _zero_rows(dqkv, T)
    for h in range(n_head):
        q, k, v = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T), _head(qkv, 2 * n_head + h, hs, T)
        dq, dk, dv = _head(dqkv, h, hs, T), _head(dqkv, n_head + h, hs, T), _head(dqkv, 2 * n_head + h, hs, T)
        do, o = _head(dout, h, hs, T), _head(out, h, hs, T)
        head_key = stream_key(np.uint64(key), h)
        for q0 in range(0, T, Br):
            br = min(Br, T - q0)
            _row_dots(delta, do[q0:q0 + br], o[q0:q0 + br], br)  # <dO, O> = <dP, P> of each query
            for i in range(_block_tiles(spans, q0, br, Bc)):
                qa, rows, ka, keys = spans[i, 0], spans[i, 1], spans[i, 2], spans[i, 3]
                qi, dqi, doi = q[qa:qa + rows], dq[qa:qa + rows], do[qa:qa + rows]
                kj, vj, dkj, dvj = k[ka:ka + keys], v[ka:ka + keys], dk[ka:ka + keys], dv[ka:ka + keys]
                gemm(NOTRANS, TRANS, rows, keys, hs, scale, qi, kj, 0.0, p)  # S
                gemm(NOTRANS, TRANS, rows, keys, hs, 1.0, doi, vj, 0.0, dp)  # dP = dO V^T
                _tile_score_grads(p, dp, rows, keys, qa, ka, lse[h], delta[qa - q0:], scale, drop_p, head_key)
                gemm(TRANS, NOTRANS, keys, hs, rows, 1.0, p, doi, 1.0, dvj)  # dv += P^T dO
                gemm(NOTRANS, NOTRANS, rows, hs, keys, 1.0, dp, kj, 1.0, dqi)  # dq += dS K
                gemm(TRANS, NOTRANS, keys, hs, rows, 1.0, dp, qi, 1.0, dkj)  # dk += dS^T Q


@njit(**JIT)
def short_attention_forward(out, att, scratch, qkv, n_head, T, drop_p=0.0, key=0):
    # out (T, C); att (NH, maxT, maxT) softmax probabilities (zero above the diagonal),
    # before dropout; scratch (>=T, >=T): with drop_p > 0 one head's probabilities after
    # it; qkv (T, 3C), drop_p and key as for attention_forward
    C = out.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    for h in range(n_head):
        q, k, v = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T), _head(qkv, 2 * n_head + h, hs, T)
        a = att[h]
        gemm(NOTRANS, TRANS, T, T, hs, scale, q, k, 0.0, a)
        for t in range(T):
            row = a[t]
            mx = row_max(row, t + 1, -np.inf)
            total = exp_shifted(row, t + 1, mx)
            inv = row.dtype.type(1.0 / total)
            for u in range(t + 1):
                row[u] *= inv
            for u in range(t + 1, T):
                row[u] = 0.0
        if drop_p > 0.0:
            _dropped_probabilities(scratch, a, T, stream_key(np.uint64(key), h), drop_p)
            gemm(NOTRANS, NOTRANS, T, hs, T, 1.0, scratch, v, 0.0, _head(out, h, hs, T))
        else:
            gemm(NOTRANS, NOTRANS, T, hs, T, 1.0, a, v, 0.0, _head(out, h, hs, T))


@njit(inline="always", **JIT)
def _dropped_probabilities(out, att, T, head_key, p):
    """out[:T, :T] <- one head's probabilities att after dropout (query t's masks from
    stream_key(head_key, t), entry u for key u: the tiled kernels' draws)."""
    threshold, drop_scale = keep_threshold(p), out.dtype.type(1.0 / (1.0 - p))
    for t in range(T):
        row, src = out[t], att[t]
        for u in range(T):
            row[u] = src[u]
        dropout_row(row, t + 1, stream_key(head_key, t), 0, threshold, drop_scale)


@njit(**JIT)
def short_attention_backward(dqkv, datt, dout, qkv, att, n_head, T, drop_p=0.0, key=0):
    # dqkv (T, 3C) overwritten; datt (maxT, maxT) scratch; dout (T, C); att from the forward
    # pass; drop_p and key as given to it, the masks drawn again
    C = dout.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    for h in range(n_head):
        q, k, v = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T), _head(qkv, 2 * n_head + h, hs, T)
        dq, dk, dv = _head(dqkv, h, hs, T), _head(dqkv, n_head + h, hs, T), _head(dqkv, 2 * n_head + h, hs, T)
        do = _head(dout, h, hs, T)
        a = att[h]
        head_key = stream_key(np.uint64(key), h)
        threshold, drop_scale = keep_threshold(drop_p), a.dtype.type(1.0 / (1.0 - drop_p))
        if drop_p > 0.0:  # dv = (P M)^T dO
            _dropped_probabilities(datt, a, T, head_key, drop_p)
            gemm(TRANS, NOTRANS, T, hs, T, 1.0, datt, do, 0.0, dv)
        else:
            gemm(TRANS, NOTRANS, T, hs, T, 1.0, a, do, 0.0, dv)   # dv = P^T dO
        gemm(NOTRANS, TRANS, T, T, hs, 1.0, do, v, 0.0, datt)     # dP = dO V^T
        for t in range(T):                                        # dS = P * (dP - <dP, P>)
            p, dp = a[t], datt[t]
            if drop_p > 0.0:  # the gradient of P before dropout: dP M
                dropout_row(dp, t + 1, stream_key(head_key, t), 0, threshold, drop_scale)
            dot = 0.0
            for u in range(t + 1):
                dot += p[u] * dp[u]
            dot, scale_t = p.dtype.type(dot), p.dtype.type(scale)
            for u in range(t + 1):
                dp[u] = p[u] * (dp[u] - dot) * scale_t
            for u in range(t + 1, T):
                dp[u] = 0.0
        gemm(NOTRANS, NOTRANS, T, hs, T, 1.0, datt, k, 0.0, dq)   # dq = dS K
        gemm(TRANS, NOTRANS, T, hs, T, 1.0, datt, q, 0.0, dk)     # dk = dS^T Q
