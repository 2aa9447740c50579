"""Where every buffer lives: the parameters (with their gradients and Adam moments, which
share the layout) and one shard's activations.

As in llm.c, each is one flat buffer cut into named blocks. A `Layout` is the one
description of such a buffer: every block's name, shape and place, worked out once in
Python. The kernels get it as a table (one row per block: start, end and up to three
sizes) and `param_views` / `act_views` turn a flat buffer and its table into named tuples
of views, so kernels write `P.wte` and `A.logits`, never a position.

The parameter blocks hold GPT-2's tensors with the per-layer tensors of a kind stacked
(L, ...); each GPT-2 tensor (`h.3.attn.c_attn.weight`, ...) is a view into the buffer, so
the optimiser and the gradient sum run over flat memory while files store tensors by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from cllm.core.config import ModelConfig
from cllm.core.kernels import JIT


class Params(NamedTuple):
    """Views of the parameters (or of gradients or Adam moments: the same layout)."""

    wte: np.ndarray  # (V, C) token embedding, tied to the output layer
    wpe: np.ndarray  # (maxT, C) position embedding
    ln1w: np.ndarray  # (L, C)
    ln1b: np.ndarray  # (L, C)
    qkvw: np.ndarray  # (L, C, 3C)
    qkvb: np.ndarray  # (L, 3C)
    attprojw: np.ndarray  # (L, C, C)
    attprojb: np.ndarray  # (L, C)
    ln2w: np.ndarray  # (L, C)
    ln2b: np.ndarray  # (L, C)
    fcw: np.ndarray  # (L, C, 4C)
    fcb: np.ndarray  # (L, 4C)
    fcprojw: np.ndarray  # (L, 4C, C)
    fcprojb: np.ndarray  # (L, C)
    lnfw: np.ndarray  # (C,)
    lnfb: np.ndarray  # (C,)


class Activations(NamedTuple):
    """Views of one shard's activations for a group of G sequences (N = G * maxT rows),
    and the backward pass's scratch. Attention keeps either each head's probabilities
    (`att`, contexts up to SHORT_ATTENTION_MAX_CTX) or one log-sum-exp per query (`lse`,
    the tiled kernels); the other block is empty, and `atttiles` is the scratch of the
    kernels in use (see `attention_shapes`). The backward pass reuses scratch as it goes:
    `dresidual` holds the gradient of the residual stream at the current depth;
    `dbranch` (N, C) holds in turn the gradient of ln_f's output, then per layer of ln_2's
    output, of the attention output and of ln_1's output; `logits` holds the logits,
    then the probabilities, then the gradient of the loss with respect to the logits."""

    encoded: np.ndarray  # (N, C) token + position embedding
    ln1: np.ndarray  # (L, N, C)
    ln1_mean: np.ndarray  # (L, N)
    ln1_rstd: np.ndarray  # (L, N)
    qkv: np.ndarray  # (L, N, 3C) queries | keys | values
    att: np.ndarray  # (L, G, NH, maxT, maxT) attention probabilities, or empty
    lse: np.ndarray  # (L, G, NH, maxT) log-sum-exp of each query's scores, or empty
    atty: np.ndarray  # (L, N, C) attention output, heads side by side
    res2: np.ndarray  # (L, N, C) residual after attention
    ln2: np.ndarray  # (L, N, C)
    ln2_mean: np.ndarray  # (L, N)
    ln2_rstd: np.ndarray  # (L, N)
    fch: np.ndarray  # (L, N, 4C) MLP hidden layer before GELU
    fchg: np.ndarray  # (L, N, 4C) after GELU
    res3: np.ndarray  # (L, N, C) residual after the MLP: the layer's output
    lnf: np.ndarray  # (N, C)
    lnf_mean: np.ndarray  # (N,)
    lnf_rstd: np.ndarray  # (N,)
    logits: np.ndarray  # (N, V) logits, then probabilities, then their gradient
    dresidual: np.ndarray  # (N, C)
    dbranch: np.ndarray  # (N, C)
    dqkv: np.ndarray  # (N, 3C)
    dfch: np.ndarray  # (N, 4C)
    dfchg: np.ndarray  # (N, 4C)
    atttiles: np.ndarray  # (2, Br, Bc) score and gradient tiles, or (1, maxT, maxT) one head's dP


# Per-layer parameter blocks and the GPT-2 name of one layer's slice.
LAYER_NAMES = {
    "ln1w": "ln_1.weight", "ln1b": "ln_1.bias",
    "qkvw": "attn.c_attn.weight", "qkvb": "attn.c_attn.bias",
    "attprojw": "attn.c_proj.weight", "attprojb": "attn.c_proj.bias",
    "ln2w": "ln_2.weight", "ln2b": "ln_2.bias",
    "fcw": "mlp.c_fc.weight", "fcb": "mlp.c_fc.bias",
    "fcprojw": "mlp.c_proj.weight", "fcprojb": "mlp.c_proj.bias",
}
GLOBAL_NAMES = {"wte": "wte.weight", "wpe": "wpe.weight", "lnfw": "ln_f.weight", "lnfb": "ln_f.bias"}
DECAYED = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}  # 2-D weights get weight decay

GROUP_ROWS = 256  # a shard runs its sequences in groups of about this many positions

# Attention's kernels (core/attention_kernels.py), picked by the context length: up to this
# context the short pair keeps every head's T x T probabilities, which at these sizes is
# faster than recomputing them (the crossover of benchmarks/bench_context.py); beyond it
# the tiled pair runs on tiles of up to ATT_QUERY_BLOCK queries by ATT_KEY_BLOCK keys. At
# ctx 1024, BLAS on one thread, (128, 128) tiles beat (128, 256) by 7% and the other
# shapes tried (64 to 256 queries by 64 to 512 keys) by 5% or more, except (96, 192): a tie.
SHORT_ATTENTION_MAX_CTX = 160
ATT_QUERY_BLOCK = 128
ATT_KEY_BLOCK = 128


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    V, T, C, L = config.vocab_size, config.ctx, config.n_embd, config.n_layer
    return {
        "wte": (V, C), "wpe": (T, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, C, 3 * C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, C, 4 * C), "fcb": (L, 4 * C),
        "fcprojw": (L, 4 * C, C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


def attention_shapes(config: ModelConfig, group: int) -> dict[str, tuple[int, ...]]:
    """The blocks of the attention kernels for this context: the short pair's
    probabilities and (1, T, T) scratch, or the tiled pair's log-sum-exps and tiles. The
    passes pick the pair from these shapes."""
    T, L, NH = config.ctx, config.n_layer, config.n_head
    if T <= SHORT_ATTENTION_MAX_CTX:
        return {"att": (L, group, NH, T, T), "lse": (L, group, NH, 0), "atttiles": (1, T, T)}
    tile = (2, min(ATT_QUERY_BLOCK, T), min(ATT_KEY_BLOCK, T))
    return {"att": (L, group, NH, 0, 0), "lse": (L, group, NH, T), "atttiles": tile}


def activation_shapes(config: ModelConfig, group: int) -> dict[str, tuple[int, ...]]:
    V, T, C, L = config.vocab_size, config.ctx, config.n_embd, config.n_layer
    N = group * T
    return {
        "encoded": (N, C), "ln1": (L, N, C), "ln1_mean": (L, N), "ln1_rstd": (L, N),
        "qkv": (L, N, 3 * C), "atty": (L, N, C), "res2": (L, N, C),
        "ln2": (L, N, C), "ln2_mean": (L, N), "ln2_rstd": (L, N), "fch": (L, N, 4 * C),
        "fchg": (L, N, 4 * C), "res3": (L, N, C), "lnf": (N, C), "lnf_mean": (N,), "lnf_rstd": (N,),
        "logits": (N, V), "dresidual": (N, C), "dbranch": (N, C), "dqkv": (N, 3 * C), "dfch": (N, 4 * C),
        "dfchg": (N, 4 * C), **attention_shapes(config, group),
    }


def group_size(config: ModelConfig, max_rows: int) -> int:
    """Sequences per group: enough rows for efficient matrix products, no more than a
    shard holds, and groups of even size. Progress counters advance one group at a time."""
    target = max(1, min(max_rows, -(-GROUP_ROWS // config.ctx)))
    n_groups = -(-max_rows // target)
    return -(-max_rows // n_groups)


TABLE_DIMS = 5  # a table row: start, end, then the block's shape (at most 5 dimensions)


@dataclass(frozen=True)
class Layout:
    """Blocks of a flat buffer, in the order of the fields of `kind` (`Params` or
    `Activations`): `table[i]` is block i's start, end and shape (padded with ones), the
    form the kernels take."""

    kind: type[Params] | type[Activations]
    shapes: dict[str, tuple[int, ...]]
    table: np.ndarray  # (blocks, 2 + TABLE_DIMS) int64

    @classmethod
    def from_shapes(cls, kind: type[Params] | type[Activations], shapes: dict[str, tuple[int, ...]]) -> Layout:
        names = kind._fields
        table = np.ones((len(names), 2 + TABLE_DIMS), np.int64)
        start = 0
        for i, name in enumerate(names):
            shape = shapes[name]
            size = math.prod(shape)
            table[i, 0], table[i, 1] = start, start + size
            table[i, 2:2 + len(shape)] = shape
            start += size
        return cls(kind, {name: shapes[name] for name in names}, table)

    @classmethod
    def params(cls, config: ModelConfig) -> Layout:
        return cls.from_shapes(Params, param_shapes(config))

    @classmethod
    def activations(cls, config: ModelConfig, group: int = 1) -> Layout:
        return cls.from_shapes(Activations, activation_shapes(config, group))

    @property
    def names(self) -> tuple[str, ...]:
        return self.kind._fields

    @property
    def size(self) -> int:
        return int(self.table[-1, 1])

    def views(self, flat: np.ndarray):
        """The named views of `flat` (a `kind`), as the kernels' `param_views` and
        `act_views` make them."""
        return self.kind(*(self.block(flat, name) for name in self.names))

    def block(self, flat: np.ndarray, name: str) -> np.ndarray:
        start, end = self.table[self.names.index(name), :2]
        return flat[start:end].reshape(self.shapes[name])

    def named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """GPT-2 tensor name -> view into a parameter-layout `flat` (no copies)."""
        views: dict[str, np.ndarray] = {}
        layers = self.shapes["ln1w"][0]
        for layer in range(layers):
            for block, suffix in LAYER_NAMES.items():
                views[f"h.{layer}.{suffix}"] = self.block(flat, block)[layer]
        for block, name in GLOBAL_NAMES.items():
            views[name] = self.block(flat, block)
        return views

    def decay_segments(self) -> np.ndarray:
        """(n, 3) int64 rows of start, end, decay flag, covering the whole buffer."""
        return np.array([(self.table[i, 0], self.table[i, 1], int(name in DECAYED))
                         for i, name in enumerate(self.names)], dtype=np.int64)


def tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """GPT-2 tensor name -> shape, in file order."""
    layout = Layout.params(config)
    return {name: view.shape for name, view in layout.named_views(np.zeros(layout.size, np.float32)).items()}


# ----------------------------------------------------------------------------------
# Named views for the kernels. The number of dimensions of each block is written here;
# its start and sizes come from the table.

@intrinsic
def _block(typingctx, flat, start, shape):
    """A C-ordered view of `shape` (a tuple) at `start` of the contiguous 1-D `flat`,
    sharing its memory. The same as flat[start:start+size].reshape(shape), without the
    general reshape's checks, which cost seconds of compile time per view."""
    ndim = len(shape)
    view = types.Array(flat.dtype, ndim, "C")

    def codegen(context, builder, signature, args):
        flat_value, start_value, shape_value = args
        source = make_array(signature.args[0])(context, builder, flat_value)
        result = make_array(view)(context, builder)
        dims = cgutils.unpack_tuple(builder, shape_value, ndim)
        strides: list = []
        stride = source.itemsize
        for dim in reversed(dims):
            strides.insert(0, stride)
            stride = builder.mul(stride, dim)
        populate_array(result, data=builder.gep(source.data, [start_value]), shape=dims, strides=strides,
                       itemsize=source.itemsize, meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, view, result._getvalue())

    return view(flat, start, shape), codegen


