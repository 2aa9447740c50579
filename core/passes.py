"""Whole-model passes built from the layer kernels: forward and backward over a group of
sequences, one shard's rows through the model (training, evaluation and the sampler's
prompt pass all use it), and one-token decoding with a key/value cache.

Parameters and activations come as the named views of `core.layout` (`P.wte`,
`A.logits`); gradients have the parameters' layout (`G.wte`).

The shard pass calls the forward and the backward pass as first-class functions (and the
parallel kernel of core/workspace.py calls the shard pass so), and they call attention's
forward and backward so in turn: each is compiled once, for one explicit signature per
float type, and called through its address, so no caller links the largest functions of
the model into itself and optimises them all again. On a cold start they compile side by
side in two processes (core/precompile.py), and what calls them compiles in about a second.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import numpy as np
from numba import njit, typeof, types
from numba.core.typing import Signature

from cllm.core.config import ModelConfig
from cllm.core.kernels import (
    JIT,
    NOTRANS,
    TRANS,
    attention_backward,
    attention_forward,
    copy_rows,
    crossentropy_backward,
    crossentropy_forward,
    encoder_backward,
    encoder_forward,
    exp_shifted,
    gelu_backward,
    gelu_forward,
    gemm,
    layernorm_backward,
    layernorm_forward,
    matmul_backward,
    matmul_forward,
    row_max,
    short_attention_backward,
    short_attention_forward,
)
from cllm.core.layout import Layout, act_views, param_views


@njit(**JIT)
def keeps_probabilities(att, T):
    """Whether attention keeps the probabilities of T positions in `att` (the short
    kernels) or one log-sum-exp per query (the tiled kernels): the activations' `att`
    block is empty unless `core.layout.attention_shapes` sized it for the short ones."""
    return att.shape[3] >= T


@njit(**JIT)
def attention_forward_pass(A, l, r, T, n_head):
    """Layer l's attention over sequence r of the group (rows r*T to (r+1)*T): the short
    or the tiled kernels, as the buffers were sized."""
    rows = slice(r * T, (r + 1) * T)
    if keeps_probabilities(A.att, T):
        short_attention_forward(A.atty[l, rows], A.att[l, r], A.qkv[l, rows], n_head, T)
    else:
        attention_forward(A.atty[l, rows], A.lse[l, r], A.atttiles, A.qkv[l, rows], n_head, T)


@njit(**JIT)
def attention_backward_pass(A, l, r, T, n_head):
    """The gradient of `attention_forward_pass` into A.dqkv's rows of sequence r, given
    that of its output in A.dbranch."""
    rows = slice(r * T, (r + 1) * T)
    if keeps_probabilities(A.att, T):
        short_attention_backward(A.dqkv[rows], A.atttiles[0], A.dbranch[rows], A.qkv[l, rows], A.att[l, r], n_head,
                                 T)
    else:
        attention_backward(A.dqkv[rows], A.atttiles, A.dbranch[rows], A.qkv[l, rows], A.atty[l, rows], A.lse[l, r],
                           n_head, T)


@njit(**JIT)
def gpt_forward(P, A, tokens, T, n_head, last_only, attend):
    """Logits (R*T, V) of R sequences `tokens` (R, >=T) into A.logits, or with
    `last_only` only each sequence's last row of them (a prompt needs no more: at GPT-2's
    vocabulary the logits are a third of a long prompt's work); keeps every activation for
    backward. Row-wise work and matrix products run over all N = R*T rows at once;
    attention (`attend`: `attention_forward_pass`) runs per sequence."""
    L = P.ln1w.shape[0]
    R = tokens.shape[0]
    N = R * T
    for r in range(R):
        encoder_forward(A.encoded[r * T:(r + 1) * T], tokens[r], P.wte, P.wpe, T)
    for l in range(L):
        residual = A.encoded if l == 0 else A.res3[l - 1]
        layernorm_forward(A.ln1[l], A.ln1_mean[l], A.ln1_rstd[l], residual, P.ln1w[l], P.ln1b[l], N)
        matmul_forward(A.qkv[l], A.ln1[l], P.qkvw[l], P.qkvb[l], N, False)
        for r in range(R):
            attend(A, l, r, T, n_head)
        copy_rows(A.res2[l], residual, N)
        matmul_forward(A.res2[l], A.atty[l], P.attprojw[l], P.attprojb[l], N, True)
        layernorm_forward(A.ln2[l], A.ln2_mean[l], A.ln2_rstd[l], A.res2[l], P.ln2w[l], P.ln2b[l], N)
        matmul_forward(A.fch[l], A.ln2[l], P.fcw[l], P.fcb[l], N, False)
        gelu_forward(A.fchg[l], A.fch[l], N)
        copy_rows(A.res3[l], A.res2[l], N)
        matmul_forward(A.res3[l], A.fchg[l], P.fcprojw[l], P.fcprojb[l], N, True)
    layernorm_forward(A.lnf, A.lnf_mean, A.lnf_rstd, A.res3[L - 1], P.lnfw, P.lnfb, N)
    V, C = P.wte.shape
    if last_only:
        for r in range(R):
            last = slice((r + 1) * T - 1, (r + 1) * T)
            gemm(NOTRANS, TRANS, 1, V, C, 1.0, A.lnf[last], P.wte, 0.0, A.logits[last])
    else:
        gemm(NOTRANS, TRANS, N, V, C, 1.0, A.lnf, P.wte, 0.0, A.logits)


@njit(**JIT)
def gpt_backward(G, P, A, tokens, T, n_head, attend_backward):
    """Accumulates the gradients of R sequences into G, given dlogits in A.logits.
    A.dbranch holds, in turn, the gradient of ln_f's, ln_2's, the attention's and ln_1's
    output; A.dresidual that of the residual stream at the current depth.
    `attend_backward` is `attention_backward_pass`."""
    L = P.ln1w.shape[0]
    V, C = P.wte.shape
    R = tokens.shape[0]
    N = R * T
    dlogits, dres, dbranch = A.logits, A.dresidual, A.dbranch
    # logits = lnf @ wte^T
    gemm(TRANS, NOTRANS, V, C, N, 1.0, dlogits, A.lnf, 1.0, G.wte)
    gemm(NOTRANS, NOTRANS, N, C, V, 1.0, dlogits, P.wte, 0.0, dbranch)  # d lnf
    dres[:N] = 0.0
    layernorm_backward(dres, G.lnfw, G.lnfb, dbranch, A.res3[L - 1], A.lnf_mean, A.lnf_rstd, P.lnfw, N)
    for l in range(L - 1, -1, -1):
        residual = A.encoded if l == 0 else A.res3[l - 1]
        # res3 = res2 + gelu(ln2 @ fcw + fcb) @ fcprojw + fcprojb; dres flows through unchanged
        matmul_backward(A.dfchg, G.fcprojw[l], G.fcprojb[l], dres, A.fchg[l], P.fcprojw[l], N, False)
        gelu_backward(A.dfch, A.fch[l], A.dfchg, N)
        matmul_backward(dbranch, G.fcw[l], G.fcb[l], A.dfch, A.ln2[l], P.fcw[l], N, False)  # d ln2
        layernorm_backward(dres, G.ln2w[l], G.ln2b[l], dbranch, A.res2[l], A.ln2_mean[l], A.ln2_rstd[l],
                           P.ln2w[l], N)
        # res2 = residual + attention(ln1 @ qkvw + qkvb) @ attprojw + attprojb
        matmul_backward(dbranch, G.attprojw[l], G.attprojb[l], dres, A.atty[l], P.attprojw[l], N, False)  # d atty
        for r in range(R):
            attend_backward(A, l, r, T, n_head)
        matmul_backward(dbranch, G.qkvw[l], G.qkvb[l], A.dqkv, A.ln1[l], P.qkvw[l], N, False)  # d ln1
        layernorm_backward(dres, G.ln1w[l], G.ln1b[l], dbranch, residual, A.ln1_mean[l], A.ln1_rstd[l],
                           P.ln1w[l], N)
    for r in range(R):
        encoder_backward(G.wte, G.wpe, dres[r * T:(r + 1) * T], tokens[r], T)


def numba_array(dtype, ndim: int = 1, layout: Literal["C", "F", "A"] = "C") -> types.Array:
    return types.Array(typeof(np.dtype(dtype).type(0)), ndim, layout)


class PassSignatures(NamedTuple):
    """The one signature each pass is compiled for, for one float type."""

    attention_forward: Signature  # attention_forward_pass
    attention_backward: Signature  # attention_backward_pass
    forward: Signature  # gpt_forward
    backward: Signature  # gpt_backward


@functools.cache
def pass_signatures(dtype: np.dtype) -> PassSignatures:
    """The signatures of the attention passes, `gpt_forward` and `gpt_backward` for
    parameters of `dtype`: the named views as `shard_pass` makes them."""
    config = ModelConfig(vocab_size=2, n_layer=1, n_head=1, n_embd=1, ctx=2)

    P = typeof(Layout.params(config).views(np.zeros(Layout.params(config).size, dtype)))
    A = typeof(Layout.activations(config).views(np.zeros(Layout.activations(config).size, dtype)))
    tokens, i64 = numba_array(np.int32, 2), types.int64
    attention = types.void(A, i64, i64, i64, i64)
    return PassSignatures(attention, attention,
                          types.void(P, A, tokens, i64, i64, types.boolean, types.FunctionType(attention)),
                          types.void(P, P, A, tokens, i64, i64, types.FunctionType(attention)))


@functools.cache
def shard_pass_signature(dtype: np.dtype) -> Signature:
    """The one signature `shard_pass` is compiled for, for parameters of `dtype`."""
    s = pass_signatures(np.dtype(dtype))
    f, table, i64 = numba_array(dtype), numba_array(np.int64, 2), types.int64
    return types.void(*(types.FunctionType(sig) for sig in s), f, f, f, table, table, i64, i64,
                      numba_array(np.int32, 2), i64, i64, types.float64, types.boolean, i64, numba_array(np.float64),
                      numba_array(np.int64), numba_array(np.int64))


def compile_forward(dtype: np.dtype) -> None:
    """Compiles (or loads from the cache) attention's forward pass and the forward pass."""
    s = pass_signatures(np.dtype(dtype))
    attention_forward_pass.compile(s.attention_forward)
    gpt_forward.compile(s.forward)


