"""How a run ended, in words: the one wording of an outcome that `cllm train` prints
(with its exit code), the TUI notifies, and the Train screen and the run log show."""

from __future__ import annotations

from dataclasses import dataclass

from cllm.core.events import DoneEvent, EndReason

EXIT_CODES = {EndReason.FINISHED: 0, EndReason.STOPPED: 0, EndReason.NAN: 1, EndReason.LOST: 5,
              EndReason.DIVERGED: 5}
EXIT_SAVED_ELSEWHERE = 3  # the model file could not be written: the run went to a fallback file
EXIT_NOT_SAVED = 4  # the run could not be saved anywhere

TITLES = {EndReason.FINISHED: "Training finished", EndReason.STOPPED: "Training stopped",
          EndReason.NAN: "Training stopped: the loss is not a number",
          EndReason.LOST: "Training stopped: a rank was lost",
          EndReason.DIVERGED: "Training stopped: the ranks differ"}

ADVICE = {EndReason.NAN: "Try a lower learning rate.",
          EndReason.DIVERGED: "The ranks compute differently (a bug, or unlike hardware): train without MPI."}


@dataclass(frozen=True)
class Outcome:
    reason: EndReason
    ok: bool  # finished or stopped, and saved where asked
    title: str  # a heading: "Training finished", "Save failed", ...
    status: str  # one short line (the Train screen's status)
    notice: str  # what happened, where the run is and what to do (a notification, cllm's last line)
    exit_code: int  # cllm train's (its --help lists them)


def describe_end(done: DoneEvent, best_val_loss: float | None = None) -> Outcome:
    """The words and the exit code of a run's end."""
    reason = done.reason
    kept = f"saved {done.saved_to.name}" if done.saved_to is not None else "nothing saved"
    if reason in (EndReason.FINISHED, EndReason.STOPPED):
        notice = f"Training {done.message}"  # "finished at step 50, saved to ..."
    else:
        notice = f"{TITLES[reason]}: {done.message}"
    if best_val_loss is not None and reason is EndReason.FINISHED:
        notice += f"; best val loss {best_val_loss:.4f}"
    notice += "." if reason not in ADVICE else f". {ADVICE[reason]}"
    if reason in (EndReason.NAN, EndReason.DIVERGED):
        notice += f" Last good checkpoint: {done.saved_to}." if done.saved_to else " Nothing was saved."
    if reason is EndReason.FINISHED:
        status = f"Finished: {done.step} steps; {kept}."
    elif reason is EndReason.STOPPED:
        status = f"Stopped at step {done.step}; {kept}."
    elif reason is EndReason.NAN:
        status = f"Stopped after step {done.step}: the loss is not a number."
    elif reason is EndReason.LOST:
        status = f"Stopped at step {done.step}: a rank was lost."
    else:
        status = f"Stopped at step {done.step}: the ranks' parameters differ."
    code = EXIT_CODES[reason]
    title = TITLES[reason]
    if done.save_failed:
        status = (f"Step {done.step}: the model file could not be written; the run is "
                  + (f"saved to {done.saved_to}." if done.saved_to else "not saved."))
        title = "Save failed"
        if code == 0:
            code = EXIT_SAVED_ELSEWHERE if done.saved_to else EXIT_NOT_SAVED
    return Outcome(reason, code == 0, title, status, notice, code)
