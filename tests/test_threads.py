"""The parallel kernels: a thread-safe threading layer, numba's thread count set at each
launch, and results that do not depend on the thread count."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numba
import numpy as np
import pytest

from cllm.core.config import TrainConfig
from cllm.core.passes import LOSS
from cllm.core.precompile import compile_kernels
from cllm.core.sampler import Decoder
from cllm.core.threads import parallel_threads, thread_cap, threading_layer, worker_count
from cllm.core.trainer import Trainer
from cllm.core.workspace import Workspace
from tests.helpers import tiny_model, use_tiled_attention


def test_the_threading_layer_is_thread_safe():
    assert threading_layer() in ("tbb", "omp")


def test_the_thread_count_follows_the_cap_and_the_tasks(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    assert thread_cap() == 1 and worker_count(8) == 1
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    assert worker_count(8) == min(2, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # filled at run time
    assert worker_count(1) == 1 and worker_count(8, threads=1) == 1


def test_each_launch_sets_numbas_thread_count_in_its_own_thread(monkeypatch):
    """numba's thread count is per thread: a launch from a fresh thread (a TUI worker)
    still gets what parallel_threads asks for."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    seen = []

    def launch():
        with parallel_threads(4):
            seen.append(numba.get_num_threads())

    thread = threading.Thread(target=launch)
    thread.start()
    thread.join()
    assert seen == [1]


@pytest.mark.parametrize("wrong", ["params in float64", "strided params", "float32 losses", "strided losses",
                                   "too few losses"])
def test_a_launch_refuses_arrays_its_compiled_kernel_would_misread(small_text, wrong):
    """Workspace.run calls the launcher's compiled entry point, past numba's type checks:
    it checks the arrays a caller hands it itself, and runs on as before after refusing."""
    model = tiny_model(small_text)
    tokens = model.tokenizer.encode(small_text)
    batch = np.stack([tokens[i:i + 17] for i in range(0, 4 * 17, 17)]).astype(np.int32)
    ws = Workspace.create(model.config, 2, 2)
    good = ws.run(model.params, batch, LOSS)
    assert np.all(np.isfinite(good)) and good.dtype == np.float64
    args: dict[str, Any] = dict(params=model.params, losses=None) | {
        "params in float64": dict(params=model.params.astype(np.float64)),
        "strided params": dict(params=np.repeat(model.params, 2)[::2]),
        "float32 losses": dict(losses=np.zeros(4, np.float32)),
        "strided losses": dict(losses=np.zeros(8)[::2]),
        "too few losses": dict(losses=np.zeros(3)),
    }[wrong]
    with pytest.raises(ValueError):
        ws.run(args["params"], batch, LOSS, losses=args["losses"])
    np.testing.assert_array_equal(ws.run(model.params, batch, LOSS), good)


def test_parallel_kernels_launched_from_two_threads_at_once(small_text):
    """The workqueue layer would abort the process here; the shard kernel from two Python
    threads at once gives each the same losses as running alone."""
    model = tiny_model(small_text)
    tokens = model.tokenizer.encode(small_text)
    batch = np.stack([tokens[i:i + 17] for i in range(0, 8 * 17, 17)]).astype(np.int32)
    alone = Workspace.create(model.config, 2, 4).run(model.params, batch, LOSS)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work():
        try:
            ws = Workspace.create(model.config, 2, 4)
            for _ in range(20):
                results.append(ws.run(model.params, batch, LOSS))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 40
    for losses in results:
        np.testing.assert_array_equal(losses, alone)


@pytest.mark.parametrize("grad_accum, attention", [(1, "short"), (2, "short"), (1, "tiled")])
def test_thread_count_does_not_change_a_training_step(small_corpus, monkeypatch, grad_accum, attention):
    """Two shards on one thread or on two: bit-identical parameters and Adam moments,
    with either of attention's kernel pairs (the tiled one on 4 x 6 tiles)."""
    if attention == "tiled":
        use_tiled_attention(monkeypatch, query_block=4, key_block=6)
    config = TrainConfig(steps=3, batch=6, grad_accum=grad_accum, eval_interval=0, threads=2, seed=3)
    # numba re-reads NUMBA_NUM_THREADS whenever it compiles and refuses a value other than
    # its running pool's: a kernel whose cached code is stale must compile before it changes.
    compile_kernels()
    results = []
    for cap in ("1", "2"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", cap)
        trainer = Trainer.new(small_corpus, dict(n_layer=2, n_head=2, n_embd=16, ctx=16), replace(config))
        trainer.run()
        results.append((trainer.model.params.copy(), trainer.m.copy(), trainer.v.copy()))
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)


def _frames_seen_inside(work: Callable[[], None], caller: Callable) -> int:
    """How often the main thread, waking every half millisecond while `work` runs in
    another thread, finds that thread inside `caller` (the Python function that launches
    the kernels). The interpreter's switch interval is set far above the run's length,
    so the main thread gets the interpreter back only when the other thread releases
    it: inside `caller`, that is a kernel running without the GIL. A kernel that kept the
    GIL would let the main thread in only after it returned, never while the other
    thread is still in `caller` (0 here, whatever the machine's speed)."""
    finished = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            finished.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        seen = 0
        while not finished.wait(0.0005):
            frame = sys._current_frames().get(thread.ident or 0)
            while frame is not None and frame.f_code is not caller.__code__:
                frame = frame.f_back
            seen += frame is not None
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    return seen


def test_a_training_launch_releases_the_gil_while_its_kernels_run(small_text):
    """The TUI trains in a thread worker: the UI's thread must run while a step's kernels do."""
    model = tiny_model(small_text, n_layer=2, n_head=2, n_embd=64, ctx=64)
    tokens = model.tokenizer.encode(small_text)
    batch = np.stack([tokens[i:i + 65] for i in range(0, 32 * 65, 65)]).astype(np.int32)
    ws = Workspace.create(model.config, 2, 16)

    def work() -> None:
        for _ in range(20):
            ws.run(model.params, batch, LOSS)

    assert _frames_seen_inside(work, Workspace.run) > 0


def test_a_decoding_step_releases_the_gil_while_its_kernels_run(small_text):
    """The TUI generates in a thread worker: the UI's thread must run while a token's kernels do."""
    model = tiny_model(small_text, n_layer=8, n_head=8, n_embd=512, ctx=64)
    decoder = Decoder(model)
    decoder.prefill(np.asarray(model.tokenizer.encode(small_text[:8]), np.int32))

    def work() -> None:
        for token in model.tokenizer.encode(small_text[8:48]):
            decoder.step(token)

    assert _frames_seen_inside(work, Decoder.step_all) > 0