def compile_backward(dtype: np.dtype) -> None:
    """Compiles (or loads from the cache) attention's backward pass and the backward pass."""
    s = pass_signatures(np.dtype(dtype))
    attention_backward_pass.compile(s.attention_backward)
    gpt_backward.compile(s.backward)


@functools.cache
def compiled_shard_pass(dtype: np.dtype) -> Signature:
    """Compiles (or loads from the cache) the passes for `dtype`; returns the shard pass's
    signature, the first-class function type callers declare."""
    compile_forward(dtype)
    compile_backward(dtype)
    signature = shard_pass_signature(np.dtype(dtype))
    shard_pass.compile(signature)
    return signature


# What shard_pass computes: logits; and the loss; and gradients; or only the logits of
# each sequence's last position.
FORWARD, LOSS, TRAIN, LAST_LOGITS = 0, 1, 2, 3


@njit(**JIT)
def shard_pass(attend, attend_backward, forward, backward, params, grads, acts, ptable, atable, n_head, group, batch,
               lo, hi, scale, zero, mode, losses, progress, stop):
    """Runs rows lo:hi of `batch` (B, T+1) through the model, `group` sequences at a time:
    forward only (FORWARD: logits left in the activations; LAST_LOGITS: only each
    sequence's last position's), with the loss (LOSS), or with
    the backward pass too (TRAIN), adding into this shard's own gradient buffer `grads`
    (zeroed first when `zero`) with its own activation buffer `acts`. losses[b] gets the
    mean loss of row b; progress[0] counts finished rows; a non-zero stop[0] ends the pass
    after its current group. `attend`, `attend_backward`, `forward` and `backward` are
    `attention_forward_pass`, `attention_backward_pass`, `gpt_forward` and `gpt_backward`
    as first-class functions."""
    T = batch.shape[1] - 1
    if zero and mode == TRAIN:
        grads[:] = 0.0
    P = param_views(params, ptable)
    G = param_views(grads, ptable)
    A = act_views(acts, atable)
    for b0 in range(lo, hi, group):
        if stop[0] != 0:
            break
        b1 = min(b0 + group, hi)
        tokens = batch[b0:b1]
        forward(P, A, tokens, T, n_head, mode == LAST_LOGITS, attend)
        if mode == LOSS or mode == TRAIN:
            for r in range(b1 - b0):
                rows = A.logits[r * T:(r + 1) * T]
                losses[b0 + r] = crossentropy_forward(rows, rows, tokens[r, 1:], T) / T
                if mode == TRAIN:
                    crossentropy_backward(rows, rows, tokens[r, 1:], scale, T)
        if mode == TRAIN:
            backward(G, P, A, tokens, T, n_head, attend_backward)
        progress[0] += b1 - b0


