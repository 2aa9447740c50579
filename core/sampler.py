"""Sampling with a key/value cache: the prompt runs through the model once, then each
new token costs one position's worth of work, not a re-run of the whole context."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numba import njit, prange

from cllm.core import kernel_cache
from cllm.core.config import SampleConfig
from cllm.core.decode_kernels import DecodeState, DecodeWeights, decode_rows, decode_rows_region
from cllm.core.errors import ConfigError, TokenizerError
from cllm.core.kernels import JIT
from cllm.core.model import GPT
from cllm.core.prompt_pass import PromptBuffers, prompt_pass
from cllm.core.quantize import QUANTIZED, decode_weights, float32_forms, quantize_params
from cllm.core.spin_barrier import barrier_state
from cllm.core.text_stream import TextStream
from cllm.core.threads import parallel_threads, thread_cap, threading_layer


def decoder_weights(model: GPT, weights: str = "float32") -> DecodeWeights:
    """What the decoder reads: an int8 model file's int8 forms; else the forms `weights`
    asks for (int8: quantized; float32: transposed copies), made once and kept on the
    model while its weights stay the same (`weights_stamp`): for GPT-2 small the float32
    copies are 340 MB, which this machine took seconds to fault in."""
    P = model.layout.views(model.params)
    if model.quantized is not None:
        return decode_weights(P, model.quantized)
    stamp = weights_stamp([getattr(P, name) for name in QUANTIZED])
    kept = model.decode_forms.get(weights)
    if kept is None or kept[0] != stamp:
        model.decode_forms.clear()  # one kind at a time: the other's memory goes back
        kept = (stamp, quantize_params(P) if weights == "int8" else float32_forms(P))
        model.decode_forms[weights] = kept
    return decode_weights(P, kept[1])


def weights_stamp(tensors: list[np.ndarray]) -> tuple[int, int]:
    """A fingerprint of float32 `tensors` (training changes them all each step, in place):
    the sum and the sum of squares of their values' bits as integers, modulo 2^64. Checked
    on every generation, so it is a vectorised pass at memory speed (GPT-2 small: all
    500 MB of parameters in 25 / 18 ms on 1 / 2 threads, where float64 sums of the values
    took 92-125 ms). The decoder's forms copy every product's weight (`QUANTIZED`), all
    but the biases, LayerNorms and positions, which it reads in place."""
    s, q = 0, 0
    with parallel_threads(thread_cap()) as workers:
        for tensor in tensors:
            sums = bit_sums(tensor.reshape(-1).view(np.uint32), workers)
            s, q = s + int(sums[0]), q + int(sums[1])
    return s % 2 ** 64, q % 2 ** 64


@njit(parallel=True, **JIT)
def bit_sums(words, parts):
    """(sum, sum of squares) of `words` as uint64, wrapping: the same for any `parts`."""
    n = words.shape[0]
    width = (n + parts - 1) // parts
    sums = np.zeros((parts, 2), np.uint64)
    for p in prange(parts):
        sums[p] = bit_sums_of(words[min(n, p * width):min(n, (p + 1) * width)])
    return sums.sum(axis=0)


@njit(**JIT)
def bit_sums_of(words):
    """One part of `bit_sums` (a loop of its own, which LLVM vectorises: inside the
    prange body it ran at a quarter of the speed)."""
    s, q = np.uint64(0), np.uint64(0)
    for i in range(words.shape[0]):
        w = np.uint64(words[i])
        s += w
        q += w * w
    return np.array((s, q))


def _scratch(model: GPT, samples: int) -> tuple[DecodeState, PromptBuffers]:
    """Key/value caches for `samples` sequences and the prompt pass's buffers: the
    model's spare set (`Decoder.close`) where it has one of that size, else new ones.
    Kept because fresh memory costs page faults as it is first written: GPT-2 small's
    caches and buffers for a 559-token prompt are ~70 MB, and filling fresh caches took
    58 ms of its 1.24 s first token on one thread (benchmarks/RESULTS.md, "Prompt pass
    profile")."""
    spare = model.decode_scratch.pop(samples, None)
    if spare is not None:
        return spare
    c = model.config
    return (DecodeState.create(samples, c.n_layer, c.n_head, c.ctx, c.n_embd, c.vocab_size),
            PromptBuffers.create(c.ctx, c.n_embd, c.n_head))


class Decoder:
    """Key/value caches and scratch for decoding `samples` sequences of one model at once.
    `close` gives them back to the model for the next decoder (two decoders of one model
    at once each have their own)."""

    def __init__(self, model: GPT, samples: int = 1, threads: int = 0, weights: str = "float32"):
        kernel_cache.drop_stale()  # before a decoding kernel loads: a process may only generate
        self.model = model
        self.samples = samples
        self.threads = threads
        self.kind = weights
        self._weights: DecodeWeights | None = None
        self.state, self.buffers = _scratch(model, samples)
        self.sync = barrier_state()
        self.state.shared[0] = 0
        self.pos = 0

    @property
    def weights(self) -> DecodeWeights:
        """The weights the decoding steps read (`decoder_weights`), found and checked
        against the model's on first use: not before a float32 prompt pass, which does not
        read them, so the first token does not wait for the check (GPT-2 small: 11-17 ms)."""
        if self._weights is None:
            self._weights = decoder_weights(self.model, self.kind)
        return self._weights

    def prompt_weights(self) -> DecodeWeights | None:
        """What the prompt pass's logits take (`core.prompt_pass.prompt_pass`): the int8
        weights, or None for float32, whose logits come from the model's own embedding
        without the decoder's copies and their check."""
        return None if self.kind == "float32" and self.model.quantized is None else self.weights

    def close(self) -> None:
        """Keeps this decoder's caches and buffers on the model as its one spare set (the
        decoder is not used after)."""
        self.model.decode_scratch.clear()
        self.model.decode_scratch[self.samples] = (self.state, self.buffers)

    def _prompt_pass(self, tokens: np.ndarray, samples: range) -> np.ndarray:
        """Logits after `tokens` (at most ctx of them), with the caches of `samples` holding them."""
        model = self.model
        P = model.layout.views(model.params)
        logits = prompt_pass(self.prompt_weights(), P, self.state, samples, tokens, model.config.n_head,
                             self.threads, self.buffers)
        self.pos = len(tokens)
        return logits

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """Logits after `tokens` (its last ctx), every sample's cache holding them."""
        tokens = np.asarray(tokens[-self.model.config.ctx:], dtype=np.int32)
        logits = self._prompt_pass(tokens, range(self.samples))
        self.state.shared[0] = len(tokens)  # every cache holds the prompt: attention reads the first one's
        return logits

    def prefill_each(self, histories: np.ndarray) -> np.ndarray:
        """(samples, V) logits after each sample's own tokens (histories (samples, T),
        T <= ctx), each cache holding its own: a full context's restart."""
        logits = np.empty((self.samples, self.model.config.vocab_size), np.float32)
        self.state.shared[0] = 0
        for n in range(self.samples):
            logits[n] = self._prompt_pass(np.asarray(histories[n], dtype=np.int32), range(n, n + 1))
        return logits

    @property
    def full(self) -> bool:
        return self.pos >= self.model.config.ctx

    def step_all(self, tokens: np.ndarray) -> np.ndarray:
        """(samples, V) logits after appending tokens[n] to sample n at the next position."""
        tokens = np.asarray(tokens, dtype=np.int32)
        with parallel_threads(thread_cap(), self.threads) as workers:
            if workers == 1 or threading_layer() == "omp":  # every task on its own thread: the barrier's condition
                decode_rows_region(self.weights, self.state, tokens, self.pos, self.model.config.n_head, workers,
                                   self.sync)
            else:
                decode_rows(self.weights, self.state, tokens, self.pos, self.model.config.n_head, workers)
        self.pos += 1
        return self.state.logits

    def step(self, token: int) -> np.ndarray:
        """Logits after appending `token` at the next position (one sample)."""
        return self.step_all(np.full(self.samples, token, np.int32))[0]


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
    be the stop string, whose text then comes with a later token. One sample: for
    `config.samples` > 1, `generate_samples`.

    A prompt longer than the context keeps its last ctx tokens. When the context fills
    up, the cache is rebuilt from the last ctx/2 tokens and decoding goes on."""
    if config.samples != 1:
        raise ConfigError(f"generate draws one sample; {config.samples} asked for (generate_samples draws several)")
    for pieces in generate_samples(model, prompt, config, should_stop):
        yield pieces[0] or ""


def generate_samples(model: GPT, prompt: str, config: SampleConfig = SampleConfig(),
                     should_stop: Callable[[], bool] | None = None) -> Iterator[list[str | None]]:
    """`config.samples` continuations of `prompt` drawn in one decoding loop (one prompt
    pass, one cache per sample, each step's products done for every sample at once).
    Yields, per step, one piece per sample as `generate` does (None for a sample that
    has ended), until every sample has ended. Sample n draws from seed + n (with a seed), and
    its text equals that of `generate` with seed + n."""
    config.validate()
    yield from _decode(model, prompt_tokens(model.tokenizer, prompt), config, should_stop)


def prompt_tokens(tok, prompt: str) -> list[int]:
    """What generation starts from: the prompt's tokens, or for an empty prompt the
    tokenizer's beginning-of-text token (GPT-2's <|endoftext|>) if it has one, else a
    newline where the vocabulary has one."""
    ids = list(tok.encode(prompt)) if prompt else []
    return ids or _start_tokens(tok)


def _decode(model: GPT, ids: list[int], config: SampleConfig, should_stop) -> Iterator[list[str | None]]:
    """The decoding loop of `generate_samples`: `ids` is the prompt (at least one token);
    the decoder's caches go back to the model when it ends, however it ends."""
    decoder = Decoder(model, config.samples, config.threads, config.weights)
    try:
        yield from _decode_loop(decoder, ids, config, should_stop)
    finally:
        decoder.close()


def _decode_loop(decoder: Decoder, ids: list[int], config: SampleConfig, should_stop) -> Iterator[list[str | None]]:
    model = decoder.model
    tok = model.tokenizer
    ctx, N = model.config.ctx, config.samples
    rngs = [np.random.default_rng(None if config.seed is None else config.seed + n) for n in range(N)]
    end = None if config.past_end_of_text else getattr(tok, "eos_id", None)
    first = decoder.prefill(np.array(ids[-ctx:]))
    logits = np.broadcast_to(first, (N, len(first)))
    streams = [TextStream(tok, config.stop) for _ in range(N)]
    # every sample's tokens since the last shift: twice the context, so that the last
    # ctx tokens move to the front once per ctx steps rather than being copied every step
    histories = np.empty((N, 2 * ctx), np.int32)
    length = len(ids[-ctx:])
    histories[:, :length] = ids[-ctx:]
    active = [True] * N
    for step in range(config.max_tokens):
        if should_stop is not None and should_stop():
            return
        pieces: list[str | None] = [None] * N
        tokens = np.zeros(N, np.int32)
        for n in np.flatnonzero(active):
            token = tokens[n] = pick_token(logits[n], config, rngs[n])
            piece = "" if token == end else streams[n].push(token)
            if token == end or streams[n].stopped or step == config.max_tokens - 1:
                piece += streams[n].flush()  # the sample's last token: its logits would never be used
                active[n] = False
            pieces[n] = piece
        yield pieces
        if not any(active):
            return
        if length == 2 * ctx:
            histories[:, :ctx] = histories[:, ctx:]
            length = ctx
        histories[:, length] = tokens
        length += 1
        if decoder.full:
            logits = decoder.prefill_each(histories[:, length - ctx // 2:length])
        else:
            logits = decoder.step_all(tokens)


def _start_tokens(tok) -> list[int]:
    bos = getattr(tok, "bos_id", None)
    if bos is not None:
        return [bos]
    try:
        ids = list(tok.encode("\n"))
    except TokenizerError:
        ids = []
    return ids[:1] or [0]
