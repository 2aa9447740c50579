"""Generation speed: tokens/s and time to first token of a 200-token sample.

CLLM's core.sampler.generate (key/value cache) against PyTorch re-running the whole
context for every token (nanoGPT's sample.py) and PyTorch with a key/value cache
(benchmarks/torch_gpt.py). nanoGPT's CPU shape (4L 4H 128w, vocabulary 65 from the
corpus' characters) at ctx 64 and ctx 256 (at ctx 64 the 200 tokens overflow the
context: recompute slides a window of ctx tokens, the caches restart from the last ctx/2
tokens as CLLM does; at ctx 256 all of it fits). Weights: a fresh GPT-2 initialisation
(the cost of a token does not depend on the weights), or a trained model with --model.
Sampling: temperature 1, no top-k, a prompt of the corpus' first --prompt-len characters.

Each implementation and thread count runs in its own child process; each child warms
up (kernels compiled, one short sample per ctx) and reports the median of --repeats
samples. tokens/s = new tokens / whole call (prompt included); time to first token =
call start to the first token out; decode tokens/s = the other tokens / the time after
the first.

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --model models/shakespeare.cllm --write
    python benchmarks/bench_generate.py --tokens 5000 --ctx-list 256 --repeats 3 \
        --section 'Generation, long samples' --write
"""

from __future__ import annotations

import argparse
import sys
import time
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
    fmt_range,
    load_text,
    machine_lines,
    parse_int_list,
    report,
    run_child,
    serve_child,
    stats,
    table,
    torch_available,
)

SCRIPT = Path(__file__).resolve()
SHAPE = dict(n_layer=4, n_head=4, n_embd=128)


def timed(gen) -> dict:
    """Runs a sampler to the end: PyTorch's yield token ids, CLLM's `generate` one text
    piece per token, so both count tokens."""
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in gen:
        if first is None:
            first = time.perf_counter() - t0
        n += 1
    total = time.perf_counter() - t0
    return {"total": total, "ttft": first, "tokens": n}


def cllm_models(spec: dict) -> dict:
    from cllm.core.config import ModelConfig
    from cllm.core.model import GPT
    from cllm.core.model_file import load_model
    from cllm.core.tokenizer import train_tokenizer

    if spec.get("model"):
        m = load_model(spec["model"]).model
        return {m.config.ctx: m}
    tok = train_tokenizer("char", load_text(spec["corpus"]))
    return {ctx: GPT.create(ModelConfig(vocab_size=tok.vocab_size, ctx=ctx, **SHAPE), tok, seed=1337)
            for ctx in spec["ctxs"]}


def child_cllm(spec: dict) -> dict:
    from threadpoolctl import threadpool_limits

    from cllm.core.precompile import compile_kernels
    from cllm.core.sampler import SampleConfig, generate

    n = spec["threads"]
    compile_kernels()
    out = {}
    with threadpool_limits(limits=n, user_api="blas"):
        for ctx, model in cllm_models(spec).items():
            prompt = spec["prompt"]
            timed(generate(model, prompt, SampleConfig(max_tokens=20, seed=0)))
            runs = [timed(generate(model, prompt, SampleConfig(max_tokens=spec["tokens"], seed=r)))
                    for r in range(spec["repeats"])]
            out[str(ctx)] = {"CLLM (KV cache)": runs}
    return out


def child_torch(spec: dict) -> dict:
    import torch

    from benchmarks.torch_gpt import Config, TorchGPT, from_cllm, generate_kv, generate_recompute

    n = spec["threads"]
    torch.set_num_threads(n)
    torch.manual_seed(1337)
    text = load_text(spec["corpus"])
    if spec.get("model"):
        cm = cllm_models(spec)
        models = {ctx: (from_cllm(m), m.tokenizer.encode(spec["prompt"]).tolist()) for ctx, m in cm.items()}
    else:
        vocab = sorted(set(text))
        prompt = [vocab.index(ch) for ch in spec["prompt"]]
        models = {ctx: (TorchGPT(Config(len(vocab), ctx=ctx, **SHAPE)), prompt) for ctx in spec["ctxs"]}
    out = {}
    for ctx, (model, prompt) in models.items():
        model.eval()
        res = {}
        for label, fn in (("PyTorch recompute (no cache)", generate_recompute), ("PyTorch KV cache", generate_kv)):
            timed(fn(model, prompt, 20, seed=0))
            res[label] = [timed(fn(model, prompt, spec["tokens"], seed=r)) for r in range(spec["repeats"])]
        out[str(ctx)] = res
    return out


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help="samples per implementation, ctx and threads")
    p.add_argument("--tokens", type=int, default=200, help="new tokens per sample")
    p.add_argument("--ctx-list", default="64,256")
    p.add_argument("--threads-list", default="1", help="comma list; 'all' = every core (default 1)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt = the corpus' first N characters")
    p.add_argument("--model", default=None, help="a trained .cllm model instead of random weights")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--no-torch", action="store_true")
    add_report_args(p, "Generation", "e.g. 'Generation, long samples' for a run with --tokens 5000")
    a = p.parse_args()
    if serve_child(a, {"cllm": child_cllm, "torch": child_torch}):
        return 0

    use_torch = not a.no_torch and torch_available()
    notes = [] if use_torch else [NO_TORCH if not a.no_torch else "PyTorch left out (--no-torch)."]
    for line in notes:
        print(line)
    env = child_env(a.unset_openblas_env)
    prompt = load_text(a.corpus)[: a.prompt_len]
    base = {"corpus": a.corpus, "ctxs": parse_int_list(a.ctx_list), "tokens": a.tokens, "repeats": a.repeats,
            "prompt": prompt, "model": str(Path(a.model).resolve()) if a.model else None}
    results: dict = {}
    for n in parse_int_list(a.threads_list):
        for kind in ["cllm", "torch"] if use_torch else ["cllm"]:
            r = run_child(SCRIPT, {**base, "kind": kind, "threads": n}, env)
            print(f"{kind} {n} thread(s): child {r['wall_s']:.1f} s", flush=True)
            for ctx, impls in r.items():
                if ctx != "wall_s":
                    for label, runs in impls.items():
                        results[(int(ctx), n, label)] = runs

    rows = []
    for (ctx, n, label), runs in sorted(results.items(), key=lambda kv: kv[0][:2]):
        tok_s = stats([x["tokens"] / x["total"] for x in runs])
        ttft = stats([1e3 * x["ttft"] for x in runs])
        decode = stats([(x["tokens"] - 1) / (x["total"] - x["ttft"]) for x in runs if x["tokens"] > 1])
        rows.append([str(ctx), str(n), label, fmt_range(tok_s), fmt(ttft["median"]), fmt(decode["median"])])
    weights = f"trained model {a.model}" if a.model else "random weights (GPT-2 initialisation)"
    out = [f"Generation: {a.tokens} new tokens after a {len(prompt)}-character prompt, nanoGPT CPU shape "
           f"(4L 4H 128w, char vocabulary), {weights}, temperature 1, median (min-max) of {a.repeats} samples "
           "after a warm-up sample; one child process per implementation and thread count.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {x}" for x in notes]
    out += ["", table(["ctx", "threads", "implementation", "tokens/s", "first token ms", "decode tok/s"], rows)]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
