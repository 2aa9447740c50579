"""Whole-model passes built from the layer kernels: forward and backward over a group of
sequences, and one shard's rows through the model (training, evaluation and the
sampler's prompt pass all use it). One-token decoding is core/decode_kernels.py's.

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
from typing import Literal, NamedTuple

import numpy as np
from numba import njit, typeof, types
from numba.core.typing import Signature

from cllm.core.attention_kernels import (
    attention_backward,
    attention_forward,
    short_attention_backward,
    short_attention_forward,
)
from cllm.core.config import ModelConfig
from cllm.core.kernels import (
    ATTENTION_OUT,
    ATTENTION_PROBS,
    EMBEDDING,
    JIT,
    MLP_OUT,
    NO_DROPOUT,
    NOTRANS,
    TRANS,
    Dropout,
    add_rows,
    bias_gelu_forward,
    copy_rows,
    crossentropy_backward,
    crossentropy_forward,
    dropout_rows,
    encoder_backward,
    encoder_forward,
    gelu_backward_bias,
    gemm,
    layernorm_backward,
    layernorm_forward,
    matmul_backward,
    matmul_backward_products,
    matmul_forward,
    matmul_product,
    site_key,
)
from cllm.core.layout import Layout, act_views, param_views


@njit(**JIT)
def keeps_probabilities(att, T):
    """Whether attention keeps the probabilities of T positions in `att` (the short
    kernels) or one log-sum-exp per query (the tiled kernels): the activations' `att`
    block is empty unless `core.layout.attention_shapes` sized it for the short ones."""
    return att.shape[3] >= T


@njit(**JIT)
def attention_forward_pass(A, l, r, T, n_head, D):
    """Layer l's attention over sequence r of the group (rows r*T to (r+1)*T): the short
    or the tiled kernels, as the buffers were sized; dropout on the probabilities as D says."""
    rows = slice(r * T, (r + 1) * T)
    key = site_key(D, r, l, ATTENTION_PROBS)
    if keeps_probabilities(A.att, T):
        short_attention_forward(A.atty[l, rows], A.att[l, r], A.atttiles[0], A.qkv[l, rows], n_head, T, D.attn, key)
    else:
        attention_forward(A.atty[l, rows], A.lse[l, r], A.atttiles, A.qkv[l, rows], n_head, T, D.attn, key)


@njit(**JIT)
def attention_backward_pass(A, l, r, T, n_head, D):
    """The gradient of `attention_forward_pass` into A.dqkv's rows of sequence r, given
    that of its output in A.dbranch."""
    rows = slice(r * T, (r + 1) * T)
    key = site_key(D, r, l, ATTENTION_PROBS)
    if keeps_probabilities(A.att, T):
        short_attention_backward(A.dqkv[rows], A.atttiles[0], A.dbranch[rows], A.qkv[l, rows], A.att[l, r], n_head,
                                 T, D.attn, key)
    else:
        attention_backward(A.dqkv[rows], A.atttiles, A.dbranch[rows], A.qkv[l, rows], A.atty[l, rows], A.lse[l, r],
                           n_head, T, D.attn, key)


@njit(**JIT)
def projection_forward(out, residual, inp, weight, bias, scratch, D, layer, site, R, T):
    """A residual branch's projection added onto the residual stream: out = residual +
    dropout(inp @ weight + bias) for R sequences of T rows; without dropout the product
    accumulates straight onto out. `scratch` (>= R*T rows) holds the branch under dropout."""
    N = R * T
    if D.resid > 0.0:
        matmul_forward(scratch, inp, weight, bias, N, False)
        for r in range(R):
            dropout_rows(scratch[r * T:(r + 1) * T], T, site_key(D, r, layer, site), D.resid)
        add_rows(out, residual, scratch, N)
    else:
        copy_rows(out, residual, N)
        matmul_forward(out, inp, weight, bias, N, True)


@njit(**JIT)
def projection_backward(dinp, dweight, dbias, dout, inp, weight, scratch, D, layer, site, R, T):
    """The gradient of `projection_forward`'s branch, given dout, that of out: the
    projection's, through the same masks (in `scratch`) under dropout."""
    N = R * T
    if D.resid > 0.0:
        copy_rows(scratch, dout, N)
        for r in range(R):
            dropout_rows(scratch[r * T:(r + 1) * T], T, site_key(D, r, layer, site), D.resid)
        matmul_backward(dinp, dweight, dbias, scratch, inp, weight, N, False)
    else:
        matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, False)


