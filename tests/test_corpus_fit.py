"""Whether a model's tokenizer fits a corpus, judged in bounded memory: files and folders
streamed in chunks, a prepared dataset by its manifest, a built-in corpus whole."""

from __future__ import annotations

from cllm.core import corpus_fit, sources
from cllm.core.corpus_fit import fit_problem
from cllm.core.prepare import TokenizerPlan, prepare
from cllm.core.tokenizer import train_tokenizer
from tests.helpers import make_text


def test_a_folder_is_read_in_chunks_and_the_file_that_does_not_fit_is_named(tmp_path, monkeypatch):
    read: list[int] = []

    def small_chunks(source, digest=None):  # many chunks per file: nothing is read whole
        for chunk in sources.read_text_chunks(source, digest, block=1024):
            read.append(len(chunk))
            yield chunk

    monkeypatch.setattr(corpus_fit, "read_text_chunks", small_chunks)
    corpus = tmp_path / "c"
    (corpus / "sub").mkdir(parents=True)
    texts = [make_text(2000, seed=i) for i in range(3)]
    for i, text in enumerate(texts):
        (corpus / ("sub" if i else ".") / f"doc{i}.txt").write_text(text)
    (corpus / "blob.bin").write_bytes(b"\0\1")  # skipped, as the preparation skips it
    char = train_tokenizer("char", "".join(texts) + "\n")
    assert fit_problem(char, corpus) is None
    assert len(read) > 20 and max(read) < 4200
    assert fit_problem(char, corpus / "doc0.txt") is None
    (corpus / "sub" / "late.txt").write_text(make_text(3000, seed=5) + "caf\u00e9")
    problem = fit_problem(char, corpus)
    assert problem is not None and "late.txt" in problem and "'\u00e9'" in problem
    no_newline = train_tokenizer("char", "".join(texts).replace("\n", " "))
    assert "separated by a blank line" in (fit_problem(no_newline, tmp_path / "c" / "sub") or "")
    bpe = train_tokenizer("bpe", texts[0], 280)
    assert fit_problem(bpe, corpus) is None  # byte-level BPE encodes anything


def test_a_dataset_is_judged_by_its_manifest_and_a_built_in_corpus_whole(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(make_text(500, seed=i))
    ds = prepare([corpus], tmp_path / "ds", TokenizerPlan("bpe", 280))
    assert ds.tokenizer is not None and fit_problem(ds.tokenizer, tmp_path / "ds") is None
    other = train_tokenizer("bpe", make_text(800, seed=9), 270)
    assert "prepared with another tokenizer (bpe)" in (fit_problem(other, tmp_path / "ds") or "")
    tiny = train_tokenizer("char", "abc")
    assert "python-docs" in (fit_problem(tiny, "python-docs") or "")
