"""The float32 decoder's products in panels (core/panel_dots.py): the layout, the sums
against float64, and each row's bits alone and among others."""

import numpy as np
import pytest

from cllm.core.panel_dots import ALIGN, PANEL, panel_form, panel_rows, panel_weight

F = np.float32
EMPTY = np.empty(0, F)


@pytest.mark.parametrize("oc", [5, PANEL, 2 * PANEL + 17])
def test_a_panel_form_holds_every_weight_where_panel_weight_reads_it(oc):
    rng = np.random.default_rng(oc)
    w = rng.standard_normal((2, oc, 12)).astype(F)  # two layers, rows of outputs
    wp = panel_form(w)
    assert wp.shape == (2, -(-oc // PANEL), 12 * PANEL) and wp.ctypes.data % ALIGN == 0
    for layer in range(2):
        got = np.array([[panel_weight(wp[layer], j, i) for i in range(12)] for j in range(oc)])
        np.testing.assert_array_equal(got, w[layer])
    assert np.count_nonzero(wp) == np.count_nonzero(w)  # the padding is zero


@pytest.mark.parametrize("accumulate", [False, True])
def test_panel_products_are_the_sums_and_a_row_has_the_same_bits_alone_and_among_others(accumulate):
    rng = np.random.default_rng(1)
    oc, ic, N = 3 * PANEL - 7, 96, 6  # a partial last panel; rows in blocks of 4 and 2
    w = rng.standard_normal((oc, ic)).astype(F)
    x = rng.standard_normal((N, ic)).astype(F)
    bias = rng.standard_normal(oc).astype(F)
    start = rng.standard_normal((N, oc)).astype(F)
    wp = panel_form(w)
    together = start.copy()
    panel_rows(together, x, wp, EMPTY, bias, N, accumulate, 0, wp.shape[0])
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + bias + (start if accumulate else 0)
    np.testing.assert_allclose(together, expected, rtol=1e-5, atol=1e-4)
    for n in range(N):
        alone = start[n:n + 1].copy()
        panel_rows(alone, x[n:n + 1], wp, EMPTY, bias, 1, accumulate, 0, 1)  # the first panel,
        panel_rows(alone, x[n:n + 1], wp, EMPTY, bias, 1, accumulate, 1, wp.shape[0])  # then the rest
        np.testing.assert_array_equal(alone[0], together[n])
