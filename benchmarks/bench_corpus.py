"""Large corpora: preparation, the second start, and training from memory-mapped tokens.

The corpus is built from text already on the machine: the Python files, stubs and
documents (*.py, *.pyi, *.rst, *.md, *.txt) of the standard library and of the
installed packages, copied into one folder in a fixed order until --size-mb; a quarter
of it (the first files) is a second, smaller corpus.

Measured, each in a child process (peak memory: ru_maxrss of that process alone):
- `cllm prepare` with the char and the BPE tokenizer, on the corpus and its quarter:
  seconds, MB/s over the whole preparation (checking, tokenizer training, encoding), peak
  memory. The same peak on both sizes is what "bounded" means.
- `cllm train CORPUS --steps 1` twice with an empty dataset cache: the first prepares, the
  second finds the dataset; launch -> first step of each (process wall time less the
  command's own time after its first step), against the same on a small corpus
  (tinyshakespeare).
- Training: tokens/s and resident memory (VmRSS, sampled every 25 steps) over a run of
  --train-steps steps on the quarter corpus, from the prepared dataset (memory-mapped
  shards) and from today's in-memory path (the corpus read as one text and encoded at the
  start); same model, same settings.

    /work/notes/bin/bench python benchmarks/bench_corpus.py --size-mb 300 --write

A corpus built once outside the repository can be measured in parts that fit separate
runs, e.g. `--corpus /work/corpus-1g --small /work/corpus-100m --parts prepare
--tokenizers bpe`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    MB,
    add_report_args,
    check_ok,
    check_tree,
    child_env,
    cllm_cmd,
    command_line,
    config_label,
    fmt_range,
    machine_lines,
    report,
    run_child,
    run_cmd,
    serve_child,
    stats,
    table,
)

SCRIPT = Path(__file__).resolve()
SUFFIXES = {".py", ".pyi", ".rst", ".md", ".txt"}


def text_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["purelib"]), Path(paths["platlib"])]
    return list(dict.fromkeys(r.resolve() for r in roots if r.is_dir()))


def build_corpus(target: Path, size: int) -> list[Path]:
    """Copies text files into `target` (flat names, fixed order) until `size` bytes;
    returns the copies in order."""
    target.mkdir(parents=True)
    copied: list[Path] = []
    total = 0
    for root in text_roots():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                path = Path(folder) / name
                if path.suffix not in SUFFIXES or path.is_symlink():
                    continue
                try:
                    data = path.read_bytes()
                    data.decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if not data.strip() or b"\0" in data:
                    continue
                copy = target / f"{len(copied):06d}-{name}"
                copy.write_bytes(data)
                copied.append(copy)
                total += len(data)
                if total >= size:
                    return copied
    return copied


def vm_rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def train_child(spec: dict) -> dict:
    """Child: `steps` steps of the nanoGPT CPU config from a prepared dataset or from the
    corpus read and encoded in memory; tokens/s and VmRSS over the run."""
    from cllm.core.config import ModelConfig, TrainConfig
    from cllm.core.corpus import Corpus
    from cllm.core.dataset import Dataset, open_dataset
    from cllm.core.events import StepEvent
    from cllm.core.model import GPT
    from cllm.core.trainer import Trainer

    cfg = dict(CONFIGS["nanogpt-cpu"])
    batch = cfg.pop("batch")
    dataset = open_dataset(Path(spec["dataset"]))
    assert dataset.tokenizer is not None  # prepared by cllm prepare: it has one
    t0 = time.perf_counter()
    corpus: Corpus | Dataset
    if spec["mode"] == "memmap":
        corpus = dataset
    else:  # today's path: one text in memory, encoded whole at the start
        text = "\n\n".join(Path(f["path"]).read_text(encoding="utf-8") for f in dataset.files
                           if f["split"] != "skipped")
        corpus = Corpus("in-memory", text, "", None)
    model = GPT.create(ModelConfig(vocab_size=dataset.tokenizer.vocab_size, **cfg), dataset.tokenizer, seed=1)
    trainer = Trainer(model, corpus, TrainConfig(steps=spec["steps"], batch=batch, eval_interval=0,
                                                 checkpoint_minutes=0, threads=spec["threads"]))
    start_s = time.perf_counter() - t0
    samples, rates = [], []

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            if event.step > 1:
                rates.append(event.tokens_per_s)
            if event.step % 25 == 0 or event.step == 1:
                samples.append([event.step, vm_rss()])

    trainer.run(on_event)
    rates.sort()
    return {"start_s": start_s, "tokens_per_s": rates[len(rates) // 2], "rss": samples}


def prepare_run(corpus: Path, out: Path, tokenizer: str, env: dict, cores: int | None = None) -> dict:
    """`tokenizer` "bpe-tokenizers": BPE encoded by the tokenizers library alone (the
    reference for tiktoken's encoding). `cores`: run on the first that many cores only
    (taskset), else on all."""
    extra = ["--vocab-size", "4096"] if tokenizer.startswith("bpe") or tokenizer == "word" else []
    if tokenizer == "bpe-tokenizers":
        env = {**env, "CLLM_TIKTOKEN": "0"}
    pin = ["taskset", "-c", f"0-{cores - 1}"] if cores else []
    r = run_cmd(pin + cllm_cmd("prepare", corpus, "-o", out, "--tokenizer", tokenizer[:3] if tokenizer.startswith("bpe")
                         else tokenizer, *extra, "--json"), env)
    j = check_ok(r, f"cllm prepare ({tokenizer})")
    return {"seconds": j["seconds"], "mb": j["bytes"] / MB, "rate": j["bytes"] / MB / j["seconds"],
            "cpu": j["cpu_seconds"], "peak": r["maxrss"] / MB, "tokens": j["train_tokens"] + j["val_tokens"]}


def start_run(corpus: Path, work: Path, env: dict, threads: int) -> dict:
    cfg = CONFIGS["nanogpt-cpu"]
    r = run_cmd(cllm_cmd("train", corpus, "-o", work / "start.cllm", "--layers", cfg["n_layer"], "--heads",
                         cfg["n_head"], "--embd", cfg["n_embd"], "--ctx", cfg["ctx"], "--batch", cfg["batch"],
                         "--steps", 1, "--eval-interval", 0, "--threads", threads, "--force", "--json"), env)
    j = check_ok(r, "cllm train --steps 1")
    # launch -> first step: the process's wall time less what came after the first step
    return {"first": r["wall_s"] - j["elapsed"] + j["time_to_first_step"], "wall": r["wall_s"],
            "peak": r["maxrss"] / MB}


def describe(corpus: Path) -> tuple[int, float]:
    files = [p for p in corpus.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / MB


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size-mb", type=float, default=300, help="size of the corpus built from the machine's text")
    p.add_argument("--corpus", type=Path, help="an existing corpus folder instead of building one (kept)")
    p.add_argument("--small", type=Path, help="the smaller corpus beside it (default: the first quarter of its files)")
    p.add_argument("--parts", default="prepare,start,train",
                   help="which measurements, comma-separated: prepare, start, train (to fit separate runs)")
    p.add_argument("--tokenizers", default="char,bpe",
                   help="the tokenizers `prepare` measures, comma-separated: char, word, bpe, bpe-tokenizers (BPE "
                        "encoded by the tokenizers library alone, the reference)")
    p.add_argument("--cores", default="",
                   help="core counts `prepare` runs on, comma-separated, each pinned with taskset (default: all)")
    p.add_argument("--sizes", default="small,large",
                   help="the corpora `prepare` measures, comma-separated: small (--small), large (--corpus)")
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--train-repeats", type=int, default=2, help="runs of each training mode, alternating")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-bpe", action="store_true", help="no BPE preparations (the slow part)")
    add_report_args(p, "Large corpora")
    a = p.parse_args()
    if serve_child(a, train_child):
        return 0
    parts = set(a.parts.split(","))
    tokenizers = [t for t in a.tokenizers.split(",") if not (a.skip_bpe and t == "bpe")]
    work = Path(tempfile.mkdtemp(prefix="cllm-bench-corpus-"))
    env = child_env(a.unset_openblas_env, {"CLLM_CACHE_DIR": str(work / "cache")})
    out = ["Large corpora: preparing, starting again, and training from memory-mapped tokens (one child process "
           "per measurement), under /work/notes/bin/bench: nothing else ran (2-core AMD EPYC Zen 4, family 25 "
           "model 17, KVM guest, shared between measurements): compare within this section only.", ""]
    out += machine_lines(env) + [f"- command: `{command_line()}`", ""]
    try:
        if a.corpus:
            corpus = a.corpus
        else:
            build_corpus(work / "corpus", int(a.size_mb * MB))
            corpus = work / "corpus"
        small = a.small
        if small is None:
            small = work / "quarter"
            small.mkdir()
            listed = sorted(f for f in corpus.rglob("*") if f.is_file())
            for i, f in enumerate(listed[: len(listed) // 4]):
                shutil.copy(f, small / f"{i:06d}-{f.name}")
        (n_big, mb_big), (n_small, mb_small) = describe(corpus), describe(small)
        out += [f"Corpus {corpus.name}: {n_big:,} files, {mb_big:,.0f} MB of *.py, *.pyi, *.rst, *.md, *.txt "
                f"from the standard library and site-packages; the smaller corpus {small.name}: {n_small:,} files, "
                f"{mb_small:,.0f} MB.", ""]
        print(out[-2], flush=True)

        if "prepare" in parts:
            rows = []
            sizes = [c for c, size in ((small, "small"), (corpus, "large")) if size in a.sizes.split(",")]
            core_counts: list[int | None] = [int(n) for n in a.cores.split(",") if n] or [None]
            for tokenizer, c, cores in itertools.product(tokenizers, sizes, core_counts):
                if tokenizer == "bpe-tokenizers" and c is not small:
                    continue
                r = prepare_run(c, work / f"ds-{tokenizer}-{c.name}", tokenizer, env, cores)
                print(tokenizer, c.name, cores, r, flush=True)
                label = {"bpe": "bpe (vocab 4096, 32 MB sample)", "word": "word (vocab 4096, 32 MB sample)",
                         "bpe-tokenizers": "bpe, encoded by tokenizers alone (CLLM_TIKTOKEN=0)"}
                rows.append([label.get(tokenizer, tokenizer), str(cores or "all"),
                             f"{r['mb']:,.0f}", f"{r['tokens'] / 1e6:,.1f}", f"{r['seconds']:.1f}",
                             f"{r['rate']:.1f}", f"{r['cpu']:.1f}", f"{r['mb'] / r['cpu']:.1f}", f"{r['peak']:.0f}"])
                shutil.rmtree(work / f"ds-{tokenizer}-{c.name}", ignore_errors=True)
            out += ["`cllm prepare` (checking, tokenizer, encoding, writing; wall seconds of the command's own "
                    "clock; CPU seconds of the process, every thread and worker process; peak memory of the "
                    "largest process):", "",
                    table(["tokenizer", "cores", "MB", "M tokens", "seconds", "MB/s", "CPU s", "MB per CPU s",
                           "peak memory MiB"], rows), ""]

        if "start" in parts:
            rows = []
            tiny = work / "tiny"
            tiny.mkdir()
            shutil.copy(DEFAULT_CORPUS, tiny / DEFAULT_CORPUS.name)
            for c in (tiny, corpus):
                first, second = (start_run(c, work, env, a.threads) for _ in range(2))
                print(c.name, first, second, flush=True)
                rows.append([f"{c.name} ({describe(c)[1]:,.1f} MB)", f"{first['first']:.1f}",
                             f"{second['first']:.2f}", f"{second['wall']:.2f}", f"{second['peak']:.0f}"])
            prepared = next(d for d in (work / "cache").iterdir() if d.is_dir() and not d.is_symlink()
                            and (d / "manifest.json").exists() and describe(d)[1] > 100)
            direct = start_run(prepared, work, env, a.threads)  # the dataset folder: no walk
            rows.append(["its dataset folder (`cllm train DIR`)", "-", f"{direct['first']:.2f}",
                         f"{direct['wall']:.2f}", f"{direct['peak']:.0f}"])
            out += ["`cllm train CORPUS --steps 1` (char, nanoGPT CPU config), twice with an empty dataset cache: "
                    "seconds from the launch of the process to its first step (the first start prepares the "
                    "dataset, the second finds it), the second start's process wall time and peak memory:", "",
                    table(["corpus", "1st start: first step", "2nd start: first step", "2nd: process wall",
                           "2nd: peak MiB"], rows), ""]

        if "train" in parts:
            dataset = work / "ds-train"
            prepare_run(small, dataset, "char", env)
            runs: dict[str, list[dict]] = {"memmap": [], "in-memory": []}
            for _ in range(a.train_repeats):  # alternating, so that any other load falls on both
                for mode, results in runs.items():
                    r = run_child(SCRIPT, {"mode": mode, "dataset": str(dataset), "steps": a.train_steps,
                                           "threads": a.threads}, env)
                    print(mode, r, flush=True)
                    results.append(r)
            rows = []
            for mode, results in runs.items():
                rss = [[v for _, v in r["rss"]] for r in results]
                rows.append([mode, f"{stats([r['start_s'] for r in results])['median']:.1f}",
                             fmt_range(stats([r["tokens_per_s"] for r in results])),
                             f"{max(x[0] for x in rss) / MB:.0f}", f"{max(x[-1] for x in rss) / MB:.0f}",
                             f"{max(max(x) for x in rss) / MB:.0f}"])
            out += [f"Training {config_label(CONFIGS['nanogpt-cpu'])} for {a.train_steps} steps on {a.threads} "
                    f"threads on {small.name} (char tokens): memory-mapped shards against the corpus read and "
                    f"encoded in memory (the path before datasets), {a.train_repeats} runs of each, alternating. "
                    f"Start = building the trainer (reading/encoding the corpus), median; tokens/s = each run's "
                    f"median over its steps, median (min-max) of the runs; VmRSS at step 1, at the end and its "
                    f"maximum (sampled every 25 steps), MiB, the largest of the runs:", "",
                    table(["tokens from", "start s", "tokens/s", "RSS step 1", "RSS end", "RSS max"], rows)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
