"""Every gradient against finite differences in float64, and float32 against float64,
through either of attention's kernel pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cllm.core.config import ModelConfig
from cllm.core.kernels import exp_shifted, fast_tanh, fast_tanh_and_grad, row_max
from cllm.core.layout import Layout
from cllm.core.model import init_params
from cllm.core.workspace import loss_and_grad
from tests.helpers import GRADIENT_CONFIG, assert_gradients_match_finite_differences

CONFIG = GRADIENT_CONFIG


def test_every_gradient_matches_finite_differences(gradient_problem, attention_kernels):
    params, batch = gradient_problem
    loss, grad = loss_and_grad(params, CONFIG, batch, n_shards=2)
    assert_gradients_match_finite_differences(params, batch, CONFIG, grad, loss)


def test_float32_kernels_agree_with_float64(gradient_problem, attention_kernels):
    params, batch = gradient_problem
    loss64, grad64 = loss_and_grad(params, CONFIG, batch)
    loss32, grad32 = loss_and_grad(params.astype(np.float32), CONFIG, batch)
    assert grad32.dtype == np.float32
    assert abs(loss32 - loss64) < 1e-5 * abs(loss64)
    assert np.abs(grad32 - grad64).max() < 1e-4 * np.abs(grad64).max()


def test_tanh_approximation_error_is_as_stated():
    x = np.linspace(-12, 12, 200001)
    approx = np.array([fast_tanh(v) for v in x[::7]])
    assert np.abs(approx - np.tanh(x[::7])).max() < 2.6e-7
    approx32 = np.array([fast_tanh(np.float32(v)) for v in x[::7]])
    assert np.abs(approx32 - np.tanh(x[::7])).max() < 2.7e-7


def test_fresh_model_loss_is_about_log_vocab():
    config = ModelConfig(vocab_size=65, n_layer=2, n_head=2, n_embd=32, ctx=16)
    params = init_params(config, seed=0)
    batch = np.random.default_rng(1).integers(0, 65, (8, 17))
    loss, _ = loss_and_grad(params, config, batch)
    assert abs(loss - math.log(65)) < 0.1


def test_loss_is_exact_cross_entropy_even_for_confident_wrong_predictions():
    """A clamped log (the first CLLM stuck at -ln(1e-10) = 23.03) cannot give these."""
    config = ModelConfig(vocab_size=5, n_layer=1, n_head=1, n_embd=4, ctx=2)
    params = init_params(config, seed=0, dtype=np.float64)
    layout = Layout.params(config)
    views = layout.named_views(params)
    # The output logits are ln_f(x) @ wte.T: make them huge and very wrong.
    views["ln_f.weight"][:] = 0.0
    views["ln_f.bias"][:] = np.array([1.0, 0, 0, 0])
    views["wte.weight"][:, 0] = np.array([0, 0, 0, 0, 60.0])
    batch = np.array([[1, 2, 3]])
    loss, _ = loss_and_grad(params, config, batch)
    expected = math.log(4 + math.exp(60.0)) - 0.0  # target logit 0, four logits 0 and one 60
    assert loss == pytest.approx(expected, rel=1e-9)
    assert loss > 50


def test_tanh_derivative_is_the_derivative_of_the_approximation():
    h = 1e-6
    for x in np.linspace(-7.8, 7.8, 157):
        numeric = (fast_tanh(x + h) - fast_tanh(x - h)) / (2 * h)
        tanh, grad = fast_tanh_and_grad(x)
        assert abs(tanh - fast_tanh(x)) < 1e-15
        assert abs(grad - numeric) < 1e-8
        assert abs(grad - (1 - np.tanh(x) ** 2)) < 2e-6


def test_row_max_is_the_maximum_in_either_precision():
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(300), -np.abs(rng.standard_normal(300)) - 1.0, np.array([-0.0, 0.0, -1e-45]),
            np.array([-np.inf, -3e38, 3e38, np.inf])]
    for dtype in (np.float32, np.float64):
        for row in rows:
            row = row.astype(dtype)
            for n in (1, len(row) // 2, len(row)):
                assert row_max(row, n, -np.inf) == row[:n].max()
                assert row_max(row, n, 1e6) == max(1e6, row[:n].max())  # the start counts as an element
        assert row_max(np.ones(3, dtype), 0, -2.5) == -2.5  # no elements: the start
        assert np.isnan(row_max(np.array([1.0, np.nan, 2.0], dtype), 3, -np.inf))  # as np.max


def test_vectorised_exp_is_accurate():
    x = np.concatenate([np.linspace(-120, 0, 100001), [-1e30, -745.0, 0.0]])
    for dtype, tol in ((np.float64, 1e-15), (np.float32, 1.2e-7)):
        row = x.astype(dtype)
        expected = np.exp(row.astype(np.float64))  # of the inputs as rounded to dtype
        total = exp_shifted(row, len(row), 0.0)
        assert np.all(np.abs(row - expected) <= tol * expected + np.finfo(dtype).tiny)
        assert total == pytest.approx(expected.sum(), rel=tol)
    shifted = np.array([1.0, 3.0, 2.0])
    exp_shifted(shifted, 2, 3.0)
    np.testing.assert_allclose(shifted, [np.exp(-2.0), 1.0, 2.0], rtol=1e-9)
