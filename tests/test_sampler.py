"""The KV-cache sampler against a full forward pass, and sampling behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.core.errors import TokenizerError
from cllm.core.sampler import Decoder, SampleConfig, generate, pick_token
from cllm.core.workspace import forward_logits
from tests.helpers import tiny_model, use_tiled_attention


@pytest.fixture(scope="module")
def model(small_text):
    m = tiny_model(small_text, n_layer=2, n_head=2, n_embd=16, ctx=16)
    m.params += np.random.default_rng(0).normal(0, 0.1, m.params.shape).astype(np.float32)
    return m


@pytest.mark.parametrize("attention", ["short", "tiled"])
def test_cached_decoding_gives_the_full_forward_logits(model, monkeypatch, attention):
    """The prompt pass (either attention kernel pair; tiled on 4 x 6 tiles) and then the
    one-token decoder give the logits of one forward pass over the whole sequence."""
    if attention == "tiled":
        use_tiled_attention(monkeypatch, query_block=4, key_block=6)
    tokens = model.tokenizer.encode("the cat sat on a")[:16]
    full, _ = forward_logits(model.params, model.config, tokens)
    full = full.copy()
    decoder = Decoder(model)
    got = [decoder.prefill(tokens[:3]).copy()]
    for t in tokens[3:]:
        got.append(decoder.step(int(t)).copy())
    np.testing.assert_allclose(np.array(got), full[2:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(decoder.prefill(tokens), full[-1], rtol=1e-4, atol=1e-5)


def test_decoders_of_a_model_take_turns_with_its_caches_and_keep_the_forward_logits(model):
    """A closed decoder's caches and buffers go to the next decoder of the model (stale
    keys and values beyond its prompt and all): a long sequence, then a short one, each
    gives the forward pass's logits; a decoder opened while another is open has its own;
    a generation gives its decoder's back however it ends."""
    long = model.tokenizer.encode("the cat sat on a mat and the dog sat")[:16]
    short = model.tokenizer.encode("a dog")[:4]
    first = Decoder(model)
    first.prefill(long)
    second = Decoder(model)
    assert second.state is not first.state
    first.close()
    for tokens in (long, short):
        full, _ = forward_logits(model.params, model.config, tokens)
        full = full.copy()
        decoder = Decoder(model)
        assert decoder.state is first.state and decoder.buffers is first.buffers
        got = [decoder.prefill(tokens[:2]).copy()] + [decoder.step(int(t)).copy() for t in tokens[2:]]
        decoder.close()
        np.testing.assert_allclose(np.array(got), full[1:], rtol=1e-4, atol=1e-5)
    model.decode_scratch.clear()
    for _ in generate(model, "the ", SampleConfig(max_tokens=5, seed=1)):
        break  # stopped early: the generator is closed as it goes
    assert [state is not None for state, _ in model.decode_scratch.values()] == [True]


def test_the_float32_first_token_waits_for_no_check_of_the_kept_weight_forms(model):
    """The float32 prompt pass reads the parameters themselves (its logits the embedding):
    the decoder's kept forms are found and checked against the weights at its first
    decoding step, not before the first token; changed weights still get new forms."""
    tokens = model.tokenizer.encode("the cat sat on a")[:8]
    model.decode_forms.clear()
    decoder = Decoder(model)
    decoder.prefill(tokens[:3])
    assert model.decode_forms == {}
    decoder.step(int(tokens[3]))
    kept = model.decode_forms["float32"]
    original = model.params.copy()
    model.params *= np.float32(1.5)
    try:
        decoder = Decoder(model)
        first = decoder.prefill(tokens[:3]).copy()
        assert model.decode_forms["float32"] is kept  # not checked yet
        got = decoder.step(int(tokens[3])).copy()
        assert model.decode_forms["float32"] is not kept
        full, _ = forward_logits(model.params, model.config, tokens[:4])
        np.testing.assert_allclose(np.array([first, got]), full[2:4], rtol=1e-4, atol=1e-5)
    finally:
        model.params[:] = original
        model.decode_forms.clear()


def test_the_prompt_pass_runs_on_numbas_threads_and_the_logits_do_not_depend_on_them(small_text, monkeypatch):
    """The prompt pass splits its products over numba's threads by rows, each block one
    BLAS call with BLAS on one thread (as attention inside its loop over heads): no BLAS
    threads left spinning on the cores its other kernels use. Its logits do not depend
    on the thread count beyond float rounding."""
    from cllm.core import prompt_pass, threads

    model = tiny_model(small_text, n_layer=1, n_head=4, n_embd=128, ctx=128)
    tokens = np.resize(model.tokenizer.encode(small_text[:200]), 128)
    Decoder(model).prefill(tokens)  # compiled first: numba re-reads NUMBA_NUM_THREADS when it compiles
    seen = []

    def watching(name):
        real = getattr(prompt_pass, name)

        def watch(*args):
            seen.append((name, tuple(sorted({lib["num_threads"] for lib in threads._blas().info()}))))
            return real(*args)
        monkeypatch.setattr(prompt_pass, name, watch)

    watching("matmul_rows")
    watching("attention_heads")
    logits = {}
    for n in (1, 2):
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(n))
        with threads.threaded_blas():  # whatever the caller's BLAS threads
            logits[n] = Decoder(model).prefill(tokens).copy()
        assert set(seen) == {("matmul_rows", (1,)), ("attention_heads", (1,))}
        seen.clear()
    np.testing.assert_allclose(logits[1], logits[2], rtol=1e-5, atol=1e-6)


def test_same_seed_same_text_and_another_seed_differs(model):
    config = SampleConfig(max_tokens=60, seed=3)
    a = "".join(generate(model, "the ", config))
    b = "".join(generate(model, "the ", config))
    c = "".join(generate(model, "the ", SampleConfig(max_tokens=60, seed=4)))
    assert a == b and len(a) == 60
    assert a != c


def test_greedy_is_top_k_one(model):
    a = "".join(generate(model, "the ", SampleConfig(max_tokens=20, temperature=0)))
    b = "".join(generate(model, "the ", SampleConfig(max_tokens=20, top_k=1, seed=9)))
    assert a == b


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    picks = {pick_token(logits, SampleConfig(top_p=0.7), rng) for _ in range(300)}
    assert picks == {0, 1}


def test_generation_runs_past_the_context_and_prompts_longer_than_it(model):
    long_prompt = "the cat sat on a mat " * 5  # 105 characters, ctx is 16
    text = "".join(generate(model, long_prompt, SampleConfig(max_tokens=50, seed=1)))
    assert len(text) == 50


def test_stop_string_ends_generation_before_it(model):
    pieces = list(generate(model, "the ", SampleConfig(max_tokens=80, seed=5)))
    assert len(pieces) == 80  # one piece per token
    full = "".join(pieces)
    stop = full[30:32]
    cut = list(generate(model, "the ", SampleConfig(max_tokens=80, seed=5, stop=stop)))
    assert "".join(cut) == full[: full.index(stop)]
    # still one piece per token (a character model: one per character), "" for a held-back
    # start of the stop string, up to the token that completes it
    assert len(cut) == full.index(stop) + len(stop)


def test_should_stop_ends_the_stream(model):
    pieces: list[str] = []
    for piece in generate(model, "the ", SampleConfig(max_tokens=100, seed=1), should_stop=lambda: len(pieces) >= 5):
        pieces.append(piece)
    assert len(pieces) == 5


def test_prompt_outside_the_vocabulary_is_a_clear_error(model):
    with pytest.raises(TokenizerError):
        list(generate(model, "Zebra §", SampleConfig(max_tokens=5)))
