"""A second start without a walk: the dataset's index of its sources (sources.npz) and
its file list beside the manifest (files.json), and what happens when either or the
sources change or are damaged."""

from __future__ import annotations

import json
import os
import time

import pytest

from cllm.core import dataset_cache
from cllm.core.dataset import FILE_LIST, MANIFEST, open_dataset, read_manifest
from cllm.core.dataset_cache import dataset_for
from cllm.core.errors import CorpusError
from cllm.core.prepare import TokenizerPlan, prepare
from cllm.core.source_index import INDEX, unchanged
from tests.helpers import make_text

OLD_NS = 1_700_000_000 * 10**9  # well before any walk: a folder this old is not "racy"


def make_corpus(root) -> None:
    for i in range(8):
        rel = f"{'sub/' if i % 2 else ''}doc{i}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(make_text(200, seed=i))
    age_folders(root)


def age_folders(root) -> None:
    for folder in (root, root / "sub"):
        os.utime(folder, ns=(OLD_NS, OLD_NS))


def use(root, notes: list[str]):
    notes.clear()
    return dataset_for([root], TokenizerPlan("char"), on_note=notes.append)


@pytest.fixture
def no_walk(monkeypatch):
    """Counts the walks dataset_for makes."""
    walks = []
    real = dataset_cache.scan_sources

    def counted(*args, **kwargs):
        walks.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_cache, "scan_sources", counted)
    return walks


def test_an_unchanged_corpus_is_found_without_a_walk_or_its_file_list(tmp_path, no_walk, monkeypatch):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    assert (first.path / INDEX).is_file() and (first.path / FILE_LIST).is_file()
    assert "files" not in json.loads((first.path / MANIFEST).read_text())  # the list is beside it
    no_walk.clear()
    monkeypatch.setattr(dataset_cache, "read_files", lambda *a: pytest.fail("the file list was read"))
    again = use(tmp_path / "c", notes)
    assert notes[0].startswith("using the prepared") and again.sha256 == first.sha256 and no_walk == []
    assert again.documents == 8 and "8 files" in again.describe()


@pytest.mark.parametrize("change", ["content", "added", "removed", "replaced with the same size and mtime",
                                    "added in a sub-folder"])
def test_each_kind_of_change_is_noticed(tmp_path, change):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    assert (first.path / INDEX).is_file()
    doc = tmp_path / "c" / "doc0.txt"
    st = doc.stat()
    if change == "content":
        doc.write_text(doc.read_text().upper())  # the same size
        os.utime(doc, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == "added":
        (tmp_path / "c" / "new.txt").write_text("a new file\n")
    elif change == "removed":
        doc.unlink()
    elif change == "replaced with the same size and mtime":
        other = tmp_path / "other.txt"
        other.write_text(doc.read_text().upper())
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, doc)
        os.utime(tmp_path / "c", ns=(OLD_NS, OLD_NS))  # even with the folder's mtime put back: the inode
    else:
        (tmp_path / "c" / "sub" / "new.txt").write_text("a new file\n")
    changed = use(tmp_path / "c", notes)
    assert notes[0].startswith("the corpus changed") and changed.sha256 != first.sha256, notes


