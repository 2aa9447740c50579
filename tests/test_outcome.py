"""core/outcome.py: one wording and one exit code for every way a run ends, and
core/checkpoint.py's rule of when a run saves."""

from __future__ import annotations

from pathlib import Path

import pytest

from cllm.core.checkpoint import checkpoint_due
from cllm.core.config import TrainConfig
from cllm.core.events import DoneEvent, EndReason, SaveReason
from cllm.core.outcome import describe_end

SAVED = Path("models/m.cllm")


@pytest.mark.parametrize("done, code, ok, words", [
    (DoneEvent(50, EndReason.FINISHED, "finished at step 50, saved to models/m.cllm", SAVED), 0, True,
     "Training finished at step 50, saved to models/m.cllm"),
    (DoneEvent(7, EndReason.STOPPED, "stopped (SIGTERM) at step 7, saved to models/m.cllm", SAVED), 0, True,
     "Training stopped (SIGTERM) at step 7"),
    (DoneEvent(7, EndReason.NAN, "loss became nan at step 8; training stopped", SAVED), 1, False,
     "Try a lower learning rate. Last good checkpoint: models/m.cllm."),
    (DoneEvent(7, EndReason.NAN, "loss became nan at step 8; training stopped", None), 1, False,
     "Nothing was saved."),
    (DoneEvent(7, EndReason.LOST, "rank 1 left; stopped at step 7, saved to models/m.cllm", SAVED), 5, False,
     "a rank was lost"),
    (DoneEvent(7, EndReason.DIVERGED, "the parameters of rank 1 differ", SAVED), 5, False, "ranks differ"),
    (DoneEvent(9, EndReason.FINISHED, "finished at step 9, disk full; the run was saved to /tmp/x.cllm instead",
               Path("/tmp/x.cllm"), save_failed=True), 3, False, "saved to /tmp/x.cllm instead"),
    (DoneEvent(9, EndReason.STOPPED, "stopped at step 9, could not save the run anywhere", None,
               save_failed=True), 4, False, "could not save the run anywhere"),
])
def test_every_end_has_its_words_and_exit_code(done, code, ok, words):
    outcome = describe_end(done)
    assert (outcome.exit_code, outcome.ok) == (code, ok)
    assert words in outcome.notice
    assert outcome.status and outcome.title


def test_a_finished_run_tells_its_best_validation_loss():
    done = DoneEvent(50, EndReason.FINISHED, "finished at step 50, saved to models/m.cllm", SAVED)
    assert "best val loss 1.2346" in describe_end(done, 1.23456).notice
    assert describe_end(done).status == "Finished: 50 steps; saved m.cllm."


def test_checkpoints_by_steps_and_by_time_but_never_at_the_last_step():
    config = TrainConfig(steps=20, eval_interval=5, checkpoint_minutes=10)
    assert checkpoint_due(config, 5, 0) is SaveReason.INTERVAL
    assert checkpoint_due(config, 6, 0) is None
    assert checkpoint_due(config, 6, 600) is SaveReason.TIME
    assert checkpoint_due(config, 20, 600) is None  # the end-of-run save covers it
