"""Training throughput, CLLM against PyTorch, and both against the machine's matmul peak.

Every measurement is a fresh child process (thread settings and numba's caches start
clean). The runs alternate CLLM and PyTorch (the order flips each repeat), so a load
change on the machine hits both alike. A child builds the model, warms up (CLLM:
core.precompile.compile_kernels() and a few steps; torch: a few steps), times --steps steps
and reports tokens/s = steps x batch x ctx / seconds.

FLOPs per token: benchmarks/flops.py's useful count (every weight matrix, the tied head
included, and causal attention's triangle: 6 x matrices + 6 x layers x width x (ctx + 1)),
with nanoGPT's estimate_mfu count (6 x parameters but wpe + 12 x layers x ctx x width)
beside it. Peak = numpy float32 matmul 2048 x 2048 on the same number of threads
(threadpoolctl), in a child with the same environment.

    python benchmarks/bench_train.py                 # 5 runs each, threads 1 and all
    python benchmarks/bench_train.py --unset-openblas-env --write
    python benchmarks/bench_train.py --no-torch --base ../base --base-python ../base/.venv/bin/python

With --base, CLLM as another checkout holds it (run by an interpreter that has that
checkout installed, with its own numba cache) alternates with the others too: a change
measured before and after in one run. Its table rates both from each run's median step
(tokens per step / median step time), which a moment of other work on the machine moves
less than the total.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    NO_TORCH,
    add_report_args,
    check_tree,
    child_env,
    command_line,
    config_label,
    fmt,
    fmt_range,
    machine_lines,
    parse_int_list,
    report,
    run_child,
    serve_child,
    stats,
    table,
    torch_available,
)
from benchmarks.flops import training_flops

SCRIPT = Path(__file__).resolve()


# -- children ---------------------------------------------------------------------------

SOLO = "numpy, one 1-thread process per thread"  # the machine's parallel ceiling (child_solo_peak)


def child_cllm(spec: dict) -> dict:
    from cllm.core import trainer as trainer_module
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    cfg, n = spec["config"], spec["threads"]
    t0 = time.perf_counter()
    compile_s = compile_kernels()
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    trainer = Trainer.new(load_corpus(spec["corpus"]), shape,
                          TrainConfig(threads=n, batch=cfg["batch"], eval_interval=0, steps=10**6))
    with single_threaded_blas():
        for _ in range(spec["warmup"]):
            trainer.train_step()
        start = time.perf_counter()
        ends = []
        for _ in range(spec["steps"]):
            step = trainer.train_step()
            assert step is not None  # nothing asks the trainer to stop
            loss, _ = step
            ends.append(time.perf_counter())
        seconds = ends[-1] - start
    steps = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    return {"seconds": seconds, "loss": loss, "compile_s": compile_s, "setup_s": start - t0,
            "shards": trainer.n_threads, "params": trainer.model.n_params, "median_step_s": statistics.median(steps),
            "vocab": int(trainer.model.config.vocab_size),
            "engine": str(Path(trainer_module.__file__).resolve().parent)}


def child_torch(spec: dict) -> dict:
    import numpy as np
    import torch

    from benchmarks.common import load_text
    from benchmarks.torch_gpt import (
        Config,
        TorchGPT,
        char_tokens,
        lr_at,
        make_optimizer,
        random_batch,
        split,
        train_step,
    )

    cfg, n = spec["config"], spec["threads"]
    torch.set_num_threads(n)
    torch.manual_seed(1337)
    tokens, vocab = char_tokens(load_text(spec["corpus"]))
    train, _ = split(tokens)
    model = TorchGPT(Config(len(vocab), cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["ctx"]))
    opt = make_optimizer(model)
    rng = np.random.default_rng(1337)
    total = spec["warmup"] + spec["steps"]
    for step in range(total):
        if step == spec["warmup"]:
            start = time.perf_counter()
        loss, _ = train_step(model, opt, random_batch(train, cfg["ctx"], cfg["batch"], rng),
                             lr_at(step, 10**6, 1e-3, 1e-4, 100))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loss": loss, "params": sum(p.numel() for p in model.parameters()), "vocab": len(vocab),
            "interop_threads": torch.get_num_interop_threads(), "capability": torch.backends.cpu.get_cpu_capability()}


def child_peak(spec: dict) -> dict:
    """Best GFLOP/s of an n x n float32 matmul on `threads` threads, numpy's BLAS (and, for
    information, scipy's, which numba's np.dot and so CLLM's kernels call)."""
    import numpy as np
    import scipy.linalg.blas as sblas
    from threadpoolctl import threadpool_limits

    from benchmarks.common import blas_kernels

    n, threads, reps = spec["size"], spec["threads"], spec["reps"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = {"kernels": blas_kernels()}

    def best(f):
        f()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return 2 * n ** 3 / min(times) / 1e9

    with threadpool_limits(limits=threads, user_api="blas"):
        out["numpy"] = best(lambda: a @ b)
        af, bf = np.asfortranarray(a), np.asfortranarray(b)
        out["scipy"] = best(lambda: sblas.sgemm(1.0, af, bf))
    return out


def child_solo_peak(spec: dict) -> dict:
    """Mean GFLOP/s of one-thread 1024^3 float32 matmuls (numpy) over `seconds`. n of
    these at once, in n processes, give the machine's own parallel ceiling: what n cores
    deliver to work that shares nothing, as CLLM's shards share almost nothing."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        a @ b
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < spec["seconds"]:
            a @ b
            count += 1
        seconds = time.perf_counter() - t0
    return {"gflops": 2 * n ** 3 * count / seconds / 1e9}


def child_torch_peak(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    n = spec["size"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return {"torch": 2 * n ** 3 / min(times) / 1e9}


CHILDREN = {"cllm": child_cllm, "torch": child_torch, "peak": child_peak, "torch_peak": child_torch_peak,
            "solo_peak": child_solo_peak}


# -- parent -----------------------------------------------------------------------------

def percent(tokens_s: float, flops_per_token: float, peak_gflops: float) -> str:
    """A rate in tokens/s as a share of the matmul peak."""
    return f"{100 * tokens_s * flops_per_token / 1e9 / peak_gflops:.0f}%"


def main() -> int:
    if "--child" not in sys.argv[1:]:  # a --base child measures the checkout its interpreter has installed
        check_tree()
    if "--profile" in sys.argv[1:]:  # the account of a step: bench_step_account.py, with its own options
        from benchmarks.bench_step_account import main as account

        sys.argv.remove("--profile")
        return account()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true",
                   help="instead: where a step's time goes, part by part (benchmarks/bench_step_account.py, whose "
                        "options then apply: see its --help)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each implementation per config and threads")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per run before timing")
    p.add_argument("--threads-list", default="1,all", help="comma list; 'all' = every core (default 1,all)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--no-torch", action="store_true", help="CLLM only")
    p.add_argument("--base", type=Path, help="another checkout whose CLLM alternates with this one's ('base'); "
                                             "its name in the output")
    p.add_argument("--base-python", default=sys.executable, help="the interpreter that has --base installed")
    add_report_args(p, "Training throughput", "a scaling run on another machine gets its own, e.g. 'Scaling on "
                                              "a 16-core machine'")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    threads = parse_int_list(a.threads_list)
    configs = {name: CONFIGS[name] for name in a.configs.split(",")}
    use_torch = not a.no_torch and torch_available()
    env = child_env(a.unset_openblas_env)
    impls = ["cllm", "torch"] if use_torch else ["cllm"]
    if a.base:
        impls.append("base")
    notes = [] if use_torch else [NO_TORCH if not a.no_torch else "PyTorch left out (--no-torch)."]
    for note in notes:
        print(note)

    peak, kernels = {}, {}
    for n in threads:
        r = run_child(SCRIPT, {"kind": "peak", "threads": n, "size": a.peak_size, "reps": 5}, env)
        kernels = r["kernels"]
        peak[n] = {"numpy": r["numpy"], "scipy": r["scipy"]}
        if use_torch:
            peak[n]["torch"] = run_child(SCRIPT, {"kind": "torch_peak", "threads": n, "size": a.peak_size,
                                                  "reps": 5}, env)["torch"]
        with ThreadPoolExecutor(n) as pool:  # n one-thread processes at once
            solo = list(pool.map(lambda _: run_child(SCRIPT, {"kind": "solo_peak", "seconds": 5}, env)["gflops"],
                                 range(n)))
        peak[n][SOLO] = sum(solo)
        print(f"matmul peak {a.peak_size}^3 float32, {n} thread(s): " +
              ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak[n].items()), flush=True)

    tps: dict = {}
    median_tps: dict = {}  # from each run's median step
    vocab: dict = {}  # the corpus's vocabulary, as the children built their models
    layers: set = set()  # torch's CPU capability
    for rep in range(a.repeats):
        order = impls if rep % 2 == 0 else impls[::-1]
        for name, cfg in configs.items():
            for n in threads:
                for impl in order:
                    spec = {"kind": "cllm" if impl == "base" else impl, "config": cfg, "threads": n,
                            "corpus": a.corpus, "steps": a.steps, "warmup": a.warmup_steps}
                    r = run_child(SCRIPT, spec, env, python=a.base_python if impl == "base" else sys.executable)
                    if impl == "base" and Path(r["engine"]) != (a.base / "core").resolve():
                        raise SystemExit(f"{a.base_python} runs the engine in {r['engine']}, not {a.base}")
                    tok_s = a.steps * cfg["batch"] * cfg["ctx"] / r["seconds"]
                    vocab[name] = r["vocab"]
                    tps.setdefault((name, n, impl), []).append(tok_s)
                    if "median_step_s" in r:
                        per_step = cfg["batch"] * cfg["ctx"]
                        median_tps.setdefault((name, n, impl), []).append(per_step / r["median_step_s"])
                    if "capability" in r:
                        layers.add(f"torch CPU capability {r['capability']}")
                    print(f"run {rep + 1}/{a.repeats} {name:12s} {n} thread(s) {impl:5s} {tok_s:9.0f} tok/s "
                          f"(loss {r['loss']:.3f}, child {r['wall_s']:.1f} s)", flush=True)

    rows, speed_rows, base_rows = [], [], []
    if len(threads) > 1:
        solo = [peak[n][SOLO] for n in threads]
        speed_rows.append(["machine: 1024^3 matmuls, GFLOP/s", "numpy", *[fmt(g) for g in solo],
                           *[f"{g / solo[0]:.2f}" for g in solo[1:]]])
    for name, cfg in configs.items():
        flops = training_flops(cfg, vocab[name])
        for n in threads:
            s = {impl: stats(tps.get((name, n, impl), [])) for impl in ("cllm", "torch")}
            gf = {impl: s[impl]["median"] * flops.useful / 1e9 for impl in s}
            pk = peak[n]["numpy"]
            if a.base:
                this, b = stats(median_tps[(name, n, "cllm")]), stats(median_tps[(name, n, "base")])
                base_rows.append([config_label(cfg), str(n), fmt_range(this), fmt_range(b),
                                  percent(this["median"], flops.useful, pk), percent(b["median"], flops.useful, pk),
                                  f"{this['median'] / b['median']:.3f}"])
            nanogpt = percent(s["cllm"]["median"], flops.nanogpt, pk)
            if use_torch:
                nanogpt += " / " + percent(s["torch"]["median"], flops.nanogpt, pk)
            rows.append([config_label(cfg), str(n), fmt_range(s["cllm"]), fmt_range(s["torch"]),
                         fmt(gf["cllm"]), fmt(gf["torch"]), f"{100 * gf['cllm'] / pk:.0f}%",
                         f"{100 * gf['torch'] / pk:.0f}%" if use_torch else "-", nanogpt,
                         f"{s['cllm']['median'] / s['torch']['median']:.2f}" if use_torch else "-"])
        if len(threads) > 1:
            for impl in impls:
                med = [stats(tps[(name, n, impl)])["median"] for n in threads]
                speed_rows.append([config_label(cfg), impl] + [fmt(m) for m in med] +
                                  [f"{m / med[0]:.2f}" for m in med[1:]])

    out = [f"Training throughput: {a.repeats} runs each (median (min-max)), {a.steps} timed steps after "
           f"{a.warmup_steps} warm-up steps, one child process per run, CLLM and PyTorch (and --base) alternating.",
           "FLOPs per token: benchmarks/flops.py's useful count (every weight matrix, the tied head included, "
           "and causal attention's triangle); % peak = GFLOP/s over numpy's float32 matmul peak on the same "
           "threads; nanoGPT's estimate_mfu count (6 x parameters but wpe + 12 x layers x ctx x width) beside it "
           "for comparison with other reports (issue 24's sessions 1-2 left the head out and counted the whole T x T: "
           "benchmarks/README.md converts).",
           ""]
    out += machine_lines(env, kernels) + [f"- command: `{command_line()}`"] + [f"- {n}" for n in notes]
    out += [f"- CLLM: one Python thread per shard; torch: {', '.join(sorted(layers))}"]
    out += ["", table(["matmul peak, GFLOP/s", *[f"{n} thread(s)" for n in threads]],
                      [[k, *[fmt(peak[n].get(k)) for n in threads]] for k in peak[threads[0]]]), ""]
    out += [table(["config", "threads", "CLLM tok/s", "PyTorch tok/s", "CLLM GFLOP/s", "PyTorch GFLOP/s",
                   "CLLM % peak", "PyTorch % peak", "CLLM / PyTorch % peak, nanoGPT's count", "CLLM/PyTorch"],
                  rows)]
    if base_rows:
        out += ["", f"This checkout against {a.base} (`base`, run by {a.base_python}), alternating with the others; "
                    "tokens/s from each run's median step, median (min-max) over the runs:",
                "", table(["config", "threads", "this tok/s", "base tok/s", "this % peak", "base % peak", "this/base"],
                          base_rows)]
    if speed_rows:
        out += ["", table(["config", "impl", *[f"{n}t tok/s" for n in threads],
                           *[f"{n}t/{threads[0]}t" for n in threads[1:]]], speed_rows)]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
