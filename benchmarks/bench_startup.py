"""Start-up time and memory of `cllm train`.

Start-up: `cllm train` on the nanoGPT CPU config with --steps 1, once with numba's cache
empty (cold: NUMBA_CACHE_DIR set to a fresh temporary folder, so every kernel compiles)
and then again with that folder filled (warm). Reported per run:
- first step (cllm's clock): `time_to_first_step` of `cllm train --json`, counted from the
  start of the train command (after Python's imports, the corpus and the tokenizer);
- launch -> first step: process wall time - `elapsed` (the command's own clock from the
  same start to its end) + `time_to_first_step`, so the interpreter's start, imports,
  corpus and tokenizer count (and, a few tens of ms, the exit and the launcher's start);
- process wall: launch to exit (one step, saving the model, exit).

Memory: peak resident set (ru_maxrss) of `cllm train` on a config for --mem-steps steps
with numba's cache warm (a run that compiles peaks ~100 MiB higher, in LLVM), minus the
same of a tiny model (1 layer, width 8, ctx 8: the same interpreter, imports, kernels and
corpus), against what the buffers need: the bytes of the numpy arrays a fresh Trainer
holds (counted in a child), and the formula 4 bytes x (parameters + 2 Adam moments +
(gradients + activations) x shards) from the trainer's workspace layouts
(core/layout.py), shards = min(threads, batch).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --cold-repeats 2 --warm-repeats 5 --write
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    MB,
    add_report_args,
    all_threads,
    check_ok,
    check_tree,
    child_env,
    cllm_cmd,
    command_line,
    config_label,
    fmt,
    fmt_range,
    machine_lines,
    report,
    run_child,
    run_cmd,
    serve_child,
    stats,
    table,
)

SCRIPT = Path(__file__).resolve()



def train_cmd(corpus: str, out: Path, cfg: dict, steps: int, threads: int) -> list[str]:
    return cllm_cmd("train", corpus, "-o", out, "--layers", cfg["n_layer"], "--heads", cfg["n_head"],
                    "--embd", cfg["n_embd"], "--ctx", cfg["ctx"], "--batch", cfg["batch"], "--steps", steps,
                    "--eval-interval", 0, "--threads", threads, "--force", "--json")


def startup_run(corpus: str, cfg: dict, threads: int, cache: Path, work: Path, unset: bool) -> dict:
    env = child_env(unset, {"NUMBA_CACHE_DIR": str(cache)})
    r = run_cmd(train_cmd(corpus, work / "startup.cllm", cfg, 1, threads), env)
    j = check_ok(r, "cllm train")
    return {"first": j["time_to_first_step"], "launch_first": r["wall_s"] - j["elapsed"] + j["time_to_first_step"],
            "wall": r["wall_s"], "rss": r["maxrss"]}


def trainer_buffers(spec: dict) -> dict:
    """Child: bytes of every numpy array a fresh Trainer holds (one level into its
    attributes, so the workspace's buffers count), and the formula's figure from the
    workspace's layouts (core/layout.py)."""
    import numpy as np

    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.trainer import Trainer

    cfg = spec["config"]
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    t = Trainer.new(load_corpus(spec["corpus"]), shape,
                    TrainConfig(threads=spec["threads"], batch=cfg["batch"], eval_interval=0, steps=10))
    arrays = {"model.params": t.model.params.nbytes}
    for name, value in vars(t).items():
        if isinstance(value, np.ndarray):
            arrays[name] = value.nbytes
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            for sub, v in vars(value).items():
                if isinstance(v, np.ndarray) and v.nbytes > 4096 and not sub.endswith("offsets"):
                    arrays[f"{name}.{sub}"] = v.nbytes
    # The formula: parameters, Adam's two moments, and per shard gradients and activations.
    ws = t.workspace
    P, A, shards = ws.params_layout.size, ws.acts_layout.size, ws.shards
    formula = {"parameters": 4 * P, f"gradients x{shards}": 4 * P * shards, "Adam m and v": 8 * P,
               f"activations x{shards}": 4 * A * shards}
    return {"arrays": arrays, "formula": formula}


TOKEN_ARRAYS = ("train_tokens", "val_tokens", "chunks")  # the corpus: the tiny baseline holds them too


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cold-repeats", type=int, default=1, help="cold starts (each compiles everything: ~1 min)")
    p.add_argument("--warm-repeats", type=int, default=3)
    p.add_argument("--mem-steps", type=int, default=100, help="steps of the memory runs")
    p.add_argument("--mem-configs", default="nanogpt-cpu", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--threads", default="all", help="threads of every run ('all' = every core)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--skip-startup", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    add_report_args(p, "Start-up and memory")
    a = p.parse_args()
    if serve_child(a, trainer_buffers):
        return 0
    threads = all_threads() if a.threads in ("all", "0") else int(a.threads)
    cfg = CONFIGS["nanogpt-cpu"]
    out = ["Start-up and memory of `cllm train` (one child process per run).", ""]
    out += machine_lines(child_env(a.unset_openblas_env)) + [f"- command: `{command_line()}`",
                                                             f"- threads: {threads}", ""]
    work = Path(tempfile.mkdtemp(prefix="cllm-bench-"))
    try:
        if not a.skip_startup:
            runs: dict[str, list] = {"cold": [], "warm": []}
            for i in range(a.cold_repeats):
                cache = work / f"numba-cache-{i}"
                cache.mkdir()
                runs["cold"].append(startup_run(a.corpus, cfg, threads, cache, work, a.unset_openblas_env))
                print(f"cold {i + 1}: {runs['cold'][-1]}", flush=True)
                if i == 0:
                    for j in range(a.warm_repeats):
                        runs["warm"].append(startup_run(a.corpus, cfg, threads, cache, work, a.unset_openblas_env))
                        print(f"warm {j + 1}: {runs['warm'][-1]}", flush=True)
            rows = [[kind, str(len(r)), fmt_range(stats([x["first"] for x in r])),
                     fmt_range(stats([x["launch_first"] for x in r])), fmt_range(stats([x["wall"] for x in r]))]
                    for kind, r in runs.items() if r]
            out += [f"Time to the first step of `cllm train` ({config_label(cfg)}, --steps 1), seconds, "
                    "median (min-max). cold: NUMBA_CACHE_DIR empty; warm: the same folder again.", "",
                    table(["numba cache", "runs", "first step (cllm's clock)", "launch -> first step",
                           "process wall"], rows), ""]
        if not a.skip_memory:
            tiny = dict(n_layer=1, n_head=1, n_embd=8, ctx=8, batch=cfg["batch"])
            env = child_env(a.unset_openblas_env)

            def measure(name: str, c: dict) -> int:
                r = run_cmd(train_cmd(a.corpus, work / f"{name}.cllm", c, a.mem_steps, threads), env)
                check_ok(r, f"cllm train ({name})")
                return r["maxrss"]

            measure("warm-up", tiny)  # fills numba's cache: a compiling run peaks higher
            base = measure("tiny", tiny)
            rows = [[f"tiny baseline ({config_label(tiny)})", fmt(base / MB), "-", "-", "-"]]
            details = []
            for name in a.mem_configs.split(","):
                c = CONFIGS[name]
                peak = measure(name, c)
                need = run_child(SCRIPT, {"config": c, "threads": threads, "corpus": a.corpus}, env)
                held = sum(v for k, v in need["arrays"].items() if k not in TOKEN_ARRAYS)
                formula = need["formula"]
                rows.append([config_label(c), fmt(peak / MB), fmt((peak - base) / MB),
                             fmt(held / MB), fmt(sum(formula.values()) / MB) if "error" not in formula else "-"])
                details.append(f"- {config_label(c)}: arrays the Trainer holds, MiB: " + ", ".join(
                    f"{k} {v / MB:.2f}" for k, v in need["arrays"].items()) + "; formula: " + ", ".join(
                    f"{k} {v / MB:.2f}" if isinstance(v, int) else f"{k}: {v}" for k, v in formula.items()))
            out += [f"Peak resident memory (ru_maxrss) of `cllm train` for {a.mem_steps} steps on {threads} "
                    "thread(s), MiB, numba's cache warm. Over baseline = peak minus the tiny model's peak; "
                    "arrays = the numpy arrays a Trainer holds, less the corpus' tokens (the baseline holds "
                    "them too); formula = 4 bytes x (parameters + 2 Adam moments + (gradients + activations) "
                    "x shards).", "",
                    table(["config", "peak RSS", "over baseline", "arrays", "formula"], rows),
                    "", *details]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
