"""numba's cache: a change to a file whose kernels are compiled into another module drops
that module's cached code, and the warm-up's child processes fill the cache."""

from cllm.core import kernel_cache


def test_stale_cache_is_dropped_when_a_dependency_changes(tmp_path):
    source, cache = tmp_path / "src", tmp_path / "cache"
    source.mkdir()
    cache.mkdir()
    (source / "kernels.py").write_text("v1")
    (source / "layout.py").write_text("v1")
    cached = cache / "passes.shard_pass-1.py311.nbi"
    other = cache / "kernels.gemm-1.py311.nbi"
    cached.write_text("x")
    other.write_text("x")
    deps = ("kernels.py", "layout.py")

    assert kernel_cache.drop_stale_module(cache, "passes", deps, source) is True  # no stamp: unknown provenance
    assert not cached.exists() and other.exists()
    cached.write_text("x")
    assert kernel_cache.drop_stale_module(cache, "passes", deps, source) is False  # same sources: keep
    assert cached.exists()
    (source / "layout.py").write_text("v2")
    assert kernel_cache.drop_stale_module(cache, "passes", deps, source) is True
    assert not cached.exists()


def test_precompile_children_compile_both_passes_into_the_cache(tmp_path, monkeypatch):
    """The cold-start split: each child process leaves its part in numba's cache, where
    this process then loads it instead of compiling it."""
    from cllm.core import precompile

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precompile, "default_threads", lambda: 2)
    children = precompile.start_part_children()
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    for name in ("passes.gpt_forward", "passes.gpt_backward", "passes.shard_pass", "decode_kernels.decode_rows",
                 "optimizer.adamw_chunks"):
        assert list(tmp_path.rglob(f"{name}-*.nbi")), name


def test_a_decoder_checks_the_cache_before_its_kernels_load(small_text, monkeypatch):
    """A process that only generates (`cllm generate`) never makes a Workspace: its
    decoder checks the cache itself."""
    from cllm.core.sampler import Decoder
    from tests.helpers import tiny_model

    calls = []

    def drop_stale() -> bool:
        calls.append("checked")
        return False

    monkeypatch.setattr(kernel_cache, "drop_stale", drop_stale)
    Decoder(tiny_model(small_text))
    assert calls == ["checked"]
