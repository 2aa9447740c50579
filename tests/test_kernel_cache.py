"""numba's cache: a change to the layer kernels drops the cached passes built on them, and
the warm-up's child processes fill it."""

from core import kernel_cache


def test_stale_pass_cache_is_dropped_when_kernels_change(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_cache, "HERE", tmp_path)
    (tmp_path / "kernels.py").write_text("v1")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    cached = cache / "passes.train_shard-1.py311.nbi"
    other = cache / "kernels.gemm-1.py311.nbi"
    cached.write_text("x")
    other.write_text("x")

    assert kernel_cache.drop_stale_pass_cache() is True  # no stamp yet: unknown provenance
    assert not cached.exists() and other.exists()
    cached.write_text("x")
    assert kernel_cache.drop_stale_pass_cache() is False  # same kernels: keep
    assert cached.exists()
    (tmp_path / "kernels.py").write_text("v2")
    assert kernel_cache.drop_stale_pass_cache() is True
    assert not cached.exists()


def test_warm_up_children_compile_both_passes_into_the_cache(tmp_path, monkeypatch):
    """The cold-start split: each child process leaves its pass in numba's cache, where
    this process then loads it instead of compiling it."""
    from core import warmup

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(warmup, "default_threads", lambda: 2)
    children = warmup.start_part_children()
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    for part in ("gpt_forward", "gpt_backward"):
        assert list(tmp_path.rglob(f"passes.{part}-*.nbi")), part
