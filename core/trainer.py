"""The trainer: batches from a token stream, the parallel step, AdamW, evaluation,
checkpoints, and the events a front end shows.

A run is driven from one thread (`Trainer.run`, blocking). Other threads may call
`pause`, `unpause` and `stop`, and read `phase`, `shard_progress` and `phase_totals`
(rows each shard has finished of its share in the current step or evaluation) to draw
one progress bar per core.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cllm.core.checkpoint import checkpoint_due, file_sha256, save_at_end, save_checkpoint
from cllm.core.config import ModelConfig, TrainConfig, lr_at
from cllm.core.corpus import Corpus
from cllm.core.dataset import Dataset, TokenView, check_fits
from cllm.core.dataset_cache import data_change
from cllm.core.errors import ConfigError, CorpusError, TokenizerError
from cllm.core.events import DoneEvent, EndReason, EvalEvent, Event, SaveReason, StepEvent
from cllm.core.kernels import Dropout
from cllm.core.model import GPT
from cllm.core.model_file import load_model, read_info, save_model
from cllm.core.optimizer import adamw_update, reduce_shards
from cllm.core.passes import LOSS, TRAIN
from cllm.core.run_state import CorpusRef, ParentRef, RunState
from cllm.core.threads import single_threaded_blas
from cllm.core.tokenizer import coverage_problem, train_tokenizer
from cllm.core.workspace import Workspace

ADAM_EPS = 1e-8


def split_tokens(tokens: np.ndarray, ctx: int, corpus_name: str) -> tuple[np.ndarray, np.ndarray]:
    """First 90% for training, the last 10% held out for validation."""
    n_val = len(tokens) // 10
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]
    need = 10 * (ctx + 1) + 2
    if len(train) < ctx + 2 or len(val) < ctx + 1:
        raise CorpusError(
            f"{corpus_name}: {len(tokens)} tokens is too short for a context of {ctx}; "
            f"it needs at least {need} tokens (10% are held out for validation)"
        )
    return train, val


def corpus_tokens(corpus: Corpus | Dataset, model: GPT) -> tuple[np.ndarray | TokenView, np.ndarray | TokenView]:
    """The training and validation tokens: a text encoded now (and split by
    `split_tokens`), or a prepared dataset's splits, read through memory maps."""
    ctx = model.config.ctx
    if not isinstance(corpus, Dataset):
        return split_tokens(model.tokenizer.encode(corpus.text), ctx, corpus.name)
    check_fits(corpus, model.tokenizer, model.config.vocab_size)
    if len(corpus.train) < ctx + 2 or len(corpus.val) < ctx + 1:
        raise CorpusError(f"{corpus.path}: {len(corpus.train):,} training and {len(corpus.val):,} validation tokens "
                          f"are too few for a context of {ctx}; each split needs at least {ctx + 2}")
    return corpus.train, corpus.val


def eval_indices(n_tokens: int, ctx: int, limit: int = 0) -> np.ndarray:
    """Which of the consecutive non-overlapping chunks of ctx+1 tokens (the remainder
    dropped) an evaluation reads: all, or `limit` of them evenly spread over the split
    (a fixed sample: the same chunks at every evaluation)."""
    n = n_tokens // (ctx + 1)
    if limit and n > limit:
        return np.linspace(0, n - 1, limit).round().astype(np.int64)
    return np.arange(n, dtype=np.int64)


def eval_chunks(val: np.ndarray | TokenView, ctx: int, limit: int = 0,
                indices: np.ndarray | None = None) -> np.ndarray:
    """The chunks `eval_indices` picks (or those of `indices`), one per row."""
    picked = eval_indices(len(val), ctx, limit) if indices is None else indices
    if len(picked) and bool(np.all(np.diff(picked) == 1)):  # a run of chunks (all, or a block): one read
        n, a = len(picked), int(picked[0]) * (ctx + 1)
        return np.ascontiguousarray(np.asarray(val[a:a + n * (ctx + 1)]).reshape(n, ctx + 1), dtype=np.int32)
    rows = [val[int(i) * (ctx + 1):(int(i) + 1) * (ctx + 1)] for i in picked]
    return np.stack(rows).astype(np.int32) if rows else np.zeros((0, ctx + 1), np.int32)


