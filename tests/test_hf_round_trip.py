"""Export to a Hugging Face folder and import it back, without torch or transformers:
bit-exact tensors and tokenizer ids, the folder's files, the HF tokenizer pipelines
against CLLM's own tokenizers, and the atomic, refusing folder writes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from tokenizers import Tokenizer as HFTokenizer

from cllm.core.cli import main
from cllm.core.errors import HuggingFaceFolderError
from cllm.core.hf_export import FILES, export_gpt, export_model
from cllm.core.hf_import import import_hf_folder, inspect_hf_folder, is_hf_gpt2_folder, load_hf_folder
from cllm.core.hf_tokenizer import to_hf, word_split_pattern
from cllm.core.model_file import load_model, save_model
from cllm.core.tokenizer import train_tokenizer
from tests.helpers import make_text
from tests.hf_helpers import EOT, KINDS, PROBES, encodable, tiny_model


@pytest.fixture(scope="module")
def models():
    return {kind: tiny_model(kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_exact(tmp_path, models, kind):
    model = models[kind]
    export_gpt(model, tmp_path / "hf")
    again = load_hf_folder(tmp_path / "hf").model
    assert again.config == model.config
    assert again.params.dtype == np.float32
    assert np.array_equal(again.params.view(np.uint32), model.params.view(np.uint32))
    assert again.tokenizer.kind == kind
    assert again.tokenizer.to_json() == model.tokenizer.to_json()
    texts = encodable(model.tokenizer, PROBES + [make_text(200, seed=1)])
    assert len(texts) >= 2
    for text in texts:
        assert again.tokenizer.encode(text).tolist() == model.tokenizer.encode(text).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_hf_tokenizer_pipeline_matches_cllm(models, kind):
    """The tokenizer.json that export writes, run by HF tokenizers itself: CLLM's ids and
    CLLM's text back (no spaces inserted between characters or words)."""
    tok = models[kind].tokenizer
    hf = HFTokenizer.from_str(to_hf(tok, 32).tokenizer_json)
    for text in encodable(tok, PROBES) + [make_text(300, seed=2)]:
        ids = tok.encode(text).tolist()
        assert hf.encode(text, add_special_tokens=False).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80))
def test_word_split_pattern_is_pythons_rule(text):
    """Oniguruma's \\w and \\s differ from Python's (marks, numerals, \\x1c-\\x1f); the
    exported pattern spells Python's out, so any text splits into the same pieces."""
    word = train_tokenizer("word", make_text(300), 40)
    hf = HFTokenizer.from_str(to_hf(word, 32).tokenizer_json)
    pieces = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
    assert pieces == re.findall(r"\w+|\s+|[^\w\s]", text)


def test_word_pattern_is_written_as_ranges():
    pattern = word_split_pattern()
    assert pattern.startswith("[") and "\\w" not in pattern and "\\s" not in pattern


def test_folder_files(tmp_path, models):
    model = models["char"]
    export_gpt(model, tmp_path / "hf")
    assert sorted(os.listdir(tmp_path / "hf")) == sorted(FILES)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["layer_norm_epsilon"] == 1e-5 and config["tie_word_embeddings"] is True
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"]) == (2, 2, 16, 32)
    assert config["vocab_size"] == model.config.vocab_size
    for key in ("bos_token_id", "eos_token_id"):
        assert 0 <= config[key] < model.config.vocab_size
    assert config["bos_token_id"] == model.tokenizer.encode("\n")[0]
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert "eos_token_id" not in generation  # no end token: generate must not stop at "\n"
    with safe_open(tmp_path / "hf" / "model.safetensors", "numpy") as f:
        names = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert "transformer.wte.weight" in names and "transformer.h.1.mlp.c_proj.bias" in names
    assert not any("lm_head" in n for n in names)
    assert len(names) == len(model.tensors())
    tokenizer_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no temporary folder left


def test_gpt2_kind_declares_its_end_token(tmp_path, models):
    model = models["gpt2"]
    export_gpt(model, tmp_path / "hf")
    eot = model.tokenizer.hf.token_to_id(EOT)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert config["bos_token_id"] == config["eos_token_id"] == generation["eos_token_id"] == eot
    assert model.tokenizer.encode(f"a{EOT}b").tolist()[1] == eot


