"""A run's rules live in core (TrainConfig): the learning-rate warm-up as a share of the
run's length, checkpoints with the evaluations. `cllm train` and the TUI's form take
them from there, so the same settings train the same run from either."""

from __future__ import annotations

import pytest

from cllm.core.cli import _train_config, build_parser
from cllm.core.config import TrainConfig, default_warmup, lr_at
from cllm.core.errors import ConfigError
from tests.tui_helpers import FakeEngine, make_app, start_new_run, wait_for


@pytest.mark.parametrize("steps, warmup", [(1, 0), (9, 0), (50, 5), (1000, 100), (100_000, 100)])
def test_the_default_warmup_is_a_tenth_of_the_run_at_most_100_steps(steps, warmup):
    assert default_warmup(steps) == warmup
    config = TrainConfig(steps=steps).validate()
    assert config.warmup_steps == warmup
    assert lr_at(warmup, config) == pytest.approx(config.lr)  # the run reaches the learning rate it was given


def test_a_warmup_as_long_as_the_run_is_refused():
    with pytest.raises(ConfigError, match=r"warm-up \(50 steps\) must be shorter than the run \(50 steps\)"):
        TrainConfig(steps=50, warmup=50).validate()
    assert TrainConfig(steps=50, warmup=0).validate().warmup_steps == 0


def test_checkpoints_come_with_the_evaluations_unless_asked_otherwise():
    assert TrainConfig(eval_interval=25).checkpoint_every == 25
    assert TrainConfig(eval_interval=25, checkpoint_interval=0).checkpoint_every == 0
    assert TrainConfig(eval_interval=25, checkpoint_interval=7).checkpoint_every == 7


async def test_cllm_train_and_the_tui_train_the_same_schedule(tui_home):
    """`cllm train --steps 50` and the form with steps 50 (and the form's other fields
    given the same values) make equal configs: the same warm-up, learning rates and
    checkpoints."""
    engine = FakeEngine(step_time=0.001)
    app = make_app(tui_home, engine=engine)
    async with app.run_test() as pilot:
        await start_new_run(pilot, tui_home, "fifty", steps=50, eval=10, batch=4, lr="0.002", threads=1)
        await wait_for(pilot, lambda: engine.trainers, what="the run")
        tui = engine.trainers[0].config
    args = build_parser().parse_args(["train", "corpus.txt", "--steps", "50", "--eval-interval", "10",
                                      "--batch", "4", "--lr", "0.002", "--threads", "1"])
    cli = _train_config(args)
    assert tui == cli
    assert cli.warmup_steps == 5 and cli.checkpoint_every == 10
    assert [lr_at(s, tui) for s in range(50)] == [lr_at(s, cli) for s in range(50)]
    assert lr_at(5, cli) == pytest.approx(0.002)  # the run reaches the learning rate it was given
