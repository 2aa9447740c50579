"""The training worker's side of a run (the app's `_train` worker calls `train`): build
the trainer the plan asks for, run it, and turn its events into the app's messages; and
the notice the end of a run gets (`end_notice`).

Everything here runs on the worker's thread except `end_notice`; it talks to the UI only
through `post` (the app's thread-safe `post_message`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.message import Message

from cllm.tui.engine import (
    Cancelled,
    CheckpointEvent,
    CorpusRef,
    Engine,
    EvalEvent,
    Event,
    SaveFailedEvent,
    StepEvent,
    TrainerLike,
    describe_end,
)
from cllm.tui.messages import (
    CorpusProgress,
    PauseRequested,
    StopRequested,
    TrainEval,
    TrainFinished,
    TrainSaved,
    TrainSaveFailed,
    TrainStarted,
    TrainStep,
)
from cllm.tui.training_run import TrainingRun
from cllm.tui.worker_errors import describe_error

STEP_MESSAGES_HZ = 20  # the worker posts at most this many step messages a second


PROGRESS_HZ = 10  # and at most this many corpus progress messages


def corpus_poster(post: Callable[[Message], object]) -> Callable[[str, int, int], None]:
    """A corpus preparation's progress as CorpusProgress messages, at most PROGRESS_HZ a second."""
    started = time.monotonic()
    last = [0.0]

    def progress(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1 / PROGRESS_HZ or done >= total:
            last[0] = now
            post(CorpusProgress(phase, done, total, done / 1e6 / max(now - started, 1e-9)))
    return progress


def build_trainer(engine: Engine, run: TrainingRun, post: Callable[[Message], object]) -> TrainerLike:
    """The trainer of `run.plan`: a new model, a continued run or a fine-tune. A corpus
    given by path is prepared first (its progress posted; Stop cancels it)."""
    plan = run.plan
    corpus = engine.training_data(plan.corpus, tokenizer=plan.tokenizer, vocab_size=plan.vocab_size,
                                  model_path=plan.start_from if plan.action in ("continue", "fine-tune") else None,
                                  on_progress=corpus_poster(post), on_note=run.log.append, cancel=run.cancel)
    assert plan.out_path is not None
    config = plan.train_config
    if plan.start_from is not None and plan.action in ("continue", "fine-tune") and not plan.dropout_given:
        config = engine.with_saved_dropout(config, plan.start_from)
        rates = config.dropout_rates
        said = (f"{rates.resid:g}" if len(set(rates)) == 1 else
                ", ".join(f"{site} {rate:g}" for site, rate in zip(rates._fields, rates, strict=True)))
        run.log.append(f"dropout {said}: {plan.start_from.name}'s own (type a rate in the form's Dropout field "
                       "to change it)")
    if plan.action == "continue":
        assert plan.start_from is not None
        trainer = engine.resume_trainer(plan.start_from, corpus, config, out_path=plan.out_path)
    elif plan.action == "fine-tune":
        assert plan.start_from is not None
        trainer = engine.fine_tune_trainer(plan.start_from, corpus, config, out_path=plan.out_path)
    else:
        trainer = engine.new_trainer(corpus, plan.model_config, plan.train_config, tokenizer=plan.tokenizer,
                                     vocab_size=plan.vocab_size, out_path=plan.out_path)
    run.corpus = CorpusRef(corpus.name, corpus.sha256)
    return trainer


class EventPoster:
    """The trainer's `on_event`: records every event in the run and posts the app's
    message for it, steps at most STEP_MESSAGES_HZ a second (the histories get them all)."""

    def __init__(self, run: TrainingRun, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> None:
        self.run = run
        self.post = post
        self.cancelled = cancelled
        self.last_step_post = 0.0

    def __call__(self, event: Event) -> None:
        run = self.run
        run.record(event)
        if self.cancelled() and not run.stop_requested:
            run.stop()
        if isinstance(event, StepEvent):
            now = time.monotonic()
            if now - self.last_step_post >= 1 / STEP_MESSAGES_HZ or event.step >= event.steps:
                self.last_step_post = now
                self.post(TrainStep(event))
        elif isinstance(event, EvalEvent):
            self.post(TrainEval(event))
        elif isinstance(event, CheckpointEvent):
            self.post(TrainSaved(event))
        elif isinstance(event, SaveFailedEvent):
            self.post(TrainSaveFailed(event))


def journal_requests(run: TrainingRun, post: Callable[[Message], object]) -> Callable[[str], None]:
    """What another process asks of the run through the journal (`cllm runs stop`, the
    Runs screen of another app) becomes the app's own request, so its screens follow."""

    def on_request(what: str) -> None:
        if what == "stop":
            post(StopRequested())
        elif what in ("pause", "resume") and (what == "pause") != run.paused:
            post(PauseRequested())

    return on_request


def train(engine: Engine, run: TrainingRun, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> None:
    """The whole run, blocking: TrainStarted once the trainer is built, the events' messages,
    and TrainFinished at the end whatever happens (`run.done`, or `run.error` and the error
    raised again for the worker to report)."""
    try:
        if run.stop_requested:
            return
        run.open_session(journal_requests(run, post))  # the file's lock (a busy file ends the run here), the record
        try:
            run.trainer = trainer = build_trainer(engine, run, post)
        except Cancelled:
            return  # Stop pressed while the corpus was prepared: nothing was kept
        run.describe_to_journal()
        post(TrainStarted(run))
        if run.stop_requested:
            trainer.stop()
        trainer.run(EventPoster(run, post, cancelled))
    except BaseException as exc:
        run.error = describe_error(exc, "training")
        raise
    finally:
        run.close_session()
        run.finished.set()
        post(TrainFinished(run))


@dataclass(frozen=True)
class Notice:
    text: str
    title: str = ""
    severity: str = "information"  # Textual's: "information", "warning" or "error"
    timeout: float | None = None


def end_notice(run: TrainingRun) -> Notice | None:
    """What the app tells when a run's worker ended (None: nothing to tell)."""
    done = run.done
    if done is None:
        if run.stop_requested and run.error is None:
            return Notice("Run cancelled before it started: no file was touched.")
        return None  # the worker's error is reported as every worker's is
    outcome = describe_end(done, run.best_val)
    if outcome.ok:
        return Notice(outcome.notice, outcome.title)
    return Notice(outcome.notice, outcome.title, "error", 20 if done.save_failed else 15)
