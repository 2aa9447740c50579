"""`cllm cache`: listing the datasets prepared for corpora given by path, removing them by
age, by a size cap or all, and the manifest copies kept to a bound."""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import pytest

from cllm.core import dataset_cache
from cllm.core.cache_admin import cache_cap, cached_datasets, to_remove
from cllm.core.cli import main
from cllm.core.dataset_cache import cache_dir, dataset_for, keep_manifest
from cllm.core.errors import ConfigError
from cllm.core.prepare import TokenizerPlan
from tests.helpers import make_text


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CLLM_CACHE_DIR", str(folder))
    return folder


def corpus(root: Path, n: int, words: int = 300) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"doc{i}.txt").write_text(make_text(words, seed=i))
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def age(key: str, days: float) -> None:
    """Makes the dataset under `key` look last used `days` ago."""
    then = time.time() - days * 86400
    for path in (cache_dir() / f"{key}.lock", cache_dir() / key / "manifest.json"):
        os.utime(path, (then, then))


def test_the_cache_lists_its_datasets_with_size_age_and_sources(tmp_path, cache, capsys):
    small, big = corpus(tmp_path / "small", 2), corpus(tmp_path / "big", 6, words=2000)
    dataset_for([small], TokenizerPlan("char"))
    dataset_for([big], TokenizerPlan("bpe", 300))
    code, out, _ = run(capsys, "cache", "--json")
    listed = json.loads(out)["datasets"]
    assert code == 0 and len(listed) == 2
    by_source = {Path(d["sources"][0]).name: d for d in listed}
    assert by_source["big"]["tokenizer"] == "bpe" and by_source["big"]["files"] == 6
    assert by_source["big"]["aliases"]  # the same dataset under its trained tokenizer's key
    assert by_source["big"]["bytes"] > by_source["small"]["bytes"] > 0
    code, out, _ = run(capsys, "cache")
    assert code == 0 and "2 datasets" in out and str(big) in out and "used" in out


def test_using_a_dataset_makes_it_recent_and_clean_removes_the_old_ones(tmp_path, cache, capsys):
    a, b, c = (corpus(tmp_path / name, 3) for name in "abc")
    for folder in (a, b, c):
        dataset_for([folder], TokenizerPlan("char"))
    keys = {Path(d.sources[0]).name: d.key for d in cached_datasets()}
    age(keys["a"], 40)
    age(keys["b"], 40)
    dataset_for([b], TokenizerPlan("char"))  # used again: no longer old
    code, out, _ = run(capsys, "cache", "clean", "--older-than", "30", "--dry-run")
    assert code == 0 and "would remove 1 dataset" in out and len(cached_datasets()) == 3
    code, out, _ = run(capsys, "cache", "clean", "--older-than", "30")
    assert code == 0 and "removed 1 dataset" in out and str(a) in out
    assert {Path(d.sources[0]).name for d in cached_datasets()} == {"b", "c"}
    assert not (cache / keys["a"]).exists() and not list(cache.glob(".*tmp*"))
    notes: list[str] = []
    dataset_for([a], TokenizerPlan("char"), on_note=notes.append)  # prepared again, as any corpus
    assert any(n.startswith("prepared") for n in notes)


def test_clean_to_a_size_removes_the_least_recently_used_and_its_links(tmp_path, cache, capsys):
    folders = [corpus(tmp_path / f"c{i}", 4, words=1500) for i in range(3)]
    for i, folder in enumerate(folders):
        dataset_for([folder], TokenizerPlan("bpe", 300))
        age(cached_datasets()[0].key, 3 - i)  # c0 the oldest
    datasets = cached_datasets()
    sizes = {Path(d.sources[0]).name: d.size for d in datasets}
    cap = (sizes["c1"] + sizes["c2"]) / 1e9
    code, out, _ = run(capsys, "cache", "clean", "--max-size", f"{cap:.9f}")
    assert code == 0 and "removed 1 dataset" in out
    assert {Path(d.sources[0]).name for d in cached_datasets()} == {"c1", "c2"}
    assert all(os.path.exists(link) for link in cache.iterdir() if link.is_symlink())  # no dangling link left
    assert to_remove(cached_datasets(), max_bytes=0) == cached_datasets()[::-1]
    code, out, _ = run(capsys, "cache", "clean", "--all")
    assert code == 0 and cached_datasets() == [] and not [p for p in cache.iterdir() if p.is_symlink()]


