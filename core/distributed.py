"""Data-parallel training over MPI ranks (`mpiexec -n N cllm train ...`; docs/MPI.md).

Every rank holds the whole model and optimiser and runs the same `Trainer` loop; what
differs is which rows it computes. How the ranks stay in step:

- Batches: every rank draws every global batch from the same generator (same seed, same
  data position) and computes rows `shard_bounds(batch, ranks)[r:r+2]` of it on its own
  threads; evaluation splits the held-out chunks the same way.
- After a step's (or an evaluation's) kernels, one small all-reduce carries every row's
  loss and each rank's stop request: a stop asked on any rank (a signal, Ctrl-C) drops
  that step on every rank, and all leave the loop at the same step boundary.
- Gradients: a rank sums its own shards in order, then one all-reduce of the flat
  gradient buffer sums the ranks; the norm of that sum is computed as one process
  computes it. Every rank applies the same AdamW step to the same values, so the
  parameters stay identical; after each evaluation the ranks compare a checksum of
  parameters and moments.
- Rank 0 alone writes model files, and decides when a time-based checkpoint is due.

With two ranks of one thread each this computes exactly what one process with two
threads computes: the same rows in the same shards, and a sum of two gradients, which
does not depend on its order. With more ranks MPI's reduction order may differ from the
one-process shard order, which changes results at float rounding level.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cllm.core.checkpoint import save_at_end
from cllm.core.config import TrainConfig
from cllm.core.corpus import Corpus
from cllm.core.errors import CllmError, ConfigError
from cllm.core.events import DoneEvent, EndReason, Event, SaveReason
from cllm.core.model import GPT
from cllm.core.mpi_world import PeerLost, World, current
from cllm.core.optimizer import reduce_shards
from cllm.core.run_state import RunState
from cllm.core.trainer import Trainer
from cllm.core.workspace import shard_bounds

CHECKPOINT_REASONS = (None, *SaveReason)  # what rank 0 broadcasts, by index


class StartFailed(CllmError):
    """A rank could not start the run, or the ranks would not train the same run."""


class RanksDiverged(CllmError):
    """The ranks' parameters differ: a bug, or hardware that does not compute alike."""


def run_checksum(trainer: Trainer) -> str:
    """SHA-256 of the parameters and Adam moments (what must stay identical on every rank)."""
    digest = hashlib.sha256()
    for array in (trainer.model.params, trainer.m, trainer.v):
        digest.update(np.ascontiguousarray(array).data.cast("B"))
    return digest.hexdigest()


