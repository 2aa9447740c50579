"""The float32 decoding step's products on GPT-2 small's shapes, in one process: the
decoder's panels (core/panel_dots.py, through decode_kernels.rows_times_weight) against
a dot product per output on rows of outputs (the decoder's way until session 4, kept
here as the reference) and against a plain prange sum of the panels' bytes (what
reading the weights costs at all), for N sample rows at once on each thread count.

A step's products are the 48 linear layers' (12 layers of qkv, attention projection,
MLP up and down) and the tied head's (50257 x 768): 124M weights, 494 MB as panels.
Random weights (speed does not depend on the values). The variants and thread counts
take turns call by call (the order flipping each repeat); medians (min) in ms.

Run: python benchmarks/bench_decode_products.py --write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from numba import njit, prange

from benchmarks.common import add_report_args, command_line, machine_lines, parse_int_list, report, table
from cllm.core.decode_kernels import rows_times_weight
from cllm.core.kernels import JIT
from cllm.core.panel_dots import panel_form
from cllm.core.threads import parallel_threads

F = np.float32
C, V, LAYERS = 768, 50257, 12
SHAPES = ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))  # (outputs, inputs) of each layer's products


@njit(**JIT)
def _dot_rows(out, x, wt, N, j0, j1):
    """out[n, j] = <x[n], wt[j]> for j0 <= j < j1, one weight row read for all N rows."""
    for j in range(j0, j1):
        w = wt[j]
        for n in range(N):
            xn = x[n]
            v = F(0)
            for i in range(w.shape[0]):
                v += xn[i] * w[i]
            out[n, j] = v


@njit(parallel=True, **JIT)
def dots_on_rows(out, x, wt, N, tasks):
    width = (wt.shape[0] + tasks - 1) // tasks
    for t in prange(tasks):
        _dot_rows(out, x, wt, N, min(t * width, wt.shape[0]), min((t + 1) * width, wt.shape[0]))


@njit(fastmath=True, nogil=True, cache=True)
def _sum(a):
    s = a[0] - a[0]
    for i in range(a.shape[0]):
        s += a[i]
    return s


@njit(parallel=True, fastmath=True, nogil=True, cache=True)
def stream(a, tasks):
    """A sum of a (1-D) in `tasks` contiguous parts: reading it at the memory's rate."""
    width = (a.shape[0] + tasks - 1) // tasks
    total = 0.0
    for t in prange(tasks):
        total += _sum(a[t * width:min((t + 1) * width, a.shape[0])])
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples-list", default="1,4", help="sample rows at once")
    p.add_argument("--threads-list", default="1,all", help="thread counts ('all' = every core)")
    p.add_argument("--repeats", type=int, default=11, help="calls of each variant per case")
    add_report_args(p, "Decoding products in panels")
    a = p.parse_args()
    samples, threads = parse_int_list(a.samples_list), parse_int_list(a.threads_list)
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(shape, F) * F(0.02) for _ in range(LAYERS) for shape in SHAPES]
    rows.append(rng.standard_normal((V, C), F) * F(0.02))
    panels = [panel_form(w) for w in rows]
    empty = np.empty(0, F)
    nbytes = sum(w.nbytes for w in panels)
    xs = {(N, ic): rng.standard_normal((N, ic), F) for N in samples for ic in (C, 4 * C)}
    outs = {(N, oc): np.empty((N, oc), F) for N in samples for oc in (C, 3 * C, 4 * C, V)}

    def run_panels(N: int, t: int) -> None:
        for w, wp in zip(rows, panels, strict=True):
            rows_times_weight(outs[(N, w.shape[0])], xs[(N, w.shape[1])], wp, empty, empty, N, False, t)

    def run_rows(N: int, t: int) -> None:
        for w in rows:
            dots_on_rows(outs[(N, w.shape[0])], xs[(N, w.shape[1])], w, N, t)

    def run_stream(N: int, t: int) -> None:
        for wp in panels:
            stream(wp.reshape(-1), t)

    variants = {"sum of the panels' bytes": run_stream, "dot per output on rows (reference)": run_rows,
                "panels (the decoder)": run_panels}
    cases = [(N, t) for N in samples for t in threads]
    times: dict = {(name, case): [] for name in variants for case in cases}
    for N, t in cases:  # compile and warm
        with parallel_threads(t, t):  # the decoder's threading layer and thread count
            for f in variants.values():
                f(N, t)
    for rep in range(a.repeats):
        for N, t in cases:
            with parallel_threads(t, t):
                order = list(variants.items())
                for name, f in order[::-1] if rep % 2 else order:
                    start = time.perf_counter()
                    f(N, t)
                    times[(name, (N, t))].append(time.perf_counter() - start)

    def cell(v: list[float]) -> str:
        v = sorted(v)
        return f"{1e3 * v[len(v) // 2]:.2f} ({1e3 * v[0]:.2f})"

    headers = ["ms per step"] + [f"{N} row{'s' if N > 1 else ''}, {t} thread{'s' if t > 1 else ''}" for N, t in cases]
    body = [[name] + [cell(times[(name, case)]) for case in cases] for name in variants]
    out = [f"The products of one decoding step on GPT-2 small's shapes ({nbytes / 1e6:.0f} MB of panels), "
           f"medians (min) of {a.repeats} calls, the variants taking turns in one process.", ""]
    out += machine_lines() + [f"- command: `{command_line()}`", "", table(headers, body)]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
