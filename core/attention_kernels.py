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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cllm.core.cpu_features import FEATURES, multiply_add
from cllm.core.kernels import (
    JIT,
    KEEP_BITS,
    _exp_reduced,
    dropout_row,
    exp_shifted,
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


# ----------------------------------------------------------------------------------
# the products: a register-blocked micro-kernel instead of a BLAS call per tile
#
# Attention's products are small (a tile: 128 x 128 by the head size, 32 or 64) and
# causal. A BLAS call packs both operands on every call and computes whole rectangles;
# this kernel reads them where they lie and computes BLOCK_ROWS rows of the output at a
# time, each block only as wide (or as deep) as the causal mask lets it, so the diagonal
# costs a sliver instead of a masked triangle. Its inner loop keeps BLOCK_ROWS x
# BLOCK_VECTORS vectors of the output in registers (16 of 16 floats with AVX-512: all but
# a few of the 32 registers), and per step of the sum broadcasts one value of each of
# A's rows and loads BLOCK_VECTORS vectors of a row of B. Written as LLVM IR through
# numba's intrinsic: numba's loops would keep the block in memory.

_AVX512 = "avx512f" in FEATURES  # of numba's target: core/cpu_features.py
VECTOR_BYTES = 64 if _AVX512 else 32  # a register's width in bytes
BLOCK_ROWS = 8 if _AVX512 else 4  # rows of the output per block: BLOCK_ROWS x BLOCK_VECTORS registers
BLOCK_VECTORS = 2  # vectors of the output per row of a block


def _splat(builder, value, vty):
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count))