class DecodeBuffers(NamedTuple):
    """A decoder's key/value cache and one position's scratch."""

    kcache: np.ndarray  # (L, maxT, C) every layer's keys so far
    vcache: np.ndarray  # (L, maxT, C) and values
    x: np.ndarray  # (1, C) the residual stream
    xn: np.ndarray  # (1, C) its LayerNorm
    qkv: np.ndarray  # (1, 3C)
    att: np.ndarray  # (maxT,) one head's attention weights
    y: np.ndarray  # (1, C) attention output
    h: np.ndarray  # (1, 4C) MLP hidden layer
    hg: np.ndarray  # (1, 4C) after GELU
    logits: np.ndarray  # (1, V)

    @classmethod
    def create(cls, n_layer: int, ctx: int, C: int, V: int, dtype=np.float32) -> DecodeBuffers:
        return cls(np.zeros((n_layer, ctx, C), dtype), np.zeros((n_layer, ctx, C), dtype),
                   np.zeros((1, C), dtype), np.zeros((1, C), dtype), np.zeros((1, 3 * C), dtype),
                   np.zeros(ctx, dtype), np.zeros((1, C), dtype), np.zeros((1, 4 * C), dtype),
                   np.zeros((1, 4 * C), dtype), np.zeros((1, V), dtype))


