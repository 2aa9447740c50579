"""The optimiser kernels: the shard sum with its norm, and AdamW against PyTorch's formula
written out in float64."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.core.optimizer import adamw_update, reduce_shards

SEGMENTS = np.array([[0, 300, 1], [300, 301, 0], [301, 1000, 1], [1000, 1003, 0]], np.int64)


def reference_adamw(p, m, v, g, lr, beta1, beta2, eps, wd, t, scale):
    """torch.optim.AdamW's single-tensor step, in float64."""
    decay = np.zeros(len(p), bool)
    for lo, hi, flag in SEGMENTS:
        decay[lo:hi] = bool(flag)
    g = g * scale
    p = np.where(decay, p * (1 - lr * wd), p)
    m = m + (1 - beta1) * (g - m)
    v = v * beta2 + (1 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps
    return p - lr / (1 - beta1 ** t) * m / denom, m, v


@pytest.mark.parametrize("threads", [1, 2])
def test_adamw_follows_pytorchs_formula_over_several_steps(threads):
    rng = np.random.default_rng(0)
    n = SEGMENTS[-1, 1]
    p32 = rng.normal(0, 0.5, n).astype(np.float32)
    m32, v32 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    p64, m64, v64 = p32.astype(np.float64), np.zeros(n), np.zeros(n)
    for t in range(1, 6):
        g = rng.normal(0, 0.1, n).astype(np.float32)
        lr, scale = 1e-2 / t, 0.5 if t == 3 else 1.0
        adamw_update(p32, g, m32, v32, SEGMENTS, lr, 0.9, 0.99, 1e-8, 0.1, t, scale, threads)
        p64, m64, v64 = reference_adamw(p64, m64, v64, g.astype(np.float64), lr, 0.9, 0.99, 1e-8, 0.1, t, scale)
        np.testing.assert_allclose(m32, m64, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-7)


def test_no_decay_segments_are_not_shrunk():
    n = SEGMENTS[-1, 1]
    p = np.ones(n, np.float32)
    zeros = np.zeros(n, np.float32)
    adamw_update(p, zeros, zeros.copy(), zeros.copy(), SEGMENTS, 0.1, 0.9, 0.99, 1e-8, 0.5, 1, 1.0, 2)
    assert np.all(p[300:301] == 1) and np.all(p[1000:] == 1)
    np.testing.assert_allclose(p[:300], 0.95, rtol=1e-6)
    np.testing.assert_allclose(p[301:1000], 0.95, rtol=1e-6)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shard_sum_and_norm(shards, monkeypatch):
    rng = np.random.default_rng(shards)
    grads = rng.normal(0, 1, (shards, 10_007)).astype(np.float32)
    expected = grads[0].copy()
    for s in range(1, shards):
        expected += grads[s]  # float32, in shard order, as the kernel adds
    results = []
    for cap in ("1", "3"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", cap)
        work = grads.copy()
        results.append((reduce_shards(work), work[0].copy()))
    (sq1, sum1), (sq3, sum3) = results
    np.testing.assert_array_equal(sum1, expected)
    np.testing.assert_array_equal(sum3, expected)
    assert sq1 == sq3
    assert sq1 == pytest.approx(float((expected.astype(np.float64) ** 2).sum()), rel=1e-12)
