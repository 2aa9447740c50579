"""The .cllm file: exact round trips, atomic saves, and a precise error for each kind of
broken file."""

import errno
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import cllm.core.model_file as model_file
from cllm.core.config import ModelConfig
from cllm.core.errors import ModelFileError
from cllm.core.layout import Layout, tensor_shapes
from cllm.core.model import GPT
from cllm.core.model_file import load_model, read_info, save_model
from cllm.core.tokenizer import train_tokenizer

TEXT = "hello world, a tiny corpus.\n"
TRAINING = {
    "step": 12, "tokens_seen": 3072, "loss_history": [[1, 4.5], [12, 3.25]],
    "val_history": [[12, 3.5]], "best_val_loss": 3.5, "corpus": {"name": "t.txt", "sha256": "ab" * 32},
    "rng_state": {"bit_generator": "PCG64", "state": {"state": 2**100 + 7, "inc": 3}},
    "data_position": 99, "train_config": {"lr": 0.001, "batch": 4},
}


def tiny(kind: str = "char", seed: int = 1337) -> GPT:
    tokenizer = train_tokenizer(kind, TEXT)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=8, ctx=8)
    return GPT.create(config, tokenizer, seed=seed)


def adam(model: GPT) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    m = rng.normal(size=model.n_params).astype(np.float32)
    v = rng.random(model.n_params).astype(np.float32)
    return m, v


@pytest.fixture
def saved(tmp_path) -> Path:
    model = tiny()
    return save_model(tmp_path / "m.cllm", model, optimizer=adam(model), training=TRAINING)


def load_error(path: Path) -> str:
    """A problem the header shows: reading the details and loading refuse alike, naming
    the file."""
    with pytest.raises(ModelFileError) as loading:
        load_model(path)
    with pytest.raises(ModelFileError) as details:
        read_info(path)
    message = str(loading.value)
    assert message.startswith(str(path)), message
    assert str(details.value) == message
    return message