def test_a_damaged_index_is_never_trusted(tmp_path, no_walk):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    index = first.path / INDEX
    record = read_manifest(first.path)["source_index"]
    assert unchanged(first.path, record)
    good = index.read_bytes()
    for damaged in (good[: len(good) // 2], good[:-40] + b"\xff" * 40, b""):
        index.write_bytes(damaged)
        assert not unchanged(first.path, record)
        no_walk.clear()
        again = use(tmp_path / "c", notes)  # walked and compared: still the same corpus
        assert notes[0].startswith("using the prepared") and again.sha256 == first.sha256 and len(no_walk) == 1
    index.unlink()
    assert not unchanged(first.path, record) and not unchanged(first.path, None)


def test_a_folder_changed_just_before_the_walk_gets_no_index(tmp_path):
    make_corpus(tmp_path / "c")
    os.utime(tmp_path / "c" / "sub", ns=(time.time_ns(), time.time_ns()))
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    assert read_manifest(ds.path)["source_index"] is None and not (ds.path / INDEX).exists()


def test_a_damaged_file_list_is_named_and_the_cache_prepares_again(tmp_path):
    make_corpus(tmp_path / "c")
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    listed = ds.path / FILE_LIST
    good = listed.read_text()
    for damaged in (good[: len(good) // 2], good.replace("doc1", "doc9")):
        listed.write_text(damaged)
        with pytest.raises(CorpusError, match=f"{listed}: the dataset's file list is damaged"):
            _ = open_dataset(ds.path).files
    listed.unlink()
    with pytest.raises(CorpusError, match=f"{listed}: the dataset's file list cannot be read"):
        _ = open_dataset(ds.path).files
    # in the cache: a damaged list where the index cannot vouch for the files -> prepared again
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    (first.path / INDEX).unlink()
    (first.path / FILE_LIST).write_text("[]\n")
    again = use(tmp_path / "c", notes)
    assert "the cached dataset is damaged" in notes[0] and "files.json" in notes[0]
    assert again.sha256 == first.sha256 and len(again.files) == 8


def test_a_version_1_dataset_with_the_list_inside_its_manifest_is_still_read(tmp_path):
    make_corpus(tmp_path / "c")
    ds = prepare([tmp_path / "c"], tmp_path / "ds", TokenizerPlan("char"))
    files = ds.files
    manifest = json.loads((ds.path / MANIFEST).read_text())
    for key in ("file_list", "source_index"):
        del manifest[key]
    manifest.update(version=1, files=files)
    (ds.path / MANIFEST).write_text(json.dumps(manifest))
    (ds.path / FILE_LIST).unlink()
    old = open_dataset(ds.path)
    assert old.files == files and old.documents == 8 and old.sha256 == ds.sha256 and old.describe() == ds.describe()


def test_a_stale_index_is_written_again_when_the_walk_finds_nothing_changed(tmp_path, no_walk):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    old_record = read_manifest(first.path)["source_index"]
    (tmp_path / "c" / ".hidden").write_text("not a source\n")  # moves the folder's mtime, changes no source
    os.utime(tmp_path / "c", ns=(OLD_NS + 1, OLD_NS + 1))  # not "racy": the new index may be written
    no_walk.clear()
    again = use(tmp_path / "c", notes)
    assert notes[0].startswith("using the prepared") and again.sha256 == first.sha256 and len(no_walk) == 1
    record = read_manifest(first.path)["source_index"]
    assert record != old_record and unchanged(first.path, record)
    assert [p.name for p in first.path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    no_walk.clear()
    third = use(tmp_path / "c", notes)  # no walk any more
    assert notes[0].startswith("using the prepared") and third.sha256 == first.sha256 and no_walk == []


def test_an_index_not_written_again_leaves_the_dataset_whole_and_walks_again(tmp_path, no_walk, monkeypatch):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    manifest = (first.path / MANIFEST).read_bytes()
    (tmp_path / "c" / ".hidden").write_text("not a source\n")
    os.utime(tmp_path / "c", ns=(OLD_NS + 1, OLD_NS + 1))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real = dataset_cache.write_manifest
    monkeypatch.setattr(dataset_cache, "write_manifest", full_disk)  # the index written, not the manifest
    again = use(tmp_path / "c", notes)
    assert notes[0].startswith("using the prepared") and again.sha256 == first.sha256
    # The old manifest, which does not vouch for the new index: the next start walks, then writes both.
    assert (first.path / MANIFEST).read_bytes() == manifest
    monkeypatch.setattr(dataset_cache, "write_manifest", real)
    no_walk.clear()
    assert use(tmp_path / "c", notes).sha256 == first.sha256 and len(no_walk) == 1
    no_walk.clear()
    assert use(tmp_path / "c", notes).sha256 == first.sha256 and no_walk == []


def test_a_folder_changed_just_now_is_walked_again_and_gets_no_new_index(tmp_path, no_walk):
    make_corpus(tmp_path / "c")
    notes: list[str] = []
    first = use(tmp_path / "c", notes)
    old_record = read_manifest(first.path)["source_index"]
    (tmp_path / "c" / ".hidden").write_text("not a source\n")  # the folder's mtime is now: "racy"
    for _ in range(2):
        no_walk.clear()
        assert use(tmp_path / "c", notes).sha256 == first.sha256 and len(no_walk) == 1
    assert read_manifest(first.path)["source_index"] == old_record
