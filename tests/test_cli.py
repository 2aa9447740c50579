"""The `cllm` command end to end, on real files."""

from __future__ import annotations

import json

import pytest

from cllm.core.cli import main
from cllm.core.model_file import load_model

TINY = ["--layers", "1", "--heads", "2", "--embd", "16", "--ctx", "16", "--batch", "4", "--steps", "8",
        "--eval-interval", "4", "--threads", "2"]


@pytest.fixture()
def corpus_file(tmp_path, small_text):
    path = tmp_path / "corpus.txt"
    path.write_text(small_text)
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_train_info_eval_generate(tmp_path, corpus_file, capsys):
    model = tmp_path / "m.cllm"
    code, out, _ = run(capsys, "train", corpus_file, "-o", model, *TINY, "--json")
    assert code == 0
    result = last_json(out)
    assert result["reason"] == "finished" and result["step"] == 8 and model.exists()
    assert result["tokens_per_s"] > 0

    code, out, _ = run(capsys, "info", model, "--json")
    info = last_json(out)
    assert code == 0 and info["step"] == 8 and info["tokenizer"] == "char" and info["config"]["n_layer"] == 1

    code, out, _ = run(capsys, "eval", model, corpus_file, "--json")
    ev = last_json(out)
    assert code == 0 and set(ev) == {"val_loss", "tokens"}
    assert ev["val_loss"] == pytest.approx(load_model(model).training["best_val_loss"], rel=1e-6)

    code, out, _ = run(capsys, "generate", model, "--prompt", "the ", "--max-tokens", "30", "--seed", "1")
    assert code == 0 and len(out.rstrip("\n")) >= 1
    code, out, _ = run(capsys, "generate", model, "--prompt", "the ", "--max-tokens", "30", "--seed", "1", "--json")
    sample = last_json(out)
    assert sample["text"] and sample["tokens"] == 30


def test_generate_several_samples_int8_and_the_timing_report(tmp_path, corpus_file, capsys):
    """--samples 3 prints three samples, each the one-sample run with its seed; --json
    reports the prompt's tokens, the first token's time and the decoding rate; --weights
    int8 and --threads 1 run too."""
    model = tmp_path / "m.cllm"
    assert run(capsys, "train", corpus_file, "-o", model, *TINY, "--json")[0] == 0
    base = ["generate", model, "--prompt", "the ", "--max-tokens", "12", "--seed", "4", "--json"]
    code, out, _ = run(capsys, *base, "--samples", "3")
    result = last_json(out)
    assert code == 0 and result["samples"] == 3 and result["tokens_per_sample"] == [12, 12, 12]
    assert result["prompt_tokens"] == 4 and result["first_token_ms"] > 0 and result["decode_tokens_per_s"] > 0
    for n in range(3):
        code, out, _ = run(capsys, *base[:-3], "--seed", str(4 + n), "--json")
        assert last_json(out)["text"] == result["texts"][n]
    code, out, _ = run(capsys, *base, "--weights", "int8", "--threads", "1")
    assert code == 0 and last_json(out)["tokens"] == 12 and last_json(out)["weights"] == "int8"
    code, out, _ = run(capsys, *base[:-1], "--samples", "2")
    assert code == 0 and "--- sample 1 of 2 ---" in out and "--- sample 2 of 2 ---" in out
    code, _, err = run(capsys, *base, "--samples", "0")
    assert code == 2 and "samples must be between 1 and" in err


def test_refuses_to_overwrite_then_resumes(tmp_path, corpus_file, capsys):
    model = tmp_path / "m.cllm"
    assert run(capsys, "train", corpus_file, "-o", model, *TINY, "--json")[0] == 0
    before = model.read_bytes()
    code, _, err = run(capsys, "train", corpus_file, "-o", model, *TINY)
    assert code == 2 and "already exists" in err and "--force" in err
    assert model.read_bytes() == before
    code, out, _ = run(capsys, "train", corpus_file, "-o", model, *TINY[:-6], "--steps", "12", "--resume", "--json")
    assert code == 0 and last_json(out)["step"] == 12


@pytest.mark.parametrize("args, message", [
    (["--heads", "3"], "heads must divide width"),
    (["--lr", "5"], "learning rate"),
    (["--batch", "0"], "batch"),
])
def test_nonsense_hyper_parameters_get_a_clear_message(tmp_path, corpus_file, capsys, args, message):
    code, _, err = run(capsys, "train", corpus_file, "-o", tmp_path / "m.cllm", *TINY, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_paths_get_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    code, _, err = run(capsys, "train", missing, "-o", tmp_path / "m.cllm", *TINY)
    assert code == 2 and "nope.txt" in err
    broken = tmp_path / "broken.cllm"
    broken.write_bytes(b"\x00" * 5)
    for command in (["info", broken], ["generate", broken], ["eval", broken]):
        code, _, err = run(capsys, *command)
        assert code == 2 and "broken.cllm" in err and "Traceback" not in err


def poisoned_copy(model, tmp_path):
    """`model` with NaN values in one tensor: its header is fine."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(model), framework="numpy") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata()
    tensors["ln_f.weight"][0] = float("nan")
    bad = tmp_path / "nan.cllm"
    save_file(tensors, bad, metadata=metadata)
    return bad


def test_info_checks_the_values_unless_told_not_to(tmp_path, corpus_file, capsys):
    model = tmp_path / "m.cllm"
    assert run(capsys, "train", corpus_file, "-o", model, *TINY, "--json")[0] == 0
    code, out, _ = run(capsys, "info", model)
    assert code == 0 and "all finite (checked)" in out
    bad = poisoned_copy(model, tmp_path)
    code, out, err = run(capsys, "info", bad)
    assert code == 2 and "nan.cllm" in err and "'ln_f.weight' has 1 non-finite values" in err and not out
    code, out, _ = run(capsys, "info", bad, "--header-only", "--json")
    assert code == 0 and last_json(out)["values_checked"] is False


@pytest.mark.parametrize("cut", ["header", "tensor entry", "data"])
def test_info_refuses_a_broken_header(tmp_path, corpus_file, capsys, cut):
    import json as json_module
    import struct

    model = tmp_path / "m.cllm"
    assert run(capsys, "train", corpus_file, "-o", model, *TINY, "--json")[0] == 0
    data = model.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    if cut == "data":
        model.write_bytes(data[:-40])
        problem = "truncated"
    else:
        header = json_module.loads(data[8:8 + n])
        if cut == "header":
            header.pop("h.0.ln_2.bias")
            problem = "missing tensor 'h.0.ln_2.bias'"
        else:
            header["wpe.weight"]["shape"] = [3]
            problem = "tensor 'wpe.weight' has shape [3]"
        raw = json_module.dumps(header).encode()
        model.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    for flags in ([], ["--header-only"]):
        code, out, err = run(capsys, "info", model, *flags)
        assert code == 2 and problem in err and str(model) in err and not out


def test_a_failed_final_save_exits_3_and_says_where_the_run_went(tmp_path, corpus_file, capsys):
    target = tmp_path / "m.cllm"
    target.mkdir()  # the model file's name is taken by a folder
    code, out, err = run(capsys, "train", corpus_file, "-o", target, *TINY, "--force", "--json")
    assert code == 3
    result = last_json(out)
    rescued = result["saved_to"]
    assert rescued and rescued != str(target) and "is a directory" in result["failed_saves"][0]
    assert load_model(rescued).info.run.step == 8
