"""Walking the user's paths: which files are documents, what is skipped and said, and
reading them in chunks that tokenize as the whole does."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cllm.core.errors import CorpusError
from cllm.core.sources import NotText, read_text_chunks, scan_sources, skipped_line
from cllm.core.tokenizer import train_tokenizer
from tests.helpers import make_text


def tree(root, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_a_folder_is_walked_with_what_is_skipped_counted(tmp_path):
    tree(tmp_path / "c", {"a.txt": "one", "sub/b.py": "two", "sub/deep/c.md": "three", ".hidden/x.txt": "no",
                          ".dotfile": "no", ".git/config": "no", "sub/__pycache__/m.pyc": b"\0", "empty.txt": ""})
    os.symlink("..", tmp_path / "c" / "sub" / "up")  # a loop: c/sub/up -> c
    scan = scan_sources([tmp_path / "c"])
    assert [f.name for f in scan.files] == ["c/a.txt", "c/sub/b.py", "c/sub/deep/c.md"]
    assert scan.skipped == {"hidden": 2, "in .git": 1, "in __pycache__": 1, "empty": 1, "link loops": 1}
    assert skipped_line(scan.skipped).startswith("skipped 6 files: 2 hidden, ")


def test_include_and_exclude_globs(tmp_path):
    tree(tmp_path / "c", {"a.txt": "1", "b.py": "2", "tests/t.py": "3", "docs/d.txt": "4"})
    names = lambda **kw: [f.name for f in scan_sources([tmp_path / "c"], **kw).files]  # noqa: E731
    assert names(include=["*.py"]) == ["c/b.py", "c/tests/t.py"]
    assert names(exclude=["tests"]) == ["c/a.txt", "c/b.py", "c/docs/d.txt"]
    assert names(include=["*.py", "*.txt"], exclude=["docs/*"]) == ["c/a.txt", "c/b.py", "c/tests/t.py"]


def test_files_and_folders_together_each_file_once(tmp_path):
    tree(tmp_path, {"c/a.txt": "1", "b.txt": "2"})
    scan = scan_sources([tmp_path / "b.txt", tmp_path / "c", tmp_path / "c" / "a.txt"])
    assert [f.name for f in scan.files] == ["b.txt", "c/a.txt"]
    assert scan.files[0].given and not scan.files[1].given


def test_empty_folder_and_folder_without_text_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty: the folder is empty"):
        scan_sources([tmp_path / "empty"])
    tree(tmp_path / "junk", {".a": "x", "__pycache__/b.pyc": "y"})
    with pytest.raises(CorpusError) as info:
        scan_sources([tmp_path / "junk"])
    assert f"{tmp_path / 'junk'}: no text files to train on (skipped 2 files" in str(info.value)
    with pytest.raises(CorpusError, match="nowhere: no such file or folder"):
        scan_sources([tmp_path / "nowhere"])


def test_binary_and_non_utf8_files_are_not_text(tmp_path):
    tree(tmp_path, {"bin": b"abc\0def", "latin.txt": "café".encode("latin-1")})
    binary, latin = scan_sources([tmp_path / "bin", tmp_path / "latin.txt"]).files
    with pytest.raises(NotText) as info:
        list(read_text_chunks(binary))
    assert info.value.reason == "binary" and "NUL byte at byte offset 3" in info.value.detail
    with pytest.raises(NotText) as info:
        list(read_text_chunks(latin))
    assert info.value.reason == "not UTF-8" and "byte 0xe9 at byte offset 3" in info.value.detail


def test_chunks_tokenize_as_the_whole_text(tmp_path):
    """Chunks end before a newline that follows a non-space character, so byte-level
    BPE gives the same ids chunk by chunk; multi-byte characters split between reads
    are decoded whole."""
    text = (make_text(4000) + "  \n\n é中😀 x\n" * 50 + make_text(3000, seed=1)).replace("mat", "mät")
    (tmp_path / "t.txt").write_text(text)
    source = scan_sources([tmp_path / "t.txt"]).files[0]
    chunks = list(read_text_chunks(source, block=1000))
    assert len(chunks) > 20 and "".join(chunks) == text
    tok = train_tokenizer("bpe", text, 400)
    assert np.array_equal(np.concatenate([tok.encode(c) for c in chunks]), tok.encode(text))


def test_a_file_that_changes_while_read_is_named(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(make_text(3000))
    source = scan_sources([path]).files[0]
    chunks = read_text_chunks(source, block=1000)
    next(chunks)
    with open(path, "a") as f:
        f.write("more\n")
    with pytest.raises(CorpusError, match="t.txt: changed while the corpus was being prepared"):
        list(chunks)
    source = scan_sources([path]).files[0]
    path.unlink()
    with pytest.raises(CorpusError, match="t.txt: vanished while the corpus was being prepared"):
        list(read_text_chunks(source))
