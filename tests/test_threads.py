"""The shard threads: every task runs once, errors come back, and the thread count never
changes what a training step computes."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from core.config import TrainConfig
from core.threads import run_split, run_tasks, thread_cap
from core.trainer import Trainer


def test_every_task_runs_once_and_the_caller_takes_a_share(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            seen.append((i, threading.get_ident()))

    run_tasks(task, 7)
    assert sorted(i for i, _ in seen) == list(range(7))
    threads = {t for _, t in seen}
    assert threading.get_ident() in threads and len(threads) == 2


def test_a_cap_of_one_keeps_everything_on_the_calling_thread(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    assert thread_cap() == 1
    idents: set[int] = set()
    run_tasks(lambda i: idents.add(threading.get_ident()), 4, threads=4)
    assert idents == {threading.get_ident()}


def test_an_error_in_a_pool_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")

    def task(i: int) -> None:
        if i == 1:  # task 1 runs on the pool's thread
            raise ValueError("shard 1 failed")

    with pytest.raises(ValueError, match="shard 1 failed"):
        run_tasks(task, 2)


def test_split_covers_the_range_in_contiguous_pieces(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    pieces: list[tuple[int, int]] = []
    run_split(lambda lo, hi: pieces.append((lo, hi)), 11, threads=2)
    assert sorted(pieces) == [(0, 5), (5, 11)]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_thread_count_does_not_change_a_training_step(small_corpus, monkeypatch, grad_accum):
    """Two shards on one thread or on two: bit-identical parameters and Adam moments."""
    config = TrainConfig(steps=3, batch=6, grad_accum=grad_accum, eval_interval=0, threads=2, seed=3)
    results = []
    for cap in ("1", "2"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", cap)
        trainer = Trainer.new(small_corpus, dict(n_layer=2, n_head=2, n_embd=16, ctx=16), replace(config))
        trainer.run()
        results.append((trainer.model.params.copy(), trainer.m.copy(), trainer.v.copy()))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