@njit(**JIT)
def decode_step(params, ptable, n_head, D, token, pos):
    """Logits (into D.logits) for `token` at position `pos`, attending over the cached keys
    and values of positions < pos; stores this position's key and value in the caches."""
    P = param_views(params, ptable)
    L = P.ln1w.shape[0]
    C = P.wte.shape[1]
    hs = C // n_head
    scale = 1.0 / math.sqrt(hs)
    x, xn, qkv, att, y = D.x, D.xn, D.qkv, D.att, D.y
    # Compile time: one row as a run-time count rather than the literal 1 lets numba reuse
    # the training pass's compiled kernels; scratch made like x rather than from x.dtype and
    # element loops rather than slice assignments avoid compiling numba's shape-error paths.
    one = x.shape[0]
    mean = np.empty_like(x[:, 0])
    rstd = np.empty_like(x[:, 0])
    for i in range(C):
        x[0, i] = P.wte[token, i] + P.wpe[pos, i]
    for l in range(L):
        layernorm_forward(xn, mean, rstd, x, P.ln1w[l], P.ln1b[l], one)
        matmul_forward(qkv, xn, P.qkvw[l], P.qkvb[l], one, False)
        for i in range(C):
            D.kcache[l, pos, i] = qkv[0, C + i]
            D.vcache[l, pos, i] = qkv[0, 2 * C + i]
        for hd in range(n_head):
            q = qkv[0, hd * hs:(hd + 1) * hs]
            for u in range(pos + 1):
                k = D.kcache[l, u, hd * hs:(hd + 1) * hs]
                s = 0.0
                for i in range(hs):
                    s += q[i] * k[i]
                att[u] = s * scale
            total = exp_shifted(att, pos + 1, row_max(att, pos + 1, -np.inf))
            out = y[0, hd * hs:(hd + 1) * hs]
            out[:] = 0.0
            for u in range(pos + 1):
                w = att[u] / total
                vv = D.vcache[l, u, hd * hs:(hd + 1) * hs]
                for i in range(hs):
                    out[i] += w * vv[i]
        matmul_forward(x, y, P.attprojw[l], P.attprojb[l], one, True)
        layernorm_forward(xn, mean, rstd, x, P.ln2w[l], P.ln2b[l], one)
        matmul_forward(D.h, xn, P.fcw[l], P.fcb[l], one, False)
        gelu_forward(D.hg, D.h, one)
        matmul_forward(x, D.hg, P.fcprojw[l], P.fcprojb[l], one, True)
    layernorm_forward(xn, mean, rstd, x, P.lnfw, P.lnfb, one)
    x0, out = xn[0], D.logits[0]
    for v in range(P.wte.shape[0]):  # one row: dot products with each embedding
        e = P.wte[v]
        acc = 0.0
        for i in range(C):
            acc += x0[i] * e[i]
        out[v] = acc
