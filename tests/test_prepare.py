"""Preparing a corpus into a dataset: the tokens, the manifest, the split, the cache, and
what happens when the files, the manifest or the disk go wrong."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from cllm.core import dataset as dataset_module
from cllm.core.dataset import MANIFEST, Dataset, TokenView, open_dataset
from cllm.core.dataset_cache import dataset_for
from cllm.core.errors import Cancelled, CorpusError, TokenizerError
from cllm.core.prepare import SEPARATOR, TokenizerPlan, plan_split, prepare
from cllm.core.shards import Shard
from cllm.core.sources import scan_sources
from cllm.core.tokenizer import Tokenizer, encode_many, train_tokenizer
from tests.helpers import make_text
from tests.hf_helpers import EOT, gpt2_style


def make_folder(root, n: int = 12, words: int = 300) -> dict[str, str]:
    texts = {}
    for i in range(n):
        rel = f"{'sub/' if i % 3 else ''}doc{i:02d}.txt"
        texts[rel] = make_text(words, seed=i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(texts[rel])
    return texts


def manifest(ds: Dataset) -> dict:
    assert ds.manifest is not None  # one of CLLM's datasets
    return ds.manifest


def tokenizer(ds: Dataset) -> Tokenizer:
    assert ds.tokenizer is not None
    return ds.tokenizer


def decoded(ds: Dataset, split: str) -> str:
    view = ds.train if split == "train" else ds.val
    return tokenizer(ds).decode(view[0:len(view)])


def test_a_folder_becomes_shards_split_by_whole_documents(tmp_path):
    texts = make_folder(tmp_path / "c")
    (tmp_path / "c" / "image.bin").write_bytes(b"\x89PNG\0\0")
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    m = manifest(ds)
    assert m["split"]["method"] == "documents" and m["skipped"] == {"binary": 1}
    held = {f["name"] for f in ds.files if f["split"] == "val"}
    assert 0 < len(held) < len(texts)
    by_name = {f"c/{rel}": text for rel, text in texts.items()}
    assert decoded(ds, "train") == SEPARATOR.join(by_name[n] for n in sorted(by_name) if n not in held)
    assert decoded(ds, "val") == SEPARATOR.join(by_name[n] for n in sorted(by_name) if n in held)
    entry = next(f for f in ds.files if f["name"] == "c/doc00.txt")
    st = (tmp_path / "c" / "doc00.txt").stat()
    assert (entry["size"], entry["mtime_ns"]) == (st.st_size, st.st_mtime_ns) and len(entry["sha256"]) == 64
    assert m["tokens"] == {"train": len(ds.train), "val": len(ds.val)}
    assert sum(f.get("tokens", 0) for f in ds.files) + (len(texts) - 2) * len(SEPARATOR) == \
        len(ds.train) + len(ds.val)


def test_the_split_and_digest_do_not_depend_on_where_the_folder_is(tmp_path):
    make_folder(tmp_path / "one" / "c")
    shutil.copytree(tmp_path / "one" / "c", tmp_path / "two" / "c")
    a = prepare([tmp_path / "one" / "c"], tmp_path / "a", TokenizerPlan("char"))
    b = prepare([tmp_path / "two" / "c"], tmp_path / "b", TokenizerPlan("char"))
    assert a.sha256 == b.sha256
    assert [f["split"] for f in a.files] == [f["split"] for f in b.files]
    assert np.array_equal(a.val[0:len(a.val)], b.val[0:len(b.val)])


def test_one_file_holds_out_its_last_tenth(tmp_path):
    text = make_text(3000)
    (tmp_path / "t.txt").write_text(text)
    ds = prepare([tmp_path / "t.txt"], tmp_path / "ds", TokenizerPlan("char"))
    assert manifest(ds)["split"]["method"] == "tail"
    train, val = (tokenizer(ds).decode(v[0:len(v)]) for v in (ds.train, ds.val))
    assert train + val == text and val.startswith("\n")
    assert abs(len(val) - len(text) / 10) < 100


def test_plan_split_falls_back_to_tails_when_documents_cannot_make_a_tenth(tmp_path):
    make_folder(tmp_path / "c", n=2)
    assert plan_split(scan_sources([tmp_path / "c"]).files)[0] == "tail"
    make_folder(tmp_path / "d", n=30)
    method, held = plan_split(scan_sources([tmp_path / "d"]).files)
    assert method == "documents" and 2 <= len(held) <= 5


def test_bpe_is_trained_on_a_bounded_sample_and_encodes_everything(tmp_path):
    texts = make_folder(tmp_path / "c", n=10, words=2000)
    notes: list[str] = []
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("bpe", 300, sample_mb=0.02), on_note=notes.append)
    assert any("trained on a sample of 20.5 KB of the corpus's" in n and "--tokenizer-sample 0.02 MB" in n
               for n in notes), notes
    held = {f["name"] for f in ds.files if f["split"] == "val"}
    by_name = {f"c/{rel}": text for rel, text in texts.items()}
    assert decoded(ds, "train") == SEPARATOR.join(by_name[n] for n in sorted(by_name) if n not in held)
    assert decoded(ds, "val") == SEPARATOR.join(by_name[n] for n in sorted(by_name) if n in held)


def test_encode_many_gives_encode_s_ids():
    texts = [make_text(3000, seed=s) for s in range(3)] + ["", "x", "  \n\n  \n"]
    for tok in (train_tokenizer("bpe", texts[0], 300), train_tokenizer("char", "".join(texts)),
                train_tokenizer("word", texts[0], 40)):
        for got, text in zip(encode_many(tok, texts), texts, strict=True):
            assert np.array_equal(got, tok.encode(text))


def test_documents_start_with_end_of_text_as_llmc_writes_them(tmp_path):
    texts = make_folder(tmp_path / "c", n=4)
    tok = gpt2_style("".join(texts.values()))
    ds = prepare([tmp_path / "c"], tmp_path / "ds", tok)
    eot = tok.eos_id
    train = ds.train[0:len(ds.train)]
    starts = np.flatnonzero(train == eot)
    assert manifest(ds)["split"]["method"] == "tail"  # four documents: each one's last tenth is held out
    assert starts[0] == 0 and len(starts) == len(texts)
    head = tok.decode(train[1:starts[1]])  # the first document but its held-out tenth
    assert texts["doc00.txt"].startswith(head) and 0.85 < len(head) / len(texts["doc00.txt"]) < 0.95
    assert manifest(ds)["separator"] == "eot" and EOT not in SEPARATOR


def test_a_character_outside_a_given_tokenizer_names_the_file(tmp_path):
    make_folder(tmp_path / "c", n=3)
    (tmp_path / "c" / "sub" / "euro.txt").write_text("a c€t\n")
    tok = train_tokenizer("char", make_text())
    with pytest.raises(TokenizerError, match=r"euro.txt: the text contains characters .* '€'"):
        prepare([tmp_path / "c"], tmp_path / "ds", tok)
    assert not (tmp_path / "ds").exists() and os.listdir(tmp_path) == ["c"]


def test_the_cache_is_reused_until_a_source_changes(tmp_path):
    make_folder(tmp_path / "c")
    notes: list[str] = []
    first = dataset_for([tmp_path / "c"], TokenizerPlan("char"), on_note=notes.append)
    assert any(n.startswith("prepared ") for n in notes)
    notes.clear()
    again = dataset_for([tmp_path / "c"], TokenizerPlan("char"), on_note=notes.append)
    assert again.path == first.path and again.sha256 == first.sha256 and notes[0].startswith("using the prepared")
    # the model trained on it asks by its tokenizer: the same dataset
    notes.clear()
    same = dataset_for([tmp_path / "c"], tokenizer(first), on_note=notes.append)
    assert same.sha256 == first.sha256 and notes[0].startswith("using the prepared")
    (tmp_path / "c" / "doc00.txt").write_text("changed\n")
    (tmp_path / "c" / "new.txt").write_text("a new file\n")
    notes.clear()
    changed = dataset_for([tmp_path / "c"], TokenizerPlan("char"), on_note=notes.append)
    assert "1 changed, 1 added since it was prepared" in notes[0] and changed.sha256 != first.sha256
    assert "c/new.txt" in dataset_module.what_changed(first.manifest, changed)


def test_a_broken_manifest_or_shard_is_named(tmp_path):
    make_folder(tmp_path / "c")
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    manifest = tmp_path / "ds" / MANIFEST
    good = manifest.read_text()
    manifest.write_text(good[:100])
    with pytest.raises(CorpusError, match=f"{manifest}: the manifest cannot be read"):
        open_dataset(ds.path)
    data = json.loads(good)
    data["version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(CorpusError, match="dataset format version 99 is not supported"):
        open_dataset(ds.path)
    manifest.write_text(good)
    shard = tmp_path / "ds" / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(CorpusError, match=f"{shard}: cut short"):
        open_dataset(ds.path)


def test_cancelling_keeps_nothing(tmp_path):
    make_folder(tmp_path / "c")
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"), cancel=cancel,
                on_progress=lambda p: cancel.set() if p.phase == "encoding" else None)
    assert os.listdir(tmp_path) == ["c"]


def test_a_full_disk_keeps_the_old_dataset_and_names_the_file(tmp_path):
    """A real `cllm prepare` whose writes fail part way (a file-size limit: the kernel
    refuses as for a full disk): the error names the shard, and the dataset that was
    there is still whole."""
    make_folder(tmp_path / "c", n=6, words=4000)
    old = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    (tmp_path / "c" / "doc00.txt").write_text(make_text(9000, seed=99))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-m", "cllm.core.cli", "prepare", str(tmp_path / "c"), "-o",
                           str(tmp_path / "ds")], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert "train_000000.bin: could not write the dataset (File too large); nothing was kept" in err
    assert sorted(os.listdir(tmp_path)) == ["c", "ds"]
    kept = open_dataset(tmp_path / "ds")
    assert kept.sha256 == old.sha256 and len(kept.train) == len(old.train)


def test_resident_memory_stays_bounded_over_many_random_reads(tmp_path, monkeypatch):
    """nanoGPT issue 287: random windows over a memory map keep every page they touch
    resident until the whole file is. The view drops them every RELEASE_EVERY reads."""
    monkeypatch.setattr(dataset_module, "RELEASE_EVERY", 8)  # a fault may map a 2 MB folio: 8 of them at most
    n = 32 << 20  # 64 MB of uint16 tokens
    path = tmp_path / "big.bin"
    header = np.zeros(256, np.int32)
    header[:3] = 20240520, 1, n
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.arange(n, dtype=np.uint16).tobytes())
    view = TokenView([Shard(path)])

    def rss_file_mb() -> float:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
        return 0.0

    before = rss_file_mb()
    peak = 0.0
    rng = np.random.default_rng(0)
    for i, start in enumerate(rng.integers(0, n - 65, 20_000)):
        assert view[int(start):int(start) + 65][0] == start % 65536
        if i % 100 == 0:
            peak = max(peak, rss_file_mb() - before)
    assert peak < 40, f"{peak:.0f} MB of the 64 MB file stayed resident"


def test_a_source_that_vanishes_or_changes_while_prepared_is_named(tmp_path):
    """Between the check and the encoding a file is deleted (or rewritten): the error
    names it and nothing is kept."""
    make_folder(tmp_path / "c")
    victim = tmp_path / "c" / "sub" / "doc04.txt"

    def remove_once(progress) -> None:
        if progress.phase == "tokenizer" and victim.exists():
            victim.unlink()

    with pytest.raises(CorpusError, match=f"{victim}: vanished while the corpus was being prepared"):
        prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"), on_progress=remove_once)
    victim.write_text(make_text(300, seed=4))

    def grow_once(progress) -> None:
        if progress.phase == "tokenizer":
            with open(victim, "a") as f:
                f.write("more\n")

    with pytest.raises(CorpusError, match=f"{victim}: changed while the corpus was being prepared"):
        prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"), on_progress=grow_once)
    assert os.listdir(tmp_path) == ["c"]


def test_a_killed_preparation_s_leftovers_are_cleared(tmp_path, dataset_cache):
    from cllm.core.dataset_cache import cache_key

    make_folder(tmp_path / "c")
    plan = TokenizerPlan("char")
    stale = dataset_cache / f".{cache_key([tmp_path / 'c'], plan, (), ())}.tmp-99999-1"
    stale.mkdir(parents=True)
    (stale / "train_000000.bin").write_bytes(b"half")
    dataset_for([tmp_path / "c"], plan)
    assert not stale.exists()
