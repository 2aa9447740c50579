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

from benchmarks.common import (
    add_report_args,
    child_env,
    command_line,
    fmt,
    machine_lines,
    parse_int_list,
    report,
    run_child,
    serve_child,
    table,
)

SCRIPT = Path(__file__).resolve()
GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, ctx=1024)
VARIANTS = ("before", "after")
KINDS = ("encoder", "layernorm", "qkv product", "attention", "residual copy", "attention projection",
         "MLP up product", "GELU", "MLP down product", "logits (last position)")


def child_profile(spec: dict) -> dict:
    """Times each kernel kind of one variant's pass: "before", training's forward pass
    (`gpt_forward`: its element-wise kernels and attention on one thread), or "after",
    `core.prompt_pass` (those on every core); and the whole pass."""
    os.environ["NUMBA_NUM_THREADS"] = str(spec["threads"])
    import numpy as np

    from cllm.core import kernels as K
    from cllm.core import prompt_pass as PP
    from cllm.core.attention_kernels import attention_forward
    from cllm.core.config import ModelConfig
    from cllm.core.decode_kernels import DecodeState
    from cllm.core.layout import Layout
    from cllm.core.model import init_params
    from cllm.core.quantize import decode_weights, float32_forms
    from cllm.core.threads import parallel_threads, single_threaded_blas, threaded_blas
    from cllm.core.workspace import Workspace, forward_logits

    config = ModelConfig(**GPT2_SMALL)
    params = init_params(config, 1)
    P = Layout.params(config).views(params)
    T, C, L, H, V = spec["tokens"], config.n_embd, config.n_layer, config.n_head, config.vocab_size
    tokens = np.random.default_rng(0).integers(0, V, T).astype(np.int32)
    B = PP.PromptBuffers.create(T, C, H)
    logits = np.zeros((1, V), np.float32)
    after = spec["variant"] == "after"
    spent = dict.fromkeys(KINDS, 0.0)

    def timed(kind, fn, *args, blas=threaded_blas):
        with blas():
            t0 = time.perf_counter()
            fn(*args)
            spent[kind] += time.perf_counter() - t0

    layernorm = PP.layernorm_rows if after else K.layernorm_forward
    gelu, copy = (PP.gelu_rows, PP.copy_rows_parallel) if after else (K.gelu_forward, K.copy_rows)

    def attention():
        if after:
            timed("attention", PP.attention_heads, B.y, B.qkv, B.heads, B.lse, B.tiles, H, T, blas=single_threaded_blas)
        else:
            timed("attention", attention_forward, B.y, B.lse, B.tiles[0], B.qkv, H, T)

    def one_pass():
        timed("encoder", K.encoder_forward, B.x, tokens, P.wte, P.wpe, T)
        for layer in range(L):
            timed("layernorm", layernorm, B.ln, B.mean, B.rstd, B.x, P.ln1w[layer], P.ln1b[layer], T)
            timed("qkv product", K.matmul_forward, B.qkv, B.ln, P.qkvw[layer], P.qkvb[layer], T, False)
            attention()
            timed("residual copy", copy, B.res, B.x, T)
            timed("attention projection", K.matmul_forward, B.res, B.y, P.attprojw[layer], P.attprojb[layer], T,
                  True)
            timed("layernorm", layernorm, B.ln, B.mean, B.rstd, B.res, P.ln2w[layer], P.ln2b[layer], T)
            timed("MLP up product", K.matmul_forward, B.h, B.ln, P.fcw[layer], P.fcb[layer], T, False)
            timed("GELU", gelu, B.hg, B.h, T)
            timed("residual copy", copy, B.x, B.res, T)
            timed("MLP down product", K.matmul_forward, B.x, B.hg, P.fcprojw[layer], P.fcprojb[layer], T, True)
        timed("layernorm", layernorm, B.ln, B.mean, B.rstd, B.x, P.lnfw, P.lnfb, T)
        timed("logits (last position)", K.gemm, K.NOTRANS, K.TRANS, 1, V, C, 1.0, B.ln[T - 1:], P.wte, 0.0, logits)

    if after:
        W = decode_weights(P, float32_forms(P))
        state = DecodeState.create(1, L, H, config.ctx, C, V)

        def whole():
            PP.prompt_pass(W, P, state, range(1), tokens, H, buffers=B)
    else:
        workspace = Workspace.create(config, 1, 1)

        def whole():
            with threaded_blas():
                forward_logits(params, config, tokens, workspace, last_only=True)

    with parallel_threads(T):
        one_pass()  # compiles
        whole()
        wholes = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            whole()
            wholes.append(time.perf_counter() - t0)
        spent = dict.fromkeys(KINDS, 0.0)
        for _ in range(spec["repeats"]):
            one_pass()
    with threaded_blas():
        a, b = np.ones((2048, 2048), np.float32), np.ones((2048, 2048), np.float32)
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
    p.add_argument("--children", type=int, default=2, help="children per variant (the fastest whole pass shown)")
    add_report_args(p, "Prompt pass profile")
    a = p.parse_args()
    if serve_child(a, {"profile": child_profile}):
        return 0
    env = child_env(a.unset_openblas_env)
    out = ["A long prompt's pass through GPT-2 small (random weights) on n threads: each kernel called in the "
           f"pass's order on its shapes and timed, mean of {a.repeats} passes per kernel kind (ms and share of "
           "their sum), and the whole pass (median of the child's passes), from the child (of "
           f"{a.children} per variant, alternating) with the fastest whole pass. Before: training's forward pass "
           "as the sampler ran it (`forward_logits`: products on n BLAS threads, the rest on one thread). After: "
           "`core.prompt_pass` (row-wise kernels as prange over rows, attention as prange over heads). The "
           "machine was shared with other work while this ran.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`", ""]
    for T in parse_int_list(a.tokens_list):
        for n in parse_int_list(a.threads_list):
            results: dict[str, list[dict]] = {}
            for rep in range(a.children):  # the variants alternate, the order flipping
                for variant in (VARIANTS if rep % 2 == 0 else VARIANTS[::-1]):
                    spec = {"kind": "profile", "tokens": T, "threads": n, "repeats": a.repeats, "variant": variant}
                    results.setdefault(variant, []).append(run_child(SCRIPT, spec, env, timeout=1800))
            best = {v: min(rs, key=lambda r: r["pass"]) for v, rs in results.items()}
            rows = []
            for kind in KINDS:
                rows.append([kind] + [x for v in VARIANTS for x in (
                    fmt(1e3 * best[v]["kernels"][kind]),
                    f"{100 * best[v]['kernels'][kind] / sum(best[v]['kernels'].values()):.1f}%")])
            rows.append(["sum of the kernels"] + [x for v in VARIANTS for x in (
                fmt(1e3 * sum(best[v]["kernels"].values())), "100%")])
            rows.append(["the whole pass"] + [x for v in VARIANTS for x in (fmt(1e3 * best[v]["pass"]), "-")])
            line = []
            for v in VARIANTS:
                gflops = flops(T) / best[v]["pass"] / 1e9
                line.append(f"{v}: {gflops:.1f} GFLOP/s, {100 * gflops * 1e9 / best[v]['peak']:.0f}% of the matmul "
                            f"peak ({best[v]['peak'] / 1e9:.0f} GFLOP/s)")
            out += [f"{T} tokens, {n} thread(s); over the whole pass, " + "; ".join(line) + ":", "",
                    table(["kernel", "before ms", "share", "after ms", "share"], rows), ""]
            print(f"{T} tokens, {n} threads: " + ", ".join(f"{v} {1e3 * best[v]['pass']:.0f} ms" for v in VARIANTS),
                  flush=True)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
