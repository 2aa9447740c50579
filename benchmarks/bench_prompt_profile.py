"""Where a long prompt's first token goes: GPT-2 small (bench_gpt2.py's model: random
weights written by transformers, GPT-2's vocabulary), a prompt of the first --tokens-list
tokens of tiny Shakespeare, on 1 and every thread, against CTranslate2's float32 first
token on the same prompt and threads in the same run.

CLLM's side, in one child per thread count and prompt length (a warm process: one
generation first, so kernels are compiled and the decoder's copies of the weights made):

- the first token: `generate_samples` (greedy, one sample) from call to first piece,
  median of --repeats;
- its parts, each timed alone, mean of --repeats: tokenizing the prompt, the decoder's
  set-up (`Decoder(model)`: the key/value caches and the prompt pass's buffers), and the
  prompt pass step by step
  (`core.prompt_pass`'s own clock around each kernel call, summed by kind over the layers;
  the pass's last step is the last position's logits), and the first token's pick and
  text; "rest" is the first token less these parts. The check of the decoder's kept weight
  forms against the weights is timed too, though it is no part of the first token (the
  float32 prompt pass does not read them; the first decoding step makes the check);
- the float32 matmul peak on the same threads (numpy's 2048^3 product, best of 5), and
  the pass's GFLOP/s against it (`flops`: the arithmetic the pass does, the last layer
  past its keys and values for the last row only): 2 x (non-embedding weights) x T for
  the products, 2 x 2 x T^2/2 x C per layer for attention, 2 x C x V for the logits.

CTranslate2's side (`pip install ctranslate2`, benchmark-only; its rows are skipped
without it): `Generator.generate_tokens` on the converted model (bench_generate_limits.py
makes it), warmed up on the same prompt, first token median of --repeats. The CLLM and
CTranslate2 children alternate, the order flipping each repeat.

Run: python benchmarks/bench_prompt_profile.py --write
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_gpt2 import GPT2_SMALL, prompt_text
from benchmarks.common import (
    DEFAULT_CORPUS,
    ROOT,
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
SETUP = ("tokenize", "decoder set-up")
CHECK = "the weight forms' check (at the second token)"
PICK = "token pick and text"


def child_cllm(spec: dict) -> dict:
    """The first token and its parts, see the module docstring."""
    os.environ["NUMBA_NUM_THREADS"] = str(spec["threads"])  # CLLM's thread cap, read before numba loads
    import numpy as np

    from cllm.core.config import SampleConfig
    from cllm.core.model_file import load_model
    from cllm.core.precompile import compile_kernels
    from cllm.core.prompt_pass import prompt_pass
    from cllm.core.sampler import Decoder, decoder_weights, generate_samples, pick_token, prompt_tokens
    from cllm.core.text_stream import TextStream
    from cllm.core.threads import threaded_blas

    compile_kernels()
    model = load_model(spec["model"]).model
    tok = model.tokenizer
    prompt = prompt_text(spec, tok.encode, tok.decode)
    config = SampleConfig(max_tokens=1, temperature=0)
    list(generate_samples(model, prompt, config))  # warm: compiled, pages touched
    decoder_weights(model)  # the kept weight forms made (a one-token generation makes no decoding step)
    repeats = spec["repeats"]
    firsts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        next(generate_samples(model, prompt, config))
        firsts.append(time.perf_counter() - t0)

    spent: dict[str, float] = {}

    def clock(kind: str, seconds: float) -> None:
        spent[kind] = spent.get(kind, 0.0) + seconds / repeats

    def timed(kind, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        clock(kind, time.perf_counter() - t0)
        return out

    P = model.layout.views(model.params)
    for _ in range(repeats):
        ids = np.array(timed("tokenize", prompt_tokens, tok, prompt), np.int32)
        decoder = timed("decoder set-up", Decoder, model)
        logits = prompt_pass(decoder.prompt_weights(), P, decoder.state, range(1), ids, model.config.n_head, 0,
                             decoder.buffers, clock)
        timed(CHECK, decoder_weights, model)
        decoder.close()  # as a generation ends: its caches and buffers go to the next decoder
        t0 = time.perf_counter()
        TextStream(tok, config.stop).push(pick_token(logits, config, np.random.default_rng(0)))
        clock(PICK, time.perf_counter() - t0)
    with threaded_blas():
        a, b = np.ones((2048, 2048), np.float32), np.ones((2048, 2048), np.float32)
        peak = 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            peak = max(peak, 2 * 2048 ** 3 / (time.perf_counter() - t0))
    return {"first": statistics.median(firsts), "firsts": firsts, "parts": spent, "peak": peak,
            "prompt_tokens": len(ids)}


def child_ct2(spec: dict) -> dict:
    """CTranslate2's float32 first token on the same prompt, median of `repeats`."""
    import ctranslate2  # benchmark-only (pyproject: no stubs, may be absent)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["folder"])
    ids = tok(prompt_text(spec, lambda t: tok(t)["input_ids"], tok.decode))["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    generator = ctranslate2.Generator(spec["ct2"], device="cpu", compute_type="float32",
                                      intra_threads=spec["threads"], inter_threads=1)
    for _ in generator.generate_tokens(tokens, max_length=1, sampling_topk=1):  # warm-up, the same prompt
        pass
    firsts = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        next(iter(generator.generate_tokens(tokens, max_length=1, sampling_topk=1, end_token=[])))
        firsts.append(time.perf_counter() - t0)
    return {"first": statistics.median(firsts), "firsts": firsts, "prompt_tokens": len(ids)}


