"""Helpers the tests share: small texts with a learnable structure and tiny models."""

from __future__ import annotations

import hashlib

import numpy as np

from cllm.core.config import ModelConfig
from cllm.core.corpus import Corpus
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
