"""Attention as the context grows: training tokens/s of CLLM and PyTorch from ctx 64 to
1024, attention's share of CLLM's step, the crossover of CLLM's two attention kernel
pairs, attention's activation memory and a 1000-token prompt pass.

Model: 4 layers, 4 heads, width 128 (head size 32), the corpus's characters as the
vocabulary (tiny Shakespeare: 65). The sweep (--sweep ctx:batch,...) holds the tokens per
step at 1024 (64:16, 128:8, 256:4, 512:2) except at ctx 1024, which takes batch 2 (2048
tokens), so that 2 threads have a sequence each (CLLM runs one sequence per shard).

- Training (the sweep): every run is a fresh child process, the implementations
  alternating and their order flipping each repeat, for --threads-list (default 1,all).
  A CLLM child runs `core.precompile.compile_kernels()`, builds a `Trainer` (n shards, one
  thread each, BLAS on one thread) and times --steps calls of `train_step()` after
  --warmup-steps; a PyTorch child is bench_train.py's (`torch.set_num_threads(n)`, eager,
  `scaled_dot_product_attention`). tokens/s = steps x batch x ctx / seconds. `cllm` uses
  the attention kernels CLLM picks for the context; `cllm-short` and `cllm-tiled` force
  the pair that keeps the T x T probabilities (CLLM before tiles) or the tiled pair, at
  every context (--impls).
- Attention's share: after its timed steps a CLLM child times the attention kernels of
  one step on the step's shapes: each shard's sequences x layers forward calls, then the
  backward calls, on the shard's own buffers (what the last step left there), one Python
  thread per shard at once (the kernels release the GIL), as the step runs them; the
  median of 5. share = (forward + backward) / the median step.
- Kernel crossover (--crossover): one sequence's attention forward + backward (4 heads,
  head size 32) through each pair at each of --crossover-ctx, alternating, 1 thread and
  then 2 threads at once (two sequences side by side, as two shards run), in CPU seconds
  of the slowest thread (robust to a shared machine), median of --crossover-repeats. Where the tiled pair starts
  to win is core.layout.SHORT_ATTENTION_MAX_CTX.
- Memory: the bytes of one shard's activation buffer and of its attention blocks for
  the sweep's configs (2 shards), kept probabilities against tiles (from core.layout).
- Prompt pass (--prefill): `Decoder.prefill` of a --prefill-tokens prompt on a ctx-1024
  model (the sampler's prompt pass), each kernel pair, alternating, then the one-token
  decoding steps after it that the context leaves room for (24 after 1000 tokens, the
  first untimed: it reloads what the prompt passes evicted from the caches; the decoder
  is the same whichever pair ran the prompt) (`Decoder.step`: its attention is the same either way), BLAS
  on one thread; PyTorch's KV-cache prefill for reference. Median of --repeats.

    python benchmarks/bench_context.py --crossover --prefill
    python benchmarks/bench_context.py --impls cllm,cllm-short,torch --crossover --prefill --write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    DEFAULT_CORPUS,
    MB,
    NO_TORCH,
    add_report_args,
    child_env,
    command_line,
    concurrent_seconds,
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
SWEEP = "64:16,128:8,256:4,512:2,1024:2"
IMPLS = ("cllm", "cllm-short", "cllm-tiled", "torch")
LABELS = {"cllm": "CLLM", "cllm-short": "CLLM kept probabilities", "cllm-tiled": "CLLM tiled", "torch": "PyTorch"}
PAIRS = ("short", "tiled")  # CLLM's attention kernel pairs


# -- children ---------------------------------------------------------------------------

def force_attention(pair: str) -> None:
    """Makes buffers created from now on in this process use one kernel pair ("short":
    kept probabilities, "tiled") at every context; "auto" leaves CLLM's choice."""
    from cllm.core import layout

    if pair == "short":
        layout.SHORT_ATTENTION_MAX_CTX = 1 << 30
    elif pair == "tiled":
        layout.SHORT_ATTENTION_MAX_CTX = 0


