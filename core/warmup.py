"""Compiling the kernels before the first step, so a front end can say so.

numba compiles each kernel on first use (tens of seconds) and caches the machine code
next to the source (`cache=True`); later starts load it in about a second.

A cold compile is split over processes: the forward pass and the backward pass (each a
large function holding most of the layer kernels) compile at once in two child
processes, which write them to the cache; this process then compiles only what calls
them, loading the rest. On 2 cores that takes the first start from about 29 s to under
20 s. numba compiles one function at a time per process, hence processes, not threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.config import ModelConfig, default_threads
from core.passes import (
    Workspace, act_views, adamw_range, decode_step, gpt_backward, gpt_forward, param_views, reduce_chunks,
    train_shard,
)

KERNELS = (train_shard, reduce_chunks, adamw_range, decode_step)
PARTS = ("forward", "backward")  # compiled side by side in child processes


def kernels_cached() -> bool:
    """True when every kernel has compiled code on disk newer than its source, so the
    first step will start in about a second rather than after compiling."""
    for kernel in KERNELS:
        try:
            index = kernel._cache._cache_file._index_path
            source = kernel.py_func.__code__.co_filename
            if not os.path.exists(index) or os.path.getmtime(index) < os.path.getmtime(source):
                return False
        except (AttributeError, OSError):
            return False
    return True


def compile_part(part: str) -> None:
    """Compiles (into the cache) one of PARTS, the forward or the backward pass, for
    float32 and with the argument types `train_shard` passes, so it loads them."""
    from core.model import Layout

    config = ModelConfig(vocab_size=8, n_layer=1, n_head=1, n_embd=4, ctx=4)
    ws = Workspace.create(config, 1, 2)
    offsets = Layout.of(config).offsets
    params = np.zeros(Layout.of(config).size, np.float32)
    P = param_views(params, offsets, ws.dims)
    A = act_views(ws.acts[0], ws.act_offsets, ws.dims)
    tokens = np.zeros((2, config.ctx + 1), np.int32)
    if part == "forward":
        gpt_forward(P, A, tokens, config.ctx, config.n_head)
    elif part == "backward":
        gpt_backward(param_views(ws.grads[0], offsets, ws.dims), P, A, tokens, config.ctx, config.n_head)
    else:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")


def start_part_children() -> list[subprocess.Popen]:
    """Starts one child process per part of PARTS, where there are cores for it. A child
    that fails loses nothing: whatever is missing from the cache compiles in this
    process on first use."""
    if default_threads() < 2:
        return []
    # This very package, first on the path: not whatever `core` the working folder holds.
    package_root = str(Path(__file__).resolve().parent.parent)
    code = "import sys; sys.path.insert(0, sys.argv[1]); from core.warmup import compile_part; compile_part(sys.argv[2])"
    try:
        return [subprocess.Popen([sys.executable, "-c", code, package_root, part], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for part in PARTS]
    except OSError:
        return []


def compile_kernels() -> float:
    """Compiles (or loads from the cache) every float32 kernel by running a tiny model
    through one training step, an evaluation and a decoding step. Returns the seconds taken."""
    from core.corpus import Corpus
    from core.config import TrainConfig
    from core.sampler import Decoder
    from core.trainer import Trainer, evaluate
    from core.tokenizer import train_tokenizer
    from core.model import GPT

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
