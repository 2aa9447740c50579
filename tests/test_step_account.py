"""benchmarks/bench_step_account.py: its instrumented shard pass computes what the step
computes, and its account of a step adds up. No timing is asserted: only that the rows
exist and sum to the instrumented step they were cut from."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import step_profile
from benchmarks.bench_step_account import ACCOUNT_CONFIGS, StepProfiler, account, config_table, part_costs
from cllm.core.config import TrainConfig
from cllm.core.kernels import NO_DROPOUT, Dropout
from cllm.core.passes import TRAIN
from cllm.core.threads import parallel_threads, single_threaded_blas
from cllm.core.trainer import Trainer
from cllm.core.workspace import Workspace
from tests.helpers import tiny_model, use_tiled_attention


@pytest.mark.parametrize("dropout", [NO_DROPOUT, Dropout(0.1, 0.25, 0.4, 7, 3, 2)], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("attention", ["short", "tiled"])
@pytest.mark.parametrize("shards", [1, 2])
def test_the_instrumented_pass_computes_the_shard_pass_bit_for_bit(small_text, monkeypatch, attention, shards,
                                                                   dropout):
    if attention == "tiled":
        use_tiled_attention(monkeypatch, query_block=4, key_block=6)
    model = tiny_model(small_text, ctx=16)
    batch = np.random.default_rng(0).integers(0, model.config.vocab_size, (5, 17)).astype(np.int32)
    rows = -(-5 // shards)
    plain, profiled = (Workspace.create(model.config, shards, rows) for _ in range(2))
    losses = np.zeros(5)
    clocks = np.zeros((shards, step_profile.CLOCK_SLOTS), np.int64)
    with single_threaded_blas():
        expected = plain.run(model.params, batch, TRAIN, scale=0.01, dropout=dropout)
        with parallel_threads(shards):
            step_profile.profiled_run_shards(
                model.params, profiled.grads, profiled.acts, profiled.params_layout.table,
                profiled.acts_layout.table, model.config.n_head, profiled.group, batch, profiled.bounds(5), 0.01,
                True, losses, profiled.progress, dropout, clocks)
    assert np.array_equal(losses, expected)
    assert np.array_equal(profiled.grads, plain.grads)
    assert np.array_equal(profiled.progress, plain.progress)
    parts = clocks[:, :len(step_profile.PARTS)].sum(axis=1)
    assert np.array_equal(parts, clocks[:, step_profile.EXIT] - clocks[:, step_profile.ENTRY])
    drop_sites = clocks[:, [step_profile.DROPOUT_F, step_profile.DROPOUT_B]]
    assert (drop_sites > 0).all() if dropout.drops else (drop_sites == 0).all()


def test_the_account_of_a_step_adds_up_and_prints(small_corpus, small_text):
    model = tiny_model(small_text, ctx=16)
    trainer = Trainer(model, small_corpus, TrainConfig(threads=2, batch=4, eval_interval=0, steps=100))
    profiler = StepProfiler(trainer)
    params_before = model.params.copy()
    with single_threaded_blas():
        ticks = [profiler.step() for _ in range(2)]
    assert trainer.step == 2 and not np.array_equal(model.params, params_before)
    assert "run" not in vars(trainer.workspace) and "train_step" not in vars(trainer)  # the patches are gone
    hz = 1e9
    result = {"profiled": [{k: v / hz for k, v in t.items()} for t in ticks], "plain": [1e-3, 1e-3],
              "run_extra": 0.0, "shards": trainer.workspace.shards, "group": trainer.workspace.group,
              "rows": [0, 2, 4], "params": model.n_params, "vocab": model.config.vocab_size, "tsc_hz": hz,
              "tsc_drift": 0.0, "load": [0.0, 0.0]}
    rows = account(result)
    step = np.mean([t["step"] for t in ticks]) / hz
    assert sum(rows.values()) == pytest.approx(step, rel=1e-3)
    cfg = dict(n_layer=2, n_head=2, n_embd=16, ctx=16, batch=4, vocab="char")
    costs, tiled = part_costs(cfg, model.config.vocab_size, model.n_params, 2, trainer.workspace.group)
    assert len(costs) == len(step_profile.PARTS) and not tiled
    text = "\n".join(config_table("tiny", cfg, {2: result}, [2], {2: 100.0},
                                  {2: {"L2": 100.0, "L3": 50.0, "memory": 20.0}}, 1 << 20, 32 << 20))
    for name, _ in step_profile.PARTS:
        assert name in text
    assert "sum of parts" in text and "measured step" in text
    assert set(ACCOUNT_CONFIGS) >= {"nanogpt-cpu", "6l-192w", "4l-ctx1024", "gpt2-small"}
