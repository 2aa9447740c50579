"""float32 products for decoding with the weights in panels: outputs side by side in
vectors, sums in registers, no horizontal sums.

A decoding step's product is out[n, j] = sum_i x[n, i] * w[j, i] for a few rows n (the
samples) and every output j. Summed as a dot product per output, each output ends in a
horizontal sum and the vector sums of one row form one chain: measured with the
weights in L2, one row ran at ~10 GFMA/s and four at ~19.5 (of the core's ~42), so four
samples were compute-bound at twice one sample's time. Here the weights are stored in
panels (`panel_form`): the weights of PANEL outputs side by side for each input i, one
input after another, so a panel is one contiguous stream and a few vector loads bring
PANEL outputs' weights for one input. The kernel keeps PANEL / 16 vectors of 16 sums per
sample row in registers, broadcasts x[n, i] and adds x[n, i] * w[i, j:j + 16] for every
input in order, one fused multiply-add each: every output's sum is the plain sequential
sum fma(x[n, IC-1], w, ... fma(x[n, 0], w, 0)) (on a numba target without FMA, where
LLVM makes fma a library call per lane, a multiply and an add in the same order: a
step's products on GPT-2 small for `NUMBA_CPU_NAME=generic`, 1 thread, 163 -> 18 ms for
one row, 644 -> 45 ms for four), the same arithmetic whatever the other
rows, whatever block of rows it is computed in and whatever thread computes it, so a
sample's logits are bit-identical alone and in a batch, on 1 thread or 2 (by
construction; the tests assert it).

The block of rows is 1 to 4 sample rows at once (ROWS): 4 rows of 4 vectors are 16
accumulators of AVX-512's 32 vector registers (with AVX2's 16 registers LLVM splits each
<16 x float> in two and spills some: slower, the same bits). The kernel is LLVM IR
through numba's `@intrinsic`, as core/int8_dots.py builds its kernels, so that the sums
are registers by construction: the same loop in numba with the sums in a local array
loads and stores them at every input (its asm), and ran 4 rows from memory at 11.8
GFMA/s against this kernel's 20.5.
Measured on GPT-2 small's shapes (benchmarks/bench_decode_products.py): a step's products
for 4 samples on 1 thread 36.5 ms as a dot per output, 17.0 ms in panels, against 16.6 ms
for a plain sum of the same bytes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cllm.core.cpu_features import multiply_add
from cllm.core.int8_dots import vector_loop
from cllm.core.kernels import JIT

F = np.float32
LANES = 16  # floats in one vector of the kernel
PANEL = 64  # outputs side by side: PANEL / LANES vectors of sums per sample row (16 and 32 measured slower)
ROWS = 4  # sample rows at most in one call
ALIGN = 64  # bytes: a panel form starts on a cache line, so no vector load spans two


def panel_form(rows: np.ndarray) -> np.ndarray:
    """A weight given as rows of outputs (..., OC, IC) as panels (..., ceil(OC / PANEL),
    IC * PANEL): output j's weight for input i at [j // PANEL, i * PANEL + j % PANEL], the
    outputs past OC zero."""
    *lead, oc, ic = rows.shape
    count, full, part = -(-oc // PANEL), oc // PANEL, oc % PANEL
    out = aligned_empty((*lead, count, ic * PANEL))
    panels = out.reshape(*lead, count, ic, PANEL)
    panels[..., :full, :, :] = np.swapaxes(rows[..., :full * PANEL, :].reshape(*lead, full, PANEL, ic), -1, -2)
    panels[..., full:, :, :] = 0
    if part:
        panels[..., full, :, :part] = np.swapaxes(rows[..., full * PANEL:, :], -1, -2)
    return out


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous float32 array starting on an ALIGN-byte boundary."""
    size = int(np.prod(shape))
    buffer = np.empty(size + ALIGN // 4, F)
    skip = (-buffer.ctypes.data % ALIGN) // 4
    return buffer[skip:skip + size].reshape(shape)


@njit(inline="always", **JIT)
def panel_weight(wp, j, i):
    """Output j's weight for input i in a panel form wp."""
    return wp[j // PANEL, i * PANEL + j % PANEL]


def _make_block(rows: int):
    """block(sums, x, x_row, w, ic): sums (rows, PANEL) float32 = x[:rows] @ the panel's
    weights, x[n] at x + n * x_row (bytes), the panel at w, addresses as integers; one
    pass down the panel, in input order."""
    vectors = PANEL // LANES

    @intrinsic
    def block(typingctx, sums, x, x_row, w, ic):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i64, i32, f32 = ir.IntType(64), ir.IntType(32), ir.FloatType()
            v16 = ir.VectorType(f32, LANES)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                                 "llvm.fma.v16f32")
            sums_addr, x_addr, x_row_bytes, w_addr, count = args
            wp = builder.inttoptr(w_addr, f32.as_pointer())
            x_rows = [builder.inttoptr(builder.add(x_addr, builder.mul(ir.Constant(i64, n), x_row_bytes)),
                                       f32.as_pointer()) for n in range(rows)]
            zero_mask = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
            undefined = ir.Constant(v16, ir.Undefined)

            def step(i, values):
                start = builder.mul(i, ir.Constant(i64, PANEL))
                ws = [builder.load(builder.bitcast(builder.gep(wp, [builder.add(start, ir.Constant(i64, k * LANES))]),
                                                   v16.as_pointer()), align=4) for k in range(vectors)]
                out = []
                for n in range(rows):
                    xv = builder.load(builder.gep(x_rows[n], [i]), align=4)
                    splat = builder.shuffle_vector(builder.insert_element(undefined, xv, ir.Constant(i32, 0)),
                                                   undefined, zero_mask)
                    out += [multiply_add(builder, fma, splat, ws[k], values[n * vectors + k]) for k in range(vectors)]
                return out

            _, finals = vector_loop(builder, count, 1, [ir.Constant(v16, None)] * (rows * vectors), step)
            out = builder.inttoptr(sums_addr, f32.as_pointer())
            for index, v in enumerate(finals):
                builder.store(v, builder.bitcast(builder.gep(out, [ir.Constant(i64, index * LANES)]),
                                                 v16.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block1, _block2, _block3, _block4 = (_make_block(rows) for rows in range(1, ROWS + 1))


@njit(**JIT)
def panel_rows(out, x, wp, scale, bias, N, accumulate, p0, p1):
    """The outputs of panels p0:p1 of N rows: out[n, j] (+)= <x[n], w[j]> (* scale[j])
    (+ bias[j]) for a panel form wp (`panel_form`); x (N', IC) C-contiguous, out (N', OC)
    (outputs past OC, the panels' zero padding, are not written). Each panel is read once
    from memory for ROWS rows at a time."""
    ic, oc = x.shape[1], out.shape[1]
    sums = np.empty((ROWS, PANEL), F)
    s, row = sums.ctypes.data, x.strides[0]
    for p in range(p0, p1):
        w = wp.ctypes.data + p * wp.strides[0]
        for n0 in range(0, N, ROWS):
            rows = min(ROWS, N - n0)
            xa = x.ctypes.data + n0 * row
            if rows == 4:
                _block4(s, xa, row, w, ic)
            elif rows == 3:
                _block3(s, xa, row, w, ic)
            elif rows == 2:
                _block2(s, xa, row, w, ic)
            else:
                _block1(s, xa, row, w, ic)
            for r in range(rows):
                n = n0 + r
                for j in range(p * PANEL, min((p + 1) * PANEL, oc)):
                    v = sums[r, j - p * PANEL]
                    if scale.shape[0] > 0:
                        v *= scale[j]
                    if bias.shape[0] > 0:
                        v += bias[j]
                    out[n, j] = out[n, j] + v if accumulate else v
