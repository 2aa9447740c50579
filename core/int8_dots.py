"""int8 x int8 products for decoding with int8 weights, on the CPU's integer instructions.

A decoding step with int8 weights reads a quarter of float32's bytes, so it can only go
faster than float32 if the arithmetic keeps up: an int8 row widened to float32 and dotted
with float32 activations is compute-bound well below the memory's rate. Here each
activation row is rounded to int8 too (one float32 scale per row: `quantize_activations`),
the dot products run on integers with int32 sums, and each output is scaled once, by the
activation row's scale times the weight row's.

Integer sums are exact, so every way of computing them gives the same integers: the
products have one path per instruction set, the best (BEST) picked by the features numba
compiles for (core/cpu_features.py: the host's unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES
say else), and each is tested against a numpy int64 reference by forcing it (`PATHS`):
- "vnni": AVX-512 VNNI's `vpdpbusd` (64 unsigned x signed byte products added four at a
  time into 16 int32 lanes). Activations are stored offset by 128 as unsigned bytes
  (u = q + 128, 1..255); the kernel adds 128 * the weight row's sum back (taken with the
  same instruction against bytes of 128, once per weight row however many activation rows).
  The row's last partial vector is read with masked loads, so the vectors cover it all.
- "avx2": AVX2's `vpmaddubsw` (pairs of unsigned x signed bytes into int16) and
  `vpmaddwd` (pairs of int16 into int32), with the sign trick (|q| times the weight with
  q's sign) so that no int16 pair sum can saturate: |q|, |w| <= 127 make 2 * 127 * 127 < 2^15.
- "plain": a numba loop over the bytes (LLVM vectorises it as it can).
The vector paths leave the row's last partial vector to the plain loop where they have no
masked loads. int32 cannot overflow: a row of IC inputs sums at most IC * 255 * 127, under
2^31 for IC < 66,000.

The intrinsics are LLVM IR through numba's `@intrinsic` (as core/attention_kernels.py
builds its AVX-512 block), compiled only when a path is first called: a CPU without VNNI
never compiles the VNNI code, nor does a target without it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cllm.core.cpu_features import FEATURES
from cllm.core.kernels import EXACT_JIT, JIT

F = np.float32
LEVELS = 127  # activations and weights round to -127..127
OFFSET = 128  # an activation's stored byte: q + OFFSET

_HAS = {"vnni": {"avx512vnni", "avx512bw", "avx512f"} <= FEATURES, "avx2": "avx2" in FEATURES, "plain": True}
PATHS = tuple(path for path in ("vnni", "avx2", "plain") if _HAS[path])  # what numba's target can run, best first
BEST = PATHS[0]


@njit(**JIT)
def quantize_activations(xu, xs, x, N):
    """Rows :N of x (float32) as int8 with one scale per row, x[n] ~ (xu[n] - OFFSET) * xs[n]:
    xs[n] = max |x[n]| / 127 (1 for an all-zero row), xu (uint8) the rounded values offset
    by OFFSET."""
    IC = x.shape[1]
    for n in range(N):
        row, out = x[n], xu[n]
        top = F(0)
        for i in range(IC):
            top = max(top, abs(row[i]))
        inverse = F(LEVELS) / top if top > 0 else F(0)
        xs[n] = top / F(LEVELS) if top > 0 else F(1)
        for i in range(IC):
            q = min(max(np.rint(row[i] * inverse), F(-LEVELS)), F(LEVELS))
            out[i] = np.uint8(np.int32(q) + OFFSET)


# ----------------------------------------------------------------------------------
# the vector kernels: dot(sums, x, w, n) sets sums[0] (int32) to sum_{i < n} x[i] * w[i],
# x the offset activations (uint8), w an int8 weight row, addresses as integers. One
# weight row at a time, front to back: four rows side by side (the activations loaded
# once for four sums) ran at half the speed from memory (8.5 against 19.6 GB/s, one
# thread, GPT-2's MLP weight), prefetched ahead or not; the memory's prefetchers follow
# one stream better than four.


def _int_vector(bits: int, lanes: int) -> ir.VectorType:
    return ir.VectorType(ir.IntType(bits), lanes)


def _splat_int(bits: int, lanes: int, value: int) -> ir.Constant:
    return ir.Constant(_int_vector(bits, lanes), [value] * lanes)


def vector_loop(builder, count, step, initial, body):
    """Runs values = body(i, values) for i = 0, step, ... while i + step <= count (i64),
    from `initial` values; returns (the first i not done, the final values)."""
    i64 = ir.IntType(64)
    start = builder.block
    loop = builder.append_basic_block("vector.loop")
    done = builder.append_basic_block("vector.done")
    width = ir.Constant(i64, step)
    builder.cbranch(builder.icmp_signed("<=", width, count), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), start)
    carried = [builder.phi(v.type) for v in initial]
    for phi, v in zip(carried, initial, strict=True):
        phi.add_incoming(v, start)
    updated = body(i, carried)
    following = builder.add(i, width)
    end = builder.block
    i.add_incoming(following, end)
    for phi, v in zip(carried, updated, strict=True):
        phi.add_incoming(v, end)
    builder.cbranch(builder.icmp_signed("<=", builder.add(following, width), count), loop, done)
    builder.position_at_end(done)
    first_left = builder.phi(i64)
    first_left.add_incoming(ir.Constant(i64, 0), start)
    first_left.add_incoming(following, end)
    finals = []
    for v, u in zip(initial, updated, strict=True):
        phi = builder.phi(v.type)
        phi.add_incoming(v, start)
        phi.add_incoming(u, end)
        finals.append(phi)
    return first_left, finals


def _make_vnni(with_weight_sum: bool):
    """The VNNI kernel over the whole row (its last partial vector through masked loads);
    with `with_weight_sum` it also sets sums[1] to OFFSET * the weight row's sum (the
    offset's share of every dot with that row)."""

    @intrinsic
    def dot(typingctx, sums, x, w, n):
        sig = types.void(types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
            sums_addr, x_addr, w_addr, count = args
            v64i8, v16i32, m64 = _int_vector(8, 64), _int_vector(32, 16), _int_vector(1, 64)
            module = builder.module
            vpdpbusd = cgutils.get_or_insert_function(module, ir.FunctionType(v16i32, [v16i32, v16i32, v16i32]),
                                                      "llvm.x86.avx512.vpdpbusd.512")
            masked_load = cgutils.get_or_insert_function(
                module, ir.FunctionType(v64i8, [ir.PointerType(), i32, m64, v64i8]), "llvm.masked.load.v64i8.p0")
            reduce_add = cgutils.get_or_insert_function(module, ir.FunctionType(i32, [v16i32]),
                                                        "llvm.vector.reduce.add.v16i32")
            xp, wp = (builder.inttoptr(a, i8.as_pointer()) for a in (x_addr, w_addr))
            offsets = builder.bitcast(_splat_int(8, 64, OFFSET), v16i32)
            zero = ir.Constant(v16i32, None)

            def step(xv, wv, values):
                wi = builder.bitcast(wv, v16i32)
                out = [builder.call(vpdpbusd, [values[0], builder.bitcast(xv, v16i32), wi])]
                if with_weight_sum:
                    out.append(builder.call(vpdpbusd, [values[1], offsets, wi]))
                return out

            def full(i, values):
                xv, wv = (builder.load(builder.bitcast(builder.gep(p, [i]), v64i8.as_pointer()), align=1)
                          for p in (xp, wp))
                return step(xv, wv, values)

            end, values = vector_loop(builder, count, 64, [zero] * (2 if with_weight_sum else 1), full)
            # the last partial vector: lanes past n read as zero (a zero weight adds nothing)
            left = builder.sub(count, end)  # 0 to 63
            mask = builder.bitcast(builder.sub(builder.shl(ir.Constant(i64, 1), left), ir.Constant(i64, 1)), m64)
            align, zeros = ir.Constant(i32, 1), ir.Constant(v64i8, None)
            xv, wv = (builder.call(masked_load, [builder.gep(p, [end]), align, mask, zeros]) for p in (xp, wp))
            out = builder.inttoptr(sums_addr, i32.as_pointer())
            for k, v in enumerate(step(xv, wv, values)):
                builder.store(builder.call(reduce_add, [v]), builder.gep(out, [ir.Constant(i64, k)]))
            return context.get_dummy_value()

        return sig, codegen

    return dot


def _make_avx2():
    """The AVX2 kernel over whole 32-byte vectors only (n a multiple of 32): the true
    dot, no offset left in it."""

    @intrinsic
    def dot(typingctx, sums, x, w, n):
        sig = types.void(types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i32, i8 = ir.IntType(32), ir.IntType(8)
            sums_addr, x_addr, w_addr, count = args
            v32i8, v16i16, v8i32 = _int_vector(8, 32), _int_vector(16, 16), _int_vector(32, 8)
            module = builder.module
            absb = cgutils.get_or_insert_function(module, ir.FunctionType(v32i8, [v32i8, ir.IntType(1)]),
                                                  "llvm.abs.v32i8")
            signb = cgutils.get_or_insert_function(module, ir.FunctionType(v32i8, [v32i8, v32i8]),
                                                   "llvm.x86.avx2.psign.b")
            maddubs = cgutils.get_or_insert_function(module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                     "llvm.x86.avx2.pmadd.ub.sw")
            maddwd = cgutils.get_or_insert_function(module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                    "llvm.x86.avx2.pmadd.wd")
            reduce_add = cgutils.get_or_insert_function(module, ir.FunctionType(i32, [v8i32]),
                                                        "llvm.vector.reduce.add.v8i32")
            xp, wp = (builder.inttoptr(a, i8.as_pointer()) for a in (x_addr, w_addr))
            flip = _splat_int(8, 32, OFFSET - 256)
            one16 = _splat_int(16, 16, 1)
            false = ir.Constant(ir.IntType(1), 0)

            def full(i, values):
                xv, wv = (builder.load(builder.bitcast(builder.gep(p, [i]), v32i8.as_pointer()), align=1)
                          for p in (xp, wp))
                q = builder.xor(xv, flip)  # u - 128 as a signed byte
                a = builder.call(absb, [q, false])
                b = builder.call(signb, [wv, q])  # w with q's sign (0 where q is 0)
                return [builder.add(values[0], builder.call(maddwd, [builder.call(maddubs, [a, b]), one16]))]

            _, values = vector_loop(builder, count, 32, [ir.Constant(v8i32, None)], full)
            builder.store(builder.call(reduce_add, [values[0]]), builder.inttoptr(sums_addr, i32.as_pointer()))
            return context.get_dummy_value()

        return sig, codegen

    return dot


_vnni, _vnni_with_weight_sum, _avx2 = _make_vnni(False), _make_vnni(True), _make_avx2()


# ----------------------------------------------------------------------------------
# each path's dot(xu, n, wt, j, scratch, kept, first): the exact integer
# sum_i (xu[n, i] - OFFSET) * wt[j, i] (int64). `first` is True for a weight row's first
# activation row: the VNNI path then takes the row's sum, into kept[0], for the rest;
# scratch (2,) int32.


@njit(inline="always", **JIT)
def _plain_dot(x, w, start):
    """sum_{i >= start} (x[i] - OFFSET) * w[i]: x offset activations, w an int8 row."""
    s = np.int64(0)
    for i in range(start, w.shape[0]):
        s += (np.int32(x[i]) - OFFSET) * np.int32(w[i])
    return s


@njit(inline="always", **JIT)
def _dot_vnni(xu, n, wt, j, scratch, kept, first):
    s, x, w = scratch.ctypes.data, xu.ctypes.data + n * xu.strides[0], wt.ctypes.data + j * wt.strides[0]
    if first:
        _vnni_with_weight_sum(s, x, w, wt.shape[1])
        kept[0] = scratch[1]
    else:
        _vnni(s, x, w, wt.shape[1])
    return np.int64(scratch[0]) - kept[0]


@njit(inline="always", **JIT)
def _dot_avx2(xu, n, wt, j, scratch, kept, first):
    main = wt.shape[1] - wt.shape[1] % 32
    _avx2(scratch.ctypes.data, xu.ctypes.data + n * xu.strides[0], wt.ctypes.data + j * wt.strides[0], main)
    return np.int64(scratch[0]) + _plain_dot(xu[n], wt[j], main)


@njit(inline="always", **JIT)
def _dot_plain(xu, n, wt, j, scratch, kept, first):
    return _plain_dot(xu[n], wt[j], 0)


def _make_integer_dots(dot):
    @njit(**JIT)
    def integer_dots(out, xu, wt, N):
        """out[n, j] = the exact dot of activation row n with weight row j (int64)."""
        scratch, kept = np.empty(2, np.int32), np.empty(1, np.int64)
        for j in range(wt.shape[0]):
            for n in range(N):
                out[n, j] = dot(xu, n, wt, j, scratch, kept, n == 0)

    return integer_dots


def _make_int8_rows(dot):
    @njit(**EXACT_JIT)  # the scaling in the order written, whatever calls it (the tests compare bits)
    def int8_rows(out, xu, xs, wt, scale, bias, N, accumulate, j0, j1):
        """Outputs j0:j1 of N rows: out[n, j] (+)= dot(n, j) * (xs[n] * scale[j]) (+ bias[j]),
        dot(n, j) the exact integer product of activation row n (`quantize_activations`'s
        xu, xs) and int8 weight row j (wt (OC, IC), scales `scale`); bias (OC,) or empty.
        Each weight row is read from memory once for all N rows."""
        scratch, kept = np.empty(2, np.int32), np.empty(1, np.int64)
        for j in range(j0, j1):
            for n in range(N):
                v = F(dot(xu, n, wt, j, scratch, kept, n == 0)) * (xs[n] * scale[j])
                if bias.shape[0] > 0:
                    v += bias[j]
                out[n, j] = out[n, j] + v if accumulate else v

    return int8_rows


_DOTS = {"vnni": _dot_vnni, "avx2": _dot_avx2, "plain": _dot_plain}
INTEGER_DOTS = {path: _make_integer_dots(_DOTS[path]) for path in PATHS}  # the tests force each path
INT8_ROWS = {path: _make_int8_rows(_DOTS[path]) for path in PATHS}
int8_rows = INT8_ROWS[BEST]
