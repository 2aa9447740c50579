"""Dropout: the gradients with fixed masks against finite differences through either of
attention's pairs, the masks' statistics, the two pairs' agreement under dropout, and
masks that do not depend on how the work is split (threads, shards, a resume)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from cllm.core.attention_kernels import (
    attention_backward,
    attention_forward,
    short_attention_backward,
    short_attention_forward,
)
from cllm.core.config import ModelConfig, TrainConfig
from cllm.core.errors import ConfigError
from cllm.core.kernels import (
    Dropout,
    dropout_mask,
    site_key,
    stream_key,
)
from cllm.core.layout import Layout
from cllm.core.model import init_params
from cllm.core.passes import FORWARD, LOSS, TRAIN
from cllm.core.precompile import compile_kernels
from cllm.core.trainer import Trainer
from cllm.core.workspace import Workspace, loss_and_grad
from tests.helpers import GRADIENT_CONFIG, assert_gradients_match_finite_differences, use_tiled_attention
from tests.test_attention import NH, C, attention_inputs, worst_relative_errors

CONFIG = GRADIENT_CONFIG
DROPOUT = Dropout(0.3, 11, 4, 0)


def test_every_gradient_matches_finite_differences_with_fixed_masks(gradient_problem, attention_kernels):
    """The loss with the masks of DROPOUT held fixed is a smooth function of the
    parameters; its gradient is what the backward pass gives, to 1e-6 relative."""
    params, batch = gradient_problem
    loss, grad = loss_and_grad(params, CONFIG, batch, n_shards=2, dropout=DROPOUT)
    plain = loss_and_grad(params, CONFIG, batch, n_shards=2)[1]
    assert np.abs(grad - plain).max() > 0.1 * np.abs(plain).max()  # the masks do something
    assert_gradients_match_finite_differences(params, batch, CONFIG, grad, loss, dropout=DROPOUT)


def test_float32_kernels_agree_with_float64_under_dropout(gradient_problem, attention_kernels):
    params, batch = gradient_problem
    loss64, grad64 = loss_and_grad(params, CONFIG, batch, dropout=DROPOUT)
    loss32, grad32 = loss_and_grad(params.astype(np.float32), CONFIG, batch, dropout=DROPOUT)
    assert abs(loss32 - loss64) < 1e-5 * abs(loss64)
    assert np.abs(grad32 - grad64).max() < 1e-4 * np.abs(grad64).max()


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_the_masks_keep_1_minus_p_and_scale_by_its_inverse(p):
    mask = np.empty((1000, 1000), np.float64)
    dropout_mask(mask, np.uint64(12345), p)
    assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - p)}
    kept = float((mask > 0).mean())
    sigma = np.sqrt(p * (1 - p) / mask.size)
    assert abs(kept - (1 - p)) < 5 * sigma
    assert abs(mask.mean() - 1.0) < 5 * sigma / (1 - p)  # the expected value is kept
    # rows, columns and neighbours are not correlated: every row and column keeps about 1 - p
    for axis in (0, 1):
        rates = (mask > 0).mean(axis=axis)
        assert np.abs(rates - (1 - p)).max() < 6 * np.sqrt(p * (1 - p) / 1000)
    a, b = (mask[:, :-1] > 0).ravel(), (mask[:, 1:] > 0).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01


def test_each_place_draws_its_own_mask():
    """Another seed, step, row, layer or site gives another mask; the same place the same."""
    def mask(D, r=0, layer=0, site=0):
        out = np.empty((64, 64))
        dropout_mask(out, np.uint64(site_key(D, r, layer, site)), D.p)
        return out

    base = Dropout(0.5, 1, 2, 3)
    first = mask(base)
    np.testing.assert_array_equal(first, mask(Dropout(0.5, 1, 2, 3)))
    np.testing.assert_array_equal(first, mask(Dropout(0.5, 1, 2, 0), r=3))  # a row is a row, whoever starts
    for other in (mask(base._replace(seed=2)), mask(base._replace(step=3)), mask(base._replace(first_row=4)),
                  mask(base, layer=1), mask(base, site=1)):
        assert 0.4 < float(((first > 0) == (other > 0)).mean()) < 0.6


def attention_pair(qkv, dout, T, p, key, tiled):
    dtype = qkv.dtype
    out, dqkv = np.full((T, C), 7.0, dtype), np.full((T, 3 * C), 7.0, dtype)
    if tiled:
        lse, tiles = np.full((NH, T), 7.0, dtype), np.full((2, min(16, T), min(24, T)), 7.0, dtype)
        attention_forward(out, lse, tiles, qkv, NH, T, p, key)
        attention_backward(dqkv, tiles, dout, qkv, out, lse, NH, T, p, key)
    else:
        att, scratch = np.zeros((NH, T, T), dtype), np.zeros((T, T), dtype)
        short_attention_forward(out, att, scratch, qkv, NH, T, p, key)
        short_attention_backward(dqkv, scratch, dout, qkv, att, NH, T, p, key)
    return out, dqkv


def attention_masks(T, p, key):
    """Each head's mask of the probabilities, (NH, T, T), through the test hook."""
    masks = np.empty((NH, T, T))
    for h in range(NH):
        dropout_mask(masks[h], np.uint64(stream_key(np.uint64(key), h)), p)
    return masks


