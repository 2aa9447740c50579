"""This checkout against another one, in one run, alternating: training throughput and
start-up of `cllm train` (a change that should cost nothing is measured so).

For each config and thread count, the two trees' `cllm train --json` runs alternate,
--repeats times each: tokens/s over --steps steps (the command's own figure: tokens
between its first and last step over the time between them). Start-up, per tree:
`--steps 1` with numba's cache empty (cold: NUMBA_CACHE_DIR a fresh folder) and then
again with it filled (warm), `launch -> first step` as bench_startup.py reports it.

The other tree runs as it is: an older checkout whose engine is the top-level `core`
package runs as `python -m core.cli` from its folder with this interpreter; a newer one
needs its own interpreter with it installed (--base-python).

    python benchmarks/bench_ab.py --base ../base
    python benchmarks/bench_ab.py --base ../base --repeats 7 --write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    CONFIGS,
    DEFAULT_CORPUS,
    ROOT,
    check_ok,
    check_tree,
    child_env,
    command_line,
    config_label,
    fmt_range,
    machine_lines,
    parse_int_list,
    run_cmd,
    stats,
    table,
    write_section,
)

TITLE = "Refactor A/B: this checkout against an older one"


def tree_command(tree: Path, python: str) -> list[str]:
    """How to run `cllm` from `tree`."""
    packaged = "cllm.core" in (tree / "pyproject.toml").read_text()
    return [python, "-m", "cllm.core.cli" if packaged else "core.cli"]


def train(tree: Path, cmd: list[str], corpus: str, cfg: dict, steps: int, threads: int, out: Path,
          env: dict) -> dict:
    args = [*cmd, "train", corpus, "-o", out, "--layers", cfg["n_layer"], "--heads", cfg["n_head"],
            "--embd", cfg["n_embd"], "--ctx", cfg["ctx"], "--batch", cfg["batch"], "--steps", steps,
            "--eval-interval", 0, "--threads", threads, "--force", "--json"]
    r = run_cmd([str(a) for a in args], env, cwd=tree)
    j = check_ok(r, f"cllm train in {tree}")
    j["launch_first"] = r["wall_s"] - j["elapsed"] + j["time_to_first_step"]
    return j


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="the other checkout")
    p.add_argument("--base-python", default=sys.executable, help="its interpreter (default: this one)")
    p.add_argument("--configs", default="nanogpt-cpu,6l-192w")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cold-repeats", type=int, default=2)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    trees = {"this": (ROOT, tree_command(ROOT, sys.executable)),
             "base": (a.base.resolve(), tree_command(a.base.resolve(), a.base_python))}
    env = child_env()
    rows, starts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        caches = {name: work / f"cache-{name}" for name in trees}
        cold: dict[str, list] = {name: [] for name in trees}
        warm: dict[str, list] = {name: [] for name in trees}
        small = CONFIGS["nanogpt-cpu"]
        for i in range(a.cold_repeats):  # cold and warm start, alternating trees
            for name, (tree, cmd) in trees.items():
                cache = work / f"cold-{name}-{i}"
                run_env = {**env, "NUMBA_CACHE_DIR": str(cache)}
                cold[name].append(train(tree, cmd, a.corpus, small, 1, 0, work / "s.cllm", run_env)["launch_first"])
        for name, (tree, cmd) in trees.items():  # fill each tree's cache once for the warm runs
            train(tree, cmd, a.corpus, small, 1, 0, work / "s.cllm", {**env, "NUMBA_CACHE_DIR": str(caches[name])})
        for _ in range(a.repeats):
            for name, (tree, cmd) in trees.items():
                run_env = {**env, "NUMBA_CACHE_DIR": str(caches[name])}
                warm[name].append(train(tree, cmd, a.corpus, small, 1, 0, work / "s.cllm", run_env)["launch_first"])
        for name in trees:
            starts.append([name, fmt_range(stats(cold[name])), fmt_range(stats(warm[name]))])
        for key in a.configs.split(","):
            cfg = CONFIGS[key]
            for n in parse_int_list(a.threads):
                rates: dict[str, list] = {name: [] for name in trees}
                for _ in range(a.repeats):
                    for name, (tree, cmd) in trees.items():
                        run_env = {**env, "NUMBA_CACHE_DIR": str(caches[name])}
                        rates[name].append(train(tree, cmd, a.corpus, cfg, a.steps, n, work / "t.cllm",
                                                 run_env)["tokens_per_s"])
                this, base = stats(rates["this"]), stats(rates["base"])
                rows.append([config_label(cfg), n, fmt_range(this), fmt_range(base), this["median"] / base["median"]])
                print(table(["config", "threads", "this tok/s", "base tok/s", "this/base"], rows[-1:]), flush=True)
    body = "\n".join([
        f"This checkout against {a.base} (`base`), alternating, {a.repeats} runs each (median (min-max)); "
        f"`cllm train --json`, {a.steps} steps, tokens/s between the first and the last step.",
        "",
        *machine_lines(env),
        f"- command: `{command_line()}`",
        "",
        table(["config", "threads", "this tok/s", "base tok/s", "this/base"], rows),
        "",
        f"Start-up of `cllm train` (nanoGPT config, --steps 1, all cores), launch -> first step, seconds: "
        f"cold {a.cold_repeats} runs each (NUMBA_CACHE_DIR empty), warm {a.repeats} runs each.",
        "",
        table(["tree", "cold", "warm"], starts),
    ])
    print(body)
    if a.write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
