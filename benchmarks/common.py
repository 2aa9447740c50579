"""Shared bits of the benchmarks: paths, child processes, statistics, tables, the
machine description and benchmarks/RESULTS.md.

Every benchmark runs its measurements in child processes (the same script with
`--child SPEC`), so thread settings, BLAS state and numba's caches start clean for each
run. A child prints one line `RESULT {json}` last; `run_child` returns that object.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_CORPUS = (ROOT / ".." / "shared" / "corpora" / "tinyshakespeare.txt").resolve()
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MARK = "RESULT "

# nanoGPT's CPU configuration (its README) and a larger one.
CONFIGS = {
    "nanogpt-cpu": dict(n_layer=4, n_head=4, n_embd=128, ctx=64, batch=12),
    "6l-192w": dict(n_layer=6, n_head=6, n_embd=192, ctx=128, batch=16),
    "4l-ctx1024": dict(n_layer=4, n_head=4, n_embd=128, ctx=1024, batch=2),  # attention's tiled pair
}


def config_label(cfg: dict) -> str:
    return f"{cfg['n_layer']}L {cfg['n_head']}H {cfg['n_embd']}w ctx{cfg['ctx']} b{cfg['batch']}"


def all_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def parse_int_list(text: str) -> list[int]:
    """'1,2' -> [1, 2]; 'all' or 0 means every core."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            out.append(all_threads() if part in ("all", "0") else int(part))
    return list(dict.fromkeys(out))


# -- child processes ----------------------------------------------------------------

def child_env(unset_openblas: bool = False, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    if unset_openblas:
        for name in OPENBLAS_VARS:
            env.pop(name, None)
    env.update(extra or {})
    return env


def run_child(script: str | Path, spec: dict, env: dict | None = None, timeout: float = 1800,
              python: str = sys.executable) -> dict:
    """Runs `python script --child JSON` (from the root of the checkout holding `script`)
    and returns its RESULT object (plus `wall_s`). Raises RuntimeError with the child's
    stderr tail if it fails."""
    cmd = [python, str(script), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=Path(script).resolve().parent.parent, env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(MARK):])
    result["wall_s"] = wall
    return result


# Linux counts the parent's resident memory at fork/exec into a child's ru_maxrss, so the
# command runs under this small launcher, which reports its child's peak.
_LAUNCHER = ("import resource, subprocess, sys\n"
             "rc = subprocess.call(sys.argv[1:])\n"
             "sys.stderr.write('\\nMAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(rc)\n")


def run_cmd(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Runs a command from `cwd` (the repository root); returns its exit code, output, wall
    time and peak resident memory (`maxrss`, bytes, ru_maxrss of that command alone). The
    last stdout line that parses as a JSON object is returned as `json`."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stderr, _, tail = proc.stderr.rpartition("\nMAXRSS ")
    maxrss = int(tail.split()[0]) * 1024 if tail.strip() else 0
    parsed = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
                break
            except ValueError:
                pass
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": stderr, "wall_s": wall, "maxrss": maxrss,
            "json": parsed}


def cllm_cmd(*args: object) -> list[str]:
    """`cllm ARGS` by this interpreter: the cllm package installed from this working tree
    (`pip install -e .`; `check_tree` says if it is another)."""
    return [sys.executable, "-m", "cllm.core.cli", *map(str, args)]


def check_tree() -> None:
    """The benchmarks measure the `cllm` this checkout holds: refuse to run another."""
    import importlib.util

    spec = importlib.util.find_spec("cllm.core")
    locations = spec.submodule_search_locations if spec else None
    where = Path(next(iter(locations))).resolve() if locations else None
    if where != ROOT / "core":
        raise SystemExit(f"cllm.core comes from {where}, not this checkout: run `pip install -e {ROOT}` first")


def check_ok(result: dict, what: str) -> dict:
    if result["rc"] != 0 or result["json"] is None:
        raise RuntimeError(f"{what} failed (exit {result['rc']}):\n{result['stderr'][-3000:]}")
    return result["json"]


def child_result(obj: dict) -> None:
    """What a child prints last."""
    print(MARK + json.dumps(obj), flush=True)


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


NO_TORCH = ("PyTorch is not installed: its columns are skipped "
            "(optional benchmark-only dependency: `pip install torch==2.13.0`).")


# -- statistics and tables ----------------------------------------------------------

