"""The parallel decoding step (core/decode_kernels.py): several samples at once, on any
number of threads, with float32 or int8 weights, against the full forward pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cllm.core import sampler
from cllm.core.decode_kernels import ATTEND_BLOCK, decode_rows, decode_rows_region
from cllm.core.errors import ConfigError
from cllm.core.model import GPT
from cllm.core.quantize import QUANTIZED, decoder_form, dequantize_rows, quantize_params, quantize_rows
from cllm.core.sampler import Decoder, SampleConfig, generate, generate_samples
from cllm.core.threads import parallel_threads, threading_layer
from cllm.core.workspace import forward_logits
from tests.helpers import tiny_model
from tests.hf_helpers import tiny_model as hf_tiny_model


@pytest.fixture(scope="module")
def model(small_text):
    """Odd shapes (width 20 over 4 heads, vocabulary of the text) so no product divides
    evenly among the threads or into blocks of four rows."""
    m = tiny_model(small_text, n_layer=2, n_head=4, n_embd=20, ctx=16)
    m.params += np.random.default_rng(0).normal(0, 0.1, m.params.shape).astype(np.float32)
    return m


def decoded_logits(model, tokens, threads=0, samples=1, weights="float32"):
    """Logits of positions 2.. of `tokens` from a 3-token prompt pass and then one-token
    steps, every sample fed the same tokens: (positions, samples, V)."""
    decoder = Decoder(model, samples, threads, weights)
    got = [np.broadcast_to(decoder.prefill(tokens[:3]), (samples, model.config.vocab_size)).copy()]
    for t in tokens[3:]:
        got.append(decoder.step_all(np.full(samples, t)).copy())
    return np.array(got)


def test_decoding_on_one_and_two_threads_gives_the_forward_logits_bit_for_bit(model, monkeypatch):
    """Each product splits its outputs among the threads, never its sums: the logits are
    the same bits on 1 and 2 threads, and those of the full forward pass."""
    tokens = model.tokenizer.encode("the cat sat on a")[:16]
    full, _ = forward_logits(model.params, model.config, tokens)
    decoded_logits(model, tokens[:4])  # compiled first: numba re-reads NUMBA_NUM_THREADS when it compiles
    got = {}
    for n in (1, 2):
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(n))
        got[n] = decoded_logits(model, tokens)[:, 0]
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_allclose(got[1], full[2:], rtol=1e-4, atol=1e-5)


def step_logits(step, decoder, tokens, tasks):
    """One decoding step of `decoder` by `step` (decode_rows or decode_rows_region) on
    `tasks` tasks (at most the threads: the region's tasks must all run at once): a copy
    of its logits."""
    with parallel_threads(tasks, tasks) as workers:
        args = (decoder.weights, decoder.state, tokens, decoder.pos, decoder.model.config.n_head, workers)
        if step is decode_rows_region:
            step(*args, decoder.sync)
        else:
            step(*args)
    decoder.pos += 1
    return decoder.state.logits.copy()


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_one_region_gives_the_bits_of_a_launch_per_phase(model, weights):
    """The decoding step as one parallel region whose tasks meet at a barrier (the
    sampler's on OpenMP, or on one thread) and as a launch per product and attention
    (its fallback on a threading layer that may run two tasks on one thread) give the
    same logits bits and caches, for 3 sequences and for 1 on 1 and 2 tasks, the outputs
    taken in pieces."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, model.config.vocab_size, (3, 8))
    for samples, tasks in itertools.product((1, 3), (1, 2) if threading_layer() == "omp" else (1,)):
        runs = []
        for step in (decode_rows, decode_rows_region):
            decoder = Decoder(model, samples, weights=weights)
            decoder.prefill(tokens[0, :3])
            logits = [step_logits(step, decoder, tokens[:samples, t].astype(np.int32), tasks) for t in range(3, 8)]
            runs.append((np.array(logits), decoder.state.kcache.copy(), decoder.state.vcache.copy()))
        for a, b in zip(*runs, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_embd, n_head", [(20, 4), (64, 2)])
def test_attention_over_several_blocks_gives_the_same_bits_whoever_takes_them(small_text, n_embd, n_head):
    """Past several of attention's blocks of positions (ATTEND_BLOCK): two sequences'
    logits and caches are the same bits from the region on 1 and 2 tasks and from the
    launch per phase, each sequence's the bits it has decoded alone, and the logits
    those of the full forward pass. Head sizes 5 and 32: the plain loops and the
    vector kernels."""
    ctx = 3 * ATTEND_BLOCK + 7
    model = tiny_model(small_text, n_layer=2, n_head=n_head, n_embd=n_embd, ctx=ctx)
    model.params += np.random.default_rng(0).normal(0, 0.1, model.params.shape).astype(np.float32)
    tokens = np.random.default_rng(4).integers(0, model.config.vocab_size, (2, ctx)).astype(np.int32)
    runs = []
    for tasks, step in ((1, decode_rows_region), (2, decode_rows_region), (2, decode_rows)):
        if tasks == 2 and threading_layer() != "omp" and step is decode_rows_region:
            continue
        decoder = Decoder(model, 2)
        decoder.prefill(tokens[0, :ATTEND_BLOCK - 3])
        logits = [step_logits(step, decoder, tokens[:, t], tasks) for t in range(ATTEND_BLOCK - 3, ctx)]
        runs.append((np.array(logits), decoder.state.kcache.copy(), decoder.state.vcache.copy()))
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            np.testing.assert_array_equal(a, b)
    alone = Decoder(model, 1)
    alone.prefill(tokens[0, :ATTEND_BLOCK - 3])
    for i, t in enumerate(range(ATTEND_BLOCK - 3, ctx)):
        np.testing.assert_array_equal(alone.step(int(tokens[1, t])), runs[0][0][i, 1])
    history = np.concatenate([tokens[0, :ATTEND_BLOCK - 3], tokens[1, ATTEND_BLOCK - 3:]])
    full, _ = forward_logits(model.params, model.config, history)
    np.testing.assert_allclose(runs[0][0][:, 1], full[ATTEND_BLOCK - 3:], rtol=1e-4, atol=1e-5)


def test_samples_read_the_prompt_from_the_first_samples_cache(small_text):
    """After one prompt every sample's attention reads the prompt's keys and values from
    the first sample's cache (the prompt pass wrote the same numbers into each): the
    others' prompt rows may hold anything (NaN here) and each sample's logits are still
    the bits it decodes alone; after each sample's own prompt (a full context's restart)
    each reads its own."""
    ctx = 2 * ATTEND_BLOCK + 5
    model = tiny_model(small_text, n_layer=2, n_head=2, n_embd=64, ctx=ctx)
    tokens = np.random.default_rng(5).integers(0, model.config.vocab_size, (3, ctx)).astype(np.int32)
    prompt = ATTEND_BLOCK + 3
    decoder = Decoder(model, 3)
    decoder.prefill(tokens[0, :prompt])
    decoder.state.kcache[1:, :, :prompt] = np.nan
    decoder.state.vcache[1:, :, :prompt] = np.nan
    singles = [Decoder(model, 1) for _ in range(3)]
    for single in singles:
        single.prefill(tokens[0, :prompt])
    for t in range(prompt, ctx):
        together = decoder.step_all(tokens[:, t]).copy()
        for n, single in enumerate(singles):
            np.testing.assert_array_equal(together[n], single.step(int(tokens[n, t])))
    decoder.prefill_each(tokens[:, :prompt])
    assert decoder.state.shared[0] == 0
    assert np.isfinite(decoder.step_all(tokens[:, prompt])).all()


def test_the_decoders_copies_follow_the_weights(small_text):
    """The decoder's copies of the weights are kept on the model between generations and
    made again when the weights change in place (as training changes them)."""
    model = tiny_model(small_text, n_layer=1, n_head=2, n_embd=16, ctx=16)
    tokens = model.tokenizer.encode("the cat sat on a")[:16]
    for weights in ("float32", "int8", "float32"):
        for _ in range(2):
            model.params *= np.float32(1.25)  # in place, every value
            full, _ = forward_logits(model.params, model.config, tokens)
            got = decoded_logits(model, tokens, weights=weights)[:, 0]
            np.testing.assert_allclose(got, full[2:], rtol=0.05 if weights == "int8" else 1e-4, atol=2e-2)
            kept = model.decode_forms[weights][1]
            assert decoded_logits(model, tokens, weights=weights) is not None
            assert model.decode_forms[weights][1] is kept  # unchanged weights: the same copies
    assert list(model.decode_forms) == ["float32"]


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_a_row_decodes_the_same_alone_and_among_others(model, weights):
    """Five samples (a block of four and one left over) fed different tokens: each row's
    logits are the bits a one-sample decoder gives for its tokens (int8: each row rounded
    with its own scale)."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, model.config.vocab_size, (5, 12))
    decoder = Decoder(model, 5, weights=weights)
    decoder.prefill(tokens[0, :3])
    singles = [Decoder(model, 1, weights=weights) for _ in range(5)]
    for d in singles:
        d.prefill(tokens[0, :3])
    for t in range(3, 12):
        together = decoder.step_all(tokens[:, t]).copy()
        for n, d in enumerate(singles):
            np.testing.assert_array_equal(together[n], d.step(int(tokens[n, t])))


@pytest.mark.parametrize("threads", [1, 2])
def test_each_of_several_samples_is_the_one_sample_run_with_its_seed(model, threads):
    """Sample n of a 3-sample run with seed s is `generate` with seed s + n, past a full
    context (ctx 16, 40 tokens: each sample's cache rebuilt from its own tokens)."""
    config = SampleConfig(max_tokens=40, temperature=1.2, top_k=20, seed=11, samples=3, threads=threads)
    texts = ["", "", ""]
    steps = 0
    for pieces in generate_samples(model, "the ", config):
        steps += 1
        for n, piece in enumerate(pieces):
            texts[n] += piece or ""
    assert steps == 40
    for n in range(3):
        alone = "".join(generate(model, "the ", SampleConfig(max_tokens=40, temperature=1.2, top_k=20, seed=11 + n)))
        assert texts[n] == alone
    assert len(set(texts)) == 3


def test_samples_end_on_their_own_and_the_loop_when_all_have(model):
    """A stop string ends one sample (None from then on); the loop goes on for the others."""
    alone = ["".join(generate(model, "the ", SampleConfig(max_tokens=30, seed=5 + n))) for n in range(2)]
    stop = alone[0][10:12]
    assert stop not in alone[1][:30] or alone[1].index(stop) > alone[0].index(stop)
    runs = list(generate_samples(model, "the ", SampleConfig(max_tokens=30, seed=5, samples=2, stop=stop)))
    first = "".join(p[0] or "" for p in runs)
    assert runs[-1][0] is None or len(runs) == alone[0].index(stop) + len(stop)
    assert first == alone[0][:alone[0].index(stop)]
    assert len(runs) == (30 if stop not in alone[1] else max(alone[0].index(stop), alone[1].index(stop)) + len(stop))


def test_generation_stops_at_end_of_text_unless_told_to_go_on(monkeypatch):
    """GPT-2's <|endoftext|> ends a sample (the token is not shown); with
    past_end_of_text the sample goes on through it."""
    model = hf_tiny_model("gpt2")
    eot = model.tokenizer.eos_id  # type: ignore[attr-defined]  # a gpt2 tokenizer
    real = sampler.pick_token
    drawn = []

    def end_at_the_fifth(logits, config, rng):
        drawn.append(real(logits, config, rng))
        return eot if len(drawn) == 5 else drawn[-1]

    monkeypatch.setattr(sampler, "pick_token", end_at_the_fifth)
    assert len(list(generate(model, "the", SampleConfig(max_tokens=20, seed=1)))) == 5
    drawn.clear()
    assert len(list(generate(model, "the", SampleConfig(max_tokens=20, seed=1, past_end_of_text=True)))) == 20


def test_quantized_rows_are_within_half_a_step():
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.02, (3, 40, 24)).astype(np.float32)
    w[0, 5] = 0.0  # an all-zero row keeps a usable scale
    q, scale = quantize_rows(w)
    assert q.dtype == np.int8 and scale.shape == (3, 40) and np.abs(q).max() <= 127
    error = np.abs(dequantize_rows(q, scale) - w)
    assert np.all(error <= scale[..., None] / 2 * (1 + 1e-6))
    assert np.all(dequantize_rows(q, scale)[0, 5] == 0)
    top = np.abs(w).max(-1)[1:]
    np.testing.assert_allclose((np.abs(q).max(-1) * scale)[1:], top, rtol=1e-6)  # 127 steps reach the largest


def dequantized_model(model) -> GPT:
    """The float32 model whose weights are the int8 model's values."""
    params = model.params.copy()
    P = model.layout.views(params)
    for name, (q, scale) in quantize_params(model.layout.views(model.params)).items():
        getattr(P, name)[...] = decoder_form(name, dequantize_rows(q, scale))
    return GPT(model.config, model.tokenizer, params)


def test_int8_decoding_gives_the_forward_logits_of_the_dequantized_weights_up_to_its_inputs_rounding(
        model, monkeypatch):
    """With int8 weights the decoder computes what a float32 model holding their values
    would, but for each product's input rows rounded to int8 (one scale per row: a step
    of max |x| / 127, the logits here move by up to ~0.02); the same bits on 1 and 2 threads."""
    tokens = model.tokenizer.encode("the cat sat on a")[:16]
    reference = dequantized_model(model)
    full, _ = forward_logits(reference.params, reference.config, tokens)
    reference.quantized = quantize_params(model.layout.views(model.params))
    got = {}
    for n in (1, 2):
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(n))
        got[n] = decoded_logits(reference, tokens)[:, 0]  # prompt pass: float32 params; steps: int8
    np.testing.assert_array_equal(got[1], got[2])
    assert np.abs(got[1] - full[2:]).max() < 0.05 < np.abs(full[2:]).max()


def test_every_product_weight_is_quantized(model):
    quantized = quantize_params(model.layout.views(model.params))
    assert set(quantized) == set(QUANTIZED)
    assert all(q.dtype == np.int8 for q, _ in quantized.values())


@pytest.mark.parametrize("field, value", [("samples", 0), ("samples", 65), ("threads", -1), ("weights", "int4")])
def test_bad_sample_settings_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        SampleConfig(**{field: value}).validate()
