"""The word tokenizer's encoding in worker processes: the ids of the one-thread path on
one and two workers, with long documents cut across workers, progress and cancel kept."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from cllm.core import encode_workers
from cllm.core import prepare as prepare_module
from cllm.core.encode_workers import EncodeWorkers
from cllm.core.errors import Cancelled
from cllm.core.prepare import TokenizerPlan, prepare
from cllm.core.tokenizer import train_tokenizer
from tests.helpers import make_text

ODD = ["", "x", "  \n\n  \n", "naïve café — ελληνικά, кириллица, 漢字 😀👍🏽\u00a0\u2028x\ty", "a\r\nb\r\n\r\n  c",
       "=" * 5000 + " " * 3000 + "\n" * 40, "don't can't it's\n" * 200]


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}


def _corpus(root: Path) -> None:
    """Documents of varied sizes: several small, one that spans many pieces and batches,
    and the odd texts."""
    for i in range(9):
        (root / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"sub{i % 2}" / f"doc{i}.txt").write_text(make_text(200 + 150 * i, seed=i), encoding="utf-8")
    (root / "long.txt").write_text(make_text(40_000, seed=99), encoding="utf-8")
    for i, text in enumerate(ODD[1:]):
        (root / f"odd{i}.txt").write_text(text, encoding="utf-8")


def test_worker_processes_give_the_one_thread_ids(tmp_path, monkeypatch):
    """Small batches and pieces, so that documents are cut across workers and batches."""
    _corpus(tmp_path / "c")
    monkeypatch.setattr(prepare_module, "ENCODE_BATCH", 50_000)
    monkeypatch.setattr(encode_workers, "PIECE_CHARS", 2_000)
    plan = TokenizerPlan("word", 300)
    made = {}
    for workers in (0, 1, 2):
        notes: list[str] = []
        ds = prepare([tmp_path / "c"], tmp_path / f"ds{workers}", plan, encode_workers=workers, on_note=notes.append)
        assert ("encoding in 1 worker process" in notes) == (workers == 1)
        assert ("encoding in 2 worker processes" in notes) == (workers == 2)
        assert ds.manifest is not None
        made[workers] = (_shards(ds.path), ds.sha256, [f.get("tokens") for f in ds.files])
    assert made[0][0] and made[1] == made[0] and made[2] == made[0]
    assert not multiprocessing.active_children()  # the workers ended with the preparation


def test_encode_many_in_workers_is_encode_text_by_text(monkeypatch):
    monkeypatch.setattr(encode_workers, "PIECE_CHARS", 300)
    texts = [make_text(3000, seed=1), *ODD, make_text(50, seed=2)]
    tok = train_tokenizer("word", "".join(texts), 200)
    with EncodeWorkers(tok, 2) as workers:
        got = workers.encode_many(texts)
        assert workers.encode_many([]) == []
    assert len(got) == len(texts)
    for ids, text in zip(got, texts, strict=True):
        assert ids.dtype == np.int32 and np.array_equal(ids, tok.encode(text))


def test_cancelling_with_workers_keeps_nothing_and_ends_them(tmp_path, monkeypatch):
    _corpus(tmp_path / "c")
    monkeypatch.setattr(prepare_module, "ENCODE_BATCH", 20_000)
    cancel = threading.Event()
    phases = []

    def progress(p: prepare_module.Progress) -> None:
        phases.append(p.phase)
        if p.phase == "encoding" and p.done > p.total // 3:
            cancel.set()

    with pytest.raises(Cancelled):
        prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("word", 300), cancel=cancel, on_progress=progress,
                encode_workers=2)
    assert "encoding" in phases
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert not multiprocessing.active_children()


def test_only_a_large_word_corpus_on_several_cores_starts_workers(monkeypatch):
    word, char = train_tokenizer("word", "a b c", 10), train_tokenizer("char", "abc")
    big = prepare_module.WORKERS_FROM
    monkeypatch.setattr(prepare_module, "default_threads", lambda: 2)
    assert prepare_module._worker_count(word, big, None) == 2
    assert prepare_module._worker_count(word, big - 1, None) == 0
    assert prepare_module._worker_count(char, big, None) == 0
    assert prepare_module._worker_count(word, 10, 1) == 1
    monkeypatch.setattr(prepare_module, "default_threads", lambda: 1)
    assert prepare_module._worker_count(word, big, None) == 0
