"""Helpers of the Hugging Face tests: tiny models of every tokenizer kind, GPT-2 style
tokenizers with <|endoftext|>, and folders to break."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import AddedToken

from cllm.core.config import ModelConfig, TrainConfig
from cllm.core.errors import TokenizerError
from cllm.core.model import GPT
from cllm.core.tokenizer import BpeTokenizer, Gpt2Tokenizer, train_tokenizer
from tests.helpers import make_corpus, make_text

EOT = "<|endoftext|>"
KINDS = ("char", "word", "bpe", "gpt2")
SHAPE = dict(n_layer=2, n_head=2, n_embd=16, ctx=32)

# Texts that probe the tokenizers: contractions, numbers, runs of spaces, tabs and line
# ends, accents (composed and combining), other scripts, emoji, Python's odd whitespace
# (\x1c-\x1f count as \s in Python's re, not in Unicode), superscripts (\w in Python),
# a fullwidth underscore, a literal <unk> and GPT-2's special token.
PROBES = [
    "the cat sat on a mat.\nthe dog ran to the park while a bird sang.\n",
    "It's 2024, isn't it? I'd've said 3.14159 -- or 42!",
    "   leading spaces, trailing spaces   \n\n\n\t\ttabs\r\nwindows\r\n",
    "café cafe\u0301 naïve ünïcödé Ελληνικά русский 中文字符 日本語 😀👍🏽",
    "x\x1cy\x1dz\x1e\x1f w² ½ Ⅻ ＿under＿ a_b",
    "<unk> is text here, and so is <|endoftext|> between documents<|endoftext|>next",
]


def gpt2_style(text: str, vocab_size: int = 300) -> Gpt2Tokenizer:
    """A byte-level BPE trained on `text` plus <|endoftext|> as its special token (the
    shape of GPT-2's tokenizer, small)."""
    trained = train_tokenizer("bpe", text, vocab_size)
    assert isinstance(trained, BpeTokenizer)
    hf = trained.hf
    hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return Gpt2Tokenizer(hf, EOT, EOT)


def make_tokenizer(kind: str, text: str):
    if kind == "gpt2":
        return gpt2_style(text)
    return train_tokenizer(kind, text, {"word": 60, "bpe": 300}.get(kind))


def tiny_model(kind: str, text: str | None = None, seed: int = 3, shape: dict = SHAPE) -> GPT:
    """A random model with every parameter perturbed (biases and LayerNorms too)."""
    text = text or make_text()
    tok = make_tokenizer(kind, text)
    model = GPT.create(ModelConfig(tok.vocab_size, **shape), tok, seed=seed)
    model.params += np.random.default_rng(seed).normal(0, 0.02, model.params.shape).astype(np.float32)
    return model


def trained_model(kind: str, steps: int = 30) -> GPT:
    """A tiny model trained a few steps on the small text (so its weights are not an
    initialisation's)."""
    from cllm.core.trainer import Trainer

    corpus = make_corpus(make_text())
    config = TrainConfig(steps=steps, batch=4, lr=1e-2, warmup=2, eval_interval=0, threads=2, seed=5)
    if kind == "gpt2":
        model = tiny_model("gpt2", corpus.text)
        trainer = Trainer(model, corpus, config)
    else:
        trainer = Trainer.new(corpus, SHAPE, config, tokenizer=kind,
                              vocab_size={"word": 60, "bpe": 300}.get(kind))
    trainer.run()
    return trainer.model


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def encodable(tok, texts: list[str]) -> list[str]:
    """The texts this tokenizer can encode (a char tokenizer refuses unknown characters)."""
    out = []
    for text in texts:
        try:
            tok.encode(text)
        except TokenizerError:
            continue
        out.append(text)
    return out
