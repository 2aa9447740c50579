"""Compiling the kernels before the first step, so a front end can say so.

numba compiles each kernel on first use (tens of seconds) and caches the machine code
next to the source (`cache=True`); later starts load it in about a second."""

from __future__ import annotations

import os
import time

import numpy as np

from core.config import ModelConfig
from core.passes import adamw_update, decode_step, reduce_shards, train_kernel

KERNELS = (train_kernel, reduce_shards, adamw_update, decode_step)


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
