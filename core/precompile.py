"""Compiling the kernels before the first step, so a front end can say so.

numba compiles each kernel on first use (tens of seconds) and caches the machine code
next to the source (`cache=True`); later starts load it in about a second.

A cold compile is split over processes: the forward pass and the backward pass (each a
large function holding most of the layer kernels) compile at once in two child
processes, which write them to the cache; this process then compiles only what calls
them, loading the rest. numba compiles one function at a time per process, hence
processes, not threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
from numba.core.caching import FunctionCache

from cllm.core import kernel_cache
from cllm.core.config import ModelConfig, default_threads

PARTS = ("forward", "backward")  # compiled side by side in child processes


def _cached_functions() -> list:
    from cllm.core.decode_kernels import decode_rows, decode_rows_region
    from cllm.core.optimizer import adamw_chunks, reduce_chunks
    from cllm.core.passes import shard_pass
    from cllm.core.prompt_pass import attention_heads
    from cllm.core.sampler import bit_sums
    from cllm.core.workspace import run_shards

    return [shard_pass.py_func, run_shards, reduce_chunks.py_func, adamw_chunks.py_func, decode_rows.py_func,
            decode_rows_region.py_func, attention_heads.py_func, bit_sums.py_func]


def kernels_cached() -> bool:
    """True when every kernel has compiled code on disk newer than its source, so the
    first step will start in about a second rather than after compiling."""
    kernel_cache.drop_stale()
    for py_func in _cached_functions():
        try:
            index = FunctionCache(py_func)._cache_file._index_path
            source = py_func.__code__.co_filename
            if not os.path.exists(index) or os.path.getmtime(index) < os.path.getmtime(source):
                return False
        except (AttributeError, OSError, RuntimeError):
            return False
    return True


def compile_part(part: str) -> None:
    """Compiles (into the cache) one of PARTS for float32: attention's forward and the
    forward pass, then the one-token decoder and the optimiser's kernels; or attention's
    backward and the backward pass, then the shard pass. The two take about as long."""
    from cllm.core.passes import compile_backward, compile_forward, shard_pass, shard_pass_signature

    f32 = np.dtype(np.float32)
    config = ModelConfig(vocab_size=8, n_layer=1, n_head=1, n_embd=4, ctx=4)
    if part == "forward":
        compile_forward(f32)
        compile_decoder(config)
        compile_optimizer(config)
    elif part == "backward":
        compile_backward(f32)
        shard_pass.compile(shard_pass_signature(f32))
    else:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")


def compile_decoder(config: ModelConfig) -> None:
    """The float32 prompt pass and decoding step (int8 weights compile on their first use)."""
    from cllm.core.decode_kernels import DecodeState, decode_rows, decode_rows_region
    from cllm.core.layout import Layout
    from cllm.core.prompt_pass import prompt_pass
    from cllm.core.quantize import decode_weights, float32_forms
    from cllm.core.sampler import weights_stamp
    from cllm.core.spin_barrier import barrier_state

    layout = Layout.params(config)
    flat = np.zeros(layout.size, np.float32)
    P = layout.views(flat)
    weights = decode_weights(P, float32_forms(P))
    state = DecodeState.create(1, config.n_layer, config.n_head, config.ctx, config.n_embd, config.vocab_size)
    prompt_pass(None, P, state, range(1), np.ones(2, np.int32), config.n_head, 1)
    decode_rows(weights, state, np.ones(1, np.int32), 2, config.n_head, 1)
    decode_rows_region(weights, state, np.ones(1, np.int32), 2, config.n_head, 1, barrier_state())
    weights_stamp([flat])


def compile_optimizer(config: ModelConfig) -> None:
    from cllm.core.layout import Layout
    from cllm.core.optimizer import adamw_update, reduce_shards

    layout = Layout.params(config)
    grads = np.zeros((2, layout.size), np.float32)
    reduce_shards(grads, 1)
    params = np.zeros(layout.size, np.float32)
    adamw_update(params, grads[0], params.copy(), params.copy(), layout.decay_segments(), 1e-3, 0.9, 0.99, 1e-8, 0.1,
                 1, 1.0, 1)


def start_part_children() -> list[subprocess.Popen]:
    """Starts one child process per part of PARTS, where there are cores for it. A child
    that fails loses nothing: whatever is missing from the cache compiles in this
    process on first use."""
    if default_threads() < 2:
        return []
    code = "import sys; from cllm.core.precompile import compile_part; compile_part(sys.argv[1])"
    try:  # -P: this installed package, not whatever the working folder holds
        return [subprocess.Popen([sys.executable, "-P", "-c", code, part], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for part in PARTS]
    except OSError:
        return []


def compile_kernels() -> float:
    """Compiles (or loads from the cache) every float32 kernel by running a tiny model
    through one training step, an evaluation and a decoding step. Returns the seconds taken."""
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import Corpus
    from cllm.core.model import GPT
    from cllm.core.sampler import Decoder
    from cllm.core.tokenizer import train_tokenizer
    from cllm.core.trainer import Trainer, evaluate

    started = time.perf_counter()
    if not kernels_cached():
        children = start_part_children()
        try:
            for child in children:
                child.wait()
        finally:  # interrupted: stop the children too
            for child in children:
                if child.poll() is None:
                    child.kill()
    text = "abcdefgh " * 64
    tok = train_tokenizer("char", text)
    model = GPT.create(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=4, ctx=4), tok)
    corpus = Corpus("warm-up", text, "", None)
    trainer = Trainer(model, corpus, TrainConfig(steps=1, batch=2, eval_interval=0, threads=1))
    trainer.run()
    evaluate(model, trainer.val_tokens, threads=1, limit=2)
    decoder = Decoder(model)
    decoder.prefill(np.array([1, 2], np.int32))
    decoder.step(3)
    return time.perf_counter() - started