@njit(inline="always", **JIT)
def _view1(flat, table, i):
    return _block(flat, table[i, 0], (table[i, 2],))


@njit(inline="always", **JIT)
def _view2(flat, table, i):
    return _block(flat, table[i, 0], (table[i, 2], table[i, 3]))


@njit(inline="always", **JIT)
def _view3(flat, table, i):
    return _block(flat, table[i, 0], (table[i, 2], table[i, 3], table[i, 4]))


@njit(inline="always", **JIT)
def _view4(flat, table, i):
    return _block(flat, table[i, 0], (table[i, 2], table[i, 3], table[i, 4], table[i, 5]))


@njit(inline="always", **JIT)
def _view5(flat, table, i):
    return _block(flat, table[i, 0], (table[i, 2], table[i, 3], table[i, 4], table[i, 5], table[i, 6]))


@njit(**JIT)
def param_views(flat, table):
    return Params(
        _view2(flat, table, 0), _view2(flat, table, 1), _view2(flat, table, 2), _view2(flat, table, 3),
        _view3(flat, table, 4), _view2(flat, table, 5), _view3(flat, table, 6), _view2(flat, table, 7),
        _view2(flat, table, 8), _view2(flat, table, 9), _view3(flat, table, 10), _view2(flat, table, 11),
        _view3(flat, table, 12), _view2(flat, table, 13), _view1(flat, table, 14), _view1(flat, table, 15),
    )


@njit(**JIT)
def act_views(flat, table):
    return Activations(
        _view2(flat, table, 0), _view3(flat, table, 1), _view2(flat, table, 2), _view2(flat, table, 3),
        _view3(flat, table, 4), _view5(flat, table, 5), _view4(flat, table, 6), _view3(flat, table, 7),
        _view3(flat, table, 8), _view3(flat, table, 9), _view2(flat, table, 10), _view2(flat, table, 11),
        _view3(flat, table, 12), _view3(flat, table, 13), _view3(flat, table, 14), _view2(flat, table, 15),
        _view1(flat, table, 16), _view1(flat, table, 17), _view2(flat, table, 18), _view2(flat, table, 19),
        _view2(flat, table, 20), _view2(flat, table, 21), _view2(flat, table, 22), _view2(flat, table, 23),
        _view3(flat, table, 24),
    )
