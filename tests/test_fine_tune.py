"""Fine-tuning (`Trainer.fine_tune`, `cllm train --init`): a new run from a saved model's
weights and tokenizer, with a fresh optimiser, schedule and step count, recording its
parent."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cllm.core.cli import main
from cllm.core.config import TrainConfig
from cllm.core.errors import ConfigError, TokenizerError
from cllm.core.model_file import load_model
from cllm.core.trainer import StepEvent, Trainer
from cllm.core.workspace import loss_and_grad
from tests.helpers import make_corpus, make_text

SHAPE = dict(n_layer=1, n_head=2, n_embd=16, ctx=16)
PARENT_RUN = TrainConfig(steps=40, batch=4, lr=1e-2, warmup=2, eval_interval=0, threads=2, seed=1)
TUNE = TrainConfig(steps=5, batch=4, lr=1e-3, warmup=1, eval_interval=5, eval_chunks=4, threads=2, seed=11)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A char model trained 40 steps, saved with its optimiser state."""
    path = tmp_path_factory.mktemp("parent") / "parent.cllm"
    Trainer.new(make_corpus(make_text(seed=0)), SHAPE, PARENT_RUN, out_path=path).run()
    return path


@pytest.fixture(scope="module")
def new_text():
    return make_corpus(make_text(2000, seed=9), name="new.txt")


def test_first_step_starts_from_the_parent_weights(parent, new_text, tmp_path):
    parent_model = load_model(parent).model
    batch = Trainer.fine_tune(parent, new_text, TUNE).next_batch()  # the first batch of this seed
    expected, _ = loss_and_grad(parent_model.params, parent_model.config, batch, n_shards=2)
    fresh = Trainer.new(new_text, SHAPE, TUNE).model
    from_scratch, _ = loss_and_grad(fresh.params, fresh.config, batch, n_shards=2)

    trainer = Trainer.fine_tune(parent, new_text, TUNE, out_path=tmp_path / "new.cllm")
    assert trainer.step == 0 and not trainer.m.any() and not trainer.v.any()
    losses = []
    trainer.run(lambda e: losses.append(e.loss) if isinstance(e, StepEvent) else None)
    assert losses[0] == pytest.approx(expected, rel=1e-6)
    assert abs(from_scratch - expected) > 0.3  # so the check above can tell the two apart


def test_new_file_counts_from_zero_and_records_its_parent(parent, new_text, tmp_path):
    before = parent.read_bytes()
    out = tmp_path / "new.cllm"
    Trainer.fine_tune(parent, new_text, TUNE, out_path=out).run()
    info = load_model(out).info
    assert info.run.step == TUNE.steps and info.run.tokens_seen == TUNE.steps * TUNE.batch * SHAPE["ctx"]
    assert [s for s, _ in info.run.loss_history] == list(range(1, TUNE.steps + 1))
    assert info.run.corpus is not None
    assert info.run.corpus.name == "new.txt"
    assert info.training["parent"] == {"name": "parent.cllm", "sha256": hashlib.sha256(before).hexdigest(),
                                       "step": PARENT_RUN.steps}
    assert parent.read_bytes() == before
    # Resuming the fine-tuned run keeps the record.
    Trainer.resume(out, new_text, TrainConfig(**{**TUNE.to_dict(), "steps": 7})).run()
    assert load_model(out).training["parent"]["name"] == "parent.cllm"


def test_corpus_must_be_covered_by_the_tokenizer(parent):
    foreign = make_corpus(make_text(2000, seed=2).replace("cat", "c€t"), name="euro.txt")
    with pytest.raises(TokenizerError) as info:
        Trainer.fine_tune(parent, foreign, TUNE)
    message = str(info.value)
    assert str(parent) in message and "euro.txt" in message and "'€'" in message


def test_never_over_the_parent(parent, new_text):
    with pytest.raises(ConfigError, match="new file"):
        Trainer.fine_tune(parent, new_text, TUNE, out_path=parent)


def test_cli_init(parent, new_text, tmp_path, capsys):
    corpus = tmp_path / "new.txt"
    corpus.write_text(new_text.text)
    out = tmp_path / "tuned.cllm"
    args = ["train", str(corpus), "--init", str(parent), "-o", str(out), "--steps", "3", "--batch", "4",
            "--eval-interval", "3", "--eval-chunks", "2", "--threads", "2"]
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["parent"]["name"] == "parent.cllm"
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 3 and info["parent"]["step"] == PARENT_RUN.steps
    assert main(["info", str(out)]) == 0
    assert f"parent     parent.cllm ({PARENT_RUN.steps} steps, sha256 " in capsys.readouterr().out


@pytest.mark.parametrize("extra, words", [
    (["--layers", "2"], ["--layers", "cannot be used with --init"]),
    (["--ctx", "32", "--tokenizer", "bpe"], ["--ctx, --tokenizer", "cannot be used with --init"]),
    (["--resume"], ["--init", "--resume", "choose one"]),
])
def test_cli_init_refuses_shape_flags(parent, tmp_path, capsys, extra, words):
    corpus = tmp_path / "new.txt"
    corpus.write_text(make_text(500))
    code = main(["train", str(corpus), "--init", str(parent), "-o", str(tmp_path / "t.cllm"), "--steps", "2",
                 *extra])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 2 and all(w in err for w in words) and "Traceback" not in err
    assert not (tmp_path / "t.cllm").exists()


def test_cli_init_names_the_uncovered_text(parent, tmp_path, capsys):
    corpus = tmp_path / "euro.txt"
    corpus.write_text(make_text(2000, seed=2).replace("cat", "c€t"))
    code = main(["train", str(corpus), "--init", str(parent), "-o", str(tmp_path / "t.cllm"), "--steps", "2"])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 2 and "cannot be fine-tuned on euro.txt" in err and "'€'" in err


def test_fine_tune_of_an_imported_model(tmp_path, new_text):
    """An imported model (no optimiser state, step 0) fine-tunes like any other."""
    from cllm.core.hf_export import export_gpt
    from cllm.core.hf_import import import_hf_folder
    from tests.hf_helpers import tiny_model

    export_gpt(tiny_model("bpe", new_text.text, shape=SHAPE), tmp_path / "hf")
    import_hf_folder(tmp_path / "hf", tmp_path / "imported.cllm")
    Trainer.fine_tune(tmp_path / "imported.cllm", new_text, TUNE, out_path=tmp_path / "tuned.cllm").run()
    tuned = load_model(tmp_path / "tuned.cllm")
    assert tuned.info.run.parent is not None
    assert tuned.info.run.parent.name == "imported.cllm" and tuned.info.run.parent.step == 0
    assert np.isfinite(tuned.model.params).all()
