"""Detach: a run the app trains goes on without the app.

When the terminal goes away (SIGHUP) or the user chooses Detach, the run stops at its
next step boundary and saves its exact state (weights, optimiser, random generator, data
position), as any stop does. Once the app has exited and the save is done (and the model
file's lock released), a detached `cllm train --resume` process, in its own session,
continues it from that file with the run's settings and under the same journal record:
at most the step that was under way is done again, and the file ends as if the app had
stayed. `cllm runs`, `cllm runs attach` and a new `cllm-tui` follow it from the journal.
"""

from __future__ import annotations

from cllm.core.errors import CllmError
from cllm.core.run_commands import resume_args, spawn_detached
from cllm.core.runs import corpus_source
from cllm.tui.training_run import TrainingRun


def hand_over(run: TrainingRun | None) -> str:
    """Continues a run the app stopped for a detach in a detached process. Returns what
    to tell the user ("" when there was nothing to hand over)."""
    if run is None or not run.detach_requested or run.session is None or run.trainer is None:
        return ""
    done = run.done
    if done is None or done.reason != "stopped" or done.saved_to != run.out_path:
        return ""  # it finished, failed, or could not save to its file: nothing to continue
    corpus = corpus_source(run.plan.corpus)
    run_id = run.session.run_id
    try:
        process, log = spawn_detached(resume_args(run.out_path, corpus, run.trainer.config.to_dict()), run_id,
                                      "tui-detached")
    except (CllmError, OSError) as exc:
        return f"{run.name}: stopped at step {done.step} and saved, but could not go on in the background: {exc}"
    return (f"{run.name}: goes on in the background from step {done.step} (run {run_id}, pid {process.pid}); "
            f"follow it with `cllm runs attach {run_id}` or cllm-tui; log {log}")
