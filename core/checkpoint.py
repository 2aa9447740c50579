"""A run's saves: when one is due, the one end-of-run save (`Trainer` and
`DistributedTrainer` both end with it), where a run goes when its model file cannot be
written, and the digest that names a saved file.

The trainer writes the file (`save(path)`: the whole run's state, atomically); this
module decides when and where, and reports each save as an event.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import platformdirs

from cllm.core.config import TrainConfig
from cllm.core.errors import CllmError
from cllm.core.events import CheckpointEvent, Event, SaveFailedEvent, SaveReason


class SavesRuns(Protocol):
    """What this module needs of a trainer."""

    out_path: Path | None

    @property
    def step(self) -> int: ...

    def save(self, path: Path | None = None) -> Path: ...


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (a fine-tune's parent, an import's weight files)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_due(config: TrainConfig, step: int, seconds_since_save: float) -> SaveReason | None:
    """Whether the run saves after `step`: every `checkpoint_every` steps, and when
    `checkpoint_minutes` passed since the last save; never after the last step, which
    the end-of-run save covers."""
    if step >= config.steps:
        return None
    if config.checkpoint_every and step % config.checkpoint_every == 0:
        return SaveReason.INTERVAL
    if config.checkpoint_minutes and seconds_since_save >= 60 * config.checkpoint_minutes:
        return SaveReason.TIME
    return None


def save_checkpoint(run: SavesRuns, emit: Callable[[Event], None], reason: SaveReason) -> None:
    """A save during the run; a failure is reported and training goes on."""
    try:
        emit(CheckpointEvent(run.step, run.save(), reason))
    except CllmError as exc:
        emit(SaveFailedEvent(run.step, run.out_path or Path(), str(exc), final=False))


def fallback_paths(path: Path) -> list[Path]:
    """Where a run's state goes when its model file cannot be written, in order: beside it
    under a new name (enough when the target is a folder), then the user's data folder and
    the temporary folder (another disk, perhaps, when this one is full or read-only)."""
    name = f"{path.stem}.unsaved-{datetime.now().strftime('%Y%m%d-%H%M%S')}{path.suffix or '.cllm'}"
    return [path.with_name(name), Path(platformdirs.user_data_dir("cllm", appauthor=False)) / "unsaved" / name,
            Path(tempfile.gettempdir()) / "cllm-unsaved" / name]


@dataclass(frozen=True)
class EndSave:
    """What the end-of-run save did."""

    saved_to: Path | None  # where the run's state is: the model file, a fallback, or nowhere
    words: str  # "saved to ...", "... is unchanged", what failed ("" without a model file)
    failed: bool = False  # the model file could not be written


def save_at_end(run: SavesRuns, emit: Callable[[Event], None], first_step: int) -> EndSave:
    """The end-of-run save: nothing without a model file; an existing file is left as it
    is when the run trained no step; else the model file, or the first of
    `fallback_paths` that takes the run when it cannot be written."""
    out = run.out_path
    if out is None:
        return EndSave(None, "")
    if run.step == first_step and out.exists():
        return EndSave(out, f"{out} is unchanged")
    try:
        path = run.save()
    except CllmError as exc:
        emit(SaveFailedEvent(run.step, out, str(exc), final=True))
        failures = [str(exc)]
        for candidate in fallback_paths(out):
            try:
                path = run.save(candidate)
            except CllmError as again:
                failures.append(str(again))
                continue
            emit(CheckpointEvent(run.step, path, SaveReason.FINAL))
            return EndSave(path, f"{exc}; the run was saved to {path} instead", failed=True)
        return EndSave(None, "could not save the run anywhere: " + "; ".join(failures), failed=True)
    emit(CheckpointEvent(run.step, path, SaveReason.FINAL))
    return EndSave(path, f"saved to {path}")
