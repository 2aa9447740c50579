"""benchmarks/flops.py: the FLOPs per token behind every "% of peak" of a training step."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.flops import training_flops

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, ctx=1024)


def causal_products_by_count(L: int, C: int, T: int) -> int:
    """Q K^T and P V, 2 FLOPs a multiply-add, forward and backward (3x), query t meeting
    keys 0..t: summed over the positions of a sequence, per token."""
    keys = np.arange(1, T + 1)
    return int(3 * L * 2 * 2 * C * keys.sum()) // T


@pytest.mark.parametrize(("cfg", "vocab"), [(dict(n_layer=4, n_head=4, n_embd=128, ctx=64), 65),
                                            (GPT2_SMALL, 50257)])
def test_useful_flops_count_the_head_and_the_causal_triangle(cfg, vocab):
    L, C, T = cfg["n_layer"], cfg["n_embd"], cfg["ctx"]
    matrices = L * (3 * C * C + C * C + 4 * C * C + 4 * C * C) + vocab * C  # qkv, projection, MLP, the tied head
    assert training_flops(cfg, vocab).useful == 6 * matrices + causal_products_by_count(L, C, T)


def test_the_head_is_most_of_the_difference_at_gpt2_small():
    flops = training_flops(GPT2_SMALL, 50257)
    head = 6 * 50257 * 768
    assert 0.28 < head / flops.useful < 0.30


def test_nanogpt_count_is_estimate_mfu_over_the_pytorch_model():
    """nanoGPT's estimate_mfu: 6 x (parameters but wpe; the tied wte counted once) + 12 L C T,
    over benchmarks/torch_gpt.py's model, which ties the head as nanoGPT does."""
    pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
    from benchmarks.torch_gpt import Config, TorchGPT

    cfg = dict(n_layer=2, n_head=4, n_embd=64, ctx=32)
    model = TorchGPT(Config(97, **cfg))
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    assert training_flops(cfg, 97).nanogpt == 6 * n + 12 * 2 * 64 * 32
