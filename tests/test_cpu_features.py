"""The vector code follows numba's target (core/cpu_features.py), not the host: an AVX2 and a
generic x86-64 target, set the way a user sets them (NUMBA_CPU_NAME, NUMBA_CPU_FEATURES),
get their own paths, no AVX-512 instruction, and the right products."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cllm.core.cpu_features import FEATURES, _probe, target_cpu

x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU names")

# Compiles the best int8 path and the panel products for the target in the environment, runs
# them on a few small rows against numpy, and reports the features, the path and the asm.
_CHILD = """
import json
import numpy as np
from cllm.core.cpu_features import FEATURES
from cllm.core.int8_dots import BEST, INTEGER_DOTS, LEVELS, OFFSET
from cllm.core.panel_dots import panel_form, panel_rows

rng = np.random.default_rng(0)
xu = rng.integers(OFFSET - LEVELS, OFFSET + LEVELS + 1, (3, 100)).astype(np.uint8)
wt = rng.integers(-LEVELS, LEVELS + 1, (5, 100)).astype(np.int8)
sums = np.zeros((3, 5), np.int64)
INTEGER_DOTS[BEST](sums, xu, wt, 3)
w = rng.standard_normal((70, 40)).astype(np.float32)
x = rng.standard_normal((2, 40)).astype(np.float32)
bias, out, wp = np.zeros(70, np.float32), np.zeros((2, 70), np.float32), panel_form(w)
panel_rows(out, x, wp, np.empty(0, np.float32), bias, 2, False, 0, wp.shape[0])
asm = "".join(a for f in (INTEGER_DOTS[BEST], panel_rows) for a in f.inspect_asm().values())
print(json.dumps({
    "features": sorted(FEATURES), "best": BEST,
    "int8_exact": bool(((xu.astype(np.int64) - OFFSET) @ wt.astype(np.int64).T == sums).all()),
    "panel_error": float(np.abs(out - x.astype(np.float64) @ w.T.astype(np.float64)).max()),
    "zmm": "zmm" in asm, "ymm": "ymm" in asm, "vpdpbusd": "vpdpbusd" in asm,
}))
"""


def run_for_target(tmp_path, cpu: str) -> dict:
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@x86
def test_an_avx2_target_gets_the_avx2_path_and_no_avx512_instruction(tmp_path):
    got = run_for_target(tmp_path, "haswell")
    assert got["features"] == ["avx2", "fma"] and got["best"] == "avx2"
    assert got["int8_exact"] and got["panel_error"] < 1e-4
    assert got["ymm"] and not got["zmm"] and not got["vpdpbusd"]


@x86
def test_a_generic_target_gets_the_plain_path_and_no_avx_instruction(tmp_path):
    got = run_for_target(tmp_path, "generic")
    assert got["features"] == [] and got["best"] == "plain"
    assert got["int8_exact"] and got["panel_error"] < 1e-4
    assert not got["ymm"] and not got["zmm"]


@x86
@pytest.mark.parametrize(("cpu", "features"), [
    ("generic", set()),
    ("haswell", {"avx2", "fma"}),
    ("skylake-avx512", {"avx2", "fma", "avx512f", "avx512bw"}),  # AVX-512 without VNNI
    ("icelake-server", {"avx2", "fma", "avx512f", "avx512bw", "avx512vnni"}),
])
def test_a_named_cpu_has_its_own_features(cpu, features):
    assert _probe(cpu, "") == features


@x86
def test_listed_features_override_the_named_cpu():
    """What numba does with NUMBA_CPU_NAME=haswell alone: the host's features, all listed."""
    assert _probe("haswell", "-avx2") == {"fma"}
    assert _probe("haswell", "+avx512f,+avx512bw") >= {"avx512f", "avx512bw"}


def test_this_process_has_the_features_of_numbas_target():
    assert FEATURES == _probe(*target_cpu())