def stats(values: list[float]) -> dict:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(x, digits: int = 3) -> str:
    """`digits` significant digits, with k and M suffixes."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, str):
        return x
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.{digits}g}M"
    if ax >= 1e4:
        return f"{x / 1e3:.{digits}g}k"
    return f"{x:.{digits}g}" if ax < 1000 else f"{x:.0f}"


def fmt_range(s: dict) -> str:
    if not s["n"]:
        return "-"
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (reads fine in a terminal too)."""
    cells = [[str(c) for c in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:  # cells past the headers are left out, as they always were
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


# -- machine ------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    found = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(found.group(1).split()) if found else set()
    return "avx512f" if "avx512f" in flags else ("avx2" if "avx2" in flags else "no avx2")


def numba_target() -> str:
    """The CPU numba compiles for and the vector features the kernels chose by it
    (core/cpu_features.py): the host's unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say else."""
    from cllm.core.cpu_features import FEATURES, target_cpu

    name = target_cpu()[0]
    named = "" if os.environ.get("NUMBA_CPU_NAME") is None else " (NUMBA_CPU_NAME)"
    return f"{name}{named}, " + (", ".join(sorted(FEATURES)) or "no AVX2")


def blas_kernels() -> dict:
    """OpenBLAS (or other BLAS) libraries loaded in this process and the kernel each picked,
    as threadpoolctl reports them. Loads numpy's and scipy's (numba's np.dot uses scipy's)."""
    import numpy  # noqa: F401  (imported for its BLAS, which threadpool_info then lists)
    import scipy.linalg.cython_blas  # noqa: F401  (likewise scipy's, the one numba calls)
    from threadpoolctl import threadpool_info

    out = {}
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        path = info.get("filepath", "")
        owner = "scipy" if "scipy.libs" in path else "numpy" if "numpy.libs" in path else \
            "torch" if "torch" in path else Path(path).name
        out[owner] = f"{info.get('internal_api')} {info.get('version')} {info.get('architecture', '')}".strip()
    return out


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "numba", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def openblas_env(env: Mapping[str, str] | None = None) -> dict:
    values = os.environ if env is None else env
    return {name: values.get(name, "(unset)") for name in OPENBLAS_VARS}


def machine_lines(child_env_: dict | None = None, kernels: dict | None = None) -> list[str]:
    """The machine description every benchmark prints and writes."""
    v = versions()
    env_here = openblas_env()
    env_child = openblas_env(child_env_) if child_env_ is not None else env_here
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()} ({cpu_flags()}), {all_threads()} cores usable, {os.cpu_count()} online",
        f"- numba compiles for: {numba_target()}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- OpenBLAS variables here: " + ", ".join(f"{k}={val}" for k, val in env_here.items()),
    ]
    if env_child != env_here:
        lines.append("- OpenBLAS variables in the measured children: "
                     + ", ".join(f"{k}={val}" for k, val in env_child.items()))
    if kernels is None:  # as the children see them: ask one
        code = "import json; from benchmarks.common import blas_kernels; print(json.dumps(blas_kernels()))"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env_ or child_env(),
                              capture_output=True, text=True)
        kernels = json.loads(proc.stdout) if proc.returncode == 0 else {"?": proc.stderr[-200:]}
    lines.append("- BLAS kernels (threadpoolctl): " + "; ".join(f"{k}: {val}" for k, val in kernels.items()))
    return lines


def load_text(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        sys.exit(f"corpus {path} not found (pass --corpus PATH)")
    return path.read_text(encoding="utf-8")


# -- RESULTS.md ---------------------------------------------------------------------

PLACEHOLDER = "No measurement has been written yet."


def write_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replaces the `## title` section of RESULTS.md (or appends it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    text = text.replace(PLACEHOLDER, "").rstrip() + "\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    print(f"wrote section '{title}' of {path}")


def section_title(title: str, unset_openblas: bool) -> str:
    return title + (" (OpenBLAS variables unset)" if unset_openblas else "")


def add_report_args(p, section: str, section_help: str = "") -> None:
    """The options `report` reads: --write, the --section it writes, and
    --unset-openblas-env (which the children's environment, `child_env`, honours)."""
    p.add_argument("--unset-openblas-env", action="store_true",
                   help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the children's environment")
    p.add_argument("--write", action="store_true", help=f"write the section '{section}' of RESULTS.md")
    p.add_argument("--section", default=section,
                   help="title of the RESULTS.md section --write replaces"
                        + (f" ({section_help})" if section_help else ""))


def serve_child(a, children) -> bool:
    """In a child process (`--child JSON`, see `run_child`): runs children[spec["kind"]]
    (or `children` itself, a benchmark with one kind of child) and prints its result,
    unless it returned None (an MPI rank other than 0); returns whether this process was
    a child."""
    if not a.child:
        return False
    spec = json.loads(a.child)
    result = children(spec) if callable(children) else children[spec["kind"]](spec)
    if result is not None:
        child_result(result)
    return True


def report(lines: list[str], a) -> int:
    """Prints a benchmark's result and, with --write, makes it the RESULTS.md section
    --section (its title marked when --unset-openblas-env ran); the exit code."""
    text = "\n".join(lines)
    print("\n" + text)
    if a.write:
        write_section(section_title(a.section, a.unset_openblas_env), text)
    return 0


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


MB = 1 << 20  # a mebibyte, the unit of the benchmarks' memory and size figures


class TokenClock:
    """A transformers streamer that times tokens: `generate` hands it the prompt, then every
    new token; `times` holds the seconds from its creation to each new token."""

    def __init__(self) -> None:
        self.t0, self.calls = time.perf_counter(), 0
        self.times: list[float] = []

    def put(self, value) -> None:
        self.calls += 1
        if self.calls > 1:
            self.times.append(time.perf_counter() - self.t0)

    def end(self) -> None:
        pass


def concurrent_seconds(jobs: list, clock: str = "wall") -> float:
    """Seconds of running every job (a callable) at once, one thread each: wall time, or
    with clock="cpu" the CPU time of the slowest job's thread (time the thread spent
    descheduled, as on a shared machine, does not count)."""
    barrier = threading.Barrier(len(jobs) + 1)
    cpu = [0.0] * len(jobs)

    def run(i, job):
        barrier.wait()
        t0 = time.thread_time()
        job()
        cpu[i] = time.thread_time() - t0

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0 if clock == "wall" else max(cpu)
