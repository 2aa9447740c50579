"""What an import refuses, one test per refusal: each message names the file and the
problem. The folders are CLLM exports, broken on purpose (no torch needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cllm.core.cli import main
from cllm.core.errors import HuggingFaceFolderError
from cllm.core.hf_export import export_gpt
from cllm.core.hf_import import inspect_hf_folder, is_hf_gpt2_folder, load_hf_folder
from tests.hf_helpers import edit_json, tiny_model

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


@pytest.fixture()
def folder(tmp_path, model) -> Path:
    export_gpt(model, tmp_path / "hf")
    return tmp_path / "hf"


def refused(folder: Path, file: str, *words: str) -> str:
    """Asserts that the import refuses with a message naming `file` and `words`, that
    inspecting lists the same problem, and that the CLI says it in one line."""
    with pytest.raises(HuggingFaceFolderError) as info:
        load_hf_folder(folder)
    message = str(info.value)
    assert message.startswith(str(folder / file) if file else str(folder)), message
    for word in words:
        assert word in message, message
    assert "\n" not in message
    return message


def rewrite_weights(folder: Path, change) -> None:
    tensors = load_file(folder / WEIGHTS)
    change(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def test_exported_folder_is_importable(folder, model):
    info = inspect_hf_folder(folder)
    assert info.importable and info.problems == []
    assert (info.tokenizer_kind, info.dtype, info.n_params) == ("gpt2", "float32", model.n_params)
    assert is_hf_gpt2_folder(folder)


def test_pickle_checkpoint(folder):
    os.remove(folder / WEIGHTS)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")  # a pickle: never opened
    message = refused(folder, "pytorch_model.bin", "pickle", "never loads", "safetensors", "save_pretrained")
    assert "Traceback" not in message


def test_other_architecture(folder):
    edit_json(folder / "config.json", model_type="llama", architectures=["LlamaForCausalLM"])
    refused(folder, "config.json", "model_type is 'llama'", "GPT-2 models only")
    assert not is_hf_gpt2_folder(folder)


def test_gpt2_with_another_head(folder):
    edit_json(folder / "config.json", architectures=["GPT2ForSequenceClassification"])
    refused(folder, "config.json", "GPT2ForSequenceClassification", "not a GPT-2 language model")


def test_missing_tensor(folder):
    rewrite_weights(folder, lambda t: t.pop("transformer.h.1.attn.c_proj.weight"))
    refused(folder, WEIGHTS, "missing tensor 'h.1.attn.c_proj.weight'")


def test_config_says_more_layers_than_the_weights(folder):
    edit_json(folder / "config.json", n_layer=3)
    refused(folder, WEIGHTS, "missing tensor 'h.2.")


def test_config_says_fewer_layers_than_the_weights(folder):
    edit_json(folder / "config.json", n_layer=1)
    refused(folder, WEIGHTS, "unexpected tensor 'transformer.h.1.", "config.json")


def test_shape_disagrees_with_config(folder):
    edit_json(folder / "config.json", n_positions=64)
    refused(folder, WEIGHTS, "'transformer.wpe.weight' has shape [32, 16]", "implies [64, 16]")


def test_vocabulary_disagrees_with_tokenizer(folder, model):
    V = model.config.vocab_size
    edit_json(folder / "config.json", vocab_size=V + 3)
    rewrite_weights(folder, lambda t: t.update({"transformer.wte.weight": np.zeros((V + 3, 16), np.float32)}))
    refused(folder, "tokenizer.json", f"{V} tokens", f"vocab_size {V + 3}")


@pytest.mark.parametrize("key, value, words", [
    ("n_inner", 32, ["n_inner is 32", "4 x n_embd = 64"]),
    ("scale_attn_by_inverse_layer_idx", True, ["scale_attn_by_inverse_layer_idx is true"]),
    ("scale_attn_weights", False, ["scale_attn_weights is false"]),
    ("activation_function", "relu", ["activation_function is 'relu'", "tanh"]),
    ("layer_norm_epsilon", 1e-6, ["layer_norm_epsilon is 1e-06", "1e-5"]),
    ("tie_word_embeddings", False, ["tie_word_embeddings is false"]),
    ("add_cross_attention", True, ["add_cross_attention is true"]),
    ("n_positions", 8192, ["context must be between 2 and 4096"]),
])
def test_shapes_cllm_cannot_run(folder, key, value, words):
    edit_json(folder / "config.json", **{key: value})
    refused(folder, "config.json", *words)


def test_float64_weights(folder):
    bias = "transformer.ln_f.bias"
    rewrite_weights(folder, lambda t: t.update({bias: t[bias].astype(np.float64)}))
    refused(folder, WEIGHTS, "'transformer.ln_f.bias' is F64", "float32", "float16 and bfloat16 are converted")


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_precision_weights_are_converted(folder, model, dtype):
    """float16 and bfloat16 import, widened exactly, and the import says so."""
    def halve(tensors):
        for name, value in tensors.items():
            if dtype == "F16":
                tensors[name] = value.astype(np.float16)
            else:  # bfloat16: the upper 16 bits of each float32 (numpy has no bfloat16)
                tensors[name] = (value.view(np.uint32) >> 16).astype(np.uint16)

    rewrite_weights(folder, halve)
    if dtype == "BF16":  # relabel the uint16 tensors as bfloat16 in the header
        raw = (folder / WEIGHTS).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = raw[8:8 + n].decode().replace('"U16"', '"BF16"').encode()
        header += b" " * (-len(header) % 8)
        (folder / WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    info = inspect_hf_folder(folder)
    label = {"F16": "float16", "BF16": "bfloat16"}[dtype]
    assert info.importable and info.dtype == label
    assert any(f"{label} weights are converted to float32" in note for note in info.notes)
    loaded = load_hf_folder(folder).model
    assert loaded.params.dtype == np.float32
    exact = model.params.astype(np.float16).astype(np.float32) if dtype == "F16" \
        else ((model.params.view(np.uint32) >> 16) << 16).view(np.float32)
    assert np.array_equal(loaded.params, exact)


def test_no_tokenizer(folder):
    os.remove(folder / "tokenizer.json")
    refused(folder, "", "has no tokenizer", "tokenizer.json", "vocab.json + merges.txt")


def test_tokenizer_of_another_kind(folder):
    spec: dict = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
            "post_processor": None, "decoder": None,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1}}}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    refused(folder, "tokenizer.json", "WordPiece", "GPT-2's byte-level BPE")


def test_tokenizer_that_adds_tokens(folder):
    edit_json(folder / "tokenizer_config.json", add_bos_token=True)
    refused(folder, "tokenizer_config.json", "add_bos_token is true")


def test_non_finite_weights(folder):
    rewrite_weights(folder, lambda t: t["transformer.h.0.ln_1.weight"].__setitem__(3, np.nan))
    refused(folder, WEIGHTS, "'transformer.h.0.ln_1.weight' has 1 non-finite values")


def test_truncated_weights(folder):
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) - 100])
    refused(folder, WEIGHTS, "truncated")


def test_not_safetensors(folder):
    (folder / WEIGHTS).write_bytes(b"PK\x03\x04" + bytes(100))
    refused(folder, WEIGHTS, "not a safetensors file")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(HuggingFaceFolderError, match="has no config.json"):
        load_hf_folder(tmp_path)
    with pytest.raises(HuggingFaceFolderError, match="no such folder"):
        load_hf_folder(tmp_path / "nope")
    assert not is_hf_gpt2_folder(tmp_path / "nope")


def test_cli_refusal_is_one_clear_line(folder, tmp_path, capsys):
    edit_json(folder / "config.json", n_inner=7)
    assert main(["import", str(folder), "-o", str(tmp_path / "m.cllm")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "n_inner is 7" in err and "Traceback" not in err
    assert not (tmp_path / "m.cllm").exists()
    assert main(["info", str(folder)]) == 0
    assert "problem    " in capsys.readouterr().out