def run_fingerprint(trainer: Trainer) -> str:
    """SHA-256 of everything that must be the same on every rank before the first step:
    model, optimiser, tokenizer, corpus, settings and the run's state."""
    state = trainer.state
    description = {
        "model": trainer.model.config.to_dict(), "tokenizer": trainer.model.tokenizer.to_json(),
        "corpus": trainer.corpus.sha256, "tokens": len(trainer.train_tokens), "config": trainer.config.to_dict(),
        "step": state.step, "data_position": state.data_position, "rng": trainer.rng.bit_generator.state,
        "values": run_checksum(trainer),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def _stop_code(reason: str) -> float:
    """A stop request's reason as a number an all-reduce carries: a signal's number, else -1."""
    return float(signal.Signals[reason].value) if reason in signal.Signals.__members__ else -1.0


def _stop_name(code: float) -> str:
    return signal.Signals(int(code)).name if code > 0 else "a stop request"


def _one_line(errors: list[tuple[int, str]], size: int) -> str:
    messages = {message for _, message in errors}
    if len(messages) == 1 and len(errors) == size:
        return errors[0][1]
    return "; ".join(f"rank {rank}: {message}" for rank, message in errors)


def start(world: World, trainer: Trainer | None, error: str | None = None) -> list[int]:
    """The start-up handshake, once per run, on every rank: each says whether it is ready
    (its trainer) or why not (`error`). Returns every rank's thread count; raises
    StartFailed on every rank if any rank failed or would train another run."""
    world.started = True
    mine = {"error": error, "threads": trainer.n_threads if trainer else 0,
            "fingerprint": run_fingerprint(trainer) if trainer else None}
    everyone = [json.loads(data) for data in world.gather(json.dumps(mine).encode(), "the start of the run")]
    errors = [(rank, entry["error"]) for rank, entry in enumerate(everyone) if entry["error"]]
    other = next((rank for rank, entry in enumerate(everyone) if entry["fingerprint"] != everyone[0]["fingerprint"]),
                 None)
    world.completed = bool(errors) or other is not None  # every rank ends here, and knows it
    if errors:
        raise StartFailed(_one_line(errors, world.size))
    if other is not None:
        raise StartFailed(f"rank {other} would train another run than rank 0 (its model, tokenizer, corpus or "
                          "settings differ): every rank must read the same corpus, and with --resume the same "
                          "model file")
    return [entry["threads"] for entry in everyone]


def error_message(exc: CllmError) -> tuple[str | None, int]:
    """For an error that ends `cllm train` on this rank: what this rank prints (None:
    nothing, rank 0 speaks for all) and the exit code (5 when a rank was lost, else 2).
    An error before the handshake goes through it, so every rank learns of it and rank 0
    tells it once; after the handshake the others are told at exit (`mpi_world`) that
    this rank left, and why."""
    world = current()
    if world is None:
        return str(exc), 5 if isinstance(exc, PeerLost) else 2
    if not world.started:
        try:
            start(world, None, str(exc))
        except StartFailed as failed:
            exc = failed
        except PeerLost as lost:
            exc = lost
    if isinstance(exc, StartFailed):
        return (str(exc) if world.is_root else None), 2
    code = 5 if isinstance(exc, PeerLost) else 2
    world.failure = str(exc) if isinstance(exc, PeerLost) else f"rank {world.rank}: {exc}"
    return world.failure, code


class DistributedTrainer(Trainer):
    """A `Trainer` that is one rank of a run over MPI (`mpi_world.join` first)."""

    def __init__(self, model: GPT, corpus: Corpus, config: TrainConfig, *, out_path: Path | None = None,
                 state: RunState | None = None, optimizer: tuple[np.ndarray, np.ndarray] | None = None):
        world = current()
        if world is None:
            raise RuntimeError("DistributedTrainer needs mpi_world.join() first")
        if config.batch < world.size:
            raise ConfigError(f"batch {config.batch} is smaller than the {world.size} MPI ranks: every rank needs "
                              "at least one row of each batch")
        self.world = world
        self._agreed_stop = False
        super().__init__(model, corpus, config, out_path=out_path, state=state, optimizer=optimizer)

    # -- the hooks of Trainer ------------------------------------------------------------
    def _share(self, rows: int) -> slice:
        bounds = shard_bounds(rows, self.world.size)
        return slice(int(bounds[self.world.rank]), int(bounds[self.world.rank + 1]))

    def _thread_count(self) -> int:
        return self.config.threads or self.world.default_threads

    @property
    def stopping(self) -> bool:
        """Whether the ranks agreed to stop. A request on this rank (`stop`) ends its
        kernels at once, and counts from the next agreement, which every rank reaches at
        the same point of the run."""
        return self._agreed_stop

    def _agree_to_stop(self, losses: np.ndarray) -> bool:
        flat = losses.reshape(-1)
        votes = np.zeros(flat.size + self.world.size, np.float64)
        votes[:flat.size] = flat  # other ranks' rows are 0 here: the sum is every row's loss, exactly
        votes[flat.size + self.world.rank] = _stop_code(self.stop_reason) if self.workspace.stop[0] else 0.0
        what = f"step {self.state.step + 1}" if losses.ndim == 2 else f"the evaluation at step {self.state.step}"
        self.world.sum(votes, what)
        flat[:] = votes[:flat.size]
        asking = np.flatnonzero(votes[flat.size:])
        if asking.size:
            self._agreed_stop = True
            rank = int(asking[0])
            self.stop_reason = self.stop_reason or f"{_stop_name(votes[flat.size + rank])} on rank {rank}"
        return self._agreed_stop

    def _sum_gradients(self) -> float:
        grads = self.workspace.grads
        if self.n_threads > 1:
            reduce_shards(grads, self.n_threads)  # this rank's shards, in order, into grads[0]
        self.world.sum(grads[0], f"the gradients of step {self.state.step + 1}")
        return reduce_shards(grads[:1], self.n_threads)  # the norm of the sum, as one process computes it

    # -- rank 0 writes, decides the clock's checkpoints; all check they agree --------------
    def save(self, path: Path | None = None) -> Path:
        if self.world.is_root:
            return super().save(path)
        return self.save_path(path)  # the others write nothing

    def _checkpoint_due(self, step: int) -> SaveReason | None:
        if not self.config.checkpoint_minutes:
            return super()._checkpoint_due(step)  # by steps only: the same on every rank
        mine = super()._checkpoint_due(step) if self.world.is_root else None
        return CHECKPOINT_REASONS[self.world.broadcast(CHECKPOINT_REASONS.index(mine),
                                                        f"the checkpoint decision at step {step}")]

    def evaluate(self) -> float | None:
        val = super().evaluate()
        if val is not None:
            self._check_ranks_agree()
        return val

    def _check_ranks_agree(self) -> None:
        sums = [s.decode() for s in self.world.gather(run_checksum(self).encode(),
                                                      f"the checksums at step {self.state.step}")]
        differing = [rank for rank, s in enumerate(sums) if s != sums[0]]
        if differing:
            raise RanksDiverged(f"the parameters of rank {differing[0]} differ from rank 0's at step "
                                f"{self.state.step} (checksums {sums[differing[0]][:12]} and {sums[0][:12]})")

    # -- a step or a run that cannot finish ----------------------------------------------
    def train_step(self) -> tuple[float, float] | None:
        rng_before, position_before = self.rng.bit_generator.state, self.state.data_position
        try:
            return super().train_step()
        except PeerLost:  # nothing was applied: back to the last finished step
            self.rng.bit_generator.state, self.state.data_position = rng_before, position_before
            raise

    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent:
        """`Trainer.run`; when a rank is lost (reason "lost"), rank 0 saves the last
        finished step and then parts from the others, who wait for that; when the ranks'
        parameters differ ("diverged"), nothing is saved."""
        emit = on_event or (lambda event: None)
        first_step = self.state.step
        try:
            done = super().run(emit)
            self.world.completed = True
            return done
        except PeerLost as exc:
            end = save_at_end(self, emit, first_step) if self.world.is_root else None
            self.world.part(str(exc))  # rank 0 after its save: its exit ends the job
            where = end.words if end is not None and end.words else "rank 0 saves the run"
            done = DoneEvent(self.state.step, EndReason.LOST, f"{exc}; stopped at step {self.state.step}, {where}",
                             end.saved_to if end else None, end.failed if end else False)
        except RanksDiverged as exc:
            self.world.completed = True  # every rank compared the same checksums
            kept = self.out_path if self.out_path and self.out_path.exists() else None
            done = DoneEvent(self.state.step, EndReason.DIVERGED,
                             f"{exc}; training stopped and the last checkpoint was kept", kept)
        emit(done)
        return done
