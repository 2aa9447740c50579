"""Dropout: what it costs, what it buys, and nanoGPT's GPU recipe on this CPU.

- cost: step time with dropout 0.2 against 0, on nanoGPT's CPU config (4L 4H 128w
  ctx64 batch 12) and on its GPU recipe's shape (6L 6H 384w ctx256 batch 64). One child
  per shape holds two trainers, one per rate, and alternates their steps (the order
  flips every step), so a load change on the machine hits both alike; the median and the
  fastest step of each.
- quality: an overfitting setting, the first --quality-chars characters of the corpus
  with a 4L 4H 192w ctx64 model, batch 12, --quality-steps steps (lr 1e-3 -> 1e-4), the
  held-out loss every --quality-eval steps, with dropout 0 and 0.2, CLLM and PyTorch
  (benchmarks/torch_gpt.py with nanoGPT's dropout) from the same initial weights on the
  same batches (CLLM's sampling with the same seed). Both evaluate by CLLM's protocol.
- recipe: `--recipe shakespeare-char` (dropout 0.2) on 1 and 2 threads: tokens/s over
  --recipe-steps steps after one warm-up step, and the hours its 5000 steps would take
  (the steps alone; its 20 evaluations add a few percent).

    python benchmarks/bench_dropout.py                       # every part
    python benchmarks/bench_dropout.py --parts cost,recipe --write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    DEFAULT_CORPUS,
    NO_TORCH,
    add_report_args,
    check_tree,
    child_env,
    command_line,
    fmt,
    machine_lines,
    report,
    run_child,
    serve_child,
    table,
    torch_available,
)

SCRIPT = Path(__file__).resolve()
COST_SHAPES = {  # name: (label, shape)
    "cpu": ("nanoGPT CPU config", dict(n_layer=4, n_head=4, n_embd=128, ctx=64, batch=12)),
    "gpu": ("GPU recipe's shape", dict(n_layer=6, n_head=6, n_embd=384, ctx=256, batch=64)),
}
QUALITY_SHAPE = dict(n_layer=4, n_head=4, n_embd=192, ctx=64)
RATES = (0.0, 0.2)


def child_cost(spec: dict) -> dict:
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    compile_kernels()
    cfg = spec["config"]
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    corpus = load_corpus(spec["corpus"])
    trainers = [Trainer.new(corpus, shape, TrainConfig(threads=spec["threads"], batch=cfg["batch"], eval_interval=0,
                                                       steps=10**6, dropout=p)) for p in RATES]
    times: list[list[float]] = [[] for _ in RATES]
    with single_threaded_blas():
        for trainer in trainers:
            trainer.train_step()
        for step in range(spec["steps"]):
            for i in (range(len(RATES)) if step % 2 == 0 else reversed(range(len(RATES)))):
                t0 = time.perf_counter()
                trainers[i].train_step()
                times[i].append(time.perf_counter() - t0)
    return {"times": times}


def child_recipe(spec: dict) -> dict:
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.recipes import recipe
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    compile_kernels()
    r = recipe("shakespeare-char")
    config = r.train_config(threads=spec["threads"], eval_interval=0)
    trainer = Trainer.new(load_corpus(spec["corpus"]), r.shape(), config)
    with single_threaded_blas():
        trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            trainer.train_step()
        seconds = time.perf_counter() - t0
    tokens = spec["steps"] * config.batch * r.shape()["ctx"]
    return {"step_s": seconds / spec["steps"], "tokens_per_s": tokens / seconds, "params": trainer.model.n_params,
            "shards": trainer.n_threads}


def quality_text(spec: dict) -> str:
    return Path(spec["corpus"]).read_text(encoding="utf-8")[: spec["chars"]]


def progress(spec: dict, step: int, val: float, loss: float, seconds: float) -> None:
    """One evaluation, appended to --quality-log as it comes (a long run's curve so far)."""
    if spec.get("log"):
        with open(spec["log"], "a", encoding="utf-8") as f:
            f.write(f"{spec['name']} p={spec['dropout']:g} step {step} val {val:.4f} train {loss:.4f} "
                    f"{seconds:.0f} s\n")


def child_quality_cllm(spec: dict) -> dict:
    import hashlib

    from cllm.core.config import TrainConfig
    from cllm.core.corpus import Corpus
    from cllm.core.events import EvalEvent
    from cllm.core.precompile import compile_kernels
    from cllm.core.trainer import Trainer

    compile_kernels()
    text = quality_text(spec)
    corpus = Corpus("quality.txt", text, hashlib.sha256(text.encode()).hexdigest(), None)
    config = TrainConfig(steps=spec["steps"], batch=spec["batch"], lr=1e-3, min_lr=1e-4, warmup=100,
                         eval_interval=spec["eval"], threads=spec["threads"], seed=spec["seed"],
                         dropout=spec["dropout"], checkpoint_minutes=0)
    trainer = Trainer.new(corpus, QUALITY_SHAPE, config)
    t0 = time.perf_counter()

    def on_event(event) -> None:
        if isinstance(event, EvalEvent):
            progress(spec, event.step, event.val_loss, trainer.state.loss_history[-1][1], time.perf_counter() - t0)

    trainer.run(on_event)
    return {"val": trainer.state.val_history, "loss": trainer.state.loss_history[-1][1],
            "seconds": time.perf_counter() - t0}


def child_quality_torch(spec: dict) -> dict:
    import numpy as np
    import torch

    from benchmarks.torch_gpt import (
        Config,
        TorchGPT,
        char_tokens,
        evaluate,
        from_cllm,
        lr_at,
        make_optimizer,
        random_batch,
        split,
        train_step,
    )
    from cllm.core.config import ModelConfig
    from cllm.core.model import GPT
    from cllm.core.tokenizer import CharTokenizer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    tokens, vocab = char_tokens(quality_text(spec))
    train, val = split(tokens)
    cllm = GPT.create(ModelConfig(vocab_size=len(vocab), **QUALITY_SHAPE), CharTokenizer(vocab), seed=spec["seed"])
    model = TorchGPT(Config(len(vocab), **QUALITY_SHAPE, dropout=spec["dropout"]))
    model.load_state_dict(from_cllm(cllm).state_dict())
    model.train()
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    rng = np.random.default_rng(spec["seed"])
    steps, history = spec["steps"], []
    t0 = time.perf_counter()
    for step in range(steps):
        loss, _ = train_step(model, opt, random_batch(train, QUALITY_SHAPE["ctx"], spec["batch"], rng),
                             lr_at(step, steps, 1e-3, 1e-4, 100), 1.0)
        if (step + 1) % spec["eval"] == 0 or step + 1 == steps:
            history.append([step + 1, evaluate(model, val)])
            progress(spec, step + 1, history[-1][1], loss, time.perf_counter() - t0)
    return {"val": history, "loss": loss, "seconds": time.perf_counter() - t0}


CHILDREN = {"cost": child_cost, "recipe": child_recipe, "quality-cllm": child_quality_cllm,
            "quality-torch": child_quality_torch}


def part_cost(a, env) -> list[str]:
    rows = []
    for label, cfg in (COST_SHAPES[name] for name in a.cost_shapes.split(",")):
        print(f"cost: {label} ...", flush=True)
        steps = a.cost_steps if cfg["ctx"] <= 64 else a.cost_big_steps
        r = run_child(SCRIPT, {"kind": "cost", "config": cfg, "threads": a.threads, "steps": steps,
                               "corpus": a.corpus}, env, timeout=7200)
        med = [statistics.median(t) for t in r["times"]]
        best = [min(t) for t in r["times"]]
        rows.append([label, f"{cfg['n_layer']}L {cfg['n_head']}H {cfg['n_embd']}w ctx{cfg['ctx']} b{cfg['batch']}",
                     str(steps), fmt(1000 * med[0]), fmt(1000 * med[1]), f"{100 * (med[1] / med[0] - 1):+.1f}%",
                     fmt(1000 * best[0]), fmt(1000 * best[1]), f"{100 * (best[1] / best[0] - 1):+.1f}%"])
    return [f"### Cost: step time, dropout 0.2 against 0 ({a.threads} threads)", "",
            "One child per shape alternates a trainer without dropout and one with 0.2, step by step (order "
            "flipped each step), after one warm-up step each.", "",
            table(["shape", "config", "steps each", "median ms, p=0", "median ms, p=0.2", "median",
                   "fastest ms, p=0", "fastest ms, p=0.2", "fastest"], rows), ""]


def part_recipe(a, env) -> list[str]:
    rows = []
    for threads in (1, 2):
        print(f"recipe: {threads} thread(s) ...", flush=True)
        r = run_child(SCRIPT, {"kind": "recipe", "threads": threads, "steps": a.recipe_steps, "corpus": a.corpus},
                      env, timeout=7200)
        rows.append([str(threads), str(a.recipe_steps), fmt(r["step_s"]), fmt(r["tokens_per_s"]),
                     fmt(5000 * r["step_s"] / 3600)])
    return ["### nanoGPT's GPU recipe (`--recipe shakespeare-char`: 6L 6H 384w ctx256 batch 64, dropout 0.2)", "",
            f"{r['params']:,} parameters. Steps timed after one warm-up step; hours: 5000 steps at that pace "
            "(the steps alone).", "",
            table(["threads", "steps timed", "s per step", "tokens/s", "hours to 5000 steps"], rows), ""]


def part_quality(a, env) -> list[str]:
    kinds = [("CLLM", "quality-cllm")] + ([("PyTorch", "quality-torch")] if a.torch else [])

    def run(name: str, kind: str, p: float) -> dict:
        print(f"quality: {name}, dropout {p:g} ...", flush=True)
        threads = a.torch_threads if name == "PyTorch" else a.threads
        spec = {"kind": kind, "corpus": a.corpus, "chars": a.quality_chars, "steps": a.quality_steps,
                "eval": a.quality_eval, "batch": 12, "threads": threads, "seed": a.seed, "dropout": p,
                "name": name, "log": a.quality_log}
        result = run_child(SCRIPT, spec, env, timeout=7200)
        print(f"{name} p={p:g}: {json.dumps(result['val'])}", flush=True)
        return result

    # CLLM's two first, then PyTorch with dropout before PyTorch without (whose arithmetic is
    # CLLM's own): the runs that matter most come first when the time is short
    jobs = [(name, kind, p) for name, kind in kinds for p in (RATES if name == "CLLM" else RATES[::-1])]
    with ThreadPoolExecutor(a.quality_jobs) as pool:  # the losses do not depend on the machine's load
        results = list(pool.map(lambda job: run(*job), jobs))
    return quality_report(a, {(name, p): result for (name, _, p), result in zip(jobs, results, strict=True)})


def quality_report(a, runs: dict) -> list[str]:
    """The quality part's table from its runs: (implementation, rate) -> a child's result."""
    runs = dict(sorted(runs.items()))
    steps = [s for s, _ in runs[("CLLM", 0.0)]["val"]]
    headers = ["step"] + [f"{name} p={p:g}" for name, p in runs]
    rows = [[str(s)] + [fmt(dict(map(tuple, r["val"])).get(s), 4) for r in runs.values()] for s in steps]
    rows.append(["best"] + [fmt(min(v for _, v in r["val"]), 4) for r in runs.values()])
    rows.append(["train loss, last step"] + [fmt(r["loss"], 4) for r in runs.values()])
    rows.append(["seconds"] + [fmt(r["seconds"]) for r in runs.values()])
    return [f"### Quality: an overfitting setting (first {a.quality_chars:,} characters of "
            f"{Path(a.corpus).name}, character level)", "",
            f"4L 4H 192w ctx64, batch 12, {a.quality_steps} steps, lr 1e-3 -> 1e-4 (warm-up 100), AdamW (0.9, 0.99), "
            f"weight decay 0.1, clip 1.0, seed {a.seed}, CLLM on {a.threads} thread(s), PyTorch on {a.torch_threads} "
            f"(two torch threads on a loaded 2-core machine ran 5-10x slower), {a.quality_jobs} run(s) at a time; "
            "validation loss (the last 10%, every "
            "ctx+1 chunk) every "
            f"{a.quality_eval} steps. PyTorch: benchmarks/torch_gpt.py with nanoGPT's dropout (its own random "
            "masks), the same initial weights and batches.", "",
            table(headers, rows), ""]


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--parts", default="cost,recipe,quality")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cost-shapes", default="cpu,gpu", help="of " + ", ".join(COST_SHAPES))
    p.add_argument("--cost-steps", type=int, default=30, help="steps of each rate, nanoGPT's CPU config")
    p.add_argument("--cost-big-steps", type=int, default=3, help="steps of each rate, the GPU recipe's shape")
    p.add_argument("--recipe-steps", type=int, default=2)
    p.add_argument("--quality-chars", type=int, default=200_000)
    p.add_argument("--quality-steps", type=int, default=2000)
    p.add_argument("--quality-eval", type=int, default=250)
    p.add_argument("--torch-threads", type=int, default=1, help="PyTorch's threads in the quality part")
    p.add_argument("--quality-jobs", type=int, default=1, help="quality runs at once")
    p.add_argument("--quality-log", default="", help="a file each quality run appends its evaluations to")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--note", action="append", default=[], help="a line to add to the report (the machine's load)")
    add_report_args(p, "Dropout")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0
    a.torch = not a.no_torch and torch_available()
    env = child_env(a.unset_openblas_env)
    out = ["Dropout as GPT-2 applies it (embeddings, attention probabilities, both residual branches), masks "
           "hashed from seed, step, row, layer, site and position (core/kernels.py).", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {n}" for n in a.note]
    if not a.torch:
        out.append(f"- {NO_TORCH if not a.no_torch else 'PyTorch left out (--no-torch).'}")
    out.append("")
    parts = {"cost": part_cost, "recipe": part_recipe, "quality": part_quality}
    for name in a.parts.split(","):
        out += parts[name](a, env)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
