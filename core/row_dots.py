"""Dot products of up to four activation rows with one weight row, written as LLVM vector code.

Decoding reads each weight once per step and takes its dot product with every sample's
row. Left to LLVM (a float sum with `reassoc`), each row's sum is vectorised the way its
loop happens to be compiled: one row at a time it is fast, but four rows in one loop are
summed in another order (other bits), so a batch would not give each sample its own
run's logits. Here the order is written out: each row's products go into four vectors of
16 lanes (input i into vector (i // 16) % 4, lane i % 16, in order of i, each step one
fused multiply-add), the four vectors are added as (v0 + v1) + (v2 + v3) and the lanes
in halves (8 + 8, 4 + 4, 2 + 2, 1 + 1). That order is the same for one row and for four,
on any thread, so the bits are; and four rows load each weight vector once for all of
them. (Four weight rows at a time, with one vector per sum, loaded fewer vectors per
product but ran at half the speed: four streams of weights instead of one.)

The vectors cover the inputs up to the last multiple of 64; the rest are added one by
one after, in order (`dot_tail`). Plain LLVM vector operations: on a CPU without AVX-512
the 16-lane vectors are split into its own, with the same results.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cllm.core.kernels import EXACT_JIT

LANES = 16
VECTORS = 4
BLOCK = LANES * VECTORS  # inputs per step of the vector loop
MAX_ROWS = 4


def _reduce(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """A 16-lane vector's sum, halves added to halves."""
    width = LANES
    while width > 1:
        half = width // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                      list(range(half, width))))
        v = builder.fadd(lo, hi)
        width = half
    return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))


def _make_dots(rows: int):
    """The intrinsic for `rows` rows: dots(sums, x, x_stride, w, n) sets sums[r] to the
    vector part of <x[r * x_stride:][:n], w[:n]> (n a multiple of BLOCK; addresses as
    integers, float32 elements, strides in elements)."""

    @intrinsic
    def dots(typingctx, sums, x, x_stride, w, n):
        sig = types.void(types.uintp, types.uintp, types.intp, types.uintp, types.intp)

        def codegen(context, builder, signature, args):
            sums_addr, x_addr, stride, w_addr, count = args
            f32 = ir.FloatType()
            vec = ir.VectorType(f32, LANES)
            index = stride.type
            fptr = f32.as_pointer()
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                                 f"llvm.fma.v{LANES}f32")
            xs = [builder.gep(builder.inttoptr(x_addr, fptr), [builder.mul(stride, ir.Constant(index, r))])
                  for r in range(rows)]
            wp = builder.inttoptr(w_addr, fptr)
            zero = ir.Constant(vec, [0.0] * LANES)
            start = builder.block
            loop = builder.append_basic_block("dots_loop")
            done = builder.append_basic_block("dots_done")
            builder.cbranch(builder.icmp_signed(">", count, ir.Constant(index, 0)), loop, done)

            builder.position_at_end(loop)
            i = builder.phi(index)
            i.add_incoming(ir.Constant(index, 0), start)
            acc = [[builder.phi(vec) for _ in range(VECTORS)] for _ in range(rows)]
            for row in acc:
                for a in row:
                    a.add_incoming(zero, start)
            new = [[acc[r][v] for v in range(VECTORS)] for r in range(rows)]
            for v in range(VECTORS):
                at = builder.add(i, ir.Constant(index, v * LANES))
                wv = builder.load(builder.bitcast(builder.gep(wp, [at]), vec.as_pointer()), align=4)
                for r in range(rows):
                    xv = builder.load(builder.bitcast(builder.gep(xs[r], [at]), vec.as_pointer()), align=4)
                    new[r][v] = builder.call(fma, [xv, wv, acc[r][v]])
            step = builder.add(i, ir.Constant(index, BLOCK))
            end = builder.block
            i.add_incoming(step, end)
            for r in range(rows):
                for v in range(VECTORS):
                    acc[r][v].add_incoming(new[r][v], end)
            builder.cbranch(builder.icmp_signed("<", step, count), loop, done)

            builder.position_at_end(done)
            finals = []
            for r in range(rows):  # every phi first, at the top of the block
                final = []
                for v in range(VECTORS):
                    phi = builder.phi(vec)
                    phi.add_incoming(zero, start)
                    phi.add_incoming(new[r][v], end)
                    final.append(phi)
                finals.append(final)
            out = builder.inttoptr(sums_addr, fptr)
            for r, final in enumerate(finals):
                total = builder.fadd(builder.fadd(final[0], final[1]), builder.fadd(final[2], final[3]))
                builder.store(_reduce(builder, total), builder.gep(out, [ir.Constant(index, r)]))
            return context.get_dummy_value()

        return sig, codegen

    return dots


_dots1, _dots2, _dots3, _dots4 = (_make_dots(r) for r in range(1, MAX_ROWS + 1))


@njit(**EXACT_JIT)
def dot_tail(v, x, w, start):
    """v plus x[i] * w[i] for i from `start` to the end, one at a time in order."""
    for i in range(start, w.shape[0]):
        v += x[i] * w[i]
    return v


@njit(**EXACT_JIT)
def row_dots(sums, x, n0, rows, w):
    """sums[r] = <x[n0 + r], w> for r < rows (<= MAX_ROWS): x (N, IC) with unit inner
    stride, w (IC,) float32 contiguous, sums float32 (MAX_ROWS,) scratch."""
    n = w.shape[0] - w.shape[0] % BLOCK
    s, xa, stride, wa = sums.ctypes.data, x.ctypes.data + n0 * x.strides[0], x.strides[0] // 4, w.ctypes.data
    if rows == 4:
        _dots4(s, xa, stride, wa, n)
    elif rows == 3:
        _dots3(s, xa, stride, wa, n)
    elif rows == 2:
        _dots2(s, xa, stride, wa, n)
    else:
        _dots1(s, xa, stride, wa, n)
    if n < w.shape[0]:
        for r in range(rows):
            sums[r] = dot_tail(sums[r], x[n0 + r], w, n)