def attention_driver():
    """A compiled loop over one shard's attention calls of one step, layers x sequences:
    `calls(attend, A, n_layer, sequences, group, T, n_head)` with `attend` CLLM's
    `attention_forward_pass` or `attention_backward_pass` (which pick the kernels as in a
    step), called by address as gpt_forward and gpt_backward call them; nogil, so one
    Python thread per shard runs them at once."""
    import numpy as np
    from numba import njit, types

    from cllm.core.kernels import NO_DROPOUT
    from cllm.core.passes import pass_signatures

    attention = pass_signatures(np.dtype(np.float32)).attention_forward  # the backward's is the same
    i64 = types.int64

    @njit(types.void(types.FunctionType(attention), attention.args[0], i64, i64, i64, i64, i64), nogil=True)
    def calls(attend, A, n_layer, sequences, group, T, n_head):
        for l in range(n_layer):
            for i in range(sequences):
                attend(A, l, i % group, T, n_head, NO_DROPOUT)

    return calls


def attention_profile(trainer, repeats: int = 5) -> dict:
    """Seconds of one step's attention forward and backward calls (see the docstring
    above), median of `repeats`."""
    from cllm.core.passes import attention_backward_pass, attention_forward_pass

    calls = attention_driver()
    ws, c = trainer.workspace, trainer.model.config
    sequences = int(max(trainer.shard_sizes))
    views = [ws.views(s) for s in range(ws.shards)]
    out = {}
    for name, attend in (("forward", attention_forward_pass), ("backward", attention_backward_pass)):
        jobs = [lambda A=A, attend=attend: calls(attend, A, c.n_layer, sequences, ws.group, c.ctx, c.n_head)
                for A in views]
        concurrent_seconds(jobs)  # compiles, warms the caches
        out[name] = statistics.median(concurrent_seconds(jobs) for _ in range(repeats))
    return out


def child_cllm(spec: dict) -> dict:
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    cfg, n = spec["config"], spec["threads"]
    compile_kernels()
    force_attention(spec["attention"])
    trainer = Trainer.new(load_corpus(spec["corpus"]), dict(SHAPE, ctx=cfg["ctx"]),
                          TrainConfig(threads=n, batch=cfg["batch"], eval_interval=0, steps=10**6))
    with single_threaded_blas():
        for _ in range(spec["warmup"]):
            trainer.train_step()
        times = []
        for _ in range(spec["steps"]):
            t0 = time.perf_counter()
            step = trainer.train_step()
            assert step is not None  # nothing asks the trainer to stop
            loss, _ = step
            times.append(time.perf_counter() - t0)
        profile = attention_profile(trainer)
    return {"seconds": sum(times), "step_median": statistics.median(times), "loss": loss,
            "shards": trainer.n_threads, "tiled": trainer.workspace.views().lse.size > 0, **profile}


def child_torch(spec: dict) -> dict:
    from benchmarks.bench_train import child_torch as bench_train_torch

    return bench_train_torch(spec)


