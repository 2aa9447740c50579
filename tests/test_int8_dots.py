"""int8 x int8 products (core/int8_dots.py): every instruction-set path, forced, gives the
exact integer sums of a numpy int64 reference, and the same output bits."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.core.decode_kernels import rows_times_weight
from cllm.core.int8_dots import BEST, INT8_ROWS, INTEGER_DOTS, LEVELS, OFFSET, PATHS, quantize_activations

ALL_PATHS = ("vnni", "avx2", "plain")


def path_here(path: str) -> str:
    if path not in PATHS:
        pytest.skip(f"this CPU has no {path} instructions")
    return path


def offset_and_int8(rng, N, OC, IC):
    """Random offset activations (1..255) and int8 weights (-127..127), with the extremes
    in the first rows (every activation 255 or 1 against every weight 127 or -127)."""
    xu = rng.integers(OFFSET - LEVELS, OFFSET + LEVELS + 1, (N, IC)).astype(np.uint8)
    wt = rng.integers(-LEVELS, LEVELS + 1, (OC, IC)).astype(np.int8)
    xu[0], xu[1] = OFFSET + LEVELS, OFFSET - LEVELS
    wt[0], wt[1] = LEVELS, -LEVELS
    return xu, wt


def reference(xu, wt):
    return (xu.astype(np.int64) - OFFSET) @ wt.astype(np.int64).T


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("IC", [1, 7, 31, 32, 63, 64, 65, 100, 768, 3085])
def test_each_path_gives_the_exact_integer_products(path, IC):
    """Widths below, at and past each path's vector (32 and 64 bytes), so the masked and
    the plain remainders are both met."""
    xu, wt = offset_and_int8(np.random.default_rng(IC), 3, 6, IC)
    got = np.zeros((3, 6), np.int64)
    INTEGER_DOTS[path_here(path)](got, xu, wt, 3)
    np.testing.assert_array_equal(got, reference(xu, wt))


@pytest.mark.parametrize("path", ALL_PATHS)
def test_the_largest_sums_fit_in_int32(path):
    """GPT-2's widest product (3072 inputs) at every extreme: up to 3072 * 255 * 127 in
    the VNNI path's offset sums, 3072 * 127 * 127 in the true ones."""
    xu, wt = offset_and_int8(np.random.default_rng(0), 2, 2, 3072)
    got = np.zeros((2, 2), np.int64)
    INTEGER_DOTS[path_here(path)](got, xu, wt, 2)
    np.testing.assert_array_equal(got, reference(xu, wt))
    assert got[0, 0] == 3072 * LEVELS * LEVELS and got[1, 0] == -3072 * LEVELS * LEVELS


def test_activation_rows_round_to_within_half_a_step():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2.0, (4, 50)).astype(np.float32)
    x[2] = 0.0  # an all-zero row keeps a usable scale
    xu, xs = np.empty(x.shape, np.uint8), np.empty(4, np.float32)
    quantize_activations(xu, xs, x, 4)
    q = xu.astype(np.int32) - OFFSET
    assert np.abs(q).max() <= LEVELS and xs[2] == 1 and np.all(q[2] == 0)
    assert np.all(np.abs(q * xs[:, None] - x) <= xs[:, None] / 2 * (1 + 1e-5))
    assert np.all(np.abs(q[[0, 1, 3]]).max(axis=1) == LEVELS)  # the largest value takes the whole range


@pytest.mark.parametrize("path", ALL_PATHS)
def test_each_path_scales_its_sums_to_the_same_bits(path):
    """Outputs of every path are the plain path's bits (the same integers, scaled by the
    same float code), within a rounding of the float64 scaling of the exact sums, and
    split at any output the same as in one range; accumulating adds to what is there."""
    rng = np.random.default_rng(5)
    N, OC, IC = 3, 11, 200
    xu, wt = offset_and_int8(rng, N, OC, IC)
    xs = rng.uniform(0.01, 0.1, N).astype(np.float32)
    scale = rng.uniform(0.001, 0.01, OC).astype(np.float32)
    bias = rng.normal(0, 1, OC).astype(np.float32)
    start = rng.normal(0, 1, (N, OC)).astype(np.float32)
    rows = INT8_ROWS[path_here(path)]
    got, plain = start.copy(), start.copy()
    rows(got, xu, xs, wt, scale, bias, N, True, 0, 4)
    rows(got, xu, xs, wt, scale, bias, N, True, 4, OC)
    INT8_ROWS["plain"](plain, xu, xs, wt, scale, bias, N, True, 0, OC)
    np.testing.assert_array_equal(got, plain)
    want = start + reference(xu, wt) * (xs[:, None].astype(np.float64) * scale) + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    alone = np.zeros((N, OC), np.float32)
    rows(alone, xu, xs, wt, scale, scale[:0], N, False, 0, OC)  # no bias, no accumulation
    np.testing.assert_allclose(alone, reference(xu, wt) * (xs[:, None].astype(np.float64) * scale), rtol=1e-5)


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_the_decoders_int8_product_rounds_each_row_and_runs_the_best_path(tasks):
    """`rows_times_weight` with int8 weights: each input row rounded to int8, then the
    CPU's best path, the same bits however the outputs are split among tasks."""
    rng = np.random.default_rng(7)
    N, OC, IC = 2, 13, 96
    x = rng.normal(0, 1, (N, IC)).astype(np.float32)
    wt = rng.integers(-LEVELS, LEVELS + 1, (OC, IC)).astype(np.int8)
    scale = rng.uniform(0.001, 0.01, OC).astype(np.float32)
    bias = rng.normal(0, 1, OC).astype(np.float32)
    got = np.zeros((N, OC), np.float32)
    rows_times_weight(got, x, wt, scale, bias, N, False, tasks)
    xu, xs = np.empty((N, IC), np.uint8), np.empty(N, np.float32)
    quantize_activations(xu, xs, x, N)
    want = np.zeros((N, OC), np.float32)
    INT8_ROWS[BEST](want, xu, xs, wt, scale, bias, N, False, 0, OC)
    np.testing.assert_array_equal(got, want)
