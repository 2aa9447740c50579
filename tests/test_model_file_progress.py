"""load_model's progress callback (for front ends loading a large model)."""

from cllm.core.model_file import load_model, save_model
from tests.helpers import make_text, tiny_model


def test_load_reports_bytes_read(tmp_path):
    model = tiny_model(make_text(300))
    save_model(tmp_path / "m.cllm", model, optimizer=(model.params * 0, model.params * 0))
    seen = []
    loaded = load_model(tmp_path / "m.cllm", progress=lambda done, total: seen.append((done, total)))
    assert loaded.optimizer is not None
    assert seen[-1] == (3 * 4 * model.n_params, 3 * 4 * model.n_params)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 3 * len(model.tensors())