def test_refuses_a_non_empty_folder_unless_forced(tmp_path, models):
    target = tmp_path / "hf"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(HuggingFaceFolderError, match="not empty; pass --force"):
        export_gpt(models["char"], target)
    assert os.listdir(target) == ["notes.txt"]
    export_gpt(models["char"], target, force=True)
    assert sorted(os.listdir(target)) == sorted(FILES)


def test_an_empty_folder_is_used(tmp_path, models):
    (tmp_path / "hf").mkdir()
    export_gpt(models["char"], tmp_path / "hf")
    assert is_hf_gpt2_folder(tmp_path / "hf")


def test_force_never_replaces_the_folder_holding_the_model(tmp_path, models):
    save_model(tmp_path / "m.cllm", models["char"])
    with pytest.raises(HuggingFaceFolderError, match="holds the model"):
        export_model(tmp_path / "m.cllm", tmp_path, force=True)
    assert (tmp_path / "m.cllm").exists()


def test_a_crash_leaves_no_half_folder(tmp_path, models, monkeypatch):
    import cllm.core.hf_export as hf_export

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_export, "save_file", fail)
    with pytest.raises(HuggingFaceFolderError, match="No space left"):
        export_gpt(models["char"], tmp_path / "hf")
    assert os.listdir(tmp_path) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("old")
    with pytest.raises(HuggingFaceFolderError):
        export_gpt(models["char"], old, force=True)
    assert os.listdir(tmp_path) == ["old"] and os.listdir(old) == ["keep.txt"]


def test_sharded_folder_without_prefix(tmp_path, models):
    """A sharded checkpoint (model.safetensors.index.json) with GPT-2's bare names, as
    the openai-community/gpt2 file has them, and the mask buffers old checkpoints hold."""
    from safetensors.numpy import save_file

    model = models["bpe"]
    export_gpt(model, tmp_path / "hf")
    folder = tmp_path / "hf"
    os.remove(folder / "model.safetensors")
    tensors = {name: np.ascontiguousarray(v) for name, v in model.tensors().items()}
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, part in shards.items():
        extra = {"h.0.attn.bias": np.tril(np.ones((1, 1, 32, 32), np.float32))} if file.startswith("model-00001") \
            else {}
        save_file({n: tensors[n] for n in part} | extra, folder / file, metadata={"format": "pt"})
    weight_map = {n: file for file, part in shards.items() for n in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    info = inspect_hf_folder(folder)
    assert info.importable, info.problems
    assert info.weight_files == sorted(shards)
    again = load_hf_folder(folder).model
    assert np.array_equal(again.params, model.params)


def test_cli_export_import_info(tmp_path, models, capsys):
    save_model(tmp_path / "m.cllm", models["word"])
    assert main(["export", str(tmp_path / "m.cllm"), str(tmp_path / "hf"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["folder"] == str(tmp_path / "hf")
    assert main(["export", str(tmp_path / "m.cllm"), str(tmp_path / "hf")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "hf"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["importable"] and info["tokenizer"] == "word" and info["parameters"] == models["word"].n_params
    assert main(["import", str(tmp_path / "hf"), "-o", str(tmp_path / "back.cllm"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tmp_path / "back.cllm")
    back = load_model(tmp_path / "back.cllm")
    assert np.array_equal(back.model.params, models["word"].params) and back.optimizer is None
    assert back.info.run.imported is not None
    assert back.info.run.imported["folder"] == str((tmp_path / "hf").resolve())
    assert main(["import", str(tmp_path / "hf"), "-o", str(tmp_path / "back.cllm")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "back.cllm")]) == 0
    assert "imported   from" in capsys.readouterr().out


def test_import_reports_progress(tmp_path, models):
    export_gpt(models["char"], tmp_path / "hf")
    seen = []
    import_hf_folder(tmp_path / "hf", tmp_path / "m.cllm", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == 4 * models["char"].n_params
