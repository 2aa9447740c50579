"""Attention's two kernel pairs: the tiled pair (FlashAttention-2's formulation) against
the short pair, which keeps every head's probabilities as CLLM did before tiles; which
pair the buffers pick; and the tiled pair's memory."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.core.attention_kernels import (
    BLOCK_ROWS,
    KEYS_AS_COLUMNS,
    KEYS_AS_DEPTH,
    QUERIES_AS_DEPTH,
    WHOLE,
    attention_backward,
    attention_forward,
    causal_area,
    product,
    short_attention_backward,
    short_attention_forward,
)
from cllm.core.config import ModelConfig
from cllm.core.layout import ATT_KEY_BLOCK, ATT_QUERY_BLOCK, SHORT_ATTENTION_MAX_CTX, Layout
from cllm.core.passes import LOSS
from cllm.core.workspace import Workspace

C, NH = 128, 4  # the benchmarks' width and heads: head size 32
PRODUCTION_TILE = (ATT_QUERY_BLOCK, ATT_KEY_BLOCK)


def attention_inputs(T: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """q | k | v (T, 3C) and an output gradient (T, C); queries scaled up so that the
    softmax rows are far from uniform."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((T, 3 * C))
    qkv[:, :C] *= 3.0
    return qkv.astype(dtype), rng.standard_normal((T, C)).astype(dtype)


