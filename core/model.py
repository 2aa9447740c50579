"""The GPT-2 model: initialisation and the model object (shape, tokenizer, weights).

All parameters live in one flat float32 buffer (as in llm.c), laid out by
`core.layout.Layout.params`; each GPT-2 tensor is a view into it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cllm.core.config import ModelConfig
from cllm.core.layout import DECAYED, Layout
from cllm.core.tokenizer import Tokenizer

RESIDUAL_PROJECTIONS = ("attprojw", "fcprojw")  # scaled down at initialisation, as in GPT-2
LAYERNORM_WEIGHTS = ("ln1w", "ln2w", "lnfw")


def init_params(config: ModelConfig, seed: int, dtype=np.float32) -> np.ndarray:
    """GPT-2 initialisation: N(0, 0.02) weights and embeddings, residual projections
    scaled by 1/sqrt(2L), zero biases, LayerNorm weights 1."""
    layout = Layout.params(config)
    rng = np.random.default_rng(seed)
    flat = np.zeros(layout.size, dtype=dtype)
    resid_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name in layout.names:
        view = layout.block(flat, name)
        if name in RESIDUAL_PROJECTIONS:
            view[...] = rng.normal(0.0, resid_std, view.shape)
        elif name in DECAYED:
            view[...] = rng.normal(0.0, 0.02, view.shape)
        elif name in LAYERNORM_WEIGHTS:
            view[...] = 1.0
    return flat


@dataclass
class GPT:
    """A model: its shape, its tokenizer and its flat parameter buffer."""

    config: ModelConfig
    tokenizer: Tokenizer
    params: np.ndarray
    # int8 forms of the weights (core.quantize, name -> (q, scale)) of an int8 model file,
    # whose float32 `params` are their dequantized values; None for a float32 model
    quantized: dict[str, tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)
    # the decoder's copies of the weights (core.sampler.decoder_weights): kind -> (stamp, forms)
    decode_forms: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # the last decoder's key/value caches and prompt buffers (core.sampler.Decoder.close):
    # samples -> (state, buffers), at most one entry
    decode_scratch: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    layout: Layout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layout = Layout.params(self.config)
        if self.params.shape != (self.layout.size,):
            raise ValueError(f"parameter buffer has {self.params.size} values, the config needs {self.layout.size}")

    @classmethod
    def create(cls, config: ModelConfig, tokenizer: Tokenizer, seed: int = 1337) -> GPT:
        config.validate()
        return cls(config, tokenizer, init_params(config, seed))

    @property
    def n_params(self) -> int:
        return self.layout.size

    def tensors(self) -> dict[str, np.ndarray]:
        return self.layout.named_views(self.params)