@njit(**JIT)
def gpt_forward(P, A, tokens, T, n_head, last_only, attend, D):
    """Logits (R*T, V) of R sequences `tokens` (R, >=T) into A.logits, or with
    `last_only` only each sequence's last row of them (a prompt needs no more: at GPT-2's
    vocabulary the logits are a third of a long prompt's work); keeps every activation for
    backward. Row-wise work and matrix products run over all N = R*T rows at once;
    attention (`attend`: `attention_forward_pass`) runs per sequence. Dropout as GPT-2
    applies it, D saying the rates and the masks' keys (`Dropout`): on the embeddings, the
    attention probabilities and both residual branches (A.dbranch holds a branch)."""
    L = P.ln1w.shape[0]
    R = tokens.shape[0]
    N = R * T
    for r in range(R):
        encoder_forward(A.encoded[r * T:(r + 1) * T], tokens[r], P.wte, P.wpe, T)
        if D.embd > 0.0:
            dropout_rows(A.encoded[r * T:(r + 1) * T], T, site_key(D, r, 0, EMBEDDING), D.embd)
    for l in range(L):
        residual = A.encoded if l == 0 else A.res3[l - 1]
        layernorm_forward(A.ln1[l], A.ln1_mean[l], A.ln1_rstd[l], residual, P.ln1w[l], P.ln1b[l], N)
        matmul_forward(A.qkv[l], A.ln1[l], P.qkvw[l], P.qkvb[l], N, False)
        for r in range(R):
            attend(A, l, r, T, n_head, D)
        projection_forward(A.res2[l], residual, A.atty[l], P.attprojw[l], P.attprojb[l], A.dbranch, D, l,
                           ATTENTION_OUT, R, T)
        layernorm_forward(A.ln2[l], A.ln2_mean[l], A.ln2_rstd[l], A.res2[l], P.ln2w[l], P.ln2b[l], N)
        matmul_product(A.fch[l], A.ln2[l], P.fcw[l], N, False)
        bias_gelu_forward(A.fchg[l], A.fch[l], P.fcb[l], N)
        projection_forward(A.res3[l], A.res2[l], A.fchg[l], P.fcprojw[l], P.fcprojb[l], A.dbranch, D, l, MLP_OUT,
                           R, T)
    layernorm_forward(A.lnf, A.lnf_mean, A.lnf_rstd, A.res3[L - 1], P.lnfw, P.lnfb, N)
    V, C = P.wte.shape
    if last_only:
        for r in range(R):
            last = slice((r + 1) * T - 1, (r + 1) * T)
            gemm(NOTRANS, TRANS, 1, V, C, 1.0, A.lnf[last], P.wte, 0.0, A.logits[last])
    else:
        gemm(NOTRANS, TRANS, N, V, C, 1.0, A.lnf, P.wte, 0.0, A.logits)