def short_pass(qkv: np.ndarray, dout: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Output and dqkv of the kernels that keep the probabilities."""
    out, att, dqkv = np.zeros((T, C), qkv.dtype), np.zeros((NH, T, T), qkv.dtype), np.zeros((T, 3 * C), qkv.dtype)
    short_attention_forward(out, att, np.zeros((T, T), qkv.dtype), qkv, NH, T)
    short_attention_backward(dqkv, np.zeros((T, T), qkv.dtype), dout, qkv, att, NH, T)
    return out, dqkv


def tiled_pass(qkv: np.ndarray, dout: np.ndarray, T: int, tile: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Output and dqkv of the tiled kernels; buffers start as garbage, as they are in
    a workspace between passes."""
    dtype = qkv.dtype
    out, lse, dqkv = np.full((T, C), 7.0, dtype), np.full((NH, T), 7.0, dtype), np.full((T, 3 * C), 7.0, dtype)
    tiles = np.full((2, min(tile[0], T), min(tile[1], T)), 7.0, dtype)
    attention_forward(out, lse, tiles, qkv, NH, T)
    attention_backward(dqkv, tiles, dout, qkv, out, lse, NH, T)
    return out, dqkv


def worst_relative_errors(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> dict:
    """Largest error of the output and of the q, k and v gradients, each relative to the
    largest entry of that tensor."""
    (out, dqkv), (out_want, dqkv_want) = got, want
    parts = {"out": (out, out_want)}
    for i, name in enumerate(("dq", "dk", "dv")):
        parts[name] = (dqkv[:, i * C:(i + 1) * C], dqkv_want[:, i * C:(i + 1) * C])
    return {name: float(np.abs(a - b).max() / np.abs(b).max()) for name, (a, b) in parts.items()}


# Context lengths of the benchmark sweep and awkward ones; the production tile and small
# tiles (more key blocks than query blocks and the reverse, neither dividing T).
CASES = [(T, PRODUCTION_TILE) for T in (2, 5, 64, 128, 256, 300, 512, 1024)] + [
    (5, (2, 3)), (100, (16, 24)), (100, (32, 8)), (257, (64, 64)), (1024, (64, 512))]


@pytest.mark.parametrize("T, tile", CASES)
def test_tiled_attention_agrees_with_the_kept_probabilities_in_float32(T, tile):
    qkv, dout = attention_inputs(T, np.float32)
    errors = worst_relative_errors(tiled_pass(qkv, dout, T, tile), short_pass(qkv, dout, T))
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("T, tile", [(5, (2, 3)), (100, (32, 8)), (300, PRODUCTION_TILE)])
def test_tiled_attention_is_the_same_arithmetic_in_float64(T, tile):
    qkv, dout = attention_inputs(T, np.float64, seed=1)
    errors = worst_relative_errors(tiled_pass(qkv, dout, T, tile), short_pass(qkv, dout, T))
    assert max(errors.values()) < 1e-13, errors


@pytest.mark.parametrize("T, tile, first", [(300, PRODUCTION_TILE, 299), (300, PRODUCTION_TILE, 130),
                                            (100, (32, 8), 41), (5, (2, 3), 0)])
def test_the_queries_from_a_position_on_get_the_bits_of_the_whole_pass(T, tile, first):
    """`first`: the forward pass of the queries from there on (the prompt pass's last
    layer: the last query) gives their rows of the whole pass, bit for bit, and leaves
    the rows before it as they were."""
    qkv, _ = attention_inputs(T, np.float32, seed=2)
    outs = []
    for start in (0, first):
        out, lse = np.full((T, C), 7.0, np.float32), np.full((NH, T), 7.0, np.float32)
        attention_forward(out, lse, np.full((2, min(tile[0], T), min(tile[1], T)), 7.0, np.float32), qkv, NH, T,
                          0.0, 0, start)
        outs.append((out, lse))
    (whole, whole_lse), (part, part_lse) = outs
    np.testing.assert_array_equal(part[first:], whole[first:])
    np.testing.assert_array_equal(part_lse[:, first:], whole_lse[:, first:])
    assert (part[:first] == 7.0).all() and (part_lse[:, :first] == 7.0).all()


def test_one_position_attends_to_itself_only():
    """T = 1: the output is the value and the query and key get no gradient (to the
    rounding of dP - <dO, O>, which the short pair gets exactly zero)."""
    qkv, dout = attention_inputs(1, np.float32)
    out, dqkv = tiled_pass(qkv, dout, 1, PRODUCTION_TILE)
    np.testing.assert_array_equal(out, qkv[:, 2 * C:])
    assert np.abs(dqkv[:, :2 * C]).max() < 1e-6 * np.abs(dqkv[:, 2 * C:]).max()


def test_the_context_length_picks_the_kernels_and_the_tiled_buffers_grow_as_t():
    def blocks(ctx):
        config = ModelConfig(vocab_size=65, n_layer=4, n_head=NH, n_embd=C, ctx=ctx)
        return Layout.activations(config).shapes

    short, tiled = blocks(SHORT_ATTENTION_MAX_CTX), blocks(SHORT_ATTENTION_MAX_CTX + 1)
    assert short["att"] == (4, 1, NH, SHORT_ATTENTION_MAX_CTX, SHORT_ATTENTION_MAX_CTX) and short["lse"][-1] == 0
    assert tiled["att"][-1] == 0 and tiled["lse"] == (4, 1, NH, SHORT_ATTENTION_MAX_CTX + 1)
    assert blocks(1024)["atttiles"] == blocks(2048)["atttiles"] == (2, ATT_QUERY_BLOCK, ATT_KEY_BLOCK)


def test_a_workspace_past_the_crossover_runs_the_tiled_kernels():
    config = ModelConfig(vocab_size=5, n_layer=1, n_head=2, n_embd=8, ctx=SHORT_ATTENTION_MAX_CTX + 1)
    ws = Workspace.create(config, 1, 1)
    ws.acts[:] = np.nan
    batch = np.random.default_rng(0).integers(0, 5, (1, config.ctx + 1))
    params = np.random.default_rng(1).normal(0, 0.5, ws.params_layout.size).astype(np.float32)
    assert np.isfinite(ws.run(params, batch, LOSS)).all()
    assert np.isfinite(ws.views().lse).all() and ws.views().att.size == 0


@pytest.mark.parametrize("T, tile", [(1024, PRODUCTION_TILE), (300, PRODUCTION_TILE), (100, (32, 8)), (5, (2, 3)),
                                     (257, (64, 64)), (1024, (64, 512))])
def test_the_tiles_compute_the_causal_triangle_and_little_above_it(T, tile):
    """The scores the tiled pair computes: every (query, key) with key <= query, and
    above the diagonal at most one block of BLOCK_ROWS queries' triangle per block."""
    causal = T * (T + 1) // 2
    masked = causal_area(T, min(tile[0], T), min(tile[1], T)) - causal
    assert 0 <= masked <= -(-T // BLOCK_ROWS) * BLOCK_ROWS * (BLOCK_ROWS - 1) // 2
    if T == 1024:
        assert masked < 0.01 * causal


def causal_rows(mode: int, rows: int, width: int, depth: int, diag: int) -> list[tuple[int, int, int]]:
    """For each row of `product`'s output: the columns it must get and the depth range
    [p0, p1) the sum may be limited to (the rest of A is zero under the mask)."""
    out = []
    for i in range(rows):
        last = (i // BLOCK_ROWS + 1) * BLOCK_ROWS + diag  # the block's limit
        w, p0, p1 = width, 0, depth
        if mode == KEYS_AS_COLUMNS:
            w = max(0, min(width, i + diag + 1))  # the row's own keys (the block may compute more)
        elif mode == KEYS_AS_DEPTH:
            p1 = max(0, min(depth, last))
        elif mode == QUERIES_AS_DEPTH:
            p0 = min(depth, max(0, (i // BLOCK_ROWS) * BLOCK_ROWS - diag))
        out.append((w, p0, p1))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [WHOLE, KEYS_AS_COLUMNS, KEYS_AS_DEPTH, QUERIES_AS_DEPTH])
@pytest.mark.parametrize("rows, width, depth, diag", [(128, 128, 32, 0), (37, 70, 19, 5), (8, 32, 64, 0),
                                                      (3, 1, 0, 0), (21, 33, 40, -9), (130, 64, 128, 128)])
def test_the_product_kernel_computes_its_block_of_a_product(dtype, mode, rows, width, depth, diag):
    """`product` against numpy on strided views, A and A^T, overwriting and accumulating:
    every entry it must compute (within the causal limit of its mode) is right, and
    nothing outside C[:rows, :width] is touched."""
    rng = np.random.default_rng(rows + width + depth)
    for transposed in (False, True):
        for accumulate in (False, True):
            a_full = rng.standard_normal((depth + 3, rows + 5) if transposed else (rows + 3, depth + 5)).astype(dtype)
            A = a_full[1:depth + 1, 2:rows + 2] if transposed else a_full[1:rows + 1, 2:depth + 2]
            B = rng.standard_normal((depth + 2, width + 7)).astype(dtype)[1:depth + 1, 3:width + 3]
            C_full = rng.standard_normal((rows + 4, width + 9)).astype(dtype)
            before = C_full.copy()
            product(C_full[2:rows + 2, 4:width + 4], A, B, rows, width, depth, 0.5, accumulate, transposed, mode, diag)
            op = A.T if transposed else A
            tolerance = 1e-5 if dtype == np.float32 else 1e-12
            for i, (w, p0, p1) in enumerate(causal_rows(mode, rows, width, depth, diag)):
                want = 0.5 * op[i, p0:p1] @ B[p0:p1, :w] + (before[i + 2, 4:w + 4] if accumulate else 0.0)
                np.testing.assert_allclose(C_full[i + 2, 4:w + 4], want, rtol=tolerance, atol=tolerance)
            outside = np.ones(C_full.shape, bool)
            outside[2:rows + 2, 4:width + 4] = False
            assert np.array_equal(C_full[outside], before[outside])