def child_crossover(spec: dict) -> dict:
    """Seconds of one sequence's attention forward + backward through each pair at each
    ctx, on `copies` sequences at once (one thread each), alternating pairs."""
    import numpy as np

    from cllm.core.config import ModelConfig
    from cllm.core.layout import Layout
    from cllm.core.passes import attention_backward_pass, attention_forward_pass
    from cllm.core.threads import single_threaded_blas

    calls = attention_driver()
    rng = np.random.default_rng(0)
    times: dict = {}
    with single_threaded_blas():
        for ctx in spec["ctxs"]:
            config = ModelConfig(vocab_size=65, ctx=ctx, **SHAPE)
            views = {}
            for pair in PAIRS:
                force_attention(pair)
                layout = Layout.activations(config)
                views[pair] = [layout.views(rng.standard_normal(layout.size).astype(np.float32))
                               for _ in range(spec["copies"])]

            def jobs(pair, ctx=ctx, n_head=config.n_head, views=views):
                return [lambda A=A: (calls(attention_forward_pass, A, 1, 1, 1, ctx, n_head),
                                     calls(attention_backward_pass, A, 1, 1, 1, ctx, n_head))
                        for A in views[pair]]

            for pair in PAIRS:
                concurrent_seconds(jobs(pair))
            inner = max(1, 2048 // ctx)  # calls per timing: a few ms at least
            for rep in range(spec["repeats"]):
                for pair in (PAIRS if rep % 2 == 0 else PAIRS[::-1]):
                    seconds = concurrent_seconds([lambda job=job, inner=inner: [job() for _ in range(inner)]
                                                  for job in jobs(pair)], clock="cpu")
                    times.setdefault(f"{ctx} {pair}", []).append(seconds / inner)
    return times


def child_prefill(spec: dict) -> dict:
    """Seconds of Decoder.prefill on a `tokens`-token prompt through each kernel pair,
    alternating, and of the one-token decoding steps after it (up to 100, as the context
    allows; the decoder's code does not depend on the pair)."""
    import numpy as np

    from cllm.core.config import ModelConfig
    from cllm.core.model import GPT
    from cllm.core.precompile import compile_kernels
    from cllm.core.sampler import Decoder
    from cllm.core.threads import single_threaded_blas
    from cllm.core.tokenizer import train_tokenizer

    compile_kernels()
    text = load_text(spec["corpus"])
    tok = train_tokenizer("char", text)
    model = GPT.create(ModelConfig(vocab_size=tok.vocab_size, ctx=spec["ctx"], **SHAPE), tok)
    prompt = np.asarray(tok.encode(text[:spec["tokens"]]), np.int32)
    decoders = {}
    for pair in PAIRS:
        force_attention(pair)
        decoders[pair] = Decoder(model)
    steps = min(100, spec["ctx"] - len(prompt))  # decoding positions left in the context
    out: dict = {}
    with single_threaded_blas():
        for pair in PAIRS:
            decoders[pair].prefill(prompt)
        for rep in range(spec["repeats"]):
            for pair in (PAIRS if rep % 2 == 0 else PAIRS[::-1]):
                t0 = time.perf_counter()
                decoders[pair].prefill(prompt)
                out.setdefault(f"prefill {pair}", []).append(time.perf_counter() - t0)
            decoder = decoders["tiled"]
            decoder.step(int(prompt[0]))  # untimed: reloads the caches after the prompt passes
            t0 = time.perf_counter()
            for token in prompt[1:steps]:
                decoder.step(int(token))
            out.setdefault("decode", []).append((time.perf_counter() - t0) / (steps - 1))
    return out


def child_torch_prefill(spec: dict) -> dict:
    import torch

    from benchmarks.torch_gpt import Config, TorchGPT

    torch.set_num_threads(1)
    text = load_text(spec["corpus"])
    vocab = sorted(set(text))
    model = TorchGPT(Config(len(vocab), ctx=spec["ctx"], **SHAPE)).eval()
    prompt = torch.tensor([[vocab.index(ch) for ch in text[:spec["tokens"]]]])
    times = []
    with torch.no_grad():
        for _ in range(spec["repeats"] + 1):
            cache = model.new_cache()
            t0 = time.perf_counter()
            model(prompt, cache=cache, pos=0)
            times.append(time.perf_counter() - t0)
    return {"prefill torch": times[1:]}


CHILDREN = {"cllm": child_cllm, "torch": child_torch, "crossover": child_crossover, "prefill": child_prefill,
            "torch_prefill": child_torch_prefill}


# -- parent -----------------------------------------------------------------------------

def parse_sweep(text: str) -> list[dict]:
    out = []
    for part in text.split(","):
        ctx, batch = part.split(":")
        out.append(dict(SHAPE, ctx=int(ctx), batch=int(batch)))
    return out


def child_spec(impl: str, cfg: dict, threads: int, a) -> dict:
    kind = "torch" if impl == "torch" else "cllm"
    attention = {"cllm": "auto", "cllm-short": "short", "cllm-tiled": "tiled"}.get(impl, "")
    return {"kind": kind, "config": cfg, "threads": threads, "corpus": a.corpus, "steps": a.steps,
            "warmup": a.warmup_steps, "attention": attention}


def sweep(a, configs: list[dict], threads: list[int], impls: list[str], env: dict) -> dict:
    runs: dict = {}
    for rep in range(a.repeats):
        order = impls if rep % 2 == 0 else impls[::-1]
        for cfg in configs:
            for n in threads:
                for impl in order:
                    r = run_child(SCRIPT, child_spec(impl, cfg, n, a), env)
                    r["tok_s"] = a.steps * cfg["batch"] * cfg["ctx"] / r["seconds"]
                    runs.setdefault((cfg["ctx"], n, impl), []).append(r)
                    extra = ""
                    if "forward" in r:
                        share = (r["forward"] + r["backward"]) / r["step_median"]
                        extra = f", {'tiled' if r['tiled'] else 'kept'} attention {100 * share:.0f}% of the step"
                    print(f"run {rep + 1}/{a.repeats} ctx {cfg['ctx']:4d} b{cfg['batch']:<2d} {n} thread(s) "
                          f"{impl:10s} {r['tok_s']:8.0f} tok/s (loss {r['loss']:.3f}{extra}; "
                          f"child {r['wall_s']:.0f} s)",
                          flush=True)
    return runs


def sweep_tables(runs: dict, configs: list[dict], threads: list[int], impls: list[str]) -> list[str]:
    head = ["ctx, batch", "threads"] + [f"{LABELS[i]} tok/s" for i in impls]
    cllms = [i for i in impls if i != "torch"]
    if "torch" in impls:
        head += [f"{LABELS[i]} / PyTorch" for i in cllms]
    head += [f"{LABELS[i]}: attention fwd + bwd ms/step (share)" for i in cllms]
    rows = []
    for cfg in configs:
        for n in threads:
            got = {i: runs.get((cfg["ctx"], n, i), []) for i in impls}
            tok = {i: stats([r["tok_s"] for r in got[i]]) for i in impls}
            row = [f"{cfg['ctx']}, {cfg['batch']}", str(n)] + [fmt_range(tok[i]) for i in impls]
            if "torch" in impls:
                row += [f"{tok[i]['median'] / tok['torch']['median']:.2f}" for i in cllms]
            for i in cllms:
                fwd = statistics.median(r["forward"] for r in got[i]) * 1e3
                bwd = statistics.median(r["backward"] for r in got[i]) * 1e3
                share = statistics.median((r["forward"] + r["backward"]) / r["step_median"] for r in got[i])
                kind = "tiled" if got[i][0]["tiled"] else "kept"
                row.append(f"{fmt(fwd)} + {fmt(bwd)} ({100 * share:.0f}%, {kind})")
            rows.append(row)
    return [table(head, rows)]


def crossover(a, env: dict) -> list[str]:
    ctxs = [int(c) for c in a.crossover_ctx.split(",")]
    rows = []
    for n in parse_int_list(a.threads_list):
        times = run_child(SCRIPT, {"kind": "crossover", "ctxs": ctxs, "copies": n, "repeats": a.crossover_repeats},
                          env)
        for ctx in ctxs:
            s = {pair: stats(times[f"{ctx} {pair}"]) for pair in PAIRS}
            ms = {pair: {k: v * 1e3 if isinstance(v, float) else v for k, v in s[pair].items()} for pair in PAIRS}
            rows.append([str(ctx), str(n), fmt_range(ms["short"]), fmt_range(ms["tiled"]),
                         f"{s['short']['median'] / s['tiled']['median']:.2f}"])
            print(f"crossover ctx {ctx:4d} {n} thread(s): kept {ms['short']['median']:.3f} ms, "
                  f"tiled {ms['tiled']['median']:.3f} ms", flush=True)
    return [f"Attention kernels alone, one sequence's forward + backward (4 heads of 32), CPU ms of the slowest "
            f"thread, median (min-max) of {a.crossover_repeats}; at n threads, n sequences at once:", "",
            table(["ctx", "threads", "kept probabilities", "tiled", "kept / tiled"], rows)]


def memory(configs: list[dict], shards: int = 2) -> list[str]:
    from cllm.core import layout
    from cllm.core.config import ModelConfig

    rows = []
    default = layout.SHORT_ATTENTION_MAX_CTX
    for cfg in configs:
        config = ModelConfig(vocab_size=65, **{k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")})
        group = layout.group_size(config, -(-cfg["batch"] // shards))
        sizes = {}
        for pair, cutoff in (("short", 1 << 30), ("tiled", 0), ("cllm", default)):
            layout.SHORT_ATTENTION_MAX_CTX = cutoff
            lay = layout.Layout.activations(config, group)
            attention = sum(lay.table[lay.names.index(n), 1] - lay.table[lay.names.index(n), 0]
                            for n in ("att", "lse", "atttiles"))
            sizes[pair] = (4 * lay.size / MB, 4 * attention / MB)
        layout.SHORT_ATTENTION_MAX_CTX = default
        rows.append([f"{cfg['ctx']}, {cfg['batch']}", str(group)] +
                    [f"{fmt(sizes[p][0])} ({fmt(sizes[p][1])})" for p in ("short", "tiled", "cllm")])
    return [f"Activation buffer of one shard ({shards} shards), MiB, float32 (in brackets: attention's blocks, "
            "att + lse + atttiles):", "",
            table(["ctx, batch", "sequences per group", "kept probabilities (before)", "tiled", "CLLM now"], rows)]


def prefill(a, env: dict, use_torch: bool) -> list[str]:
    spec = {"ctx": 1024, "tokens": a.prefill_tokens, "corpus": a.corpus, "repeats": a.repeats}
    times = run_child(SCRIPT, dict(spec, kind="prefill"), env)
    if use_torch:
        times.update(run_child(SCRIPT, dict(spec, kind="torch_prefill"), env))
    ms = {k: {x: v * 1e3 if isinstance(v, float) else v for x, v in stats(t).items()}
          for k, t in times.items() if k != "wall_s"}
    rows = [[f"prompt pass, {a.prefill_tokens} tokens (ms)", fmt_range(ms["prefill short"]),
             fmt_range(ms["prefill tiled"]), fmt_range(ms["prefill torch"]) if use_torch else "-"],
            [f"one-token decoding after it, positions {a.prefill_tokens + 1} on (ms per token; the same code "
             "either way)", fmt_range(ms["decode"]), fmt_range(ms["decode"]), "-"]]
    return [f"Sampler, ctx-1024 model, 1 thread, median (min-max) of {a.repeats}:", "",
            table(["", "CLLM kept probabilities", "CLLM tiled", "PyTorch (KV cache)"], rows)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sweep", default=SWEEP, help=f"comma list of ctx:batch (default {SWEEP})")
    p.add_argument("--impls", default="cllm,torch", help=f"comma list of {', '.join(IMPLS)}")
    p.add_argument("--repeats", type=int, default=3, help="runs of each implementation per ctx and threads")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per run before timing")
    p.add_argument("--threads-list", default="1,all", help="comma list; 'all' = every core (default 1,all)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--no-sweep", action="store_true", help="skip the training sweep")
    p.add_argument("--crossover", action="store_true", help="time the two kernel pairs alone at --crossover-ctx")
    p.add_argument("--crossover-ctx", default="64,128,160,192,256,384,512,768,1024")
    p.add_argument("--crossover-repeats", type=int, default=15)
    p.add_argument("--prefill", action="store_true", help="time the sampler's prompt pass")
    p.add_argument("--prefill-tokens", type=int, default=1000)
    add_report_args(p, "Attention and context length")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    configs = parse_sweep(a.sweep)
    threads = parse_int_list(a.threads_list)
    use_torch = torch_available()
    impls = [i for i in a.impls.split(",") if use_torch or i != "torch"]
    env = child_env(a.unset_openblas_env)
    notes = [] if use_torch else [NO_TORCH]
    for n in notes:
        print(n)

    out = [f"Attention and the context: {SHAPE['n_layer']}L {SHAPE['n_head']}H {SHAPE['n_embd']}w, "
           "character vocabulary. See benchmarks/README.md (bench_context.py) for what each table measures.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {n}" for n in notes]
    if not a.no_sweep:
        runs = sweep(a, configs, threads, impls, env)
        out += ["", f"Training, tokens/s, median (min-max) of {a.repeats} runs, {a.steps} timed steps after "
                f"{a.warmup_steps}, one child process per run, implementations alternating. Attention: one step's "
                "forward + backward attention calls timed alone on the step's shapes (see the README), and their "
                "share of the median step.", ""]
        out += sweep_tables(runs, configs, threads, impls)
    if a.crossover:
        out += [""] + crossover(a, env)
    out += [""] + memory(configs)
    if a.prefill:
        out += [""] + prefill(a, env, use_torch)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
