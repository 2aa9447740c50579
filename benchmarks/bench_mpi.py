"""Training over MPI ranks against one process with as many threads in all (issue 13).

R ranks x 1 thread (`mpiexec -n R`, each rank a `DistributedTrainer`) against one process
x R threads (`Trainer`), on nanoGPT's CPU config by default. Every run is fresh: one child
process, or R children under one mpiexec. The two setups alternate within each repeat,
the order flipping each repeat, so a load change on the machine hits both alike; the
ratio is taken per repeat (the two runs next to each other) and reported as its median
and range. A child compiles (or loads) the kernels, builds its trainer (char tokenizer,
eval off, checkpoints off), runs --warmup-steps, then times --steps calls of
`train_step()`; the ranks start the clock together (after a one-number all-reduce) and
rank 0 reports. tokens/s = steps x batch x ctx / seconds, counting the whole global batch.

A rank child also times the gradient all-reduce alone afterwards (the flat gradient
buffer, --allreduce-reps times) for the communication figures. Both setups train the same
batches, so their final losses must agree (with 2 ranks, exactly): the table says so.

    python benchmarks/bench_mpi.py                       # nanoGPT CPU, 2 ranks, 5 repeats
    python benchmarks/bench_mpi.py --write               # and replace its RESULTS.md section
    python benchmarks/bench_mpi.py --configs nanogpt-cpu,6l-192w --ranks 4 --threads-per-rank 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    MARK,
    ROOT,
    add_report_args,
    child_env,
    command_line,
    config_label,
    fmt_range,
    machine_lines,
    report,
    run_child,
    serve_child,
    stats,
    table,
)

SCRIPT = Path(__file__).resolve()
SECTION = "Training over MPI ranks"
BANDWIDTHS_GBIT = (1, 10, 100)


# -- children ---------------------------------------------------------------------------

def _trainer(spec: dict, trainer_class):
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus

    cfg = spec["config"]
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    return trainer_class.new(load_corpus(spec["corpus"]), shape,
                             TrainConfig(threads=spec["threads"], batch=cfg["batch"], eval_interval=0, steps=10**6,
                                         checkpoint_minutes=0))


def _timed_steps(trainer, spec: dict, sync=lambda: None) -> tuple[float, float]:
    from cllm.core.threads import single_threaded_blas

    with single_threaded_blas():
        for _ in range(spec["warmup"]):
            trainer.train_step()
        sync()
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            loss, _ = trainer.train_step()
        return time.perf_counter() - start, loss


def child_alone(spec: dict) -> dict:
    from cllm.core.precompile import compile_kernels
    from cllm.core.trainer import Trainer

    compile_kernels()
    trainer = _trainer(spec, Trainer)
    seconds, loss = _timed_steps(trainer, spec)
    return {"seconds": seconds, "loss": loss, "params": trainer.model.n_params, "threads": trainer.n_threads}


def child_ranks(spec: dict) -> dict | None:
    """One rank; rank 0 returns the result, the others None."""
    import numpy as np

    from cllm.core import distributed, mpi_world
    from cllm.core.precompile import compile_kernels

    world = mpi_world.join()
    assert world is not None, "run this under mpiexec, one process per rank"
    compile_kernels()
    trainer = _trainer(spec, distributed.DistributedTrainer)
    threads = distributed.start(world, trainer)
    seconds, loss = _timed_steps(trainer, spec, lambda: world.sum(np.zeros(1), "the start of the clock"))
    grad = trainer.workspace.grads[0]
    world.sum(np.zeros(1), "the start of the all-reduce timing")
    start = time.perf_counter()
    for _ in range(spec["allreduce_reps"]):
        world.sum(grad, "the all-reduce timing")
    allreduce = (time.perf_counter() - start) / spec["allreduce_reps"]
    world.completed = True  # every rank got here: MPI_Finalize at exit
    if not world.is_root:
        return None
    return {"seconds": seconds, "loss": loss, "params": trainer.model.n_params, "threads_per_rank": threads,
            "allreduce_s": allreduce, "gradient_bytes": int(grad.nbytes), "library": _mpi_library()}


def _mpi_library() -> str:
    from mpi4py import MPI

    return " ".join(MPI.Get_library_version().splitlines()[0].split())


CHILDREN = {"alone": child_alone, "ranks": child_ranks}


# -- parent -----------------------------------------------------------------------------

def find_mpiexec() -> str | None:
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def run_ranks(mpiexec: str, ranks: int, spec: dict, env: dict, timeout: float = 1800) -> dict:
    """`mpiexec -n ranks python this --child SPEC`; returns rank 0's RESULT (plus wall_s)."""
    cmd = [mpiexec, "-n", str(ranks), sys.executable, str(SCRIPT), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"mpiexec run {spec} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[0][len(MARK):])
    result["wall_s"] = time.perf_counter() - t0
    return result


def communication_rows(params: int, batch: int, ranks: int, step_s: float) -> list[list]:
    """Bytes one step all-reduces and what that takes on a network, against `step_s`."""
    gradient = 4 * params
    small = 8 * (batch + ranks)  # every row's loss and each rank's stop request, float64
    rows = []
    for label, factor in ((f"{ranks} ranks", 2 * (ranks - 1) / ranks), ("many ranks", 2.0)):
        moved = factor * (gradient + small)  # sent (and received) by each rank in a ring all-reduce
        times = [moved * 8 / (g * 1e9) for g in BANDWIDTHS_GBIT]
        rows.append([label, f"{moved / 1e6:.2f} MB"] + [f"{t * 1e3:.2f} ms ({_percent(t / step_s)})" for t in times])
    return rows


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.1 else f"{100 * share:.1f}%"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help="runs of each setup per config")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per run before timing")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    p.add_argument("--threads-per-rank", type=int, default=1,
                   help="threads of each rank; the one process gets ranks x this many (default 1)")
    p.add_argument("--configs", default="nanogpt-cpu", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--allreduce-reps", type=int, default=20, help="timed gradient all-reduces per rank run")
    p.add_argument("--shared", action="store_true",
                   help="say in the output that the machine was shared with other work while measuring")
    add_report_args(p, SECTION)
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    mpiexec = find_mpiexec()
    if mpiexec is None:
        sys.exit("no mpiexec found: pip install -e '.[mpi]' (mpi4py and MPICH)")
    if not Path(a.corpus).exists():
        sys.exit(f"corpus {a.corpus} not found (pass --corpus PATH)")
    env = child_env(a.unset_openblas_env)
    ranks, per_rank = a.ranks, a.threads_per_rank
    total = ranks * per_rank
    one_label, ranks_label = f"1 process x {total} threads", f"{ranks} ranks x {per_rank} thread" + "s" * (per_rank > 1)
    out = [f"Command: `{command_line()}`", ""] + machine_lines(env)
    out.append("- machine: " + ("shared with other work while measuring (other engineers compiling and testing): "
                                "the ratios, taken from runs next to each other, are the figures to read"
                                if a.shared else "quiet (nothing else running, as far as the operator knows)"))
    out.append("")
    for name in a.configs.split(","):
        cfg = CONFIGS[name]
        tokens = a.steps * cfg["batch"] * cfg["ctx"]
        base = {"config": cfg, "corpus": a.corpus, "warmup": a.warmup_steps, "steps": a.steps,
                "allreduce_reps": a.allreduce_reps}
        alone, spread, ratios = [], [], []
        for repeat in range(a.repeats):
            pair = {}
            order = ("alone", "ranks") if repeat % 2 == 0 else ("ranks", "alone")
            for kind in order:
                if kind == "alone":
                    pair[kind] = run_child(SCRIPT, {**base, "kind": "alone", "threads": total}, env)
                else:
                    pair[kind] = run_ranks(mpiexec, ranks, {**base, "kind": "ranks", "threads": per_rank}, env)
            alone.append(pair["alone"])
            spread.append(pair["ranks"])
            ratios.append(pair["alone"]["seconds"] / pair["ranks"]["seconds"])
            print(f"{name} repeat {repeat + 1}: {one_label} {tokens / pair['alone']['seconds']:,.0f} tok/s, "
                  f"{ranks_label} {tokens / pair['ranks']['seconds']:,.0f} tok/s, ratio {ratios[-1]:.3f}", flush=True)
        tps_alone = stats([tokens / r["seconds"] for r in alone])
        tps_ranks = stats([tokens / r["seconds"] for r in spread])
        step_alone = stats([1e3 * r["seconds"] / a.steps for r in alone])
        step_ranks = stats([1e3 * r["seconds"] / a.steps for r in spread])
        reduce_ms = stats([1e3 * r["allreduce_s"] for r in spread])
        same = all(r["loss"] == alone[0]["loss"] for r in alone + spread)
        params = spread[0]["params"]
        out += [f"### {name}: {config_label(cfg)}, {params:,} parameters", "",
                f"MPI: {spread[0]['library']}; threads per rank {spread[0]['threads_per_rank']}; "
                f"{a.repeats} repeats of {a.steps} steps after {a.warmup_steps} warm-up steps; "
                f"final losses {'identical in every run' if same else 'DIFFER between runs'} "
                f"({alone[0]['loss']:.6f}).", "",
                table(["setup", "tokens/s median (min-max)", "ms per step median (min-max)"],
                      [[one_label, fmt_range(tps_alone), fmt_range(step_alone)],
                       [ranks_label, fmt_range(tps_ranks), fmt_range(step_ranks)]]), "",
                f"**{ranks_label} / {one_label}: {fmt_range(stats(ratios))}** (tokens/s ratio per repeat, "
                f"median and range). The gradient all-reduce alone ({spread[0]['gradient_bytes'] / 1e6:.2f} MB, "
                f"on this machine's shared memory): {fmt_range(reduce_ms)} ms, "
                f"{100 * reduce_ms['median'] / step_ranks['median']:.1f}% of a step.", "",
                "On paper, for ranks on separate machines (docs/MPI.md): bytes each rank sends (and receives) per "
                "step in a ring all-reduce, and the time at each link speed (share of this run's "
                f"{step_ranks['median']:.0f} ms step):", "",
                table(["ranks", "per rank per step"] + [f"{g} Gbit/s" for g in BANDWIDTHS_GBIT],
                      communication_rows(params, cfg["batch"], ranks, step_ranks["median"] / 1e3)), ""]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