@pytest.mark.parametrize("T", [5, 100, 130])
def test_both_attention_pairs_drop_what_the_masks_say(T):
    """Against numpy: out = (softmax(q k^T / sqrt(hs), causal) * M) v with M from the
    hook, head by head, and the gradients by the chain rule written out; the tiled pair on
    16 x 24 tiles and the short pair agree with it (and so with each other) in float64."""
    p, key = 0.25, np.uint64(987654321)
    qkv, dout = attention_inputs(T, np.float64, seed=2)
    masks = attention_masks(T, p, key)
    hs = C // NH
    out, dqkv = np.zeros((T, C)), np.zeros((T, 3 * C))
    causal = np.tril(np.ones((T, T), bool))
    for h in range(NH):
        q, k, v = (qkv[:, (i * NH + h) * hs:(i * NH + h + 1) * hs] for i in range(3))
        s = np.where(causal, q @ k.T / np.sqrt(hs), -np.inf)
        P = np.exp(s - s.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        do = dout[:, h * hs:(h + 1) * hs]
        out[:, h * hs:(h + 1) * hs] = (P * masks[h]) @ v
        dP = (do @ v.T) * masks[h]
        dS = P * (dP - (dP * P).sum(axis=1, keepdims=True)) / np.sqrt(hs)
        dqkv[:, h * hs:(h + 1) * hs] = dS @ k
        dqkv[:, (NH + h) * hs:(NH + h + 1) * hs] = dS.T @ q
        dqkv[:, (2 * NH + h) * hs:(2 * NH + h + 1) * hs] = (P * masks[h]).T @ do
    for tiled in (False, True):
        errors = worst_relative_errors(attention_pair(qkv, dout, T, p, key, tiled), (out, dqkv))
        assert max(errors.values()) < 1e-12, (tiled, errors)


@pytest.mark.parametrize("T", [64, 300])
def test_kept_and_tiled_attention_agree_under_dropout_in_float32(T):
    qkv, dout = attention_inputs(T, np.float32, seed=3)
    short = attention_pair(qkv, dout, T, 0.2, 42, tiled=False)
    tiled = attention_pair(qkv, dout, T, 0.2, 42, tiled=True)
    assert max(worst_relative_errors(tiled, short).values()) < 1e-5
    assert np.abs(short[0] - attention_pair(qkv, dout, T, 0.0, 42, tiled=False)[0]).max() > 0.1


def test_a_pass_drops_nothing_at_rate_0_and_logits_never_drop(gradient_problem):
    params, batch = gradient_problem
    ws = Workspace.create(CONFIG, 1, 3, np.float64)
    plain = ws.run(params, batch, LOSS).copy()
    np.testing.assert_array_equal(ws.run(params, batch, LOSS, dropout=Dropout(0.0, 5, 6, 7)), plain)
    with pytest.raises(ValueError, match="never drop"):
        ws.run(params, batch, FORWARD, dropout=DROPOUT)
    # masks keyed by row: rows 1 and 2 alone, given where they start, draw what they drew in the batch
    together = ws.run(params, batch, TRAIN, dropout=DROPOUT).copy()
    alone = ws.run(params, batch[1:], TRAIN, dropout=DROPOUT._replace(first_row=1))
    np.testing.assert_array_equal(alone, together[1:])


@pytest.mark.parametrize("grad_accum, attention", [(2, "short"), (1, "tiled")])
def test_thread_count_does_not_change_a_step_with_dropout(small_corpus, monkeypatch, grad_accum, attention):
    if attention == "tiled":
        use_tiled_attention(monkeypatch, query_block=4, key_block=6)
    config = TrainConfig(steps=3, batch=6, grad_accum=grad_accum, eval_interval=0, threads=2, seed=3, dropout=0.2)
    compile_kernels()
    results = []
    for cap in ("1", "2"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", cap)
        trainer = Trainer.new(small_corpus, dict(n_layer=2, n_head=2, n_embd=16, ctx=16), replace(config))
        trainer.run()
        results.append((trainer.model.params.copy(), trainer.m.copy(), trainer.v.copy()))
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)


def test_a_resumed_run_with_dropout_is_the_uninterrupted_one(small_corpus, tmp_path):
    shape = dict(n_layer=2, n_head=2, n_embd=16, ctx=16)
    config = TrainConfig(steps=6, batch=4, eval_interval=3, threads=2, seed=5, dropout=0.2, checkpoint_minutes=0)
    whole = Trainer.new(small_corpus, shape, config)
    whole.run()
    path = tmp_path / "run.cllm"
    first = Trainer.new(small_corpus, shape, config, out_path=path)
    assert first.run(lambda event: first.stop() if getattr(event, "step", 0) == 3 else None).step == 3
    resumed = Trainer.resume(path, small_corpus, config)
    resumed.run()
    np.testing.assert_array_equal(resumed.model.params, whole.model.params)
    assert resumed.state.val_history[-1] == whole.state.val_history[-1]
    no_dropout = Trainer.new(small_corpus, shape, replace(config, dropout=0.0))
    no_dropout.run()
    assert not np.array_equal(no_dropout.model.params, whole.model.params)


def test_the_rate_is_checked():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="dropout must be in"):
            TrainConfig(dropout=bad).validate()


