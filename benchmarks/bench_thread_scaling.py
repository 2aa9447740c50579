"""How much faster a training step runs on n threads than on one, and how much faster the
machine itself runs shared-nothing work on n threads: both measured in one process,
alternating round by round, so that a load change, a frequency change or another
process hits every side alike.

For each config (bench_train.py's), one `Trainer` per thread count (the same model shape
and batch; n shards on n threads, BLAS on one thread inside each) runs --steps
`train_step`s per round, the thread counts in turn, the order flipping each round. In the
same rounds the machine's own ceiling: --matmuls float32 1024^3 numpy products (BLAS on one
thread) on one thread, and the same on each of n threads at once; its speed-up = n x one
thread's time / the n threads' time. Reported: tokens/s (median (min-max) over the
rounds), each round's speed-up n threads / 1 thread (median (min-max)), beside the
machine's. Between two child processes (bench_train.py) the same ratio moves by several
percent on a 2-core VM; here every round is a pair taken seconds apart.

    python benchmarks/bench_thread_scaling.py
    python benchmarks/bench_thread_scaling.py --configs nanogpt-cpu --rounds 15 --write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    add_report_args,
    check_tree,
    command_line,
    concurrent_seconds,
    config_label,
    fmt_range,
    machine_lines,
    parse_int_list,
    report,
    stats,
    table,
)


def steps_seconds(trainer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return time.perf_counter() - start


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="nanogpt-cpu", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--threads-list", default="1,all", help="comma list, the first the reference ('all' = every "
                                                           "core; default 1,all)")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--steps", type=int, default=10, help="steps of each trainer per round")
    p.add_argument("--matmuls", type=int, default=20, help="1024^3 products per thread per round (the ceiling)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    add_report_args(p, "Thread scaling of the training step")
    a = p.parse_args()

    import numpy as np
    from threadpoolctl import threadpool_limits

    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    threads = parse_int_list(a.threads_list)
    compile_kernels()
    corpus = load_corpus(a.corpus)
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((1024, 1024), dtype=np.float32), rng.standard_normal((1024, 1024), dtype=np.float32))
            for _ in range(max(threads))]

    def products(i: int) -> None:
        x, y = mats[i]
        for _ in range(a.matmuls):
            x @ y

    load_before = os.getloadavg()
    rows, ratio_rows = [], []
    for name in a.configs.split(","):
        cfg = CONFIGS[name]
        shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
        trainers = {n: Trainer.new(corpus, shape, TrainConfig(threads=n, batch=cfg["batch"], eval_interval=0,
                                                              steps=10**6)) for n in threads}
        step_s: dict[int, list[float]] = {n: [] for n in threads}
        matmul_s: dict[int, list[float]] = {n: [] for n in threads}
        with single_threaded_blas(), threadpool_limits(limits=1, user_api="blas"):
            for n in threads:  # warm-up: compiled code, caches, the pool's threads
                steps_seconds(trainers[n], 2)
                concurrent_seconds([lambda i=i: products(i) for i in range(n)])
            for r in range(a.rounds):
                for n in (threads if r % 2 == 0 else threads[::-1]):
                    step_s[n].append(steps_seconds(trainers[n], a.steps) / a.steps)
                    matmul_s[n].append(concurrent_seconds([lambda i=i: products(i) for i in range(n)]))
                print(f"round {r + 1}/{a.rounds} {name}: " + ", ".join(
                    f"{n}t {1e3 * step_s[n][-1]:.2f} ms/step" for n in threads) + ", matmuls " + ", ".join(
                    f"{n}t {matmul_s[n][-1]:.3f} s" for n in threads), flush=True)
        tokens = cfg["batch"] * cfg["ctx"]
        for n in threads:
            rows.append([config_label(cfg), str(n), fmt_range(stats([tokens / s for s in step_s[n]]))])
        ref = threads[0]
        for n in threads[1:]:
            step_ratio = [a_ / b_ for a_, b_ in zip(step_s[ref], step_s[n], strict=True)]
            machine_ratio = [n / ref * a_ / b_ for a_, b_ in zip(matmul_s[ref], matmul_s[n], strict=True)]
            ratio_rows.append([config_label(cfg), f"{n}t/{ref}t", fmt_range(stats(step_ratio)),
                               fmt_range(stats(machine_ratio)),
                               f"{sum(s >= 1.85 for s in step_ratio)} of {len(step_ratio)}"])
        del trainers
    load = " ".join(f"{x:.2f}" for x in load_before)
    out = [f"Thread scaling of the training step: one process per run, the trainers on each thread count "
           f"alternating {a.rounds} rounds of {a.steps} steps (the order flipping each round), and in the same "
           f"rounds {a.matmuls} float32 1024^3 numpy products per thread (BLAS on one thread) on 1 thread and on n "
           "threads at once (the machine's own speed-up for shared-nothing work: n x one thread's time / the n "
           "threads' time). Median (min-max) over the rounds; a speed-up is each round's pair.", ""]
    out += machine_lines() + [f"- command: `{command_line()}`", f"- load average before: {load}"]
    out += ["", table(["config", "threads", "tok/s"], rows), ""]
    out += [table(["config", "speed-up", "training step", "machine (1024^3 matmuls)", "rounds >= 1.85"],
                  ratio_rows)]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
