"""Where a second start on a large prepared corpus spends its time, against a fair small one.

A 1 GB corpus's char vocabulary is thousands of symbols, tinyshakespeare's 65, so a
start on each builds a model of another size. The fair comparison is a small dataset
with the large one's tokenizer: built here from tinyshakespeare followed by every symbol
of the large dataset's vocabulary once, prepared with the char tokenizer (the script
checks that the two tokenizers are equal). Measured, alternating the datasets, each in a
fresh process:
- launch -> first step of `cllm train DATASET --steps 1` (as bench_corpus's start), for the
  tiny dataset (vocabulary 65), the fair small one, the large dataset's folder and, with
  --corpus, the large corpus by path (its cached dataset found through the source check);
- the same start's pieces timed in one process: imports, the manifest, opening the
  dataset (memory maps, tokenizer), loading the cached kernels, the trainer (the model's
  creation, the validation sample), the first batch, the first and second steps.

    /work/notes/bin/bench python benchmarks/bench_start_pieces.py \\
        --dataset /tmp/w20/cache/3c93ecf4c2d05a57db5c0c07 --corpus /work/corpus-1g
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    add_report_args,
    check_ok,
    check_tree,
    child_env,
    cllm_cmd,
    command_line,
    machine_lines,
    report,
    run_child,
    run_cmd,
    serve_child,
    table,
)

PIECES = ["import", "manifest", "open_dataset", "kernels", "trainer", "first_batch", "first_step", "second_step"]


def pieces_child(spec: dict) -> dict:
    """Child: the pieces of a start from a dataset folder, timed in this process."""
    t0 = time.perf_counter()
    from cllm.core import cli  # noqa: F401  (what `cllm` imports)
    from cllm.core.config import TrainConfig
    from cllm.core.dataset import open_dataset, read_manifest
    from cllm.core.precompile import compile_kernels
    from cllm.core.threads import single_threaded_blas
    from cllm.core.trainer import Trainer

    times = {"import": time.perf_counter() - t0}

    def lap(name: str, f):
        t = time.perf_counter()
        result = f()
        times[name] = time.perf_counter() - t
        return result

    cfg = CONFIGS["nanogpt-cpu"]
    path = Path(spec["dataset"])
    manifest = lap("manifest", lambda: read_manifest(path))
    dataset = lap("open_dataset", lambda: open_dataset(path, manifest))
    lap("kernels", compile_kernels)
    config = TrainConfig(steps=2, batch=cfg["batch"], eval_interval=0, threads=spec["threads"])
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}
    trainer = lap("trainer", lambda: Trainer.new(dataset, shape, config))
    lap("first_batch", trainer.next_batch)
    with single_threaded_blas():
        lap("first_step", trainer.train_step)
        lap("second_step", trainer.train_step)
    times["to_first_step"] = time.perf_counter() - t0 - times["second_step"]
    times["vocab"] = trainer.model.config.vocab_size
    return times


def start(corpus: Path, work: Path, env: dict, threads: int) -> float:
    """Launch -> first step of `cllm train CORPUS --steps 1`."""
    cfg = CONFIGS["nanogpt-cpu"]
    r = run_cmd(cllm_cmd("train", corpus, "-o", work / "start.cllm", "--layers", cfg["n_layer"], "--heads",
                         cfg["n_head"], "--embd", cfg["n_embd"], "--ctx", cfg["ctx"], "--batch", cfg["batch"],
                         "--steps", 1, "--eval-interval", 0, "--threads", threads, "--force", "--json"), env)
    j = check_ok(r, f"cllm train {corpus} --steps 1")
    return r["wall_s"] - j["elapsed"] + j["time_to_first_step"]


def prepare(text: str, work: Path, name: str, env: dict) -> Path:
    (work / name).mkdir()
    (work / name / "corpus.txt").write_text(text, encoding="utf-8", newline="")
    check_ok(run_cmd(cllm_cmd("prepare", work / name, "-o", work / f"{name}-ds", "--tokenizer", "char", "--json"),
                     env), f"cllm prepare {name}")
    return work / f"{name}-ds"


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dataset", type=Path, help="the large prepared dataset's folder (char tokenizer)")
    p.add_argument("--corpus", type=Path, help="the large corpus by path (its dataset found in CLLM_CACHE_DIR)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    add_report_args(p, "Large corpora, 1 GB: the second start's pieces")
    a = p.parse_args()
    if serve_child(a, pieces_child):
        return 0
    if a.dataset is None:
        p.error("--dataset is required")
    work = Path(tempfile.mkdtemp(prefix="cllm-bench-start-"))
    env = child_env(a.unset_openblas_env)  # CLLM_CACHE_DIR as given: --corpus finds its prepared dataset
    try:
        shakespeare = DEFAULT_CORPUS.read_text(encoding="utf-8")
        large = json.loads((a.dataset / "manifest.json").read_text(encoding="utf-8"))["tokenizer"]
        if large.get("type") != "char":
            p.error(f"{a.dataset}: a char dataset is needed (its tokenizer is {large.get('type')})")
        fair = prepare(shakespeare + "".join(large["vocab"]), work, "fair", env)
        if json.loads((fair / "manifest.json").read_text(encoding="utf-8"))["tokenizer"] != large:
            raise RuntimeError("the fair small dataset's tokenizer is not the large one's")
        rows = {f"tiny (tinyshakespeare, vocab {len(set(shakespeare))})": prepare(shakespeare, work, "tiny", env),
                f"fair small (tinyshakespeare + the large vocabulary, {len(large['vocab'])})": fair,
                f"the large dataset's folder ({len(large['vocab'])})": a.dataset}
        starts: dict[str, list[float]] = {name: [] for name in rows}
        if a.corpus:
            starts[f"the large corpus by path, {a.corpus.name} (source check)"] = []
        pieces: dict[str, dict[str, list[float]]] = {name: {} for name in rows}
        for rep in range(a.repeats):
            for name in starts:
                starts[name].append(start(rows.get(name, a.corpus), work, env, a.threads))
                if name in rows:
                    got = run_child(__file__, {"dataset": str(rows[name]), "threads": a.threads}, env)
                    for k in PIECES + ["to_first_step"]:
                        pieces[name].setdefault(k, []).append(got[k])
            print(rep, {name: round(v[-1], 2) for name, v in starts.items()}, flush=True)
        out = ["Under /work/notes/bin/bench: nothing else ran (2-core AMD EPYC Zen 4, family 25 model 17, KVM guest). "
               "Medians of the repeats, alternating the datasets, each in a fresh process; nanoGPT CPU config, "
               "char.", ""]
        out += machine_lines(env) + [f"- command: `{command_line()}`", f"- repeats: {a.repeats}", ""]
        out += ["Launch -> first step of `cllm train DATASET --steps 1` "
                "(seconds: the median, then every repeat in order):", "",
                table(["dataset", "first step", "repeats"],
                      [[name, f"{statistics.median(v):.2f}", ", ".join(f"{x:.2f}" for x in v)]
                       for name, v in starts.items()]), "",
                "The same start's pieces in one process (milliseconds, medians; `to first step` from the first "
                "import, without the interpreter's own start):", "",
                table(["dataset"] + [k.replace("_", " ") for k in PIECES + ["to_first_step"]],
                      [[name] + [f"{statistics.median(v[k]) * 1000:.1f}" for k in PIECES + ["to_first_step"]]
                       for name, v in pieces.items()]), ""]
        return report(out, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
