"""int8 models: `cllm quantize`, the file that stores them, and what quantizing costs a
trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cllm.core.cli import main
from cllm.core.errors import ModelFileError
from cllm.core.model_file import load_model, read_info, save_model
from cllm.core.quantize import QUANTIZED, decoded_loss, dequantize_rows, quantize_model
from cllm.core.sampler import SampleConfig, generate
from cllm.core.trainer import evaluate, split_tokens
from tests.helpers import make_text
from tests.hf_helpers import trained_model

GREEDY_TOKENS = 100  # greedy text of the int8 model agrees with float32's for at least this many


@pytest.fixture(scope="module")
def trained():
    return trained_model("char", steps=150)


@pytest.fixture(scope="module", params=["char", "bpe"])
def each_trained(request, trained):
    return trained if request.param == "char" else trained_model("bpe", steps=150)


def copy_of(model):
    from cllm.core.model import GPT

    return GPT(model.config, model.tokenizer, model.params.copy())


def test_int8_model_loses_under_half_a_percent_and_greedy_text_agrees(each_trained):
    """A trained char and a trained BPE model and their int8 copies: validation loss
    within 0.5% (both printed), by the forward pass (int8 weights' values, float32 inputs)
    and as generation predicts (int8 x int8 products), greedy text equal for GREEDY_TOKENS
    tokens."""
    trained = each_trained
    text = make_text(seed=1)  # text the model was not trained on
    _, val = split_tokens(trained.tokenizer.encode(text), trained.config.ctx, "held out")
    int8 = copy_of(trained)
    quantize_model(int8)
    loss32, _ = evaluate(trained, val, threads=1)
    loss8, _ = evaluate(int8, val, threads=1)
    print(f"validation loss: float32 {loss32:.5f}, int8 {loss8:.5f} ({100 * (loss8 / loss32 - 1):+.3f}%)")
    assert abs(loss8 / loss32 - 1) < 0.005
    decoded32, decoded8 = decoded_loss(trained, val, "float32"), decoded_loss(int8, val, "int8")
    print(f"decoded: float32 {decoded32:.5f}, int8 x int8 {decoded8:.5f} ({100 * (decoded8 / decoded32 - 1):+.3f}%)")
    assert abs(decoded32 / loss32 - 1) < 0.02  # the same measure, on windows of the same text
    assert abs(decoded8 / decoded32 - 1) < 0.005
    greedy = SampleConfig(max_tokens=GREEDY_TOKENS, temperature=0)
    assert "".join(generate(trained, "the ", greedy)) == "".join(generate(int8, "the ", greedy))


def test_an_int8_file_loads_back_exactly_and_says_what_it_is(trained, tmp_path):
    model = copy_of(trained)
    quantize_model(model)
    path = save_model(tmp_path / "m-int8.cllm", model)
    info = read_info(path)
    assert info.weights == "int8"
    loaded = load_model(path).model
    assert loaded.quantized is not None and model.quantized is not None
    np.testing.assert_array_equal(loaded.params, model.params)
    for name in QUANTIZED:
        q, scale = model.quantized[name]
        np.testing.assert_array_equal(loaded.quantized[name][0], q)
        np.testing.assert_array_equal(loaded.quantized[name][1], scale)
        assert loaded.quantized[name][0].dtype == np.int8
    float32_size = save_model(tmp_path / "m.cllm", trained).stat().st_size
    assert path.stat().st_size < float32_size


def test_quantized_values_are_the_file_values(trained):
    model = copy_of(trained)
    quantize_model(model)
    q, scale = model.quantized["fcw"]
    np.testing.assert_array_equal(model.layout.views(model.params).fcw, np.swapaxes(dequantize_rows(q, scale), 1, 2))


def run(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def test_cllm_quantize_info_and_generate(trained, tmp_path, capsys):
    source, out = tmp_path / "m.cllm", tmp_path / "m-int8.cllm"
    save_model(source, trained)
    code, io = run(capsys, "quantize", source, "-o", out, "--json")
    assert code == 0 and json.loads(io.out)["weights"] == "int8"
    code, io = run(capsys, "quantize", source, "-o", out)
    assert code == 2 and "already exists" in io.err
    code, io = run(capsys, "quantize", out, "-o", tmp_path / "again.cllm")
    assert code == 2 and "already an int8 model" in io.err
    code, io = run(capsys, "info", out, "--json")
    assert code == 0 and json.loads(io.out)["weights"] == "int8"
    code, io = run(capsys, "info", out)
    assert "int8" in io.out
    args = ["generate", "--prompt", "the ", "--max-tokens", "40", "--temperature", "0", "--json"]
    code, io = run(capsys, *args[:1], out, *args[1:])
    from_file = json.loads(io.out.splitlines()[-1])["text"]
    code, io = run(capsys, *args[:1], source, *args[1:], "--weights", "int8")
    assert code == 0 and json.loads(io.out.splitlines()[-1])["text"] == from_file


def test_an_int8_tensor_of_the_wrong_type_is_named(trained, tmp_path):
    """A file that says int8 but holds a float32 weight is refused, naming the tensor."""
    model = copy_of(trained)
    quantize_model(model)
    model.quantized["qkvw"] = (model.quantized["qkvw"][0].astype(np.float32), model.quantized["qkvw"][1])
    path = save_model(tmp_path / "bad.cllm", model)
    with pytest.raises(ModelFileError, match=r"h\.0\.attn\.c_attn\.weight.*dtype F32, expected I8"):
        load_model(path)


def test_training_from_an_int8_file_saves_what_it_trained(trained, tmp_path):
    """A run from an int8 model file (fine-tune or resume) trains float32 values; its saves
    hold those values, not the int8 forms it was read with."""
    from cllm.core.config import TrainConfig
    from cllm.core.trainer import Trainer
    from tests.helpers import make_corpus

    model = copy_of(trained)
    quantize_model(model)
    parent = save_model(tmp_path / "parent-int8.cllm", model)
    config = TrainConfig(steps=3, batch=2, eval_interval=0, threads=1)
    trainer = Trainer.fine_tune(parent, make_corpus(make_text(seed=2)), config, out_path=tmp_path / "child.cllm")
    for _ in range(3):
        trainer.train_step()
    saved = load_model(trainer.save()).model
    assert read_info(tmp_path / "child.cllm").weights == "float32" and saved.quantized is None
    np.testing.assert_array_equal(saved.params, trainer.model.params)
    assert not np.array_equal(saved.params, load_model(parent).model.params)  # it did train