def test_clean_needs_to_be_told_what_and_a_damaged_dataset_is_listed(tmp_path, cache, capsys):
    dataset_for([corpus(tmp_path / "c", 2)], TokenizerPlan("char"))
    code, _, err = run(capsys, "cache", "clean")
    assert code == 2 and "--older-than DAYS, --max-size GB or --all" in err
    code, _, err = run(capsys, "cache", "clean", "--max-size", "-1")
    assert code == 2 and "--max-size must be 0 or more" in err
    (cached_datasets()[0].path / "manifest.json").write_text("{broken")
    code, out, _ = run(capsys, "cache")
    assert code == 0 and "the manifest cannot be read" in out
    code, out, _ = run(capsys, "cache", "clean", "--older-than", "0")
    assert code == 0 and cached_datasets() == []


def test_the_manifest_copies_are_kept_to_a_bound(cache, monkeypatch):
    monkeypatch.setattr(dataset_cache, "MANIFESTS_KEPT", 3)
    for i in range(6):
        keep_manifest({"digest": f"d{i}", "files": []})
        os.utime(cache / "manifests" / f"d{i}.json", (i, i))  # in order, whatever the clock's resolution
    kept = sorted(p.name for p in (cache / "manifests").iterdir())
    assert len(kept) == 3 and "d5.json" in kept and "d0.json" not in kept


def test_a_preparation_keeps_the_cache_under_its_cap_removing_the_least_recently_used(tmp_path, cache,
                                                                                         monkeypatch):
    a, b, c, d = (corpus(tmp_path / name, 3) for name in "abcd")
    for i, folder in enumerate((a, b, c)):
        dataset_for([folder], TokenizerPlan("char"))  # each Dataset let go at once: not in use
        age(next(x.key for x in cached_datasets() if x.sources == [str(folder)]), days=3 - i)  # a the oldest
    sizes = {Path(x.sources[0]).name: x.size for x in cached_datasets()}
    monkeypatch.setenv("CLLM_CACHE_MAX_GB", str((sizes["b"] + sizes["c"] + sizes["a"] // 2) / 1e9))
    notes: list[str] = []
    kept = dataset_for([d], TokenizerPlan("char"), on_note=notes.append)
    left = {Path(x.sources[0]).name for x in cached_datasets()}
    assert left == {"c", "d"}  # a, then b: the least recently used until it fits; d is the new one
    said = "\n".join(notes)
    assert "over its" in said and "CLLM_CACHE_MAX_GB" in said and "removed 2 least recently used datasets" in said
    assert str(a) in said and str(b) in said and kept.path.is_dir()


def test_the_cap_never_removes_a_dataset_in_use_nor_the_new_one(tmp_path, cache, monkeypatch):
    a, b = corpus(tmp_path / "a", 3), corpus(tmp_path / "b", 3)
    in_use = dataset_for([a], TokenizerPlan("char"))  # held while this object lives (a run's)
    age(in_use.path.name, days=5)
    monkeypatch.setenv("CLLM_CACHE_MAX_GB", "0")
    notes: list[str] = []
    new = dataset_for([b], TokenizerPlan("char"), on_note=notes.append)
    assert in_use.path.is_dir() and new.path.is_dir()
    assert any("the rest is in use or just prepared" in n for n in notes), notes
    assert len(in_use.train) > 0  # still readable
    del in_use, new
    gc.collect()  # the datasets' lock files close: no longer in use
    c = corpus(tmp_path / "c", 2)
    notes.clear()
    dataset_for([c], TokenizerPlan("char"), on_note=notes.append)
    assert {Path(x.sources[0]).name for x in cached_datasets()} == {"c"}
    assert any("removed 2 least recently used datasets" in n for n in notes), notes


def test_the_cap_can_be_turned_off_and_a_bad_one_is_named(tmp_path, cache, monkeypatch):
    a, b = corpus(tmp_path / "a", 2), corpus(tmp_path / "b", 2)
    monkeypatch.setenv("CLLM_CACHE_MAX_GB", "off")
    dataset_for([a], TokenizerPlan("char"))
    dataset_for([b], TokenizerPlan("char"))
    assert len(cached_datasets()) == 2
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("CLLM_CACHE_MAX_GB", bad)
        with pytest.raises(ConfigError, match=f"CLLM_CACHE_MAX_GB='{bad}': give the dataset cache's size cap"):
            dataset_for([a], TokenizerPlan("char"))
    monkeypatch.delenv("CLLM_CACHE_MAX_GB")
    assert cache_cap() == 20 * 10**9
