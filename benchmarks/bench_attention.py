"""Attention's kernels alone: forward and backward GFLOP/s of each pair at each head size
and context, on 1 and 2 threads, against the matmul peak measured in the same run.

What is timed: one sequence's causal attention (`--heads` heads of the head size, qkv
random normal, no dropout unless --dropout) through core/attention_kernels.py's pair
for the context (the kept-probabilities pair up to `SHORT_ATTENTION_MAX_CTX`, the tiled
one beyond; --pair forces one), each kernel called `reps` times in a compiled loop
(no Python between calls), the backward after a forward filled its inputs. On n threads,
n Python threads run the loop at once, each on its own buffers (the kernels release the
GIL), as a training step's shards do; the rate is their total work over the wall time.

FLOPs: the causal products' useful work, as FlashAttention counts it: forward 4 * hs *
T(T+1)/2 per head (Q K^T and P V), backward twice that (dV, dP, dQ, dK); the
recomputed scores of the tiled backward and the masked halves the kept-probabilities pair
computes are not counted, so pairs and versions compare on the same work. Exponentials
and the softmax count nothing. The peak: numpy's float32 2048^3 matmul on the same thread
count (bench_train.py's), best of a few, in the same process.

A/B: --variant NAME=PATH adds an attention_kernels.py file (an older copy, say) loaded
from PATH as a module of its own; every case runs the variants alternately, --rounds
times, and reports the medians.

    python benchmarks/bench_attention.py
    python benchmarks/bench_attention.py --variant before=/tmp/before/attention_kernels.py --ctx 1024
    python benchmarks/bench_attention.py --write
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    add_report_args,
    check_tree,
    command_line,
    concurrent_seconds,
    machine_lines,
    parse_int_list,
    report,
    table,
)

SECTION = "Attention kernels alone"
HERE = Path(__file__).resolve().parent.parent / "core" / "attention_kernels.py"


def load_variant(name: str, path: Path):
    """The attention_kernels module at `path`, loaded under a name of its own."""
    if path.resolve() == HERE:
        from cllm.core import attention_kernels
        return attention_kernels
    spec = importlib.util.spec_from_file_location(f"attention_variant_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _signatures():
    """The kernels' signatures for the benchmark's float32 buffers, and the loops' own."""
    from numba import types

    f2, f3, i64, f64 = types.float32[:, ::1], types.float32[:, :, ::1], types.int64, types.float64
    kernels = dict(tiled_forward=types.void(f2, f2, f3, f2, i64, i64, f64, i64),
                   tiled_backward=types.void(f2, f3, f2, f2, f2, f2, i64, i64, f64, i64),
                   short_forward=types.void(f2, f3, f2, f2, i64, i64, f64, i64),
                   short_backward=types.void(f2, f2, f2, f2, f3, i64, i64, f64, i64))
    return kernels, {name: types.void(i64, types.FunctionType(sig), *sig.args) for name, sig in kernels.items()}


def _loops() -> dict:
    """Compiled loops calling a kernel (passed by address, so the loop is compiled once and
    cached whatever kernel it calls) `reps` times, without the GIL."""
    from numba import njit

    _, loops = _signatures()

    @njit(loops["tiled_forward"], nogil=True, cache=True)
    def tiled_forward(reps, f, out, lse, tiles, qkv, n_head, T, p, key):
        for _ in range(reps):
            f(out, lse, tiles, qkv, n_head, T, p, key)

    @njit(loops["tiled_backward"], nogil=True, cache=True)
    def tiled_backward(reps, f, dqkv, tiles, dout, qkv, out, lse, n_head, T, p, key):
        for _ in range(reps):
            f(dqkv, tiles, dout, qkv, out, lse, n_head, T, p, key)

    @njit(loops["short_forward"], nogil=True, cache=True)
    def short_forward(reps, f, out, att, scratch, qkv, n_head, T, p, key):
        for _ in range(reps):
            f(out, att, scratch, qkv, n_head, T, p, key)

    @njit(loops["short_backward"], nogil=True, cache=True)
    def short_backward(reps, f, dqkv, datt, dout, qkv, att, n_head, T, p, key):
        for _ in range(reps):
            f(dqkv, datt, dout, qkv, att, n_head, T, p, key)

    return dict(tiled_forward=tiled_forward, tiled_backward=tiled_backward, short_forward=short_forward,
                short_backward=short_backward)


def drivers(module, loops: dict) -> dict:
    """pair -> (forward loop, backward loop) calling `module`'s kernels."""
    import functools

    kernels, _ = _signatures()
    functions = dict(tiled_forward=module.attention_forward, tiled_backward=module.attention_backward,
                     short_forward=module.short_attention_forward, short_backward=module.short_attention_backward)
    bound = {}
    for name, f in functions.items():
        f.compile(kernels[name])
        bound[name] = functools.partial(loops[name], f=f)
    return dict(tiled=(bound["tiled_forward"], bound["tiled_backward"]),
                short=(bound["short_forward"], bound["short_backward"]))


