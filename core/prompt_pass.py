"""Generation's prompt pass on every core: one sequence through the model, layer by layer,
its keys and values going straight into the decoder's caches.

Training's forward pass (`core.passes.gpt_forward`) keeps every layer's activations for
the backward pass and runs its element-wise kernels and attention on the shard's one
thread. Here the pass is driven from Python, one kernel call per step (a dozen calls
per layer: microseconds against the milliseconds of each), each a numba `prange` over
the cores: the products and the row-wise kernels (LayerNorm, GELU)
over blocks of rows, each product block one BLAS call on one thread (as training's
shards run theirs), attention over heads. Every thread is numba's: threaded OpenBLAS
for the products ran them as fast, but its threads spin for a while after each call,
on the cores the next numba kernel wanted (benchmarks/RESULTS.md, "Prompt pass profile":
GELU and attention ran slower on 2 threads than on 1). It keeps one layer's activations
(a thousand tokens of GPT-2 small: 50 MB, where the training buffers held 600 MB), and
runs the same layer kernels, so its logits are the forward pass's up to rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from cllm.core import layout
from cllm.core.attention_kernels import attention_forward
from cllm.core.decode_kernels import DecodeState, DecodeWeights, rows_times_weight
from cllm.core.kernels import (
    JIT,
    copy_rows,
    encoder_forward,
    gelu_forward,
    layernorm_forward,
    matmul_forward,
)
from cllm.core.threads import parallel_threads, single_threaded_blas

ROW_BLOCK = 32  # rows per task of the row-wise kernels
MIN_BLOCK_ROWS = 64  # rows per task of the products, at least


@njit(parallel=True, **JIT)
def layernorm_rows(out, mean, rstd, inp, weight, bias, T):
    """`layernorm_forward` of rows :T, blocks of rows in parallel."""
    for b in prange((T + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = b * ROW_BLOCK, min(T, (b + 1) * ROW_BLOCK)
        layernorm_forward(out[r0:r1], mean[r0:r1], rstd[r0:r1], inp[r0:r1], weight, bias, r1 - r0)


@njit(parallel=True, **JIT)
def gelu_rows(out, inp, T):
    """`gelu_forward` of rows :T, blocks of rows in parallel."""
    for b in prange((T + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = b * ROW_BLOCK, min(T, (b + 1) * ROW_BLOCK)
        gelu_forward(out[r0:r1], inp[r0:r1], r1 - r0)


@njit(parallel=True, **JIT)
def cache_rows(kcache, vcache, qkv, T):
    """kcache[:T], vcache[:T] (one sample's cache of one layer) = the keys and values of
    qkv's rows :T, blocks of rows in parallel (numpy's two strided copies took twice as
    long)."""
    C = kcache.shape[1]
    for b in prange((T + ROW_BLOCK - 1) // ROW_BLOCK):
        r0, r1 = b * ROW_BLOCK, min(T, (b + 1) * ROW_BLOCK)
        copy_rows(kcache[r0:r1], qkv[r0:r1, C:2 * C], r1 - r0)
        copy_rows(vcache[r0:r1], qkv[r0:r1, 2 * C:], r1 - r0)


@njit(parallel=True, **JIT)
def matmul_rows(out, inp, weight, bias, T, accumulate, parts):
    """`matmul_forward` of rows :T in `parts` blocks of rows, in parallel, each block one
    BLAS call on one thread (as in training's shards); see `row_blocks`."""
    width = (T + parts - 1) // parts
    for p in prange(parts):
        r0 = min(T, p * width)
        r1 = min(T, r0 + width)
        if r1 > r0:
            matmul_forward(out[r0:r1], inp[r0:r1], weight, bias, r1 - r0, accumulate)


@njit(parallel=True, **JIT)
def attention_heads(y, qkv, heads, lse, tiles, n_head, T, first):
    """Causal attention of rows :T, one task per head: the head's q | k | v gathered into
    heads[h] (T, 3 hs), `attention_forward` (the tiled kernels) on it with the head's own
    tiles[h] and lse[h], its output put back into y's columns of the head; the output of
    the queries from `first` on only."""
    C = y.shape[1]
    hs = C // n_head
    for h in prange(n_head):
        mine = heads[h, :T]
        for t in range(T):
            for part in range(3):  # q, k, v: views indexed from 0 (`row[h * hs + i]` vectorises as a gather)
                src, dst = qkv[t, part * C + h * hs:part * C + (h + 1) * hs], mine[t, part * hs:(part + 1) * hs]
                for i in range(hs):
                    dst[i] = src[i]
        attention_forward(y[:T, h * hs:(h + 1) * hs], lse[h:h + 1], tiles[h], mine, 1, T, 0.0, 0, first)


def row_blocks(T: int, workers: int) -> int:
    """Blocks of rows the products split into: one per thread, of at least MIN_BLOCK_ROWS
    rows (one call on one thread ran 4% faster than two halves one after the other).
    The row count of a block does not change a row's sums in OpenBLAS's kernels (GPT-2
    small at 559 and 1000 tokens: the same logits bits on 1 and 2 threads); a short
    prompt is one block on any thread count."""
    return max(1, min(workers, T // MIN_BLOCK_ROWS))


class PromptBuffers(NamedTuple):
    """One layer's activations for a prompt of up to T tokens, and attention's scratch."""

    x: np.ndarray  # (T, C) the residual stream
    ln: np.ndarray  # (T, C) a LayerNorm's output
    mean: np.ndarray  # (T,)
    rstd: np.ndarray  # (T,)
    qkv: np.ndarray  # (T, 3C)
    y: np.ndarray  # (T, C) attention's output
    h: np.ndarray  # (T, 4C) the MLP's hidden layer
    hg: np.ndarray  # (T, 4C) after GELU
    heads: np.ndarray  # (n_head, T, 3 hs) each head's q | k | v
    lse: np.ndarray  # (n_head, T)
    tiles: np.ndarray  # (n_head, 2, Br, Bc)

    @classmethod
    def create(cls, T: int, C: int, n_head: int) -> PromptBuffers:
        f, z = np.float32, np.empty
        hs = C // n_head
        tile = (layout.ATT_QUERY_BLOCK, layout.ATT_KEY_BLOCK)
        return cls(z((T, C), f), z((T, C), f), z(T, f), z(T, f), z((T, 3 * C), f), z((T, C), f), z((T, 4 * C), f),
                   z((T, 4 * C), f), z((n_head, T, 3 * hs), f), z((n_head, T), f),
                   z((n_head, 2) + tile, f))


Clock = Callable[[str, float], None]


def prompt_pass(W: DecodeWeights | None, P, S: DecodeState, samples: range, tokens: np.ndarray, n_head: int,
                threads: int = 0, buffers: PromptBuffers | None = None, clock: Clock | None = None) -> np.ndarray:
    """Runs `tokens` (T <= ctx) through the model (P: `core.layout.Params` views), writes
    every layer's keys and values into the caches of `samples` in S, and returns the last
    position's logits (V,): through W, the decoder's int8 weights, or for float32 (W None)
    from the model's own embedding P.wte, so that the first token waits for none of the
    decoder's copies (`core.sampler.Decoder.weights`). `buffers`
    (for at least T tokens; made here if None) are reused by a caller that keeps them:
    memory touched for the first time costs page faults. `clock`, where given, is told each step's kind
    and seconds (benchmarks/bench_prompt_profile.py)."""
    T = len(tokens)
    C = P.wte.shape[1]
    B = buffers if buffers is not None else PromptBuffers.create(T, C, n_head)
    x, ln = B.x, B.ln

    def run(kind: str, kernel, *args) -> None:
        if clock is None:
            kernel(*args)
        else:
            t0 = time.perf_counter()
            kernel(*args)
            clock(kind, time.perf_counter() - t0)

    def caches(layer: int) -> None:
        for n in samples:
            cache_rows(S.kcache[n, layer], S.vcache[n, layer], B.qkv, T)

    logits = np.empty((1, P.wte.shape[0]), np.float32)
    last_layer = P.ln1w.shape[0] - 1
    with parallel_threads(T, threads) as workers, single_threaded_blas():
        run("encoder", encoder_forward, x, tokens, P.wte, P.wpe, T)
        for layer in range(last_layer + 1):
            # the rows whose output a later step reads: all but in the last layer, where
            # only the last position's goes on to the logits (its keys and values are
            # every position's): GPT-2 small at 559 tokens, 1/12 of the pass
            r0 = T - 1 if layer == last_layer else 0
            n, blocks = T - r0, row_blocks(T - r0, workers)
            # the residual stream takes each block's output in place (training keeps both
            # for its backward pass, and copied one to the other)
            y, h, hg, xs = B.y[r0:], B.h[r0:], B.hg[r0:], x[r0:]
            run("layernorm", layernorm_rows, ln, B.mean, B.rstd, x, P.ln1w[layer], P.ln1b[layer], T)
            if r0 == 0:
                run("qkv product", matmul_rows, B.qkv, ln, P.qkvw[layer], P.qkvb[layer], T, False, blocks)
            else:  # keys and values of every row, the query of rows r0: only
                run("qkv product", matmul_rows, B.qkv[:, C:], ln, P.qkvw[layer][:, C:], P.qkvb[layer][C:], T, False,
                    row_blocks(T, workers))
                run("qkv product", matmul_rows, B.qkv[r0:, :C], ln[r0:], P.qkvw[layer][:, :C], P.qkvb[layer][:C], n,
                    False, blocks)
            run("key/value caches", caches, layer)
            run("attention", attention_heads, B.y, B.qkv, B.heads, B.lse, B.tiles, n_head, T, r0)
            run("attention projection", matmul_rows, xs, y, P.attprojw[layer], P.attprojb[layer], n, True, blocks)
            run("layernorm", layernorm_rows, ln, B.mean, B.rstd, xs, P.ln2w[layer], P.ln2b[layer], n)
            run("MLP up product", matmul_rows, h, ln, P.fcw[layer], P.fcb[layer], n, False, blocks)
            run("GELU", gelu_rows, hg, h, n)
            run("MLP down product", matmul_rows, xs, hg, P.fcprojw[layer], P.fcprojb[layer], n, True, blocks)
        last = x[T - 1:T]
        run("layernorm", layernorm_rows, ln[:1], B.mean, B.rstd, last, P.lnfw, P.lnfb, 1)
        if W is None:  # one BLAS product on one thread (any thread count: the same bits)
            run("logits (last position)", np.dot, P.wte, ln[0], logits[0])
        else:
            run("logits (last position)", rows_times_weight, logits, ln[:1], W.wte, W.wte_scale, P.lnfb[:0], 1,
                False, workers)
    return logits[0]
