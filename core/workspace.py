"""A model's per-shard buffers, and the parallel kernel that runs one shard per thread.

`run_shards` is a numba `parallel=True` kernel with `prange` over shards; each iteration
runs `shard_pass` on its own rows with its own activation and gradient buffers. It has
one explicit signature per float type, whose first argument is the shard pass as a
first-class function (core/passes.py says why): the parallel kernel then compiles only
its own small loop, in about a second, and loads from numba's cache like any other
kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit, prange, typeof, types
from numba.core.types.function_type import CompileResultWAP

from cllm.core import kernel_cache
from cllm.core.config import ModelConfig
from cllm.core.kernels import JIT, NO_DROPOUT, Dropout
from cllm.core.layout import Activations, Layout, group_size
from cllm.core.passes import (
    FORWARD,
    LAST_LOGITS,
    TRAIN,
    attention_backward_pass,
    attention_forward_pass,
    compiled_shard_pass,
    gpt_backward,
    gpt_forward,
    numba_array,
    shard_pass,
)
from cllm.core.threads import parallel_threads, single_threaded_blas


def shard_bounds(rows: int, shards: int) -> np.ndarray:
    """Row ranges of `shards` nearly equal shards: shard s has rows bounds[s]:bounds[s+1]."""
    return np.array([rows * s // shards for s in range(shards + 1)], dtype=np.int64)


def run_shards(kernel, attend, attend_backward, forward, backward, params, grads, acts, ptable, atable, n_head, group,
               batch, bounds, scale, zero, mode, losses, progress, stop, dropout):
    """`kernel` (the shard pass) for every shard s over rows bounds[s]:bounds[s+1] of
    batch, one shard per thread."""
    for s in prange(grads.shape[0]):
        kernel(attend, attend_backward, forward, backward, params, grads[s], acts[s], ptable, atable, n_head, group,
               batch, bounds[s], bounds[s + 1], scale, zero, mode, losses, progress[s:s + 1], stop, dropout)


class ShardLauncher(NamedTuple):
    """`run_shards` for one float type, ready to call without numba's dispatch: its
    compiled entry point and its first five arguments (the shard pass and the passes it
    calls) as the addresses of their compiled code.

    Dispatching the five passes as jit functions costs about 0.4 ms a launch (numba looks
    each one's compiled code up by its signature, hashing the nested types of the named
    views every time): more than 1% of a 2-thread nanoGPT step. As `CompileResultWAP`s
    (numba's wrapper-address protocol) they unbox in microseconds, and calling the entry
    point skips the typing of the other arguments, which `Workspace.run` makes itself in
    the types of the signature (`check_launch_arrays` guards the ones a caller hands in)."""

    entry: Callable[..., None]
    passes: tuple[CompileResultWAP, ...]


@functools.cache
def shard_launcher(dtype: np.dtype) -> ShardLauncher:
    """`run_shards` compiled (or loaded from the cache) for parameters of `dtype`."""
    kernel = compiled_shard_pass(dtype)
    passes = kernel.args[:4]  # attention forward and backward, forward, backward
    f, i64 = numba_array(dtype), types.int64
    table = numba_array(np.int64, 2)
    sig = types.void(types.FunctionType(kernel), *passes, f, numba_array(dtype, 2),
                     numba_array(dtype, 2), table, table, i64, i64, numba_array(np.int32, 2),
                     numba_array(np.int64), types.float64, types.boolean, i64, numba_array(np.float64),
                     numba_array(np.int64), numba_array(np.int64), typeof(NO_DROPOUT))
    launcher = njit(sig, parallel=True, **JIT)(run_shards)
    functions = (shard_pass, attention_forward_pass, attention_backward_pass, gpt_forward, gpt_backward)
    return ShardLauncher(launcher.get_overload(sig),
                         tuple(CompileResultWAP(fn.overloads[ft.signature.args])
                               for fn, ft in zip(functions, sig.args[:5], strict=True)))


def check_launch_arrays(params: np.ndarray, grads: np.ndarray, losses: np.ndarray, rows: int) -> None:
    """What numba's dispatch would check of the arrays a caller hands `Workspace.run`
    (the entry point trusts its arguments): params flat, contiguous and of the
    workspace's float type (`grads`'), losses in float64, with a place for each of `rows`."""
    if params.dtype != grads.dtype or params.ndim != 1 or not params.flags.c_contiguous:
        raise ValueError(f"params must be a flat contiguous {grads.dtype} array, as the workspace's buffers")
    if losses.dtype != np.float64 or losses.ndim != 1 or not losses.flags.c_contiguous or not losses.flags.writeable:
        raise ValueError("losses must be a writable contiguous 1-D float64 array")
    if len(losses) < rows:
        raise ValueError(f"losses has {len(losses)} places for {rows} rows")


@dataclass
class Workspace:
    """One model's kernel buffers for `shards` shards: each shard's activations and
    gradients, the rows each shard has finished (for progress bars) and the stop flag."""

    params_layout: Layout
    acts_layout: Layout
    n_head: int
    group: int  # sequences per group inside a shard
    acts: np.ndarray  # (shards, activation size)
    grads: np.ndarray  # (shards, parameter count)
    progress: np.ndarray  # (shards,) rows finished since the last reset
    stop: np.ndarray  # (1,) non-zero: every shard ends after its current group

    @classmethod
    def create(cls, config: ModelConfig, shards: int, rows_per_shard: int, dtype=np.float32) -> Workspace:
        kernel_cache.drop_stale()  # before any kernel loads from numba's cache
        group = group_size(config, rows_per_shard)
        acts_layout = Layout.activations(config, group)
        params_layout = Layout.params(config)
        return cls(params_layout, acts_layout, config.n_head, group, np.zeros((shards, acts_layout.size), dtype),
                   np.zeros((shards, params_layout.size), dtype), np.zeros(shards, np.int64), np.zeros(1, np.int64))

    @property
    def shards(self) -> int:
        return len(self.acts)

    def bounds(self, rows: int) -> np.ndarray:
        """How `rows` rows are split over the shards."""
        return shard_bounds(rows, self.shards)

    def run(self, params: np.ndarray, batch: np.ndarray, mode: int, *, losses: np.ndarray | None = None,
            scale: float = 1.0, accumulate: bool = False, dropout: Dropout = NO_DROPOUT) -> np.ndarray:
        """`shard_pass` on every shard at once, shard s over rows bounds[s]:bounds[s+1] of
        `batch` (B, T+1): FORWARD, LAST_LOGITS, LOSS or TRAIN (gradients times `scale`, added to the
        shard's previous gradients and progress when `accumulate`). Returns the losses
        (B,) of LOSS and TRAIN, written into `losses` if given. `dropout` applies to
        TRAIN (and to LOSS, for checks with fixed masks); logits alone never drop."""
        batch = np.ascontiguousarray(batch, dtype=np.int32)
        if dropout.drops and mode in (FORWARD, LAST_LOGITS):
            raise ValueError("the logits of a prompt or a generation never drop")
        dropout = dropout.typed()
        if losses is None:
            losses = np.zeros(len(batch), np.float64)
        check_launch_arrays(params, self.grads, losses, len(batch))
        if not accumulate:
            self.progress[:] = 0
        launch = shard_launcher(params.dtype)
        with parallel_threads(self.shards):
            launch.entry(*launch.passes, params, self.grads, self.acts, self.params_layout.table,
                         self.acts_layout.table, self.n_head, self.group, batch, self.bounds(len(batch)), float(scale),
                         bool(not accumulate), int(mode), losses, self.progress, self.stop, dropout)
        return losses

    def views(self, shard: int = 0) -> Activations:
        """Named activation views of one shard (the kernels' `A`)."""
        return self.acts_layout.views(self.acts[shard])


def loss_and_grad(params: np.ndarray, config: ModelConfig, batch: np.ndarray, n_shards: int = 1,
                  dropout: Dropout = NO_DROPOUT) -> tuple[float, np.ndarray]:
    """Mean loss over `batch` (B, T+1) and its gradient, in the dtype of `params`.
    For tests and tools; the trainer keeps its buffers between steps instead."""
    from cllm.core.optimizer import reduce_shards

    B, T = batch.shape[0], batch.shape[1] - 1
    ws = Workspace.create(config, n_shards, int(np.diff(shard_bounds(B, n_shards)).max()), params.dtype)
    with single_threaded_blas():
        losses = ws.run(params, batch, TRAIN, scale=1.0 / (B * T), dropout=dropout)
        reduce_shards(ws.grads)
    return float(losses.mean()), ws.grads[0].copy()


def forward_logits(params: np.ndarray, config: ModelConfig, tokens: np.ndarray,
                   ws: Workspace | None = None, last_only: bool = False) -> tuple[np.ndarray, Workspace]:
    """Runs one sequence (T <= ctx tokens) through the model at once. Returns its logits
    (T, V), or with `last_only` those of its last position (V,), and the workspace, whose
    activations then hold every layer's keys and values."""
    ws = ws or Workspace.create(config, 1, 1, params.dtype)
    T = len(tokens)
    batch = np.zeros((1, T + 1), np.int32)
    batch[0, :T] = tokens
    ws.run(params, batch, LAST_LOGITS if last_only else FORWARD)
    logits = ws.views().logits
    return (logits[T - 1] if last_only else logits[:T]), ws
