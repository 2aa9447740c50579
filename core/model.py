"""The GPT-2 model: parameter layout, initialisation and the model object.

All parameters live in one flat float32 buffer (as in llm.c). The buffer holds sixteen
blocks, one per kind of tensor, with the per-layer tensors of a kind stacked (L, ...).
Each GPT-2 tensor (`h.3.attn.c_attn.weight`, ...) is a view into that buffer, so the
optimiser and the gradient reduction run over flat memory while files store tensors by
name. Gradients and Adam moments use the same layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.config import ModelConfig

# Block order in the flat buffer; kernels receive the offsets in this order.
BLOCKS = (
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
)

# Per-layer blocks and the GPT-2 name of one layer's slice.
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


def block_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
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


@dataclass(frozen=True)
class Layout:
    """Where each block lives in the flat buffer."""

    config: ModelConfig
    shapes: dict[str, tuple[int, ...]]
    offsets: np.ndarray  # int64, len(BLOCKS) + 1; the last entry is the total size

    @classmethod
    def of(cls, config: ModelConfig) -> "Layout":
        shapes = block_shapes(config)
        sizes = [math.prod(shapes[b]) for b in BLOCKS]
        offsets = np.zeros(len(BLOCKS) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(sizes)
        return cls(config, shapes, offsets)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def block(self, flat: np.ndarray, name: str) -> np.ndarray:
        i = BLOCKS.index(name)
        return flat[self.offsets[i]:self.offsets[i + 1]].reshape(self.shapes[name])

    def named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """GPT-2 tensor name -> view into `flat` (no copies)."""
        views: dict[str, np.ndarray] = {}
        for layer in range(self.config.n_layer):
            for block, suffix in LAYER_NAMES.items():
                views[f"h.{layer}.{suffix}"] = self.block(flat, block)[layer]
        for block, name in GLOBAL_NAMES.items():
            views[name] = self.block(flat, block)
        return views

    def decay_segments(self) -> np.ndarray:
        """(n, 3) int64 rows of start, end, decay flag, covering the whole buffer."""
        rows = [(self.offsets[i], self.offsets[i + 1], int(b in DECAYED)) for i, b in enumerate(BLOCKS)]
        return np.array(rows, dtype=np.int64)


def tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """GPT-2 tensor name -> shape, in file order."""
    layout = Layout.of(config)
    return {name: view.shape for name, view in layout.named_views(np.zeros(layout.size, np.float32)).items()}


def init_params(config: ModelConfig, seed: int, dtype=np.float32) -> np.ndarray:
    """GPT-2 initialisation: N(0, 0.02) weights and embeddings, residual projections
    scaled by 1/sqrt(2L), zero biases, LayerNorm weights 1."""
    layout = Layout.of(config)
    rng = np.random.default_rng(seed)
    flat = np.zeros(layout.size, dtype=dtype)
    resid_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name in BLOCKS:
        view = layout.block(flat, name)
        if name in ("attprojw", "fcprojw"):
            view[...] = rng.normal(0.0, resid_std, view.shape)
        elif name in DECAYED:
            view[...] = rng.normal(0.0, 0.02, view.shape)
        elif name in ("ln1w", "ln2w", "lnfw"):
            view[...] = 1.0
    return flat


@dataclass
class GPT:
    """A model: its shape, its tokenizer and its flat parameter buffer."""

    config: ModelConfig
    tokenizer: object  # core.tokenizer.Tokenizer
    params: np.ndarray
    layout: Layout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layout = Layout.of(self.config)
        if self.params.shape != (self.layout.size,):
            raise ValueError(f"parameter buffer has {self.params.size} values, the config needs {self.layout.size}")

    @classmethod
    def create(cls, config: ModelConfig, tokenizer, seed: int = 1337) -> "GPT":
        config.validate()
        return cls(config, tokenizer, init_params(config, seed))

    @property
    def n_params(self) -> int:
        return self.layout.size

    @property
    def n_params_non_embedding(self) -> int:
        return self.layout.size - int(np.prod(self.layout.shapes["wte"])) - int(np.prod(self.layout.shapes["wpe"]))

    def tensors(self) -> dict[str, np.ndarray]:
        return self.layout.named_views(self.params)
