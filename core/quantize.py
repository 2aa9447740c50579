"""int8 weights: each linear layer's weight and the embedding rounded to int8 with one
float32 scale per output (a linear weight's column, an embedding's row: the unit the
decoder's sums run over), symmetric: w ~ q * scale, scale = max |w| / 127.

Per output rather than per block of 32 inputs (llama.cpp's Q8_0): the decoder then
multiplies each finished sum by one scale, instead of every block's partial sum by its
own, and the scales cost 1/IC of the weight instead of 1/32. What it costs in error is
measured in benchmarks/RESULTS.md ("int8 weights") and bounded in tests/test_quantize.py.

The decoder reads every product's weight as rows of outputs (`decoder_form`): GPT-2's
linear weights (in, out) transposed, the embedding (tokens, width) as it is.
"""

from __future__ import annotations

import numpy as np

from cllm.core.decode_kernels import DecodeWeights

LINEAR = ("qkvw", "attprojw", "fcw", "fcprojw")
QUANTIZED = ("wte",) + LINEAR  # every matrix product's weight
LEVELS = 127


def decoder_form(name: str, w: np.ndarray) -> np.ndarray:
    """Parameter `name` as the decoder reads it: one row per output (a copy for the
    linear weights)."""
    return np.ascontiguousarray(np.swapaxes(w, -1, -2)) if name in LINEAR else w


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 q and float32 scales with w[..., j, :] ~ q[..., j, :] * scale[..., j];
    |error| <= scale / 2 = max |w[..., j, :]| / 254."""
    top = np.abs(w).max(axis=-1)
    scale = np.where(top > 0, top / LEVELS, 1.0).astype(np.float32)
    q = np.rint(w / scale[..., None]).clip(-LEVELS, LEVELS).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float32 values an int8 tensor stands for."""
    return q.astype(np.float32) * scale[..., None]


def quantize_params(P) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The int8 forms (decoder form, name -> (q, scale)) of a model's views P
    (`core.layout.Params`)."""
    return {name: quantize_rows(decoder_form(name, getattr(P, name))) for name in QUANTIZED}


def decode_weights(P, quantized: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> DecodeWeights:
    """The decoder's weights from a model's float32 views P, with the int8 forms of
    `quantized` in place of those tensors (float32 ones get empty scales)."""
    quantized = quantized or {}
    fields = {}
    for name in DecodeWeights._fields:
        if name.endswith("_scale"):
            base = name[:-len("_scale")]
            lead = getattr(P, base).shape[:-2]
            fields[name] = quantized[base][1] if base in quantized else np.zeros(lead + (0,), np.float32)
        elif name in quantized:
            fields[name] = quantized[name][0]
        else:
            fields[name] = decoder_form(name, getattr(P, name))
    return DecodeWeights(**fields)