def flops(T: int) -> float:
    """The arithmetic the pass does: every layer's products and causal attention over the
    T rows, but the last layer's past its keys and values for the last row only (the
    logits need no other), and the last position's logits."""
    c = GPT2_SMALL
    C, L = c["n_embd"], c["n_layer"]
    layer_weights = 3 * C * C + C * C + 8 * C * C
    layer = 2 * layer_weights * T + 2 * 2 * T * T / 2 * C
    last = 2 * 2 * C * C * T + 2 * (layer_weights - 2 * C * C) + 2 * 2 * T * C
    return (L - 1) * layer + last + 2 * C * c["vocab_size"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", default=str(ROOT / ".bench_data" / "gpt2-small"))
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--tokens-list", default="559,1000")
    p.add_argument("--threads-list", default="1,all")
    p.add_argument("--repeats", type=int, default=5, help="first tokens (and profiled passes) per child")
    p.add_argument("--children", type=int, default=1, help="children per engine (each row: the fastest child)")
    add_report_args(p, "Prompt pass profile")
    a = p.parse_args()
    if serve_child(a, {"cllm": child_cllm, "ct2": child_ct2}):
        return 0
    env = child_env(a.unset_openblas_env)
    work = Path(a.work)
    base = {"folder": str(work / "hf"), "model": str(work / "gpt2-small.cllm"), "ct2": str(work / "ct2-float32"),
            "corpus": a.corpus, "repeats": a.repeats}
    if not Path(base["model"]).exists() or not (Path(base["ct2"]) / "model.bin").exists():
        sys.exit(f"no model in {work}: make it with "
                 "`python benchmarks/bench_generate_limits.py --repeats 0 --threads-list 1`")
    engines = ["cllm"] + (["ct2"] if importlib.util.find_spec("ctranslate2") else [])
    out = ["Where a long prompt's first token goes on GPT-2 small (random weights written by transformers, GPT-2's "
           "vocabulary, a prompt of tiny Shakespeare), greedy, one sample, in a warm process; see "
           "benchmarks/bench_prompt_profile.py's docstring for how each part is timed. ms = mean over "
           f"{a.repeats} profiled first tokens (the first token itself: median of {a.repeats}), from the fastest of "
           f"{a.children} child(ren) per engine; CTranslate2 float32's first token in the same run.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`", ""]
    for T in parse_int_list(a.tokens_list):
        for n in parse_int_list(a.threads_list):
            results: dict[str, list[dict]] = {}
            for rep in range(a.children):
                for engine in (engines if rep % 2 == 0 else engines[::-1]):
                    spec = {**base, "kind": engine, "prompt_tokens": T, "threads": n}
                    results.setdefault(engine, []).append(run_child(SCRIPT, spec, env, timeout=1800))
            best = {e: min(rs, key=lambda r: r["first"]) for e, rs in results.items()}
            cllm = best["cllm"]
            parts = cllm["parts"]
            pass_kinds = [k for k in parts if k not in SETUP and k not in (PICK, CHECK)]
            pass_s = sum(parts[k] for k in pass_kinds)
            first = cllm["first"]
            rows = [[k, fmt(1e3 * parts[k]), f"{100 * parts[k] / first:.1f}%"] for k in SETUP]
            rows += [[f"pass: {k}", fmt(1e3 * parts[k]), f"{100 * parts[k] / first:.1f}%"] for k in pass_kinds]
            rows.append([PICK, fmt(1e3 * parts[PICK]), f"{100 * parts[PICK] / first:.1f}%"])
            counted = sum(parts[k] for k in parts if k != CHECK)
            rows.append(["rest (first token less the parts above)", fmt(1e3 * (first - counted)),
                         f"{100 * (first - counted) / first:.1f}%"])
            rows.append(["**the pass (its steps' sum)**", fmt(1e3 * pass_s), f"{100 * pass_s / first:.1f}%"])
            rows.append([CHECK, fmt(1e3 * parts[CHECK]), "(not in the first token)"])
            rows.append(["**CLLM first token**", fmt(1e3 * first), "100%"])
            if "ct2" in best:
                rows.append(["**CTranslate2 float32 first token**", fmt(1e3 * best["ct2"]["first"]),
                             f"{100 * best['ct2']['first'] / first:.0f}% of CLLM's"])
            gflops = flops(cllm["prompt_tokens"]) / pass_s / 1e9
            gflops_first = flops(cllm["prompt_tokens"]) / first / 1e9
            out += [f"{cllm['prompt_tokens']} tokens, {n} thread(s): the pass {gflops:.1f} GFLOP/s, "
                    f"{100 * gflops * 1e9 / cllm['peak']:.0f}% of the matmul peak ({cllm['peak'] / 1e9:.0f} GFLOP/s); "
                    f"over the whole first token {gflops_first:.1f} GFLOP/s, "
                    f"{100 * gflops_first * 1e9 / cllm['peak']:.0f}%:", "",
                    table(["part", "ms", "share of CLLM's first token"], rows), ""]
            print(f"{T} tokens, {n} threads: " + ", ".join(f"{e} first {1e3 * r['first']:.0f} ms"
                                                            for e, r in best.items()), flush=True)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
