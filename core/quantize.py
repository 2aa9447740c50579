"""int8 weights: each linear layer's weight and the embedding rounded to int8 with one
float32 scale per output (a linear weight's column, an embedding's row: the unit the
decoder's sums run over), symmetric: w ~ q * scale, scale = max |w| / 127.

Per output rather than per block of 32 inputs (llama.cpp's Q8_0): the decoder then
multiplies each finished sum by one scale, instead of every block's partial sum by its
own, and the scales cost 1/IC of the weight instead of 1/32. What it costs in error is
measured in benchmarks/RESULTS.md ("int8 weights") and bounded in tests/test_quantize.py.

The int8 decoder reads every product's weight as rows of outputs (`decoder_form`): GPT-2's
linear weights (in, out) transposed, the embedding (tokens, width) as it is, and rounds
each product's input rows to int8 too (core/int8_dots.py): `decoded_loss` measures what
that costs, where `evaluate` (float32 inputs) cannot.
"""

from __future__ import annotations

import numpy as np

from cllm.core.config import ModelConfig
from cllm.core.dataset import TokenView
from cllm.core.decode_kernels import DecodeWeights
from cllm.core.int8_dots import LEVELS
from cllm.core.layout import GLOBAL_NAMES, LAYER_NAMES, Layout, tensor_shapes
from cllm.core.panel_dots import panel_form

LINEAR = ("qkvw", "attprojw", "fcw", "fcprojw")
QUANTIZED = ("wte",) + LINEAR  # every matrix product's weight


def decoder_form(name: str, w: np.ndarray) -> np.ndarray:
    """Parameter `name` as the decoder reads it: one row per output (a view; the linear
    weights transposed)."""
    return np.swapaxes(w, -1, -2) if name in LINEAR else w


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 q (C-contiguous) and float32 scales with w[..., j, :] ~ q[..., j, :] * scale[..., j];
    |error| <= scale / 2 = max |w[..., j, :]| / 254."""
    top = np.abs(w).max(axis=-1)
    scale = np.where(top > 0, top / LEVELS, 1.0).astype(np.float32)
    q = np.rint(w / scale[..., None]).clip(-LEVELS, LEVELS).astype(np.int8)
    return np.ascontiguousarray(q), scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float32 values an int8 tensor stands for."""
    return q.astype(np.float32) * scale[..., None]


def quantize_params(P) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The int8 forms (decoder form, name -> (q, scale)) of a model's views P
    (`core.layout.Params`)."""
    return {name: quantize_rows(decoder_form(name, getattr(P, name))) for name in QUANTIZED}


def quantize_model(model) -> None:
    """Makes `model` an int8 model: its int8 forms kept (`model.quantized`), and its
    float32 weights replaced by the values they stand for, so that the prompt pass,
    evaluation and saving all see the same model."""
    P = model.layout.views(model.params)
    model.quantized = quantize_params(P)
    for name, (q, scale) in model.quantized.items():
        getattr(P, name)[...] = decoder_form(name, dequantize_rows(q, scale))


def float32_forms(P) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The float32 decoder's forms of the product weights: panel copies
    (`core.panel_dots.panel_form`) of the linear layers and of the embedding, with empty
    scales (GPT-2 small: 498 MB, the embedding's 154 MB beside the model's own table)."""
    return {name: (panel_form(decoder_form(name, getattr(P, name))),
                   np.zeros(getattr(P, name).shape[:-2] + (0,), np.float32)) for name in QUANTIZED}


def decode_weights(P, forms: dict[str, tuple[np.ndarray, np.ndarray]]) -> DecodeWeights:
    """The decoder's weights: the product weights' `forms` (name -> (rows of outputs,
    scales): `float32_forms` or `quantize_params`) and views of the rest of P."""
    fields = {}
    for name in DecodeWeights._fields:
        if name.endswith("_scale"):
            fields[name] = forms[name[:-len("_scale")]][1]
        else:
            fields[name] = forms[name][0] if name in forms else getattr(P, name)
    return DecodeWeights(**fields)


def decoded_loss(model, tokens: np.ndarray | TokenView, weights: str, windows: int = 16) -> float:
    """Mean cross-entropy of the next-token predictions generation makes: the one-token
    decoder (with int8 weights, its int8 x int8 products) fed `windows` windows of ctx + 1
    tokens spread over `tokens` (held-out text), each window's first token through the
    prompt pass and every later one a decoding step. `evaluate`'s forward pass runs the
    dequantized weights on float32 inputs, so it cannot see what rounding the inputs costs."""
    from cllm.core.sampler import Decoder

    ctx = model.config.ctx
    decoder = Decoder(model, 1, 1, weights)
    total, count = 0.0, 0
    for start in np.linspace(0, len(tokens) - ctx - 1, windows).astype(np.int64):
        window = np.asarray(tokens[int(start):int(start) + ctx + 1], np.int32)
        logits = decoder.prefill(window[:1])
        for t in range(1, ctx + 1):
            z = logits.astype(np.float64)
            top = z.max()
            total += top + np.log(np.exp(z - top).sum()) - z[window[t]]
            count += 1
            if t < ctx:
                logits = decoder.step(int(window[t]))
    return total / count


# -- in the model file (docs/FORMAT.md): each int8 tensor under its GPT-2 name, in the
# decoder's form, with its scales beside it under NAME.scale

SCALE = ".scale"


def _block_of(name: str) -> tuple[str, int | None]:
    """GPT-2 tensor name -> (parameter block, layer or None)."""
    if name.startswith("h."):
        _, layer, suffix = name.split(".", 2)
        return next(b for b, s in LAYER_NAMES.items() if s == suffix), int(layer)
    return next(b for b, n in GLOBAL_NAMES.items() if n == name), None


def int8_file_tensors(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """An int8 model file's tensors: name -> (shape, safetensors dtype), in file order."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, shape in tensor_shapes(config).items():
        block, _ = _block_of(name)
        if block in QUANTIZED:
            rows = shape if block == "wte" else shape[::-1]
            out[name] = (rows, "I8")
            out[name + SCALE] = (rows[:1], "F32")
        else:
            out[name] = (shape, "F32")
    return out


def int8_tensors(model) -> dict[str, np.ndarray]:
    """What an int8 model file holds (`int8_file_tensors`'s names): the model's int8 forms
    and its other parameters."""
    quantized = model.quantized
    out: dict[str, np.ndarray] = {}
    for name, view in model.tensors().items():
        block, layer = _block_of(name)
        if block in QUANTIZED:
            q, scale = quantized[block]
            out[name], out[name + SCALE] = (q, scale) if layer is None else (q[layer], scale[layer])
        else:
            out[name] = view
    return out


class Int8Reader:
    """Gathers an int8 file's tensors, one at a time, into the int8 forms of a model."""

    def __init__(self, config: ModelConfig):
        shapes = Layout.params(config).shapes
        self.quantized = {}
        for block in QUANTIZED:
            *lead, a, b = shapes[block]
            rows = (a, b) if block == "wte" else (*lead, b, a)
            self.quantized[block] = (np.empty(rows, np.int8), np.empty(rows[:-1], np.float32))

    @staticmethod
    def holds(name: str) -> bool:
        return _block_of(name)[0] in QUANTIZED

    def read(self, name: str, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Keeps tensor `name`'s int8 values and scales; returns the float32 values they
        stand for, in the parameter's own layout."""
        block, layer = _block_of(name)
        qs, scales = self.quantized[block]
        if layer is None:
            qs[...], scales[...] = q, scale
        else:
            qs[layer], scales[layer] = q, scale
        values = dequantize_rows(q, scale)
        return values if block == "wte" else values.T