@njit(**JIT)
def gpt_backward(G, P, A, tokens, T, n_head, attend_backward, D):
    """Accumulates the gradients of R sequences into G, given dlogits in A.logits.
    A.dbranch holds, in turn, the gradient of ln_f's, ln_2's, the attention's and ln_1's
    output; A.dresidual that of the residual stream at the current depth.
    `attend_backward` is `attention_backward_pass`; D the forward pass's dropout, whose
    masks are drawn again (A.dbranch and A.dfch's first columns hold masked gradients)."""
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
        projection_backward(A.dfchg, G.fcprojw[l], G.fcprojb[l], dres, A.fchg[l], P.fcprojw[l], dbranch, D, l, MLP_OUT,
                            R, T)
        gelu_backward_bias(A.dfch, G.fcb[l], A.fch[l], A.dfchg, N)
        matmul_backward_products(dbranch, G.fcw[l], A.dfch, A.ln2[l], P.fcw[l], N, False)  # d ln2
        layernorm_backward(dres, G.ln2w[l], G.ln2b[l], dbranch, A.res2[l], A.ln2_mean[l], A.ln2_rstd[l],
                           P.ln2w[l], N)
        # res2 = residual + attention(ln1 @ qkvw + qkvb) @ attprojw + attprojb
        projection_backward(dbranch, G.attprojw[l], G.attprojb[l], dres, A.atty[l], P.attprojw[l],  # d atty
                            A.dfch[:, :C], D, l, ATTENTION_OUT, R, T)
        for r in range(R):
            attend_backward(A, l, r, T, n_head, D)
        matmul_backward(dbranch, G.qkvw[l], G.qkvb[l], A.dqkv, A.ln1[l], P.qkvw[l], N, False)  # d ln1
        layernorm_backward(dres, G.ln1w[l], G.ln1b[l], dbranch, residual, A.ln1_mean[l], A.ln1_rstd[l],
                           P.ln1w[l], N)
    for r in range(R):
        if D.embd > 0.0:
            dropout_rows(dres[r * T:(r + 1) * T], T, site_key(D, r, 0, EMBEDDING), D.embd)
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
    tokens, i64, D = numba_array(np.int32, 2), types.int64, typeof(NO_DROPOUT)
    attention = types.void(A, i64, i64, i64, i64, D)
    return PassSignatures(attention, attention,
                          types.void(P, A, tokens, i64, i64, types.boolean, types.FunctionType(attention), D),
                          types.void(P, P, A, tokens, i64, i64, types.FunctionType(attention), D))


@functools.cache
def shard_pass_signature(dtype: np.dtype) -> Signature:
    """The one signature `shard_pass` is compiled for, for parameters of `dtype`."""
    s = pass_signatures(np.dtype(dtype))
    f, table, i64 = numba_array(dtype), numba_array(np.int64, 2), types.int64
    return types.void(*(types.FunctionType(sig) for sig in s), f, f, f, table, table, i64, i64,
                      numba_array(np.int32, 2), i64, i64, types.float64, types.boolean, i64, numba_array(np.float64),
                      numba_array(np.int64), numba_array(np.int64), typeof(NO_DROPOUT))


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
               lo, hi, scale, zero, mode, losses, progress, stop, dropout):
    """Runs rows lo:hi of `batch` (B, T+1) through the model, `group` sequences at a time:
    forward only (FORWARD: logits left in the activations; LAST_LOGITS: only each
    sequence's last position's), with the loss (LOSS), or with
    the backward pass too (TRAIN), adding into this shard's own gradient buffer `grads`
    (zeroed first when `zero`) with its own activation buffer `acts`. losses[b] gets the
    mean loss of row b; progress[0] counts finished rows; a non-zero stop[0] ends the pass
    after its current group. `attend`, `attend_backward`, `forward` and `backward` are
    `attention_forward_pass`, `attention_backward_pass`, `gpt_forward` and `gpt_backward`
    as first-class functions. `dropout` (a `Dropout`) keys its masks to batch row 0:
    row b's masks are the same whichever shard and group runs it."""
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
        D = Dropout(dropout.embd, dropout.attn, dropout.resid, dropout.seed, dropout.step, dropout.first_row + b0)
        forward(P, A, tokens, T, n_head, mode == LAST_LOGITS, attend, D)
        if mode == LOSS or mode == TRAIN:
            for r in range(b1 - b0):
                rows = A.logits[r * T:(r + 1) * T]
                losses[b0 + r] = crossentropy_forward(rows, rows, tokens[r, 1:], T) / T
                if mode == TRAIN:
                    crossentropy_backward(rows, rows, tokens[r, 1:], scale, T)
        if mode == TRAIN:
            backward(G, P, A, tokens, T, n_head, attend_backward, D)
        progress[0] += b1 - b0
