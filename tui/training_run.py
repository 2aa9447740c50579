"""A training run as the app holds it: what was asked for (`RunPlan`, the quick start's
`quick_start_plan`), and the trainer with what the screens show about it (`TrainingRun`;
tui/training_worker.py runs it).

The trainer thread appends to the run's histories and log; the UI reads them on timers
and when messages arrive. Python list appends are atomic, so append-only lists need no
lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cllm.core.runs import RunSession
from cllm.tui.engine import (
    QUICK_START,
    QUICK_START_EVAL_CHUNKS,
    CheckpointEvent,
    CorpusRef,
    DoneEvent,
    EvalEvent,
    Event,
    RunState,
    SaveFailedEvent,
    StepEvent,
    TrainConfig,
    TrainerLike,
    describe_end,
)
from cllm.tui.formatting import format_loss
from cllm.tui.validators import free_name


@dataclass
class RunPlan:
    """What the user asked for when pressing Start (the form's values, checked), and
    what the start dialogs decided."""

    corpus: str
    tokenizer: str
    vocab_size: int | None
    model_config: dict  # n_layer, n_head, n_embd, ctx
    train_config: TrainConfig
    action: str = "new"  # "new" | "overwrite" | "continue" | "fine-tune"
    out_path: Path | None = None
    start_from: Path | None = None  # the model file a continued run or a fine-tune starts from
    quick_start: bool = False
    journal_id: str | None = None  # a run the journal has, which this one continues (Take over)
    # False where the form's Dropout field was left as the form filled it: a continued run or
    # a fine-tune then keeps the model's own rate (`with_saved_dropout`, as `cllm train` does
    # without --dropout)
    dropout_given: bool = True


def quick_start_plan(models_dir: Path) -> RunPlan:
    """The quick start's run: QUICK_START's settings, into a new quickstart(-N).cllm."""
    q = QUICK_START
    train_config = TrainConfig(steps=q["steps"], batch=q["batch"], lr=q["lr"], eval_interval=q["eval_interval"],
                               threads=q["threads"], dropout=q["dropout"],
                               eval_chunks=QUICK_START_EVAL_CHUNKS).validate()
    return RunPlan(corpus=q["corpus"], tokenizer=q["tokenizer"], vocab_size=q["vocab_size"],
                   model_config={key: q[key] for key in ("n_layer", "n_head", "n_embd", "ctx")},
                   train_config=train_config, action="new",
                   out_path=models_dir / f"{free_name(models_dir, 'quickstart')}.cllm", quick_start=True)


@dataclass
class TrainingRun:
    plan: RunPlan
    name: str
    trainer: TrainerLike | None = None  # set once the corpus is read and the model built
    corpus: CorpusRef | None = None
    loss_steps: list[int] = field(default_factory=list)
    loss_values: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_values: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    last_step: StepEvent | None = None
    best_val: float | None = None
    checkpoints: int = 0
    last_checkpoint_step: int | None = None
    save_failures: list[SaveFailedEvent] = field(default_factory=list)
    done: DoneEvent | None = None  # once run() returned
    error: str | None = None  # why the run could not start or failed
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)  # the worker is done (main() waits for it)
    stop_requested: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)  # ends a corpus preparation
    session: RunSession | None = None  # the lock on the model file and the journal record
    detach_requested: bool = False  # the run goes on without the app (tui/detach.py)

    def open_session(self, on_request: Callable[[str], None]) -> None:
        """Locks the model file and records the run in the journal, on the worker thread
        before anything else: FileBusyError if another live run or import writes the file.
        `on_request` gets what another process asks of the run ("stop", "pause", "resume")."""
        plan = self.plan
        self.session = RunSession.start(self.out_path, name=self.name, origin="tui", corpus=plan.corpus,
                                        steps=plan.train_config.steps, run_id=plan.journal_id)
        self.session.on_request = on_request

    def describe_to_journal(self) -> None:
        """The run's settings, once the trainer exists."""
        trainer, session = self.trainer, self.session
        if trainer is None or session is None:
            return
        state = getattr(trainer, "state", None)
        parent = getattr(state, "parent", None)
        session.describe(model=trainer.model.config.to_dict(), training=trainer.config.to_dict(),
                         step=trainer.step,
                         parent=parent.to_dict() if parent else None,
                         best_val=getattr(state, "best_val_loss", None))

    def request_detach(self, why: str) -> None:
        """Stop at the next step boundary and save, so that a detached process continues
        the run from there (tui/detach.py) under the same journal record."""
        self.detach_requested = True
        if self.session is not None:
            self.session.handing_over = True
        self.stop(why)

    def close_session(self) -> None:
        if self.session is not None:
            if self.error is not None:
                self.session.fail(self.error)
            self.session.close()

    @property
    def out_path(self) -> Path:
        assert self.plan.out_path is not None
        return self.plan.out_path

    @property
    def paused(self) -> bool:
        return self.trainer is not None and self.trainer.paused

    @property
    def saved(self) -> bool:
        """Whether the model file holds weights of this run's model already."""
        return self.checkpoints > 0 or (self.plan.action == "continue" and self.out_path.exists())

    def continue_curves(self, state: RunState) -> None:
        """Start the curves from a saved model's history."""
        for history, steps, values in ((state.loss_history, self.loss_steps, self.loss_values),
                                       (state.val_history, self.val_steps, self.val_values)):
            for step, value in history:
                if math.isfinite(value):
                    steps.append(step)
                    values.append(value)
        self.best_val = state.best_val_loss

    def record(self, event: Event) -> None:
        """Called on the trainer's thread for every event."""
        if self.session is not None:
            self.session.record(event)
        if isinstance(event, StepEvent):
            self.last_step = event
            if math.isfinite(event.loss):
                self.loss_steps.append(event.step)
                self.loss_values.append(event.loss)
        elif isinstance(event, EvalEvent):
            if math.isfinite(event.val_loss):
                self.val_steps.append(event.step)
                self.val_values.append(event.val_loss)
            self.best_val = event.best_val_loss
            self.log.append(f"step {event.step}: val loss {format_loss(event.val_loss)} "
                            f"(best {format_loss(event.best_val_loss)})")
        elif isinstance(event, CheckpointEvent):
            if event.path == self.out_path:
                self.checkpoints += 1
                self.last_checkpoint_step = event.step
            self.log.append(f"step {event.step}: saved {event.path.name}")
        elif isinstance(event, SaveFailedEvent):
            self.save_failures.append(event)
            self.log.append(f"step {event.step}: {event.message}")
        elif isinstance(event, DoneEvent):
            self.done = event
            self.log.append(f"step {event.step}: {describe_end(event, self.best_val).notice}")

    def pause(self) -> None:
        if self.trainer is not None:
            self.trainer.pause()
            if self.session is not None:
                self.session.set_state("paused")

    def unpause(self) -> None:
        if self.trainer is not None:
            self.trainer.unpause()
            if self.session is not None:
                self.session.set_state("running")

    def stop(self, why: str = "") -> None:
        """Ends the run (within a step); before the trainer exists, keeps it from starting."""
        self.stop_requested = True
        self.cancel.set()
        if self.trainer is not None:
            self.trainer.stop(why)  # also lets a paused trainer reach its stop check
