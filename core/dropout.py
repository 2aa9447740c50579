"""Every dropout mask a training pass draws, as arrays: the test hook through which other
implementations (PyTorch, in tests/test_dropout.py) apply CLLM's very masks."""

from __future__ import annotations

import numpy as np

from cllm.core.config import ModelConfig
from cllm.core.kernels import (
    ATTENTION_OUT,
    ATTENTION_PROBS,
    EMBEDDING,
    MLP_OUT,
    Dropout,
    dropout_mask,
    site_key,
    stream_key,
)


def _mask(out: np.ndarray, key: int, p: float) -> np.ndarray:
    dropout_mask(out, np.uint64(key), p)
    return out


def dropout_masks(config: ModelConfig, dropout: Dropout, rows: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """The masks (0 or 1 / (1 - p), p the site's rate) of `rows` sequences of config.ctx positions, the
    first of them row `dropout.first_row` of its step, by site: "embedding" (B, T, C);
    "attention" (L, B, NH, T, T), each query's row over the keys (those after it unused);
    "attention_out" and "mlp_out" (L, B, T, C), the residual branches."""
    L, NH, T, C = config.n_layer, config.n_head, config.ctx, config.n_embd
    D = dropout.typed()
    masks = {"embedding": np.empty((rows, T, C), dtype), "attention": np.empty((L, rows, NH, T, T), dtype),
             "attention_out": np.empty((L, rows, T, C), dtype), "mlp_out": np.empty((L, rows, T, C), dtype)}
    for r in range(rows):
        _mask(masks["embedding"][r], site_key(D, r, 0, EMBEDDING), D.embd)
        for layer in range(L):
            key = site_key(D, r, layer, ATTENTION_PROBS)
            for h in range(NH):
                _mask(masks["attention"][layer, r, h], stream_key(np.uint64(key), h), D.attn)
            _mask(masks["attention_out"][layer, r], site_key(D, r, layer, ATTENTION_OUT), D.resid)
            _mask(masks["mlp_out"][layer, r], site_key(D, r, layer, MLP_OUT), D.resid)
    return masks
