"""Quality: nanoGPT's CPU recipe on tiny Shakespeare, character level.

4 layers, 4 heads, width 128, ctx 64, batch 12, --steps 2000, lr 1e-3 with 100 warm-up
steps and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1, grad clip 1.0,
no dropout. CLLM runs as the user would: `cllm train --json`, then `cllm eval` (loss on
the held-out last 10%, every non-overlapping ctx+1 chunk) and `cllm generate` (200
characters, temperature --temperature). PyTorch (benchmarks/torch_gpt.py, skipped if not
installed) trains the same model from the same initial weights (CLLM's init_params) on
the same batches (CLLM's sampling with the same seed), then evaluates by the same
protocol and samples 200 characters with its KV-cache sampler.

Reported: final training loss, validation loss, training time (the steps alone; for
CLLM `elapsed` of `cllm train`, which also counts loading the cached kernels and saving),
process wall time, and the samples.

    python benchmarks/bench_quality.py                  # 2000 steps, CLLM and PyTorch
    python benchmarks/bench_quality.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    DEFAULT_CORPUS,
    NO_TORCH,
    add_report_args,
    all_threads,
    check_ok,
    check_tree,
    child_env,
    cllm_cmd,
    command_line,
    fmt,
    load_text,
    machine_lines,
    report,
    run_child,
    run_cmd,
    serve_child,
    table,
    torch_available,
)

SCRIPT = Path(__file__).resolve()
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, ctx=64)


def child_torch(spec: dict) -> dict:
    """Trains, evaluates and samples the PyTorch model; one process."""
    import numpy as np
    import torch

    from benchmarks.torch_gpt import (
        char_tokens,
        evaluate,
        from_cllm,
        generate_kv,
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
    tokens, vocab = char_tokens(load_text(spec["corpus"]))
    train, val = split(tokens)
    cllm = GPT.create(ModelConfig(vocab_size=len(vocab), **SHAPE), CharTokenizer(vocab), seed=spec["seed"])
    model = from_cllm(cllm)
    opt = make_optimizer(model, lr=spec["lr"], weight_decay=0.1, betas=(0.9, 0.99))
    rng = np.random.default_rng(spec["seed"])
    steps = spec["steps"]
    t0 = time.perf_counter()
    for step in range(steps):
        loss, _ = train_step(model, opt, random_batch(train, SHAPE["ctx"], spec["batch"], rng),
                             lr_at(step, steps, spec["lr"], spec["min_lr"], spec["warmup"]), 1.0)
    train_s = time.perf_counter() - t0
    model.eval()
    t1 = time.perf_counter()
    val_loss = evaluate(model, val)
    eval_s = time.perf_counter() - t1
    prompt = [vocab.index("\n")]
    ids = list(generate_kv(model, prompt, spec["tokens"], temperature=spec["temperature"], seed=spec["seed"]))
    return {"loss": loss, "val_loss": val_loss, "train_s": train_s, "eval_s": eval_s,
            "tokens_per_s": steps * spec["batch"] * SHAPE["ctx"] / train_s, "sample": "".join(vocab[i] for i in ids)}


def run_cllm(a, work: Path, env: dict) -> dict:
    model = work / "quality.cllm"
    t0 = time.perf_counter()
    r = run_cmd(cllm_cmd("train", a.corpus, "-o", model, "--layers", SHAPE["n_layer"], "--heads", SHAPE["n_head"],
                         "--embd", SHAPE["n_embd"], "--ctx", SHAPE["ctx"], "--batch", a.batch, "--steps", a.steps,
                         "--lr", a.lr, "--min-lr", a.min_lr, "--warmup", a.warmup, "--weight-decay", 0.1,
                         "--grad-clip", 1.0, "--eval-interval", 0, "--threads", a.threads, "--seed", a.seed,
                         "--force", "--json"), env)
    train = check_ok(r, "cllm train")
    e = run_cmd(cllm_cmd("eval", model, a.corpus, "--threads", a.threads, "--json"), env)
    ev = check_ok(e, "cllm eval")
    g = check_ok(run_cmd(cllm_cmd("generate", model, "--max-tokens", a.tokens, "--temperature", a.temperature,
                                  "--seed", a.seed, "--json"), env), "cllm generate")
    return {"loss": train["loss"], "val_loss": ev["val_loss"], "train_s": train["elapsed"],
            "tokens_per_s": train["tokens_per_s"], "wall_s": r["wall_s"], "eval_s": e["wall_s"],
            "sample": g["text"], "peak_rss": r["maxrss"], "all_s": time.perf_counter() - t0}


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="0: every core")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--tokens", type=int, default=200, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--no-torch", action="store_true")
    add_report_args(p, "Quality")
    a = p.parse_args()
    if serve_child(a, child_torch):
        return 0
    a.threads = a.threads or all_threads()
    use_torch = not a.no_torch and torch_available()
    notes = [] if use_torch else [NO_TORCH if not a.no_torch else "PyTorch left out (--no-torch)."]
    for line in notes:
        print(line)
    env = child_env(a.unset_openblas_env)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cllm-quality-") as work:
        print(f"CLLM: training {a.steps} steps ...", flush=True)
        results["CLLM"] = run_cllm(a, Path(work), env)
        print(json.dumps({k: v for k, v in results["CLLM"].items() if k != "sample"}), flush=True)
    if use_torch:
        print(f"PyTorch: training {a.steps} steps ...", flush=True)
        spec = {k: getattr(a, k) for k in ("steps", "batch", "lr", "min_lr", "warmup", "threads", "seed", "tokens",
                                           "temperature", "corpus")}
        results["PyTorch"] = run_child(SCRIPT, spec, env, timeout=7200)
        print(json.dumps({k: v for k, v in results["PyTorch"].items() if k != "sample"}), flush=True)

    rows = [[name, str(a.steps), fmt(r["loss"], 4), fmt(r["val_loss"], 4), fmt(r["train_s"]),
             fmt(r["tokens_per_s"]), fmt(r["wall_s"]), fmt(r["eval_s"])] for name, r in results.items()]
    out = [f"nanoGPT's CPU recipe on {Path(a.corpus).name} (character level): 4L 4H 128w ctx64 batch {a.batch}, "
           f"{a.steps} steps, lr {a.lr:g} -> {a.min_lr:g} (warm-up {a.warmup}, cosine), AdamW (0.9, 0.99), "
           f"weight decay 0.1, clip 1.0, seed {a.seed}, {a.threads} thread(s). Validation: the last 10%, "
           "every non-overlapping ctx+1 chunk (`cllm eval`'s protocol). PyTorch starts from the same weights "
           "and draws the same batches. Training s: CLLM's `elapsed` (kernels loaded from the cache, the steps, "
           "saving), PyTorch's steps alone; eval s: CLLM's whole `cllm eval` process, PyTorch's evaluation alone.",
           ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {x}" for x in notes]
    out += ["", table(["implementation", "steps", "train loss (last step)", "val loss", "training s", "tokens/s",
                       "process wall s", "eval s"], rows), ""]
    for name, r in results.items():
        out += [f"{name} sample ({a.tokens} characters, temperature {a.temperature:g}, prompt: a newline):", "",
                "```", r["sample"], "```", ""]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
