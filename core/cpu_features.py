"""The vector features numba compiles for: the one source for every choice of vector code.

The kernels that emit CPU-specific instructions (core/int8_dots.py's VNNI and AVX2 paths,
core/attention_kernels.py's register block) must choose them by what numba compiles for,
not by the CPU they run on: the two differ when a user sets NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES (numba's docs suggest `generic` so that the kernel cache can be shared
between machines). An AVX-512 intrinsic chosen from the host's features would then fail to
compile for the target, or land in a cache that other machines load.

numba's JIT builds its target machine (numba.core.codegen.JITCPUCodegen) from the CPU
NUMBA_CPU_NAME names (else the host's) and the features NUMBA_CPU_FEATURES lists (else the
host's, all listed on or off, minus AVX's under NUMBA_ENABLE_AVX=0; "" for `generic`). So
NUMBA_CPU_NAME=haswell alone still compiles for the host's features: an AVX2 target takes
NUMBA_CPU_FEATURES too (e.g. empty, for haswell's own).

A named CPU's own features cannot be asked of llvmlite, so they are read from what LLVM
emits: a target machine built as numba builds its own compiles a few one-line functions,
and a feature counts when its instructions appear (512-bit registers for AVX-512F, byte
adds in them for AVX-512BW, 256-bit integer adds for AVX2, vfmadd for FMA, vpdpbusd for a
byte dot product for AVX-512 VNNI). A feature LLVM would not show reads as absent, so
the choice can only err towards plainer code, which runs on any target.
"""

from __future__ import annotations

import re

import llvmlite.binding as llvm
from numba.core import codegen, config

_PROBES = """
define void @avx512f(ptr %p) {
  %v = load <16 x float>, ptr %p
  %w = fadd <16 x float> %v, %v
  store <16 x float> %w, ptr %p
  ret void
}
define void @avx512bw(ptr %p, ptr %q) {
  %v = load <64 x i8>, ptr %p
  %u = load <64 x i8>, ptr %q
  %w = add <64 x i8> %v, %u
  store <64 x i8> %w, ptr %p
  ret void
}
define void @avx2(ptr %p, ptr %q) {
  %v = load <8 x i32>, ptr %p
  %u = load <8 x i32>, ptr %q
  %w = add <8 x i32> %v, %u
  store <8 x i32> %w, ptr %p
  ret void
}
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
define void @fma(ptr %p) {
  %v = load <8 x float>, ptr %p
  %w = call <8 x float> @llvm.fma.v8f32(<8 x float> %v, <8 x float> %v, <8 x float> %v)
  store <8 x float> %w, ptr %p
  ret void
}
declare i32 @llvm.vector.reduce.add.v64i32(<64 x i32>)
define i32 @avx512vnni(ptr %a, ptr %b) {
  %x = load <64 x i8>, ptr %a
  %y = load <64 x i8>, ptr %b
  %xz = zext <64 x i8> %x to <64 x i32>
  %ys = sext <64 x i8> %y to <64 x i32>
  %m = mul <64 x i32> %xz, %ys
  %r = call i32 @llvm.vector.reduce.add.v64i32(<64 x i32> %m)
  ret i32 %r
}
"""

# each probe's feature, and the instruction (a regular expression) that shows it
_SIGNS = {
    "avx512f": r"%zmm",
    "avx512bw": r"vpaddb\s+(\(.*\), )?%zmm",
    "avx2": r"vpaddd\s+(\(.*\), )?%ymm",
    "fma": r"vfmadd",
    "avx512vnni": r"vpdpbusd",
}


def target_cpu() -> tuple[str, str]:
    """The CPU name and the feature string numba's JIT compiles for (as JITCPUCodegen)."""
    name = config.CPU_NAME or llvm.get_host_cpu_name()  # type: ignore[attr-defined]  # numba.config is filled at run time
    listed = config.CPU_FEATURES  # type: ignore[attr-defined]  # numba.config is filled at run time
    features = listed if listed is not None else codegen.get_host_cpu_features()
    return name, features


def _probe(name: str, features: str) -> frozenset[str]:
    """The features of _SIGNS that LLVM uses when compiling for this CPU name and features."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=name, features=features, opt=2)
    module = llvm.parse_assembly(_PROBES)
    module.triple = machine.triple
    assembly = machine.emit_assembly(module)
    bodies = dict(re.findall(r"^(\w+):.*?\n(.*?)\.Lfunc_end", assembly, flags=re.MULTILINE | re.DOTALL))
    return frozenset(feature for feature, sign in _SIGNS.items() if re.search(sign, bodies.get(feature, "")))


FEATURES: frozenset[str] = _probe(*target_cpu())  # e.g. {"avx2", "fma", "avx512f", ...}


def multiply_add(builder, fma, a, b, c):
    """a * b + c in LLVM IR for a kernel's vectors: the fused multiply-add `fma` (the
    declared llvm.fma of their type) where numba's target has FMA, else a multiply and an
    add in the same order (without FMA hardware LLVM makes llvm.fma a library call per
    lane: the panel products ran 9-14x slower on a `generic` target)."""
    if "fma" in FEATURES:
        return builder.call(fma, [a, b, c])
    return builder.fadd(builder.fmul(a, b), c)
