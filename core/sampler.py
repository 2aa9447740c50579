"""Sampling with a key/value cache: the prompt runs through the model once, then each
new token costs one position's worth of work, not a re-run of the whole context."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from cllm.core.config import SampleConfig
from cllm.core.errors import TokenizerError
from cllm.core.model import GPT
from cllm.core.passes import DecodeBuffers, decode_step
from cllm.core.text_stream import TextStream
from cllm.core.threads import single_threaded_blas, threaded_blas
from cllm.core.workspace import Workspace, forward_logits


class Decoder:
    """Caches and scratch for incremental decoding of one model."""

    def __init__(self, model: GPT):
        c = model.config
        self.model = model
        self.workspace = Workspace.create(c, 1, 1)
        self.buffers = DecodeBuffers.create(c.n_layer, c.ctx, c.n_embd, c.vocab_size)
        self.pos = 0

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """Logits after `tokens` (at most ctx of them), with the cache holding them."""
        c = self.model.config
        tokens = np.asarray(tokens[-c.ctx:], dtype=np.int32)
        T, C = len(tokens), c.n_embd
        with threaded_blas():  # one sequence: its products use the cores the shards would
            logits, _ = forward_logits(self.model.params, c, tokens, self.workspace, last_only=True)
        qkv = self.workspace.views().qkv  # (L, rows, 3C): every layer's q | k | v
        self.buffers.kcache[:, :T] = qkv[:, :T, C:2 * C]
        self.buffers.vcache[:, :T] = qkv[:, :T, 2 * C:]
        self.pos = T
        return logits

    @property
    def full(self) -> bool:
        return self.pos >= self.model.config.ctx

    def step(self, token: int) -> np.ndarray:
        """Logits after appending `token` at the next position."""
        decode_step(self.model.params, self.model.layout.table, self.model.config.n_head, self.buffers, token,
                    self.pos)
        self.pos += 1
        return self.buffers.logits[0]


def pick_token(logits: np.ndarray, config: SampleConfig, rng: np.random.Generator) -> int:
    """Temperature, then top-k, then top-p (nucleus), then a draw."""
    if config.temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / config.temperature
    if 0 < config.top_k < len(z):
        kth = np.partition(z, -config.top_k)[-config.top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    if config.top_p < 1.0:
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, config.top_p)) + 1]
        mask = np.zeros_like(p)
        mask[keep] = p[keep]
        p = mask
    cumulative = np.cumsum(p)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, len(p) - 1)


def generate(model: GPT, prompt: str, config: SampleConfig = SampleConfig(),
             should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
    """Yields the continuation of `prompt` as it is produced, one piece per sampled token
    (so callers can count tokens): "" while a token only starts a character or what may
    be the stop string, whose text then comes with a later token.

    A prompt longer than the context keeps its last ctx tokens. When the context fills
    up, the cache is rebuilt from the last ctx/2 tokens and decoding goes on."""
    config.validate()
    tok = model.tokenizer
    ids = list(tok.encode(prompt)) if prompt else []
    if not ids:
        ids = _start_tokens(tok)
    with single_threaded_blas():  # one-row products gain nothing from BLAS threads (Decoder.prefill takes them)
        yield from _decode(model, ids, config, should_stop)


def _decode(model: GPT, ids: list[int], config: SampleConfig, should_stop) -> Iterator[str]:
    """The decoding loop of `generate`: `ids` is the prompt (at least one token)."""
    tok = model.tokenizer
    ctx = model.config.ctx
    rng = np.random.default_rng(config.seed)
    decoder = Decoder(model)
    logits = decoder.prefill(np.array(ids[-ctx:]))
    stream = TextStream(tok, config.stop)
    for n in range(config.max_tokens):
        if should_stop is not None and should_stop():
            return
        token = pick_token(logits, config, rng)
        piece = stream.push(token)
        if stream.stopped or n == config.max_tokens - 1:
            yield piece + stream.flush()  # the last token's logits would never be used
            return
        yield piece
        ids.append(token)
        if decoder.full:
            logits = decoder.prefill(np.array(ids[-(ctx // 2):]))
        else:
            logits = decoder.step(token)


def _start_tokens(tok) -> list[int]:
    """What an empty prompt starts from: the tokenizer's beginning-of-text token (GPT-2's
    <|endoftext|>) if it has one, else a newline where the vocabulary has one."""
    bos = getattr(tok, "bos_id", None)
    if bos is not None:
        return [bos]
    try:
        ids = list(tok.encode("\n"))
    except TokenizerError:
        ids = []
    return ids[:1] or [0]