@intrinsic
def _product_block(typingctx, c, ldc, a, sai, sap, b, ldb, rows, width, depth, alpha, accumulate):
    """C[i, :width] = alpha * sum_p A[i, p] B[p, :width] (+ C[i, :width] when `accumulate`),
    i < rows <= BLOCK_ROWS, p < depth, width <= BLOCK_VECTORS vectors: c, a, b are the
    addresses of C[0, 0], A[0, 0], B[0, 0] (element type alpha's: float32 or float64),
    A's element (i, p) at a + i * sai + p * sap (so A^T is strides swapped), ldc and ldb
    the row strides, all in elements."""
    if not isinstance(alpha, types.Float):
        return None
    sig = types.void(c, ldc, a, sai, sap, b, ldb, rows, width, depth, alpha, accumulate)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        c, ldc, a, sai, sap, b, ldb, rows, width, depth = (
            context.cast(builder, v, t, types.intp) for v, t in zip(args[:10], signature.args[:10], strict=True))
        alpha = args[10]
        accumulate = context.cast(builder, args[11], signature.args[11], types.boolean)
        fty = alpha.type
        bits = 32 if isinstance(fty, ir.FloatType) else 64
        lanes = VECTOR_BYTES * 8 // bits
        vty, mty = ir.VectorType(fty, lanes), ir.VectorType(ir.IntType(1), lanes)
        suffix = f"v{lanes}f{bits}"
        module = builder.module
        fma = cgutils.get_or_insert_function(module, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.{suffix}")
        load = cgutils.get_or_insert_function(
            module, ir.FunctionType(vty, [ir.PointerType(), ir.IntType(32), mty, vty]), f"llvm.masked.load.{suffix}.p0")
        store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [vty, ir.PointerType(), ir.IntType(32), mty]),
            f"llvm.masked.store.{suffix}.p0")
        align = ir.Constant(ir.IntType(32), bits // 8)
        zero = ir.Constant(vty, None)
        fptr = ir.PointerType(fty)
        cp, ap, bp = (builder.inttoptr(x, fptr) for x in (c, a, b))
        lane = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
        columns = [builder.icmp_signed("<", lane, _splat(builder, builder.sub(width, ir.Constant(i64, j * lanes)),
                                                          ir.VectorType(i64, lanes)))
                   for j in range(BLOCK_VECTORS)]
        last = builder.sub(rows, ir.Constant(i64, 1))
        a_rows, row_in = [], []
        for i in range(BLOCK_ROWS):  # rows past `rows` read the last row again and store nothing
            inside = builder.icmp_signed("<", ir.Constant(i64, i), rows)
            row_in.append(inside)
            a_rows.append(builder.gep(ap, [builder.mul(builder.select(inside, ir.Constant(i64, i), last), sai)]))
        entry = builder.basic_block
        header = builder.append_basic_block("block.header")
        body = builder.append_basic_block("block.body")
        done = builder.append_basic_block("block.done")
        builder.branch(header)
        builder.position_at_end(header)
        p = builder.phi(i64)
        p.add_incoming(ir.Constant(i64, 0), entry)
        sums = []
        for _ in range(BLOCK_ROWS * BLOCK_VECTORS):
            phi = builder.phi(vty)
            phi.add_incoming(zero, entry)
            sums.append(phi)
        builder.cbranch(builder.icmp_signed("<", p, depth), body, done)
        builder.position_at_end(body)
        b_row = builder.gep(bp, [builder.mul(p, ldb)])
        bv = [builder.call(load, [builder.gep(b_row, [ir.Constant(i64, j * lanes)]), align, columns[j], zero])
              for j in range(BLOCK_VECTORS)]
        a_col = builder.mul(p, sap)
        updated = []
        for i in range(BLOCK_ROWS):
            av = _splat(builder, builder.load(builder.gep(a_rows[i], [a_col])), vty)
            updated += [multiply_add(builder, fma, av, bv[j], sums[i * BLOCK_VECTORS + j])
                        for j in range(BLOCK_VECTORS)]
        p.add_incoming(builder.add(p, ir.Constant(i64, 1)), body)
        for phi, value in zip(sums, updated, strict=True):
            phi.add_incoming(value, body)
        builder.branch(header)
        builder.position_at_end(done)
        av = _splat(builder, alpha, vty)
        keep = _splat(builder, accumulate, mty)
        for i in range(BLOCK_ROWS):
            c_row = builder.gep(cp, [builder.mul(ir.Constant(i64, i), ldc)])
            inside = _splat(builder, row_in[i], mty)
            for j in range(BLOCK_VECTORS):
                where = builder.gep(c_row, [ir.Constant(i64, j * lanes)])
                mask = builder.and_(columns[j], inside)
                old = builder.call(load, [where, align, builder.and_(mask, keep), zero])
                value = builder.fadd(builder.fmul(sums[i * BLOCK_VECTORS + j], av), old)
                builder.call(store, [value, where, align, mask])
        return context.get_dummy_value()
    return sig, codegen


# How `product` limits each block of rows to the causal triangle; diag = the first query's
# position minus the first key's (query i sees key u when u <= i + diag).
WHOLE, KEYS_AS_COLUMNS, KEYS_AS_DEPTH, QUERIES_AS_DEPTH = 0, 1, 2, 3


@njit(**JIT)
def product(C, A, B, rows, width, depth, alpha, accumulate, a_transposed, causal, diag):
    """C[:rows, :width] = alpha * op(A)[:rows, :depth] @ B[:depth, :width] (+ C when
    `accumulate`), op(A) = A^T when `a_transposed`; C, A, B 2-D views with unit inner
    stride. `causal` says which part of each block of BLOCK_ROWS rows may be left out
    because the causal mask zeroes it (the caller's softmax zeroes or has zeroed it):
    WHOLE nothing; KEYS_AS_COLUMNS: rows are queries, columns keys, so row block i0 needs
    the columns up to i0 + BLOCK_ROWS + diag; KEYS_AS_DEPTH: rows queries, the sum over
    keys (A holds probabilities, zero past the diagonal): the depth up to the same;
    QUERIES_AS_DEPTH: rows keys, the sum over queries: row block i0 needs the depth from
    i0 - diag on. Rows and columns left out of C are not written."""
    isz = C.itemsize
    chunk = BLOCK_VECTORS * (VECTOR_BYTES // isz)
    ldc, lda, ldb = C.strides[0] // isz, A.strides[0] // isz, B.strides[0] // isz
    sai, sap = (1, lda) if a_transposed else (lda, 1)
    scale = C.dtype.type(alpha)
    c0, a0, b0 = C.ctypes.data, A.ctypes.data, B.ctypes.data
    for i0 in range(0, rows, BLOCK_ROWS):
        r = min(BLOCK_ROWS, rows - i0)
        w, p0, p1 = width, 0, depth
        if causal == KEYS_AS_COLUMNS:
            w = max(0, min(width, i0 + BLOCK_ROWS + diag))
        elif causal == KEYS_AS_DEPTH:
            p1 = max(0, min(depth, i0 + BLOCK_ROWS + diag))
        elif causal == QUERIES_AS_DEPTH:
            p0 = min(depth, max(0, i0 - diag))
        for j0 in range(0, w, chunk):
            _product_block(c0 + (i0 * ldc + j0) * isz, ldc,  # type: ignore[call-arg]  # mypy counts typingctx
                           a0 + (i0 * sai + p0 * sap) * isz, sai, sap, b0 + (p0 * ldb + j0) * isz, ldb,
                           r, w - j0, p1 - p0, scale, accumulate)


@njit(inline="always", **JIT)
def _transposed(x, rows):
    """x[:rows]^T, a new (columns, rows) array: a head's keys or values laid out so that
    `product` reads a row of B per key."""
    out = np.empty((x.shape[1], rows), x.dtype)
    for t in range(rows):
        row = x[t]
        for i in range(x.shape[1]):
            out[i, t] = row[i]
    return out


def causal_area(T: int, Br: int, Bc: int) -> int:
    """Query x key pairs whose scores the tiled pair computes for one head of T positions
    on (Br, Bc) tiles: each block of BLOCK_ROWS queries as far as its last query sees."""
    area = 0
    for q0 in range(0, T, Br):
        br = min(Br, T - q0)
        for k0 in range(0, q0 + br, Bc):
            keys = min(Bc, q0 + br - k0)
            for i0 in range(0, br, BLOCK_ROWS):
                area += min(BLOCK_ROWS, br - i0) * max(0, min(keys, i0 + BLOCK_ROWS + q0 - k0))
    return area


@njit(inline="always", **JIT)
def _zero_rows(x, rows):
    """x[:rows] = 0 (a loop: numba's slice assignment costs compile time)."""
    for r in range(rows):
        row = x[r]
        for i in range(row.shape[0]):
            row[i] = 0.0


@njit(inline="always", **JIT)
def _scale_rows(x, rows, factors):
    """x[r] *= factors[r] for r < rows; a row whose factor is 1 (its running max did not
    move: most tiles of a long sequence) is left as it is, the same bits."""
    for r in range(rows):
        row, f = x[r], x.dtype.type(factors[r])
        if f != 1:
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
def attention_forward(out, lse, tiles, qkv, n_head, T, drop_p=0.0, key=0, first=0):
    # out (T, C); lse (NH, maxT) each query's log-sum-exp of its scores, for backward;
    # tiles (2, Br, Bc) scratch, the tile shape (the first is used); qkv (T, 3C) with
    # columns q | k | v, head h at [h*hs, (h+1)*hs) inside each; drop_p > 0: dropout on the
    # probabilities, head h's masks from stream_key(key, h) (the sum and lse are those
    # of the probabilities before dropout, as they must be); first: only the queries from
    # this position on, over every key they see (out's and lse's rows before it are left
    # as they were; each query's arithmetic does not depend on the others: the same bits)
    C = out.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    Br, Bc = tiles.shape[1], tiles.shape[2]
    s = tiles[0]
    running_max = np.empty(Br, out.dtype)
    running_sum = np.empty(Br, np.float64)
    factors = np.empty(Br, np.float64)
    threshold, drop_scale = keep_threshold(drop_p), out.dtype.type(1.0 / (1.0 - drop_p))
    for h in range(n_head):
        q, v, o = _head(qkv, h, hs, T), _head(qkv, 2 * n_head + h, hs, T), _head(out, h, hs, T)
        kt = _transposed(_head(qkv, n_head + h, hs, T), T)
        head_key = stream_key(np.uint64(key), h)
        for q0 in range(first, T, Br):
            br = min(Br, T - q0)
            for r in range(br):
                running_max[r] = -np.inf
                running_sum[r] = 0.0
            qi, oi = q[q0:q0 + br], o[q0:q0 + br]
            _zero_rows(oi, br)
            for k0 in range(0, q0 + br, Bc):
                keys = min(Bc, q0 + br - k0)
                product(s, qi, kt[:, k0:], br, keys, hs, scale, False, False, KEYS_AS_COLUMNS, q0 - k0)
                _online_softmax_tile(s, br, keys, q0, k0, running_max, running_sum, factors)
                if drop_p > 0.0:
                    for r in range(br):
                        dropout_row(s[r], _causal_width(q0 + r, k0, keys), stream_key(head_key, q0 + r), k0, threshold,
                                    drop_scale)
                _scale_rows(oi, br, factors)
                product(oi, s, v[k0:], br, hs, keys, 1.0, True, False, KEYS_AS_DEPTH, q0 - k0)
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
    _zero_rows(dqkv, T)
    for h in range(n_head):
        q, k = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T)
        dq, dk, dv = _head(dqkv, h, hs, T), _head(dqkv, n_head + h, hs, T), _head(dqkv, 2 * n_head + h, hs, T)
        do, o = _head(dout, h, hs, T), _head(out, h, hs, T)
        kt, vt = _transposed(k, T), _transposed(_head(qkv, 2 * n_head + h, hs, T), T)
        head_key = stream_key(np.uint64(key), h)
        for q0 in range(0, T, Br):
            br = min(Br, T - q0)
            qi, dqi, doi = q[q0:q0 + br], dq[q0:q0 + br], do[q0:q0 + br]
            _row_dots(delta, doi, o[q0:q0 + br], br)  # <dO, O> = <dP, P> of each query
            for k0 in range(0, q0 + br, Bc):
                keys, diag = min(Bc, q0 + br - k0), q0 - k0
                product(p, qi, kt[:, k0:], br, keys, hs, scale, False, False, KEYS_AS_COLUMNS, diag)  # S
                product(dp, doi, vt[:, k0:], br, keys, hs, 1.0, False, False, KEYS_AS_COLUMNS, diag)  # dP = dO V^T
                _tile_score_grads(p, dp, br, keys, q0, k0, lse[h], delta, scale, drop_p, head_key)
                product(dv[k0:], p, doi, keys, hs, br, 1.0, True, True, QUERIES_AS_DEPTH, diag)  # dv += P^T dO
                product(dqi, dp, k[k0:], br, hs, keys, 1.0, True, False, KEYS_AS_DEPTH, diag)  # dq += dS K
                product(dk[k0:], dp, qi, keys, hs, br, 1.0, True, True, QUERIES_AS_DEPTH, diag)  # dk += dS^T Q


@njit(**JIT)
def short_attention_forward(out, att, scratch, qkv, n_head, T, drop_p=0.0, key=0):
    # out (T, C); att (NH, maxT, maxT) softmax probabilities (zero above the diagonal),
    # before dropout; scratch (>=T, >=T): with drop_p > 0 one head's probabilities after
    # it; qkv (T, 3C), drop_p and key as for attention_forward
    C = out.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    for h in range(n_head):
        q, v = _head(qkv, h, hs, T), _head(qkv, 2 * n_head + h, hs, T)
        kt = _transposed(_head(qkv, n_head + h, hs, T), T)
        a = att[h]
        product(a, q, kt, T, T, hs, scale, False, False, KEYS_AS_COLUMNS, 0)
        for t in range(T):
            row = a[t]
            mx = row_max(row, t + 1, -np.inf)
            total = exp_shifted(row, t + 1, mx)
            inv = row.dtype.type(1.0 / total)
            for u in range(t + 1):
                row[u] *= inv
            for u in range(t + 1, T):
                row[u] = 0.0
        probs = a
        if drop_p > 0.0:
            _dropped_probabilities(scratch, a, T, stream_key(np.uint64(key), h), drop_p)
            probs = scratch
        product(_head(out, h, hs, T), probs, v, T, hs, T, 1.0, False, False, KEYS_AS_DEPTH, 0)


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
        q, k = _head(qkv, h, hs, T), _head(qkv, n_head + h, hs, T)
        dq, dk, dv = _head(dqkv, h, hs, T), _head(dqkv, n_head + h, hs, T), _head(dqkv, 2 * n_head + h, hs, T)
        vt = _transposed(_head(qkv, 2 * n_head + h, hs, T), T)
        do = _head(dout, h, hs, T)
        a = att[h]
        head_key = stream_key(np.uint64(key), h)
        threshold, drop_scale = keep_threshold(drop_p), a.dtype.type(1.0 / (1.0 - drop_p))
        if drop_p > 0.0:  # dv = (P M)^T dO
            _dropped_probabilities(datt, a, T, head_key, drop_p)
            product(dv, datt, do, T, hs, T, 1.0, False, True, QUERIES_AS_DEPTH, 0)
        else:
            product(dv, a, do, T, hs, T, 1.0, False, True, QUERIES_AS_DEPTH, 0)  # dv = P^T dO
        product(datt, do, vt, T, T, hs, 1.0, False, False, KEYS_AS_COLUMNS, 0)  # dP = dO V^T
        for t in range(T):                                                    # dS = P * (dP - <dP, P>)
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
        product(dq, datt, k, T, hs, T, 1.0, False, False, KEYS_AS_DEPTH, 0)  # dq = dS K
        product(dk, datt, q, T, hs, T, 1.0, False, True, QUERIES_AS_DEPTH, 0)  # dk = dS^T Q