def raw_header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_raw(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def rewrite(path: Path, tensors=None, meta=None) -> None:
    """Rewrite a saved file with its tensors and/or metadata changed by the callbacks."""
    with safe_open(str(path), framework="numpy") as f:
        data = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata()
    if tensors:
        tensors(data)
    if meta:
        meta(metadata)
    save_file(data, path, metadata=metadata)


# Round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_round_trip_is_bit_identical(tmp_path, kind):
    model = tiny(kind)
    m, v = adam(model)
    path = save_model(tmp_path / "m.cllm", model, optimizer=(m, v), training=TRAINING, created="2024-01-02T03:04:05Z")
    loaded = load_model(path)
    assert loaded.model.params.dtype == np.float32
    assert loaded.model.params.tobytes() == model.params.tobytes()
    for name, tensor in model.tensors().items():
        assert loaded.model.tensors()[name].tobytes() == tensor.tobytes()
    assert loaded.optimizer is not None
    assert loaded.optimizer[0].tobytes() == m.tobytes() and loaded.optimizer[1].tobytes() == v.tobytes()
    assert loaded.model.config == model.config
    assert loaded.model.tokenizer.to_json() == model.tokenizer.to_json()
    assert np.array_equal(loaded.model.tokenizer.encode(TEXT), model.tokenizer.encode(TEXT))
    assert loaded.training == TRAINING
    assert loaded.info.created == "2024-01-02T03:04:05Z"
    assert loaded.info.updated.endswith("Z") and loaded.info.updated >= "2024"


def test_without_optimizer(tmp_path):
    model = tiny()
    loaded = load_model(save_model(tmp_path / "m.cllm", model))
    assert loaded.optimizer is None and loaded.training == {} and not loaded.info.has_optimizer
    assert loaded.info.created == loaded.info.updated


def test_metadata_keys(saved):
    with safe_open(str(saved), framework="numpy") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert meta["format"] == "cllm" and meta["version"] == "1"
    config = {"vocab_size": len(set(TEXT)), "n_layer": 1, "n_head": 2, "n_embd": 8, "ctx": 8}
    assert json.loads(meta["config"]) == config
    assert json.loads(meta["tokenizer"]) == {"type": "char", "vocab": sorted(set(TEXT))}
    assert json.loads(meta["training"]) == TRAINING
    shapes = tensor_shapes(ModelConfig.from_dict(json.loads(meta["config"])))
    assert names == set(shapes) | {f"optim.{k}.{n}" for k in "mv" for n in shapes}


def test_read_info_reads_only_the_header(saved, monkeypatch):
    def no_tensors(*args, **kwargs):
        raise AssertionError("read_info must not open the tensors")
    monkeypatch.setattr(model_file, "safe_open", no_tensors)
    info = read_info(saved)
    assert info.path == saved and info.file_size == saved.stat().st_size
    assert info.config == ModelConfig(vocab_size=len(set(TEXT)), n_layer=1, n_head=2, n_embd=8, ctx=8)
    assert info.n_params == tiny().n_params and info.has_optimizer
    assert info.training == TRAINING and info.tokenizer["type"] == "char"
    assert info.run.corpus is not None
    assert info.run.step == 12 and info.run.best_val_loss == 3.5 and info.run.corpus.name == "t.txt"


# Saving -------------------------------------------------------------------------------

def test_save_creates_parent_folder(tmp_path):
    path = save_model(tmp_path / "a" / "b" / "m.cllm", tiny())
    assert path.is_file() and load_model(path).model.config.n_layer == 1


def test_save_keeps_created_and_replaces_file(tmp_path):
    path = tmp_path / "m.cllm"
    save_model(path, tiny(seed=1))
    created = read_info(path).created
    save_model(path, tiny(seed=2), created=created)
    assert read_info(path).created == created
    assert load_model(path).model.params.tobytes() == tiny(seed=2).params.tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.cllm"]


def test_failed_rename_leaves_old_file(saved, monkeypatch):
    before = saved.read_bytes()
    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(model_file.os, "replace", broken_replace)
    with pytest.raises(ModelFileError, match="No space left"):
        save_model(saved, tiny(seed=5))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def failing_write(error: BaseException):
    """A write_safetensors that writes part of the file, then fails with `error`."""
    real = model_file.write_safetensors

    def write(f, tensors, metadata):
        real(f, dict(list(tensors.items())[:2]), metadata)
        f.flush()
        raise error
    return write


@pytest.mark.parametrize("error, reason", [
    (KeyboardInterrupt(), None),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
])
def test_failure_mid_write_leaves_old_file(saved, monkeypatch, error, reason):
    before = saved.read_bytes()
    monkeypatch.setattr(model_file, "write_safetensors", failing_write(error))
    with pytest.raises(type(error) if reason is None else ModelFileError) as failure:
        save_model(saved, tiny(seed=5))
    if reason is not None:
        assert str(failure.value) == f"{saved}: cannot save: {reason}"
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_saving_onto_a_folder_is_refused(tmp_path):
    (tmp_path / "m.cllm").mkdir()
    with pytest.raises(ModelFileError, match="is a directory"):
        save_model(tmp_path / "m.cllm", tiny())


def test_save_rejects_inconsistent_model(tmp_path):
    model = tiny()
    config = ModelConfig(vocab_size=model.config.vocab_size + 1, n_layer=1, n_head=2, n_embd=8, ctx=8)
    wrong = GPT(config, model.tokenizer, np.zeros(Layout.params(config).size, np.float32))
    with pytest.raises(ModelFileError, match="tokenizer has"):
        save_model(tmp_path / "m.cllm", wrong)
    model.params[3] = np.inf
    with pytest.raises(ModelFileError, match="non-finite"):
        save_model(tmp_path / "m.cllm", model)
    assert not list(tmp_path.iterdir())


# Broken files -------------------------------------------------------------------------

def test_missing_and_directory(tmp_path):
    assert "no such file" in load_error(tmp_path / "none.cllm")
    assert "is a directory" in load_error(tmp_path)


def test_truncated_in_data(saved):
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    message = load_error(saved)
    assert "truncated" in message and "data section" in message


@pytest.mark.parametrize("keep", [4, 40])
def test_truncated_in_header(saved, keep):
    saved.write_bytes(saved.read_bytes()[:keep])
    assert "truncated or not a safetensors file" in load_error(saved)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.cllm"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    assert "not a safetensors file" in load_error(path)


def test_pickle_is_recognised(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04\x95" + bytes(200))
    assert "pickle" in load_error(path)


def test_header_not_json(tmp_path):
    path = tmp_path / "m.cllm"
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!" + bytes(16))
    assert "header is not JSON" in load_error(path)


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, path)
    message = load_error(path)
    assert "not a CLLM model file" in message and "without CLLM metadata" in message and "'weight'" in message


def test_other_format(saved):
    rewrite(saved, meta=lambda m: m.update(format="gguf"))
    assert "format is 'gguf'" in load_error(saved)


def test_missing_tensor(saved):
    rewrite(saved, tensors=lambda t: t.pop("h.0.ln_1.bias"))
    assert "missing tensor 'h.0.ln_1.bias'" in load_error(saved)


def test_missing_optimizer_tensor(saved):
    rewrite(saved, tensors=lambda t: t.pop("optim.v.wpe.weight"))
    assert "missing tensor 'optim.v.wpe.weight'" in load_error(saved)


def test_unexpected_tensor(saved):
    rewrite(saved, tensors=lambda t: t.update(extra=np.zeros(3, np.float32)))
    assert "unexpected tensor 'extra'" in load_error(saved)


def test_wrong_shape(saved):
    def transpose(t):
        t["wte.weight"] = np.ascontiguousarray(t["wte.weight"].T)
    rewrite(saved, tensors=transpose)
    V = len(set(TEXT))
    assert f"tensor 'wte.weight' has shape [8, {V}], expected [{V}, 8]" in load_error(saved)


def test_wrong_dtype(saved):
    def widen(t):
        t["h.0.attn.c_proj.weight"] = t["h.0.attn.c_proj.weight"].astype(np.float64)
    rewrite(saved, tensors=widen)
    assert "tensor 'h.0.attn.c_proj.weight' has dtype F64, expected F32" in load_error(saved)


def test_nan_values(saved):
    """Values are not in the header: the details read, the value check and loading refuse."""
    def poison(t):
        t["h.0.mlp.c_fc.weight"][0, :2] = [np.nan, np.inf]
    rewrite(saved, tensors=poison)
    read_info(saved)
    for check in (model_file.check_values, load_model):
        with pytest.raises(ModelFileError, match="tensor 'h.0.mlp.c_fc.weight' has 2 non-finite values"):
            check(saved)


def test_check_values_passes_a_good_file(saved):
    assert model_file.check_values(saved).config == read_info(saved).config


@pytest.mark.parametrize("change, problem", [
    (lambda h: h["wpe.weight"].update(data_offsets=[h["wpe.weight"]["data_offsets"][0] - 4,
                                                    h["wpe.weight"]["data_offsets"][1] - 4]), "overlaps"),
    (lambda h: h["wte.weight"].update(data_offsets=[h["wte.weight"]["data_offsets"][0] + 4,
                                                    h["wte.weight"]["data_offsets"][1] + 4]), "gap"),
    (lambda h: h["ln_f.bias"].update(shape=[3, 3]), "has shape [3, 3]"),
    (lambda h: h["ln_f.bias"].pop("data_offsets"), "malformed header entry"),
])
def test_offsets_and_entries_are_checked(saved, change, problem):
    header, body = raw_header(saved)
    change(header)
    write_raw(saved, header, body)
    assert problem in load_error(saved)


def test_bytes_after_the_last_tensor(saved):
    saved.write_bytes(saved.read_bytes() + bytes(16))
    assert "16 bytes after the last tensor" in load_error(saved)


@pytest.mark.parametrize("training, problem", [
    ({"step": "twelve"}, "'step' must be a whole number"),
    ({"step": 3, "best_val_loss": "low"}, "'best_val_loss' must be a number"),
])
def test_broken_training_state(saved, training, problem):
    rewrite(saved, meta=lambda m: m.update(training=json.dumps(training)))
    message = load_error(saved)
    assert "invalid training state" in message and problem in message


def test_files_are_plain_safetensors(saved):
    """Our own streaming writer produces what safetensors itself reads, bit for bit."""
    model = tiny()
    with safe_open(str(saved), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("wte.weight"), model.tensors()["wte.weight"])
        assert f.metadata()["format"] == "cllm"
    (n,) = struct.unpack("<Q", saved.read_bytes()[:8])
    assert n % 8 == 0


def test_newer_version(saved):
    rewrite(saved, meta=lambda m: m.update(version="2"))
    message = load_error(saved)
    assert "newer CLLM" in message and "version 2" in message
    with pytest.raises(ModelFileError, match="newer CLLM"):
        read_info(saved)


@pytest.mark.parametrize("config, problem", [
    ('{"vocab_size": 12, "n_layer": 1, "n_head": 3, "n_embd": 8, "ctx": 8}', "heads must divide width"),
    ('{"vocab_size": 12, "n_layer": 1}', "lacks n_head"),
    ("{not json", "model config is not valid JSON"),
])
def test_broken_config(saved, config, problem):
    rewrite(saved, meta=lambda m: m.update(config=config))
    message = load_error(saved)
    assert problem in message


def test_broken_tokenizer(saved):
    rewrite(saved, meta=lambda m: m.update(tokenizer='{"type": "char", "vocab": ["a", "a"]}'))
    message = load_error(saved)
    assert "broken tokenizer" in message and "repeated" in message
    rewrite(saved, meta=lambda m: m.update(tokenizer='{"type": "char"'))
    assert "tokenizer description is not valid JSON" in load_error(saved)


def test_tokenizer_size_mismatch(saved):
    rewrite(saved, meta=lambda m: m.update(tokenizer=json.dumps({"type": "char", "vocab": list("abc")})))
    assert "the tokenizer has 3 tokens but the model config says vocab_size=" in load_error(saved)
