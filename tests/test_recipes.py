"""Recipes: nanoGPT's two Shakespeare settings, defined once in core and offered by
`cllm train --recipe` (flags beside it override it)."""

from __future__ import annotations

import pytest

from cllm.core.cli import main
from cllm.core.config import ModelConfig, TrainConfig
from cllm.core.errors import ConfigError
from cllm.core.model_file import read_info
from cllm.core.recipes import RECIPES, recipe


def test_the_gpu_recipe_is_nanogpts_train_shakespeare_char():
    gpu = recipe("shakespeare-char")
    assert gpu.shape() == {"n_layer": 6, "n_head": 6, "n_embd": 384, "ctx": 256}
    config = gpu.train_config()
    assert (config.batch, config.steps, config.lr, config.final_lr, config.warmup_steps, config.beta2, config.dropout,
            config.eval_interval, config.grad_accum) == (64, 5000, 1e-3, 1e-4, 100, 0.99, 0.2, 250, 1)


def test_the_cpu_recipe_is_the_defaults_and_flags_override_a_recipe():
    cpu = recipe("shakespeare-char-cpu")
    defaults = ModelConfig(vocab_size=2)
    assert cpu.shape() == {"n_layer": defaults.n_layer, "n_head": defaults.n_head, "n_embd": defaults.n_embd,
                           "ctx": defaults.ctx}
    assert cpu.train_config() == TrainConfig()
    assert recipe("shakespeare-char").train_config(batch=8).batch == 8
    with pytest.raises(ConfigError, match="no recipe called 'gpu'; there are shakespeare-char-cpu"):
        recipe("gpu")
    with pytest.raises(ConfigError, match="not training settings: n_layer"):
        recipe("shakespeare-char").train_config(n_layer=3)


def test_the_command_line_lists_the_recipes_and_runs_one_with_flags_on_top(tmp_path, small_text, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in RECIPES:
        assert name in help_text
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(small_text)
    model = tmp_path / "m.cllm"
    assert main(["train", str(corpus), "-o", str(model), "--recipe", "shakespeare-char", "--layers", "1",
                 "--embd", "12", "--ctx", "16", "--batch", "2", "--steps", "1", "--eval-interval", "0",
                 "--threads", "1"]) == 0
    info = read_info(model)
    assert (info.config.n_layer, info.config.n_head, info.config.n_embd, info.config.ctx) == (1, 6, 12, 16)
    saved = TrainConfig.from_dict(info.run.train_config or {})
    assert (saved.batch, saved.steps, saved.dropout, saved.min_lr, saved.beta2) == (2, 1, 0.2, 1e-4, 0.99)
    with pytest.raises(SystemExit):
        main(["train", str(corpus), "--recipe", "nano"])
    assert "invalid choice: 'nano'" in capsys.readouterr().err
