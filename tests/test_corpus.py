"""Loading training texts: the built-in corpus and every way a file can be unusable."""

import hashlib
import os
from pathlib import Path

import pytest

from cllm.core.corpus import BUILTIN_CORPORA, Corpus, list_builtin, load_corpus
from cllm.core.errors import CorpusError


def test_builtin_python_docs():
    corpus = load_corpus(None)
    assert corpus.name == "python-docs" and corpus.path is None
    assert len(corpus.text.encode("utf-8")) > 400_000
    assert corpus.sha256 == hashlib.sha256(corpus.text.encode("utf-8")).hexdigest()
    assert load_corpus("python-docs") == corpus
    assert "python-docs" in list_builtin() and set(list_builtin()) == set(BUILTIN_CORPORA)


def test_file_loads_with_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.txt").write_text("héllo\nworld\n", encoding="utf-8")
    corpus = load_corpus("~/t.txt")
    assert isinstance(corpus, Corpus)
    assert corpus.text == "héllo\nworld\n" and corpus.name == "t.txt"
    assert corpus.path == (tmp_path / "t.txt").resolve()
    assert corpus.sha256 == hashlib.sha256("héllo\nworld\n".encode()).hexdigest()


def _error(source) -> str:
    with pytest.raises(CorpusError) as info:
        load_corpus(source)
    return str(info.value)


def test_missing(tmp_path):
    path = tmp_path / "nope.txt"
    message = _error(path)
    assert str(path) in message and "no such file" in message


def test_directory(tmp_path):
    message = _error(tmp_path)
    assert str(tmp_path) in message and "directory" in message


def test_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("text")
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root: simulate the refusal
        def refuse(self):
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "read_bytes", refuse)
    try:
        message = _error(path)
    finally:
        path.chmod(0o644)
    assert str(path) in message and "permission denied" in message


@pytest.mark.parametrize("content, problem", [(b"", "empty"), (b"  \n\t\r\n ", "only whitespace")])
def test_empty(tmp_path, content, problem):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    message = _error(path)
    assert str(path) in message and problem in message


def test_binary(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc\x00def")
    message = _error(path)
    assert str(path) in message and "binary" in message and "offset 3" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    message = _error(path)
    assert str(path) in message and "not valid UTF-8" in message and "byte offset 3" in message
