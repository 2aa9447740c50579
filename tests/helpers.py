"""Helpers the tests share: small texts with a learnable structure and tiny models."""

from __future__ import annotations

import hashlib

import numpy as np

from cllm.core.config import ModelConfig
from cllm.core.corpus import Corpus
from cllm.core.kernels import NO_DROPOUT, Dropout
from cllm.core.model import GPT
from cllm.core.tokenizer import train_tokenizer

WORDS = ("the cat sat on a mat and the dog ran to the park while a bird sang in the old tree "
         "so we went home to eat bread with honey and tea before the night came down").split()


def make_text(n_words: int = 3000, seed: int = 0) -> str:
    """A small English-like text with a learnable structure."""
    rng = np.random.default_rng(seed)
    lines, line = [], []
    for w in rng.choice(WORDS, n_words):
        line.append(str(w))
        if len(line) >= 8 + rng.integers(0, 5):
            lines.append(" ".join(line) + ".")
            line = []
    return "\n".join(lines) + "\n"


def make_corpus(text: str, name: str = "small.txt") -> Corpus:
    return Corpus(name, text, hashlib.sha256(text.encode()).hexdigest(), None)


def tiny_model(text: str, n_layer=2, n_head=2, n_embd=16, ctx=16, seed=1) -> GPT:
    tok = train_tokenizer("char", text)
    return GPT.create(ModelConfig(tok.vocab_size, n_layer, n_head, n_embd, ctx), tok, seed=seed)


def use_tiled_attention(monkeypatch, query_block: int, key_block: int) -> None:
    """Buffers made from now on in this test run attention through the tiled kernels on
    (query_block, key_block) tiles at every context: small tiles put several query and
    key blocks, partial tiles and the online softmax into a tiny model's pass."""
    from cllm.core import layout

    monkeypatch.setattr(layout, "SHORT_ATTENTION_MAX_CTX", 0)
    monkeypatch.setattr(layout, "ATT_QUERY_BLOCK", query_block)
    monkeypatch.setattr(layout, "ATT_KEY_BLOCK", key_block)


GRADIENT_CONFIG = ModelConfig(vocab_size=7, n_layer=2, n_head=2, n_embd=8, ctx=5)  # every gradient checkable


def assert_gradients_match_finite_differences(params: np.ndarray, batch: np.ndarray, config: ModelConfig,
                                              grad: np.ndarray, loss: float, dropout: Dropout = NO_DROPOUT) -> None:
    """Each entry of `grad` (the backward pass's gradient of the mean loss over 2 shards) is
    the central difference quotient of the float64 loss, to 1e-6 relative; `dropout`, if
    given, holds the masks fixed, so the loss is a smooth function of the parameters."""
    from cllm.core.layout import Layout
    from cllm.core.passes import LOSS
    from cllm.core.threads import single_threaded_blas
    from cllm.core.workspace import Workspace

    params = params.copy()
    eps = 1e-5
    # A difference quotient cannot resolve less than a few float64 ulps of the loss over
    # 2 eps (about 1e-10 here): the floor for the smallest gradient entries.
    noise = 4 * np.spacing(loss) / (2 * eps)
    numeric = np.zeros_like(params)
    ws = Workspace.create(config, 2, 2, np.float64)  # the same two shards, forward and loss only
    with single_threaded_blas():
        assert ws.run(params, batch, LOSS, dropout=dropout).mean() == loss
        for i in range(params.size):
            old = params[i]
            params[i] = old + eps
            plus = ws.run(params, batch, LOSS, dropout=dropout).mean()
            params[i] = old - eps
            minus = ws.run(params, batch, LOSS, dropout=dropout).mean()
            params[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
    layout = Layout.params(config)
    worst = {}
    for name, view in layout.named_views(grad).items():
        num = layout.named_views(numeric)[name]
        assert np.abs(num).max() > 0, f"{name} has an all-zero numeric gradient: the check would be empty"
        # error over what is allowed: 1e-6 relative, plus the quotient's noise floor
        ratio = np.abs(view - num) / (1e-6 * (np.abs(view) + np.abs(num)) + noise)
        worst[name] = float(ratio.max())
    bad = {k: v for k, v in worst.items() if v > 1}
    assert not bad, f"gradient error above 1e-6 relative + {noise:.1e} (error / allowed): {bad}"
