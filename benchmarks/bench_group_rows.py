"""Rows per group (core.layout.GROUP_ROWS) against training speed and activation memory.

A shard runs its sequences in groups of about GROUP_ROWS positions: every linear layer's
product is one BLAS call over a group's rows, so larger groups hand OpenBLAS taller
matrices (fewer calls, the weights packed fewer times per step), at the cost of
activation memory that grows with the group (every layer's activations are kept for
the backward pass). This benchmark weighs the two: for each config and thread count it
builds one `Trainer` per candidate value (the same model and batches), and times their
`train_step`s in one process, alternating round by round (the order flips each round),
so a load change on the machine hits every candidate alike. Reported: tokens/s (median
over the rounds of each round's steps), % of numpy's float32 2048^3 matmul peak on the
same threads (measured in the same run; FLOPs per token: benchmarks/flops.py's useful count),
each candidate against the first, and the activation buffers' size.

    python benchmarks/bench_group_rows.py
    python benchmarks/bench_group_rows.py --values 256,512,1024 --rounds 9 --write
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
    config_label,
    fmt,
    machine_lines,
    parse_int_list,
    report,
    stats,
    table,
)


def trainer_for(corpus, cfg: dict, threads: int, group_rows: int):
    """A fresh trainer whose workspace was sized with GROUP_ROWS = group_rows."""
    from cllm.core import layout
    from cllm.core.config import TrainConfig
    from cllm.core.trainer import Trainer

    kept = layout.GROUP_ROWS
    layout.GROUP_ROWS = group_rows
    try:
        shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
        return Trainer.new(corpus, shape, TrainConfig(threads=threads, batch=cfg["batch"], eval_interval=0,
                                                      steps=10**6))
    finally:
        layout.GROUP_ROWS = kept


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", default="256,512,1024", help="GROUP_ROWS candidates, the first the reference")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--threads-list", default="1,all", help="comma list; 'all' = every core (default 1,all)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps of each candidate per round")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    add_report_args(p, "Rows per group: speed and activation memory")
    a = p.parse_args()

    from benchmarks.bench_train import child_peak
    from benchmarks.flops import training_flops
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas

    values = parse_int_list(a.values)
    threads = parse_int_list(a.threads_list)
    compile_kernels()
    corpus = load_corpus(a.corpus)
    peak = {n: child_peak({"size": 2048, "threads": n, "reps": 5})["numpy"] for n in threads}
    rows = []
    for name in a.configs.split(","):
        cfg = CONFIGS[name]
        tokens_per_step = cfg["batch"] * cfg["ctx"]
        for n in threads:
            trainers = {v: trainer_for(corpus, cfg, n, v) for v in values}
            tok_s: dict[int, list[float]] = {v: [] for v in values}
            with single_threaded_blas():
                for t in trainers.values():  # warm-up
                    for _ in range(2):
                        t.train_step()
                for r in range(a.rounds):
                    for v in (values if r % 2 == 0 else values[::-1]):
                        start = time.perf_counter()
                        for _ in range(a.steps):
                            trainers[v].train_step()
                        tok_s[v].append(a.steps * tokens_per_step / (time.perf_counter() - start))
            base = stats(tok_s[values[0]])["median"]
            for v in values:
                ws = trainers[v].workspace
                med = stats(tok_s[v])["median"]
                gflops = med * training_flops(cfg, trainers[v].model.config.vocab_size).useful / 1e9
                rows.append([config_label(cfg), str(n), str(v), f"{ws.group} x {cfg['ctx']}",
                             f"{fmt(med)} ({fmt(min(tok_s[v]))}-{fmt(max(tok_s[v]))})",
                             f"{100 * gflops / peak[n]:.0f}%",
                             f"{med / base:.3f}", f"{ws.acts.nbytes / ws.shards / 2**20:.1f}",
                             f"{ws.acts.nbytes / 2**20:.1f}"])
                print(" | ".join(rows[-1]), flush=True)
            del trainers
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = [f"Rows per group: one process per config, the candidates' trainers alternating {a.rounds} rounds of "
           f"{a.steps} steps (median (min-max) tokens/s over the rounds); % peak: benchmarks/flops.py's useful "
           "FLOPs per token.", ""]
    out += machine_lines() + [f"- command: `{command_line()}`", f"- load average at the end: {load}"]
    out += ["", table(["matmul peak, GFLOP/s", *[f"{n} thread(s)" for n in threads]],
                      [["numpy 2048^3", *[fmt(peak[n]) for n in threads]]]), ""]
    out += [table(["config", "threads", "GROUP_ROWS", "rows per product", "tok/s", "% peak", "vs first",
                   "activations per shard, MiB", "activations, all shards, MiB"], rows)]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