EVAL_BLOCK = 4096  # chunks evaluated at a time: memory stays bounded for a split of any size


def evaluate(model: GPT, tokens: np.ndarray | TokenView, threads: int = 0, limit: int = 0,
             on_progress: Callable[[int, int], None] | None = None) -> tuple[float, int]:
    """Validation loss by the project's protocol over `tokens` (already the held-out
    part): mean cross-entropy over every position of every ctx+1 chunk (or of `limit`
    chunks spread over it). Returns the loss and the number of predicted tokens.
    `on_progress(chunks done, chunks)` is called from a helper thread while the kernels
    run, then once at the end."""
    ctx = model.config.ctx
    picked = eval_indices(len(tokens), ctx, limit)
    if len(picked) == 0:
        raise CorpusError(f"evaluation needs at least {ctx + 1} held-out tokens, got {len(tokens)}")
    n = min(threads or TrainConfig().n_threads, len(picked))
    block = min(EVAL_BLOCK, len(picked))
    ws = Workspace.create(model.config, n, -(-block // n))
    finished = threading.Event()
    done = [0]

    def watch(report: Callable[[int, int], None]) -> None:
        while not finished.wait(0.2):
            report(done[0] + int(ws.progress.sum()), len(picked))

    watcher = threading.Thread(target=watch, args=(on_progress,), name="cllm-eval-progress",
                               daemon=True) if on_progress else None
    if watcher is not None:
        watcher.start()
    total = 0.0
    try:
        with single_threaded_blas():
            for start in range(0, len(picked), block):
                chunks = eval_chunks(tokens, ctx, indices=picked[start:start + block])
                total += float(ws.run(model.params, chunks, LOSS).sum())
                done[0] += len(chunks)
    finally:
        finished.set()
        if watcher is not None:
            watcher.join()
    if on_progress is not None:
        on_progress(len(picked), len(picked))
    return total / len(picked), int(len(picked) * ctx)


def with_saved_dropout(config: TrainConfig, model_path: Path) -> TrainConfig:
    """`config` with the dropout rates of the model at `model_path` (`RunState.dropout_rates`):
    what a resume or a fine-tune keeps unless told otherwise."""
    return config.with_dropout_rates(read_info(model_path).run.dropout_rates)


class Trainer:
    """One training run of one model on one corpus."""

    def __init__(self, model: GPT, corpus: Corpus | Dataset, config: TrainConfig, *, out_path: Path | None = None,
                 state: RunState | None = None, optimizer: tuple[np.ndarray, np.ndarray] | None = None):
        config.validate()
        # Training changes the float32 values, so the int8 forms of a model read from an int8
        # file would go stale (and be what a save writes): the run trains and saves float32;
        # `cllm quantize` makes an int8 file of the result again.
        model.quantized = None
        self.model = model
        self.corpus = corpus
        self.config = config
        self.out_path = Path(out_path) if out_path is not None else None
        self.state = state or RunState()
        if self.state.step >= config.steps:
            raise ConfigError(
                f"the model has already trained {self.state.step} steps; ask for more than that to continue"
            )
        self.train_tokens, self.val_tokens = corpus_tokens(corpus, model)
        # Every training sequence of an in-memory split as a row of one strided view (no copy):
        # a batch is then one gather instead of a slice per row (0.12 -> 0.08 ms of a step).
        self._sequences = (sliding_window_view(self.train_tokens, model.config.ctx + 1)
                           if isinstance(self.train_tokens, np.ndarray) else None)
        self.chunks = eval_chunks(self.val_tokens, model.config.ctx, config.eval_chunks)
        self.rng = np.random.default_rng(config.seed)
        if self.state.rng_state is not None:
            self.rng.bit_generator.state = self.state.rng_state

        size = model.layout.size
        if optimizer is not None:
            self.m, self.v = (np.ascontiguousarray(a, dtype=np.float32) for a in optimizer)
        else:
            self.m, self.v = np.zeros(size, np.float32), np.zeros(size, np.float32)
        self.rows = self._share(config.batch)  # the rows of every batch this process computes
        self.eval_rows = self._share(len(self.chunks))
        n_rows = self.rows.stop - self.rows.start
        self.n_threads = min(self._thread_count(), n_rows)
        self.workspace = Workspace.create(model.config, self.n_threads, -(-n_rows // self.n_threads))
        self.shard_sizes = np.diff(self.workspace.bounds(n_rows)) * config.grad_accum  # rows per step
        self.eval_sizes = np.diff(self.workspace.bounds(self.eval_rows.stop - self.eval_rows.start))
        self.phase = "train"  # or "eval" or "save": what the run is doing (shard_progress counts train and eval rows)
        self.segments = model.layout.decay_segments()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self.stop_reason = ""
        self._last_save = time.monotonic()

    # -- construction -------------------------------------------------------------
    @classmethod
    def new(cls, corpus: Corpus | Dataset, model_config: dict, train_config: TrainConfig, *, tokenizer: str = "char",
            vocab_size: int | None = None, out_path: Path | None = None) -> Trainer:
        """A fresh model: trains the tokenizer on the corpus (a dataset brings its own),
        then initialises the model."""
        if isinstance(corpus, Dataset):
            if corpus.tokenizer is None:
                raise ConfigError(f"{corpus.path}: llm.c's token shards carry no tokenizer; fine-tune a model that "
                                  "has the one they were made with (--init MODEL, an imported GPT-2 for GPT-2 tokens)")
            tok = corpus.tokenizer
        else:
            tok = train_tokenizer(tokenizer, corpus.text, vocab_size)
        config = ModelConfig(vocab_size=tok.vocab_size, **model_config).validate()
        model = GPT.create(config, tok, seed=train_config.seed)
        return cls(model, corpus, train_config, out_path=out_path)

    @classmethod
    def resume(cls, model_path: Path, corpus: Corpus | Dataset, train_config: TrainConfig | None = None, *,
               out_path: Path | None = None, new_data: bool = False) -> Trainer:
        """Continues a saved run. `train_config.steps` is the total to reach; without a
        config, the saved one is used. A dataset other than the run's is refused (saying
        what changed) unless `new_data`."""
        loaded = load_model(model_path)
        state = replace(loaded.info.run)
        if isinstance(corpus, Dataset) and not new_data:
            problem = data_change(state.corpus, corpus)
            if problem:
                raise ConfigError(f"{model_path} cannot continue on {corpus.path}: {problem}; pass --new-data to "
                                  "continue on it anyway")
        saved = state.train_config
        config = train_config or (TrainConfig.from_dict(saved) if saved else TrainConfig())
        try:
            return cls(loaded.model, corpus, config, out_path=out_path or Path(model_path), state=state,
                       optimizer=loaded.optimizer)
        except TokenizerError as exc:
            raise TokenizerError(f"{model_path} cannot continue on {corpus.name}: {exc}") from None

    @classmethod
    def fine_tune(cls, parent_path: Path, corpus: Corpus | Dataset, train_config: TrainConfig, *,
                  out_path: Path | None = None) -> Trainer:
        """A new run that starts from a saved model's weights and tokenizer, with a fresh
        optimiser, schedule and step count (unlike `resume`, which continues the same
        run). The run records its parent: file name, SHA-256 and steps. The corpus must
        be one the parent's tokenizer can encode."""
        parent_path = Path(parent_path).expanduser()
        if out_path is not None and Path(out_path).expanduser().resolve() == parent_path.resolve():
            raise ConfigError(f"{parent_path}: a fine-tune is saved to a new file, not over the model it starts from")
        loaded = load_model(parent_path)
        problem = None if isinstance(corpus, Dataset) else coverage_problem(loaded.model.tokenizer, corpus.text)
        if problem:
            raise TokenizerError(f"{parent_path} cannot be fine-tuned on {corpus.name}: {problem}")
        parent = ParentRef(parent_path.name, file_sha256(parent_path), loaded.info.run.step)
        return cls(loaded.model, corpus, train_config, out_path=out_path, state=RunState(parent=parent))

    # -- control from other threads -----------------------------------------------
    def pause(self) -> None:
        self._unpaused.clear()

    def unpause(self) -> None:
        self._unpaused.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def stop(self, why: str = "") -> None:
        """Ends the run within one step; what was learned is kept (and saved). `why` (a
        signal's name, say) goes into the final message."""
        self.stop_reason = self.stop_reason or why
        self.workspace.stop[0] = 1
        self._unpaused.set()

    @property
    def stopping(self) -> bool:
        return bool(self.workspace.stop[0])

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def shard_progress(self) -> np.ndarray:
        """Rows each shard has finished in the current step or evaluation (live)."""
        return self.workspace.progress

    @property
    def phase_totals(self) -> np.ndarray:
        """Rows each shard does in the current phase: a step's or an evaluation's."""
        return self.eval_sizes if self.phase == "eval" else self.shard_sizes

    # -- what a process of a run over several (core/distributed.py) does otherwise --
    def _share(self, rows: int) -> slice:
        """The rows of a batch (or of the evaluation chunks) this process computes: all."""
        return slice(0, rows)

    def _thread_count(self) -> int:
        return self.config.n_threads

    def _agree_to_stop(self, losses: np.ndarray) -> bool:
        """After a step's or an evaluation's kernels, which filled this process's rows of
        `losses`: whether a stop request means dropping their work."""
        return self.stopping

    def _sum_gradients(self) -> float:
        """Every shard's gradient summed into workspace.grads[0]; returns the squared norm."""
        return reduce_shards(self.workspace.grads, self.n_threads)

    # -- the work -----------------------------------------------------------------
    def next_batch(self) -> np.ndarray:
        T = self.model.config.ctx
        starts = self.rng.integers(0, len(self.train_tokens) - T - 1, self.config.batch)
        self.state.data_position += 1
        if self._sequences is not None:
            return self._sequences[starts].astype(np.int32, copy=False)
        return np.stack([self.train_tokens[s:s + T + 1] for s in starts]).astype(np.int32)

    def train_step(self) -> tuple[float, float] | None:
        """One optimiser step over batch x grad_accum sequences. Returns (loss, grad norm)
        or None if a stop request arrived before the step finished (nothing applied)."""
        cfg, model = self.config, self.model
        T = model.config.ctx
        rows = cfg.batch * cfg.grad_accum
        losses = np.zeros((cfg.grad_accum, cfg.batch), np.float64)
        mine = self.rows
        rng_before = self.rng.bit_generator.state
        position_before = self.state.data_position
        for micro in range(cfg.grad_accum):
            # The masks are keyed by the row's place in the whole step, so ranks, threads and resumes agree.
            dropout = Dropout(*cfg.dropout_rates, cfg.seed, self.state.step, micro * cfg.batch + mine.start)
            self.workspace.run(model.params, self.next_batch()[mine], TRAIN, losses=losses[micro, mine],
                               scale=1.0 / (rows * T), accumulate=micro > 0, dropout=dropout)
        if self._agree_to_stop(losses):
            self.rng.bit_generator.state = rng_before
            self.state.data_position = position_before
            return None
        total = 0.0
        for micro_losses in losses:
            total += micro_losses.sum()
        loss = float(total / rows)
        norm = math.sqrt(self._sum_gradients())
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return loss, norm
        clip = cfg.grad_clip / (norm + 1e-6) if cfg.grad_clip > 0 and norm > cfg.grad_clip else 1.0
        step = self.state.step
        adamw_update(model.params, self.workspace.grads[0], self.m, self.v, self.segments, lr_at(step, cfg), cfg.beta1,
                     cfg.beta2, ADAM_EPS, cfg.weight_decay, step + 1, clip, self.n_threads)
        self.state.step += 1
        self.state.tokens_seen += rows * T
        self.state.loss_history.append([self.state.step, round(loss, 6)])
        return loss, norm

    def evaluate(self) -> float | None:
        """The held-out loss, recorded in the run's state; None if a stop request cut the
        evaluation short (nothing is recorded then)."""
        self.phase = "eval"
        losses = np.zeros(len(self.chunks), np.float64)
        mine = self.eval_rows
        try:
            self.workspace.run(self.model.params, self.chunks[mine], LOSS, losses=losses[mine])
        finally:
            self.workspace.progress[:] = self.shard_sizes  # back to the finished step's counts
            self.phase = "train"
        if self._agree_to_stop(losses):
            return None
        val = float(losses.mean())
        self.state.val_history.append([self.state.step, round(val, 6)])
        if self.state.best_val_loss is None or val < self.state.best_val_loss:
            self.state.best_val_loss = val
        return val

    def save_path(self, path: Path | None = None) -> Path:
        """Where `save(path)` writes: `path`, else the run's model file."""
        target = path or self.out_path
        if target is None:
            raise ValueError("nowhere to save: no path given and the run has no model file")
        return Path(target)

    def save(self, path: Path | None = None) -> Path:
        """Writes the run's state (model, optimiser, random generator, data position) to
        `path` (default: the run's model file). Raises ModelFileError if it cannot."""
        target = self.save_path(path)
        self.state.rng_state = dict(self.rng.bit_generator.state)
        training = self.state.to_training_dict(CorpusRef(self.corpus.name, self.corpus.sha256), self.config.to_dict())
        phase, self.phase = self.phase, "save"
        try:
            save_model(target, self.model, optimizer=(self.m, self.v), training=training, created=self.state.created)
        finally:
            self.phase = phase
        self._last_save = time.monotonic()
        return target

    def _checkpoint_due(self, step: int) -> SaveReason | None:
        return checkpoint_due(self.config, step, time.monotonic() - self._last_save)

    def run(self, on_event: Callable[[Event], None] | None = None) -> DoneEvent:
        """Trains until `config.steps`, a stop request, or a non-finite loss."""
        emit = on_event or (lambda event: None)
        cfg = self.config
        tokens_per_step = cfg.batch * cfg.grad_accum * self.model.config.ctx
        started = time.perf_counter()
        self._last_save = time.monotonic()
        step_time = None
        first_step = self.state.step
        with single_threaded_blas():
            while self.state.step < cfg.steps and not self.stopping:
                self._unpaused.wait()
                if self.stopping:
                    break
                t0 = time.perf_counter()
                result = self.train_step()
                if result is None:
                    break
                loss, norm = result
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    message = (f"loss became {loss} (gradient norm {norm}) at step {self.state.step + 1}; "
                               "training stopped and the last checkpoint was kept")
                    done = DoneEvent(self.state.step, EndReason.NAN, message,
                                     self.out_path if self.out_path and self.out_path.exists() else None)
                    emit(done)
                    return done
                dt = time.perf_counter() - t0
                step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
                step = self.state.step
                emit(StepEvent(step, cfg.steps, float(loss), lr_at(step - 1, cfg), norm, tokens_per_step / dt,
                               time.perf_counter() - started, step_time * (cfg.steps - step), self.state.tokens_seen))
                if cfg.eval_interval and (step % cfg.eval_interval == 0 or step == cfg.steps) and len(self.chunks):
                    val, best = self.evaluate(), self.state.best_val_loss
                    if val is not None and best is not None:  # evaluate() sets best whenever it returns a loss
                        emit(EvalEvent(step, val, best))
                due = self._checkpoint_due(step) if self.out_path else None
                if due:
                    save_checkpoint(self, emit, due)
                    self._last_save = time.monotonic()  # after a failure too: the next checkpoint tries again
        stopped = self.state.step < cfg.steps
        reason = EndReason.STOPPED if stopped else EndReason.FINISHED
        how = f" ({self.stop_reason})" if stopped and self.stop_reason else ""
        end = save_at_end(self, emit, first_step)
        done = DoneEvent(self.state.step, reason,
                         f"{reason}{how} at step {self.state.step}" + (f", {end.words}" if end.words else ""),
                         end.saved_to, end.failed)
        emit(done)
        return done
