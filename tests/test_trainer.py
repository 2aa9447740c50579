"""The trainer: learning, determinism across runs, resume and thread counts, control."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from cllm.core.config import TrainConfig, lr_at
from cllm.core.corpus import Corpus
from cllm.core.errors import ConfigError, CorpusError
from cllm.core.events import CheckpointEvent, DoneEvent, EvalEvent, SaveFailedEvent, StepEvent
from cllm.core.model_file import load_model
from cllm.core.trainer import Trainer, eval_chunks

SHAPE = dict(n_layer=2, n_head=2, n_embd=16, ctx=16)
CONFIG = TrainConfig(steps=12, batch=6, lr=3e-3, eval_interval=4, eval_chunks=8, threads=2, seed=7)


def losses_of(trainer: Trainer) -> list[float]:
    steps: list[float] = []
    trainer.run(lambda e: steps.append(e.loss) if isinstance(e, StepEvent) else None)
    return steps


def test_loss_falls_on_a_learnable_text(small_corpus):
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=150, lr=1e-2, eval_interval=150))
    vals: list[float] = []
    first = []
    trainer.run(lambda e: vals.append(e.val_loss) if isinstance(e, EvalEvent) else
                (first.append(e.loss) if isinstance(e, StepEvent) and e.step == 1 else None))
    assert abs(first[0] - np.log(trainer.model.config.vocab_size)) < 0.15
    assert vals[-1] < first[0] - 0.8


def test_tiny_model_overfits_one_batch(small_corpus, monkeypatch):
    trainer = Trainer.new(small_corpus, dict(n_layer=1, n_head=2, n_embd=32, ctx=8),
                          TrainConfig(steps=150, batch=4, lr=1e-2, warmup=0, weight_decay=0.0, eval_interval=0,
                                      threads=2))
    batch = trainer.next_batch()
    monkeypatch.setattr(trainer, "next_batch", lambda: batch)
    losses = losses_of(trainer)
    assert losses[-1] < 0.05, losses[-10:]


def test_a_batch_is_the_drawn_sequences_of_the_training_split(small_corpus):
    trainer = Trainer.new(small_corpus, SHAPE, CONFIG)
    T, tokens = SHAPE["ctx"], trainer.train_tokens
    draws = np.random.default_rng(CONFIG.seed)  # the generator's twin: the same start positions
    for _ in range(3):
        starts = draws.integers(0, len(tokens) - T - 1, CONFIG.batch)
        batch = trainer.next_batch()
        assert batch.dtype == np.int32 and batch.flags.c_contiguous
        np.testing.assert_array_equal(batch, np.stack([tokens[s:s + T + 1] for s in starts]))


def test_same_seed_same_losses(small_corpus):
    a = losses_of(Trainer.new(small_corpus, SHAPE, CONFIG))
    b = losses_of(Trainer.new(small_corpus, SHAPE, CONFIG))
    assert a == b


def test_one_and_two_shards_agree_to_rounding(small_corpus):
    one = losses_of(Trainer.new(small_corpus, SHAPE, replace(CONFIG, threads=1)))
    two = losses_of(Trainer.new(small_corpus, SHAPE, replace(CONFIG, threads=2)))
    np.testing.assert_allclose(two, one, rtol=1e-5)


def test_shard_counters_add_up_to_the_batch_every_step(small_corpus):
    config = replace(CONFIG, steps=4, batch=7, grad_accum=2, threads=2)
    trainer = Trainer.new(small_corpus, SHAPE, config)
    seen = []

    def check(event):
        if isinstance(event, StepEvent):
            seen.append(trainer.shard_progress.copy())

    trainer.run(check)
    assert list(trainer.shard_sizes) == [6, 8]  # 7 rows in 2 shards (3, 4), twice
    assert len(seen) == 4
    for counts in seen:
        assert counts.sum() == config.batch * config.grad_accum
        assert list(counts) == list(trainer.shard_sizes)


def test_gradient_accumulation_matches_a_bigger_batch_in_loss_scale(small_corpus):
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=1, grad_accum=3, eval_interval=0))
    losses = losses_of(trainer)
    assert abs(losses[0] - np.log(trainer.model.config.vocab_size)) < 0.15


def test_resume_reproduces_an_uninterrupted_run(small_corpus, tmp_path):
    whole = losses_of(Trainer.new(small_corpus, SHAPE, CONFIG))

    path = tmp_path / "run.cllm"
    first = Trainer.new(small_corpus, SHAPE, CONFIG, out_path=path)
    head: list[float] = []

    def stop_at_five(event):
        if isinstance(event, StepEvent):
            head.append(event.loss)
            if event.step == 5:
                first.stop()

    done = first.run(stop_at_five)
    assert done.reason == "stopped" and done.step == 5
    assert load_model(path).training["step"] == 5

    resumed = Trainer.resume(path, small_corpus, CONFIG)
    tail = losses_of(resumed)
    assert head + tail == whole
    assert load_model(path).training["step"] == CONFIG.steps


def test_resume_refuses_a_model_already_trained_that_far(small_corpus, tmp_path):
    path = tmp_path / "m.cllm"
    Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=2), out_path=path).run()
    with pytest.raises(ConfigError, match="already trained 2 steps"):
        Trainer.resume(path, small_corpus, replace(CONFIG, steps=2))


def test_stop_from_another_thread_ends_within_a_step_and_saves(small_corpus, tmp_path):
    path = tmp_path / "m.cllm"
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=100000, eval_interval=0), out_path=path)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("done", trainer.run()))
    thread.start()
    while trainer.step < 3:
        time.sleep(0.01)
    trainer.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert result["done"].reason == "stopped"
    assert load_model(path).training["step"] == trainer.step


def test_pause_holds_the_run_until_unpaused(small_corpus):
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=30, eval_interval=0))
    trainer.pause()
    thread = threading.Thread(target=trainer.run)
    thread.start()
    time.sleep(0.3)
    assert trainer.step == 0 and trainer.paused
    trainer.unpause()
    thread.join(30)
    assert trainer.step == 30


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(small_corpus, tmp_path):
    path = tmp_path / "m.cllm"
    Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=3), out_path=path).run()
    before = path.read_bytes()
    trainer = Trainer.resume(path, small_corpus, replace(CONFIG, steps=10))
    trainer.model.params[5] = np.inf
    events: list = []
    done = trainer.run(events.append)
    assert isinstance(done, DoneEvent) and done.reason == "nan"
    assert "stopped" in done.message and "checkpoint" in done.message
    assert path.read_bytes() == before


def test_learning_rate_schedule():
    c = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert lr_at(0, c) == pytest.approx(1e-3 / 101)
    assert lr_at(99, c) == pytest.approx(1e-3 * 100 / 101)
    assert lr_at(100, c) == pytest.approx(1e-3)
    assert lr_at(1000, c) == pytest.approx(1e-4)
    after = [lr_at(s, c) for s in range(100, 1001)]
    assert all(a >= b for a, b in pairwise(after))


def test_too_short_corpus_is_refused_with_its_name():
    corpus = Corpus("tiny.txt", "abcabcabc", "", None)
    with pytest.raises(CorpusError, match="tiny.txt.*too short"):
        Trainer.new(corpus, SHAPE, CONFIG)


@pytest.mark.parametrize("bad, message", [
    (dict(n_head=3), "heads must divide width"),
    (dict(ctx=1), "context"),
])
def test_nonsense_shapes_are_refused(small_corpus, bad, message):
    with pytest.raises(ConfigError, match=message):
        Trainer.new(small_corpus, {**SHAPE, **bad}, CONFIG)


@pytest.mark.parametrize("bad, message", [
    (dict(lr=-1.0), "learning rate"), (dict(batch=0), "batch"), (dict(steps=0), "steps"),
])
def test_nonsense_training_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        replace(CONFIG, **bad).validate()


# Nothing lost: checkpoints by time, failed saves ------------------------------------

def test_a_checkpoint_comes_when_the_minutes_are_up(small_corpus, tmp_path, monkeypatch):
    """checkpoint_minutes: the clock, not the step count, triggers a save (here the clock
    jumps 10 minutes at step 4); 0 turns it off."""
    from cllm.core import trainer as trainer_module

    path = tmp_path / "m.cllm"
    now = [1000.0]
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: now[0])
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=8, eval_interval=0, checkpoint_minutes=10),
                          out_path=path)
    events: list = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 4:
            now[0] += 600
    trainer.run(on_event)
    saves = [(e.step, e.reason) for e in events if isinstance(e, CheckpointEvent)]
    assert saves == [(4, "time"), (8, "final")]

    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=8, eval_interval=0, checkpoint_minutes=0),
                          out_path=tmp_path / "n.cllm")
    events = []
    trainer.run(on_event)
    assert [(e.step, e.reason) for e in events if isinstance(e, CheckpointEvent)] == [(8, "final")]


def failing_saves(monkeypatch, fail):
    """save_model raises a disk-full ModelFileError whenever fail(path) is true."""
    from cllm.core import trainer as trainer_module
    from cllm.core.errors import ModelFileError

    real = trainer_module.save_model

    def save(path, *args, **kwargs):
        if fail(Path(path)):
            raise ModelFileError(f"{path}: cannot save: No space left on device")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(trainer_module, "save_model", save)


def test_a_failed_checkpoint_is_reported_and_training_goes_on(small_corpus, tmp_path, monkeypatch):
    path = tmp_path / "m.cllm"
    attempts = []

    def first_fails(p):
        attempts.append(p)
        return len(attempts) == 1

    failing_saves(monkeypatch, first_fails)
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=9, eval_interval=0, checkpoint_interval=3),
                          out_path=path)
    events: list = []
    done = trainer.run(events.append)
    failed = [e for e in events if isinstance(e, SaveFailedEvent)]
    assert [(e.step, e.final) for e in failed] == [(3, False)]
    assert "No space left on device" in failed[0].message and str(path) in failed[0].message
    assert [e.step for e in events if isinstance(e, CheckpointEvent)] == [6, 9]
    assert done.reason == "finished" and done.saved_to == path
    assert load_model(path).info.run.step == 9


def test_a_failed_final_save_goes_to_a_fallback_file(small_corpus, tmp_path, monkeypatch):
    path = tmp_path / "m.cllm"
    Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=2, eval_interval=0), out_path=path).run()
    before = path.read_bytes()
    failing_saves(monkeypatch, lambda p: p == path)
    trainer = Trainer.resume(path, small_corpus, replace(CONFIG, steps=5, eval_interval=0))
    events: list = []
    done = trainer.run(events.append)
    assert path.read_bytes() == before  # the old file, whole
    assert [e.final for e in events if isinstance(e, SaveFailedEvent)] == [True]
    fallback = done.saved_to
    assert fallback is not None and fallback != path and fallback.parent == tmp_path
    assert "No space left on device" in done.message and str(fallback) in done.message
    rescued = load_model(fallback)
    assert rescued.info.run.step == 5 and rescued.optimizer is not None  # resumable
    np.testing.assert_array_equal(rescued.model.params, trainer.model.params)


def test_when_no_place_takes_the_run_every_failure_is_told(small_corpus, tmp_path, monkeypatch):
    failing_saves(monkeypatch, lambda p: True)
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=2, eval_interval=0), out_path=tmp_path / "m.cllm")
    done = trainer.run()
    assert done.saved_to is None and "could not save the run anywhere" in done.message
    assert done.message.count("No space left on device") == 4


def test_saving_onto_a_folder_falls_back_beside_it(small_corpus, tmp_path):
    target = tmp_path / "m.cllm"
    target.mkdir()
    done = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=2, eval_interval=0), out_path=target).run()
    assert done.saved_to is not None and done.saved_to.parent == tmp_path and target.is_dir()
    assert "is a directory" in done.message
    assert load_model(done.saved_to).info.run.step == 2


def test_a_stop_during_an_evaluation_records_no_loss(small_corpus, tmp_path):
    trainer = Trainer.new(small_corpus, SHAPE, replace(CONFIG, steps=4, eval_interval=2, eval_chunks=0))
    trainer.run(lambda e: trainer.stop() if isinstance(e, StepEvent) and e.step == 2 else None)
    assert trainer.state.val_history == []


def test_eval_chunks_reads_a_run_of_chunks_as_the_rows_it_names():
    val = np.arange(1000, dtype=np.uint16)
    ctx = 9
    for picked in (np.arange(3, 40), np.arange(0, 100), np.array([2, 5, 6, 40]), np.array([7])):
        rows = np.stack([val[i * (ctx + 1):(i + 1) * (ctx + 1)] for i in picked]).astype(np.int32)
        got = eval_chunks(val, ctx, indices=picked)
        assert got.dtype == np.int32 and np.array_equal(got, rows)
    assert eval_chunks(val, ctx, indices=np.zeros(0, np.int64)).shape == (0, ctx + 1)