# -- the setting: the command line, the model file, Hugging Face folders ---------------

def test_the_rate_is_recorded_kept_by_resume_and_fine_tune_and_exported(tmp_path, small_text, capsys):
    from cllm.core.cli import main
    from cllm.core.hf_import import import_hf_folder
    from cllm.core.model_file import read_info

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(small_text)
    shape = ["--layers", "1", "--heads", "2", "--embd", "16", "--ctx", "16", "--batch", "4", "--eval-interval", "0",
             "--threads", "2", "--checkpoint-minutes", "0"]
    model, child, other = tmp_path / "m.cllm", tmp_path / "child.cllm", tmp_path / "other.cllm"

    def rate(path):
        return read_info(path).run.dropout

    assert main(["train", str(corpus), "-o", str(model), *shape, "--steps", "2", "--dropout", "0.2"]) == 0
    assert rate(model) == 0.2 and (read_info(model).run.train_config or {}).get("dropout") == 0.2
    assert main(["train", str(corpus), "-o", str(model), *shape[8:], "--steps", "3", "--resume"]) == 0
    assert rate(model) == 0.2
    assert main(["train", str(corpus), "-o", str(child), *shape[8:], "--steps", "1", "--init", str(model)]) == 0
    assert rate(child) == 0.2
    assert main(["train", str(corpus), "-o", str(other), *shape[8:], "--steps", "1", "--init", str(model),
                 "--dropout", "0"]) == 0
    assert rate(other) == 0.0

    assert main(["export", str(model), str(tmp_path / "hf")]) == 0
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (hf["embd_pdrop"], hf["attn_pdrop"], hf["resid_pdrop"]) == (0.2, 0.2, 0.2)
    transformers = pytest.importorskip("transformers")
    loaded = transformers.GPT2Config.from_pretrained(tmp_path / "hf")
    assert (loaded.embd_pdrop, loaded.attn_pdrop, loaded.resid_pdrop) == (0.2, 0.2, 0.2)
    import_hf_folder(tmp_path / "hf", tmp_path / "back.cllm")
    assert rate(tmp_path / "back.cllm") == 0.2

    hf.update(embd_pdrop=0.0, attn_pdrop=0.1, resid_pdrop=0.3)
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf))
    import_hf_folder(tmp_path / "hf", tmp_path / "mixed.cllm")
    assert rate(tmp_path / "mixed.cllm") == 0.3
    capsys.readouterr()
    assert main(["train", str(corpus), "-o", str(other), *shape, "--steps", "1", "--dropout", "1", "--force"]) == 2
    assert "dropout must be in [0, 1), got 1.0" in capsys.readouterr().err