class Case:
    """One thread's buffers for one sequence of T positions, n_head heads of hs."""

    def __init__(self, pair: str, T: int, n_head: int, hs: int, seed: int) -> None:
        import numpy as np

        from cllm.core.layout import ATT_KEY_BLOCK, ATT_QUERY_BLOCK

        rng = np.random.default_rng(seed)
        C = n_head * hs
        self.pair, self.T, self.n_head = pair, T, n_head
        self.qkv = rng.standard_normal((T, 3 * C), dtype=np.float32)
        self.dout = rng.standard_normal((T, C), dtype=np.float32)
        self.out = np.zeros((T, C), np.float32)
        self.dqkv = np.zeros((T, 3 * C), np.float32)
        if pair == "tiled":
            self.lse = np.zeros((n_head, T), np.float32)
            self.tiles = np.zeros((2, min(ATT_QUERY_BLOCK, T), min(ATT_KEY_BLOCK, T)), np.float32)
        else:
            self.att = np.zeros((n_head, T, T), np.float32)
            self.scratch = np.zeros((T, T), np.float32)

    def calls(self, loops, p: float):
        """(forward(reps), backward(reps)) for this case."""
        f, b = loops[self.pair]
        T, H = self.T, self.n_head
        if self.pair == "tiled":
            return (lambda reps: f(reps, out=self.out, lse=self.lse, tiles=self.tiles, qkv=self.qkv, n_head=H, T=T,
                                   p=p, key=7),
                    lambda reps: b(reps, dqkv=self.dqkv, tiles=self.tiles, dout=self.dout, qkv=self.qkv, out=self.out,
                                   lse=self.lse, n_head=H, T=T, p=p, key=7))
        return (lambda reps: f(reps, out=self.out, att=self.att, scratch=self.scratch, qkv=self.qkv, n_head=H, T=T,
                               p=p, key=7),
                lambda reps: b(reps, dqkv=self.dqkv, datt=self.scratch, dout=self.dout, qkv=self.qkv, att=self.att,
                               n_head=H, T=T, p=p, key=7))


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _seconds(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def causal_flops(T: int, n_head: int, hs: int) -> float:
    """The forward's useful FLOPs (the backward's are twice these)."""
    return 4.0 * hs * n_head * T * (T + 1) / 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ctx", type=parse_int_list, default=[64, 128, 256, 1024])
    p.add_argument("--head-sizes", type=parse_int_list, default=[32, 64])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=parse_int_list, default=[1, 2])
    p.add_argument("--pair", choices=["auto", "short", "tiled"], default="auto")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.05, help="target seconds per timing")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="another attention_kernels.py to compare (alternating)")
    add_report_args(p, SECTION)
    a = p.parse_args()
    check_tree()

    import scipy.linalg.cython_blas  # noqa: F401  # scipy's OpenBLAS (the kernels'), loaded before the limit

    from cllm.core.layout import SHORT_ATTENTION_MAX_CTX
    from cllm.core.threads import single_threaded_blas

    variants = {"this": HERE} | {v.split("=", 1)[0]: Path(v.split("=", 1)[1]) for v in a.variant}
    compiled = _loops()
    loops = {name: drivers(load_variant(name, path), compiled) for name, path in variants.items()}
    rows, peaks = [], {}
    for n in a.threads:
        peaks[n] = matmul_peak(n)
        print(f"matmul peak, {n} thread(s): {peaks[n]:.1f} GFLOP/s", flush=True)
    with single_threaded_blas():
        for hs in a.head_sizes:
            for T in a.ctx:
                pair = a.pair if a.pair != "auto" else ("short" if T <= SHORT_ATTENTION_MAX_CTX else "tiled")
                flops = causal_flops(T, a.heads, hs)
                for n in a.threads:
                    cases = [Case(pair, T, a.heads, hs, seed) for seed in range(n)]
                    calls = {name: [c.calls(loops[name], a.dropout) for c in cases] for name in variants}
                    reps = {}
                    for name in variants:  # compile, fill the forward's outputs, size the loops
                        for fwd, bwd in calls[name]:
                            fwd(1), bwd(1)
                        reps[name] = [max(1, int(a.seconds / max(_seconds(lambda f=f: f(1)), 1e-6)))
                                      for f in calls[name][0]]
                    times: dict = {name: ([], []) for name in variants}
                    for _ in range(a.rounds):
                        for name in variants:
                            for d in range(2):
                                r = reps[name][d]
                                wall = concurrent_seconds([lambda c=c, r=r, d=d: c[d](r) for c in calls[name]])
                                times[name][d].append(wall / r)
                    for name in variants:
                        fwd_s, bwd_s = (statistics.median(t) for t in times[name])
                        gf = n * flops / fwd_s / 1e9, n * 2 * flops / bwd_s / 1e9
                        rows.append([hs, T, pair, n, name,
                                     f"{1e3 * fwd_s:.3f}", f"{gf[0]:.1f} ({100 * gf[0] / peaks[n]:.0f}%)",
                                     f"{1e3 * bwd_s:.3f}", f"{gf[1]:.1f} ({100 * gf[1] / peaks[n]:.0f}%)"])
                        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    lines = [
        "Attention's kernels alone (benchmarks/bench_attention.py): one sequence's causal attention, "
        f"{a.heads} heads, forward and backward each in a compiled loop; on n threads n sequences at once. "
        "GFLOP/s of the useful causal products (forward 4 hs T(T+1)/2 per head, backward twice that), "
        "in brackets against numpy's float32 2048^3 matmul on the same threads, measured in the same run; "
        f"median of {a.rounds} rounds" + (", variants alternating" if len(variants) > 1 else "") + ".",
        "",
        *machine_lines(),
        f"- command: `{command_line()}`",
        "- matmul peak: " + ", ".join(f"{n} thread(s) {g:.1f} GFLOP/s" for n, g in peaks.items()),
        "",
        table(["head size", "ctx", "pair", "threads", "kernels", "fwd ms", "fwd GFLOP/s (% of peak)", "bwd ms",
               "bwd GFLOP/s (% of peak)"], rows),
    ]
    if len(variants) > 1:
        lines.insert(1, "\nVariants: " + ", ".join(f"{k} = {v}" for k, v in variants.items()))
    return report(lines, a)


if __name__ == "__main__":
    sys.exit(main())
