"""The app's messages, as small dataclasses.

Workers post them from their threads (post_message is thread-safe); screens post
requests up to the app, which owns the training run and the loaded model. Progress
messages define `can_replace`: when the UI is busy, a newer one replaces an older one
still in the queue, so a slow screen shows the latest numbers instead of working through
a backlog. Messages that must not be lost (evaluations, saves, the end of a run) do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

from cllm.tui.engine import CheckpointEvent, EvalEvent, SaveFailedEvent, StepEvent
from cllm.tui.model_handle import ModelHandle
from cllm.tui.training_run import RunPlan, TrainingRun

if TYPE_CHECKING:
    from cllm.core.hf_import import HfFolderInfo
    from cllm.core.model_file import ModelInfo


class Activity(StrEnum):
    """What the app is busy with (the model bar shows it; the value starts its words)."""

    COMPILING = "compiling kernels"
    LOADING = "loading"
    IMPORTING = "importing"
    PREPARING = "preparing run"
    TRAINING = "training"
    PAUSED = "paused"
    STOPPING = "stopping"


# -- requests from the screens to the app ---------------------------------------------
@dataclass
class RunRequested(Message):
    """Start a run: the plan, with the start dialogs' decisions in it."""

    plan: RunPlan


@dataclass
class PauseRequested(Message):
    """Pause the running training, or resume it if it is paused."""


@dataclass
class StopRequested(Message):
    """Stop the running training; what it learned is saved."""


@dataclass
class LoadRequested(Message):
    """Load this model file."""

    path: Path


@dataclass
class ImportRequested(Message):
    """Import the Hugging Face folder `folder` as the model file `out`, then load it."""

    folder: Path
    out: Path


# -- from the workers -------------------------------------------------------------------
@dataclass
class KernelsCompiled(Message):
    seconds: float


@dataclass
class ModelLoaded(Message):
    handle: ModelHandle
    remember: bool  # make it the model the next start opens
    then_generate: str | None = None  # a prompt to generate from at once (the quick start)


@dataclass
class ReadProgress(Message):
    """A model being read (loaded or imported): `done` of `total` bytes."""

    what: Activity  # LOADING or IMPORTING
    name: str
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ReadProgress)


@dataclass
class Imported(Message):
    """An import ended: `error` is None when `out` was written."""

    folder: Path
    out: Path
    error: str | None


@dataclass
class ModelLoadFailed(Message):
    path: Path
    message: str


@dataclass
class TrainStarted(Message):
    """The trainer is built (corpus read, model created): `run.trainer` is set."""

    run: TrainingRun


@dataclass
class TrainStep(Message):
    event: StepEvent

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainStep)


@dataclass
class TrainEval(Message):
    event: EvalEvent


@dataclass
class TrainSaved(Message):
    event: CheckpointEvent


@dataclass
class TrainSaveFailed(Message):
    event: SaveFailedEvent


@dataclass
class TrainFinished(Message):
    """The training worker ended: `run.done` holds the DoneEvent, or `run.error` why not."""

    run: TrainingRun


@dataclass
class RunSavedAs(Message):
    """The user's Save as, after a failed final save: `error` is None when it worked."""

    path: Path
    error: str | None


@dataclass
class GenerationProgress(Message):
    """The text generated so far (whole, so that replacing an older one loses nothing)."""

    text: str
    tokens: int
    tokens_per_s: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GenerationProgress)


@dataclass
class GenerationFinished(Message):
    text: str
    tokens: int
    tokens_per_s: float
    reason: str  # "done", "stopped" or "error"


@dataclass
class DetailsRead(Message):
    """A model file's header, checked: `info`, or `problem` saying why it is unusable."""

    path: Path
    info: ModelInfo | None
    problem: str | None


@dataclass
class FolderRead(Message):
    """A Hugging Face folder, inspected: what an import would make of it."""

    path: Path
    info: HfFolderInfo | None  # None: not a Hugging Face GPT-2 folder
    problem: str | None  # why it could not be read at all


@dataclass
class ValuesChecked(Message):
    """Every value of a model file read: `problem` is None when all are finite."""

    path: Path
    problem: str | None