def test_evaluation_does_not_drop(small_corpus):
    """A run with dropout evaluates the model as it is: the loss a fresh evaluation gives."""
    from cllm.core.trainer import evaluate

    config = TrainConfig(steps=2, batch=4, eval_interval=2, threads=2, dropout=0.5, eval_chunks=8)
    trainer = Trainer.new(small_corpus, dict(n_layer=1, n_head=2, n_embd=16, ctx=16), config)
    trainer.run()
    assert trainer.state.val_history[-1][1] == round(evaluate(trainer.model, trainer.val_tokens, 2, limit=8)[0], 6)


@pytest.mark.parametrize("p", [0.0, 0.25])
def test_pytorch_given_the_same_masks_gives_the_same_loss_and_gradients(attention_kernels, p):
    """benchmarks/torch_gpt.py's GPT (nanoGPT's), in float64, with CLLM's masks from the
    hook core.dropout.dropout_masks: the loss and every gradient as CLLM's float64 kernels
    give them, through either attention pair, to CLLM's tanh approximation in GELU (2.5e-7,
    test_gradients.py): far below what one mask entry misplaced would change. Rows from 5
    on in the step: the keys count."""
    torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
    from benchmarks.torch_gpt import Masks, cllm_named, from_cllm
    from cllm.core.dropout import dropout_masks
    from cllm.core.model import GPT
    from cllm.core.tokenizer import train_tokenizer

    tok = train_tokenizer("char", "abcdefghijk")
    config = ModelConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=16, ctx=12)
    rng = np.random.default_rng(4)
    params = init_params(config, seed=2, dtype=np.float64) + rng.normal(0.0, 0.1, Layout.params(config).size)
    batch = rng.integers(0, config.vocab_size, (3, config.ctx + 1))
    D = Dropout(p, 1234, 7, 5)
    loss, grad = loss_and_grad(params, config, batch, n_shards=2, dropout=D)
    model = GPT(config, tok, params)
    torch_model = from_cllm(model, dtype=torch.float64).train()
    masks = Masks.from_numpy(dropout_masks(config, D, len(batch), np.float64), torch.float64)
    tokens = torch.from_numpy(batch.astype(np.int64))
    _, torch_loss = torch_model(tokens[:, :-1], tokens[:, 1:], masks=masks)
    torch_loss.backward()
    assert float(torch_loss.detach()) == pytest.approx(loss, rel=1e-8)
    grads = {name: parameter.grad.numpy() for name, parameter in torch_model.named_parameters()
             if parameter.grad is not None}
    worst = {name: float(np.abs(g - grads[name]).max() / np.abs(grads[name]).max())
             for name, g in cllm_named(model, grad).items()}
    assert max(worst.values()) < 1e-6, worst
