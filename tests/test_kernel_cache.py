"""A change to the layer kernels drops the cached whole-model passes built on them."""

from core import kernel_cache


def test_stale_pass_cache_is_dropped_when_kernels_change(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_cache, "HERE", tmp_path)
    (tmp_path / "kernels.py").write_text("v1")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    cached = cache / "passes.train_kernel-1.py311.nbi"
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
