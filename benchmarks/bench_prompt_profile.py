"""Where a long prompt's pass goes: a per-kernel profile of the forward pass of one
sequence through GPT-2 small (random weights; the shapes are what matter), as the
sampler's prompt pass runs it (`core.passes.gpt_forward`, logits of the last position
only, BLAS on n threads).

Each kernel of the pass is called from Python in the pass's order on its real shapes,
timed with a clock around every call, and summed by kind over the 12 layers; beside
that the whole pass (`forward_logits`, as `Decoder.prefill` calls it). GFLOP/s and the
share of the float32 matmul peak (numpy's 2048 x 2048 product on the same threads,
best of 5) are for the whole pass: 2 x (non-embedding weights) x T for the products,
2 x 2 x T^2/2 x C per layer for attention, 2 x C x V for the last position's logits.

Run: python benchmarks/bench_prompt_profile.py --write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    add_report_args, child_env, command_line, fmt, machine_lines, parse_int_list, report, run_child, serve_child,
    table,
)

SCRIPT = Path(__file__).resolve()
GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, ctx=1024)
KINDS = ("encoder", "layernorm", "qkv product", "attention", "residual copy", "attention projection",
         "MLP up product", "GELU", "MLP down product", "logits (last position)")


def child_profile(spec: dict) -> dict:
    os.environ["NUMBA_NUM_THREADS"] = str(spec["threads"])
    import numpy as np

    from cllm.core import kernels as K
    from cllm.core.config import ModelConfig
    from cllm.core.layout import Layout
    from cllm.core.model import init_params
    from cllm.core.threads import threaded_blas
    from cllm.core.workspace import Workspace, forward_logits

    config = ModelConfig(**GPT2_SMALL)
    params = init_params(config, 1)
    P = Layout.params(config).views(params)
    T, C, L, H, V = spec["tokens"], config.n_embd, config.n_layer, config.n_head, config.vocab_size
    tokens = np.random.default_rng(0).integers(0, V, T).astype(np.int32)
    f = np.float32
    x, ln, mean, rstd = np.zeros((T, C), f), np.zeros((T, C), f), np.zeros(T, f), np.zeros(T, f)
    qkv, y, res = np.zeros((T, 3 * C), f), np.zeros((T, C), f), np.zeros((T, C), f)
    h, hg = np.zeros((T, 4 * C), f), np.zeros((T, 4 * C), f)
    lse, tiles = np.zeros((H, T), f), np.zeros((2, 128, 128), f)
    logits = np.zeros((1, V), f)
    spent = dict.fromkeys(KINDS, 0.0)

    def timed(kind, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        spent[kind] += time.perf_counter() - t0

    def one_pass():
        timed("encoder", K.encoder_forward, x, tokens, P.wte, P.wpe, T)
        for layer in range(L):
            timed("layernorm", K.layernorm_forward, ln, mean, rstd, x, P.ln1w[layer], P.ln1b[layer], T)
            timed("qkv product", K.matmul_forward, qkv, ln, P.qkvw[layer], P.qkvb[layer], T, False)
            timed("attention", K.attention_forward, y, lse, tiles, qkv, H, T)
            timed("residual copy", K.copy_rows, res, x, T)
            timed("attention projection", K.matmul_forward, res, y, P.attprojw[layer], P.attprojb[layer], T, True)
            timed("layernorm", K.layernorm_forward, ln, mean, rstd, res, P.ln2w[layer], P.ln2b[layer], T)
            timed("MLP up product", K.matmul_forward, h, ln, P.fcw[layer], P.fcb[layer], T, False)
            timed("GELU", K.gelu_forward, hg, h, T)
            timed("residual copy", K.copy_rows, x, res, T)
            timed("MLP down product", K.matmul_forward, x, hg, P.fcprojw[layer], P.fcprojb[layer], T, True)
        timed("layernorm", K.layernorm_forward, ln, mean, rstd, x, P.lnfw, P.lnfb, T)
        timed("logits (last position)", K.gemm, K.NOTRANS, K.TRANS, 1, V, C, 1.0, ln[T - 1:], P.wte, 0.0, logits)

    workspace = Workspace.create(config, 1, 1)
    with threaded_blas():
        one_pass()  # compiles
        forward_logits(params, config, tokens, workspace, last_only=True)
        wholes = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            forward_logits(params, config, tokens, workspace, last_only=True)
            wholes.append(time.perf_counter() - t0)
        spent = dict.fromkeys(KINDS, 0.0)
        for _ in range(spec["repeats"]):
            one_pass()
        a, b = np.ones((2048, 2048), f), np.ones((2048, 2048), f)
        peak = 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            peak = max(peak, 2 * 2048 ** 3 / (time.perf_counter() - t0))
    return {"kernels": {k: v / spec["repeats"] for k, v in spent.items()}, "pass": sorted(wholes)[len(wholes) // 2],
            "peak": peak}


def flops(T: int) -> float:
    c = GPT2_SMALL
    C, L = c["n_embd"], c["n_layer"]
    weights = L * (3 * C * C + C * C + 8 * C * C)
    return 2 * weights * T + L * 2 * 2 * T * T / 2 * C + 2 * C * c["vocab_size"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tokens-list", default="559,1000")
    p.add_argument("--threads-list", default="1,all")
    p.add_argument("--repeats", type=int, default=3, help="passes timed per child (median of the whole pass)")
    add_report_args(p, "Prompt pass profile")
    a = p.parse_args()
    if serve_child(a, {"profile": child_profile}):
        return 0
    env = child_env(a.unset_openblas_env)
    out = ["A long prompt's pass through GPT-2 small (random weights), BLAS on n threads: each kernel called "
           f"in the pass's order on its shapes and timed, mean of {a.repeats} passes per kernel kind (ms and "
           "share of their sum); the whole pass (`forward_logits`, median) beside them. The machine was shared "
           "with other work while this ran.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`", ""]
    for T in parse_int_list(a.tokens_list):
        for n in parse_int_list(a.threads_list):
            r = run_child(SCRIPT, {"kind": "profile", "tokens": T, "threads": n, "repeats": a.repeats}, env,
                          timeout=1800)
            total = sum(r["kernels"].values())
            rows = [[k, fmt(1e3 * v), f"{100 * v / total:.1f}%"] for k, v in r["kernels"].items()]
            rows.append(["sum of the kernels", fmt(1e3 * total), "100%"])
            rows.append(["the whole pass (forward_logits)", fmt(1e3 * r["pass"]), "-"])
            gflops = flops(T) / r["pass"] / 1e9
            out += [f"{T} tokens, {n} thread(s): {gflops:.1f} GFLOP/s over the whole pass, "
                    f"{100 * gflops * 1e9 / r['peak']:.0f}% of the matmul peak ({r['peak'] / 1e9:.0f} GFLOP/s):", "",
                    table(["kernel", "ms", "share"], rows), ""]
            print(f"{T} tokens, {n} threads: pass {1e3 * r['pass']:.0f} ms", flush=True)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
