"""The numba kernels: GPT-2 forward and backward, one sequence at a time.

Written after llm.c's train_gpt2.c: every operation is a forward/backward pair with the
same argument order (outputs first, then inputs), and the shapes in a comment. Every
kernel is generic over float32 and float64: training runs in float32, the gradient
tests run the very same code in float64.

Matrix products go straight to the BLAS that numba's own `np.dot` uses (scipy's
OpenBLAS, through numba's `numba_xxgemm` helper), so strided views, transposes and
accumulation (beta = 1) cost no copies and the compiled code can be cached.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# C = alpha * op(A) @ op(B) + beta * C in Fortran order; numba exports it for np.dot.
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char, types.char, types.char, types.intp, types.intp, types.intp,
        types.uintp, types.uintp, types.intp, types.uintp, types.intp,
        types.uintp, types.uintp, types.intp,
    ),
)
NOTRANS = np.int8(ord("N"))
TRANS = np.int8(ord("T"))

# The element-wise kernels' constants are float32 scalars, as llm.c writes 0.5f: numba then
# keeps float32 data in float32 (8 lanes per AVX2 instruction) instead of widening every
# operation to float64, while float64 data (the gradient checks) still computes in float64,
# with the same constants, so forward and backward stay exact derivatives of each other.
F = np.float32
GELU_SCALE = F(math.sqrt(2.0 / math.pi))
GELU_CUBE = F(0.044715)
# Rational approximation of tanh on [-7.905, 7.905] (Eigen's float32 tanh, clamped
# beyond): numba's np.tanh is a scalar libm call here, 40x slower than this vectorisable form.
# Largest error against np.tanh: 2.6e-7 in float32 arithmetic, 2.5e-7 in float64 (tests check it).
TANH_CLAMP = F(7.90531110763549805)
TANH_P = tuple(F(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                              5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                              4.89352455891786e-03))  # numerator in x^2, highest power first
TANH_Q = tuple(F(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                              4.89352518554385e-03))  # denominator in x^2, highest power first

JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz", "arcp"})
EXACT_JIT: dict[str, Any] = dict(JIT, fastmath={"contract", "nsz", "arcp"})  # operations in the order written


@njit(**JIT)
def gemm(ta, tb, m, n, k, alpha, A, B, beta, C):
    """Row-major C[:m, :n] = alpha * op(A) @ op(B) + beta * C[:m, :n].

    A, B, C are 2-D views with unit inner stride; their row strides are the leading
    dimensions, so column slices of a larger matrix work as they are."""
    isz = C.itemsize
    scalars = np.empty(2, C.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    kind = np.int8(115) if isz == 4 else np.int8(100)  # 's' or 'd'
    # Row-major C^T = op(B)^T op(A)^T is column-major C = op(B) op(A).
    _xxgemm(kind, tb, ta, n, m, k,
            scalars.ctypes.data, B.ctypes.data, B.strides[0] // isz,
            A.ctypes.data, A.strides[0] // isz,
            scalars.ctypes.data + isz, C.ctypes.data, C.strides[0] // isz)


@njit(**JIT)
def _horner(coefs, y):
    """A polynomial (coefficients highest power first) and its derivative at y, by
    Horner's rule carrying the derivative along: no products of two constants, which
    would round in float32 even for float64 data and break the gradient checks."""
    p = coefs[0]
    dp = coefs[0] - coefs[0]
    for i in range(1, len(coefs)):
        dp = dp * y + p
        p = p * y + coefs[i]
    return p, dp


@njit(**JIT)
def _tanh_rational(x):
    """Numerator and denominator of the approximation and their derivatives in x^2."""
    x2 = x * x
    p, dp = _horner(TANH_P, x2)
    q, dq = _horner(TANH_Q, x2)
    return p, q, dp, dq


@njit(**JIT)
def fast_tanh(x):
    x = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    p, q, dp, dq = _tanh_rational(x)
    return x * p / q


@njit(**JIT)
def fast_tanh_and_grad(x):
    """`fast_tanh` and its exact derivative (not 1 - tanh^2), so backward matches forward;
    the derivative is zero where the approximation is clamped. Branch-free, with one
    division, so loops over it vectorise."""
    inside = abs(x) < TANH_CLAMP
    x = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    p, q, dp, dq = _tanh_rational(x)
    x2 = x * x
    r = F(1) / q
    grad = ((p + F(2) * x2 * dp) - F(2) * x2 * p * dq * r) * r
    return x * p * r, (grad if inside else F(0) * grad)


LOG2E = F(1.4426950408889634)
LN2_HI = F(0.693359375)  # ln 2 = LN2_HI + LN2_LO; k * LN2_HI is exact for |k| < 2^15
LN2_LO = F(-2.12194440e-4)
EXP_MIN = F(-87.33654)  # ln of float32's smallest normal number: exp is 0 below it here
EXP_TAYLOR = tuple(F(1.0 / math.factorial(j)) for j in range(7, -1, -1))  # 1/7! ... 1/0!
EXP_SUM_BLOCK = 256  # exp_shifted sums blocks of this many in float32, then the blocks in float64


@intrinsic
def _float32_bits(typingctx, x):
    """The bits of x (rounded to float32 first) as an int32, like C's memcpy."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        value = args[0] if x.bitwidth == 32 else builder.fptrunc(args[0], ir.FloatType())
        return builder.bitcast(value, ir.IntType(32))
    return types.int32(x), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bits are `bits` (an integer, as int32: numba widens int32
    arithmetic to int64)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0] if bits.bitwidth == 32 else builder.trunc(args[0], ir.IntType(32))  # type: ignore[attr-defined]  # numba's stubs leave out Integer.bitwidth
        return builder.bitcast(value, ir.FloatType())
    return types.float32(bits), codegen


@njit(inline="always", **JIT)
def _ordered(bits):
    """float32 bits -> an int32 in the order of the floats (a negative float's other 31
    bits flipped), for finite floats and infinities; its own inverse."""
    return bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF))


@njit(**JIT)
def row_max(row, n, start):
    """max(start, row[:n]), in row's dtype.

    numba's max of two floats is a compare and branch that LLVM will not vectorise, a
    cycle per element; for float32 rows the same maximum taken over the bits as ordered
    integers vectorises (about 5x faster). float64 rows (the gradient checks) take the
    plain loop. A NaN (np.nan's sign) wins in both, as in np.max."""
    if row.itemsize == 8:
        mx = row.dtype.type(start)
        for i in range(n):
            x = row[i]
            mx = x if x > mx or x != x else mx
        return mx
    key = _ordered(_float32_bits(start))
    for i in range(n):
        key = max(key, _ordered(_float32_bits(row[i])))
    return row.dtype.type(_float32_from_bits(_ordered(key)))


@njit(**EXACT_JIT)
def _exp_reduced(y):
    """exp(y) for y <= 0 in float32 arithmetic, 0 below EXP_MIN (see exp_shifted).
    Compiled without `reassoc`, which would fold the two steps of the reduction into one
    and lose r's precision (errors of 3e-7 instead of 6e-8); LLVM inlines it still."""
    c7, c6, c5, c4, c3, c2, c1, c0 = EXP_TAYLOR
    x = max(y, EXP_MIN)
    k = np.floor(x * LOG2E + F(0.5))
    r = (x - k * LN2_HI) - k * LN2_LO
    p = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
    e = p * _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
    return e if y >= EXP_MIN else F(0)


@njit(**JIT)
def _exp_shifted_float32(row, n, shift):
    """exp_shifted of a float32 row, summed in float32: a loop of its own, which LLVM
    vectorises (a float64 sum would halve its width, and written as the inner loop of a
    loop over blocks it was not vectorised at all)."""
    total = F(0)
    for i in range(n):
        e = _exp_reduced(row[i] - shift)
        row[i] = e
        total += e
    return total


@njit(**JIT)
def exp_shifted(row, n, shift):
    """row[:n] = exp(row[:n] - shift) for row <= shift (softmax rows); returns their sum.

    numba's math.exp is a scalar libm call here (about 8 ns); this form vectorises, in
    float32: exp(x) = 2^k e^r with k = round(x log2 e) and r = x - k ln 2 in two steps
    (Cody and Waite's reduction, so r keeps its precision), e^r from a degree-7 Taylor
    polynomial (|r| <= ln(2)/2: error below 1e-8), and 2^k built from exponent bits. Blocks
    of EXP_SUM_BLOCK are summed in float32 and the blocks in float64. The pieces meet with
    jumps of float32 size at the half-integers of x log2 e, which finite differences in
    float64 would see: float64 rows (the gradient checks) take the exact exp instead. The
    branch is on a compile-time constant."""
    total = 0.0
    if row.itemsize == 8:
        for i in range(n):
            e = math.exp(row[i] - shift)
            row[i] = e
            total += e
        return total
    shift32 = F(shift)
    for b0 in range(0, n, EXP_SUM_BLOCK):
        b1 = min(n, b0 + EXP_SUM_BLOCK)
        total += _exp_shifted_float32(row[b0:b1], b1 - b0, shift32)
    return total


# ----------------------------------------------------------------------------------
# dropout: masks from a counter-based generator
#
# Each mask entry is a hash of where it is used, never a draw from a generator's state:
# the run's seed and step, the sequence's row in the whole step (every micro-batch, every
# MPI rank), the layer, the site, the position and the channel (or key). So however the
# rows are split over threads, shards and ranks, and wherever a run is resumed, every
# entry comes out the same, and a backward pass regenerates what its forward pass drew
# instead of keeping it (the tiled attention never holds a T x T mask). The hash is
# SplitMix64 (Steele, Lea and Flood 2014): item i of the stream with key k is
# mix64(k + i * GOLDEN), mix64 being Stafford's Mix13 finaliser (a bijection of 64-bit
# integers that passes BigCrush); keys of keys name the nested places. An entry is kept
# when its hash's high 32 bits reach the threshold p * 2^32, and kept values are scaled by
# 1 / (1 - p), as in PyTorch and nanoGPT, so a layer's expected output is unchanged.

class Dropout(NamedTuple):
    """What a pass needs to draw its masks: GPT-2's three rates (a site at 0 runs the very
    arithmetic of a model without dropout there), and the keys of the masks of row 0 of
    the rows it is given."""

    embd: float  # on the token + position embeddings (GPT-2's embd_pdrop)
    attn: float  # on the attention probabilities (attn_pdrop)
    resid: float  # on both residual branches' outputs, before each add (resid_pdrop)
    seed: int
    step: int
    first_row: int  # the global row (in the whole step) of the pass's first sequence

    @property
    def drops(self) -> bool:
        return self.embd > 0.0 or self.attn > 0.0 or self.resid > 0.0

    def typed(self) -> Dropout:
        """The same, in the types the compiled passes take (Python ints and floats)."""
        return Dropout(float(self.embd), float(self.attn), float(self.resid), int(self.seed), int(self.step),
                       int(self.first_row))


def one_rate(p: float, seed: int = 0, step: int = 0, first_row: int = 0) -> Dropout:
    """Rate `p` at every site, as nanoGPT has it."""
    return Dropout(p, p, p, seed, step, first_row)


NO_DROPOUT = one_rate(0.0)

# Sites: where in a layer a mask applies; attention's probabilities take one per head.
EMBEDDING, ATTENTION_OUT, MLP_OUT, ATTENTION_PROBS = 0, 1, 2, 3

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
KEEP_BITS = np.uint64(32)  # the high 32 bits decide


@njit(inline="always", **JIT)
def mix64(x):
    x = (x ^ (x >> np.uint64(30))) * MIX1
    x = (x ^ (x >> np.uint64(27))) * MIX2
    return x ^ (x >> np.uint64(31))


@njit(inline="always", **JIT)
def stream_key(key, index):
    """Item `index` (>= 0) of the SplitMix64 stream whose key is `key` (a uint64)."""
    return mix64(key + np.uint64(index) * GOLDEN)


@njit(**JIT)
def site_key(D, r, layer, site):
    """The key of the masks at `site` of `layer` for sequence r of the pass given D."""
    step = stream_key(stream_key(np.uint64(D.seed), D.step), D.first_row + r)
    return stream_key(stream_key(step, layer), site)


@njit(inline="always", **JIT)
def keep_threshold(p):
    return np.uint64(p * 4294967296.0)


@njit(inline="always", **JIT)
def dropout_row(row, n, key, first, threshold, scale):
    """row[u] *= scale where entry first + u of the stream `key` is kept, else 0, u < n."""
    zero = scale - scale
    for u in range(n):
        keep = (stream_key(key, first + u) >> KEEP_BITS) >= threshold
        row[u] = row[u] * (scale if keep else zero)


@njit(**JIT)
def dropout_rows(x, T, key, p):
    # x (>=T, W) in place: row t masked by the stream stream_key(key, t), kept values / (1 - p).
    # The same call is its own backward: the gradient takes the same mask and scale.
    threshold, scale = keep_threshold(p), x.dtype.type(1.0 / (1.0 - p))
    for t in range(T):
        dropout_row(x[t], x.shape[1], stream_key(key, t), 0, threshold, scale)


@njit(**JIT)
def dropout_mask(out, key, p):
    # out (T, W) <- the mask of dropout_rows (0 or 1 / (1 - p)) for key: for tests and tools
    for t in range(out.shape[0]):
        row = out[t]
        for u in range(row.shape[0]):
            row[u] = 1.0
    dropout_rows(out, out.shape[0], key, p)


# ----------------------------------------------------------------------------------
# encoder: x[t] = wte[token[t]] + wpe[t]

@njit(**JIT)
def encoder_forward(out, tokens, wte, wpe, T):
    # out (T, C), tokens (T,), wte (V, C), wpe (maxT, C)
    C = out.shape[1]
    for t in range(T):
        o, e, p = out[t], wte[tokens[t]], wpe[t]
        for i in range(C):
            o[i] = e[i] + p[i]


@njit(**JIT)
def encoder_backward(dwte, dwpe, dout, tokens, T):
    C = dout.shape[1]
    for t in range(T):
        g, de, dp = dout[t], dwte[tokens[t]], dwpe[t]
        for i in range(C):
            de[i] += g[i]
            dp[i] += g[i]


# ----------------------------------------------------------------------------------
# layernorm over the last axis, eps 1e-5

@njit(**JIT)
def layernorm_forward(out, mean, rstd, inp, weight, bias, N):
    # out, inp (N, C); mean, rstd (N,); weight, bias (C,)
    C = inp.shape[1]
    for n in range(N):
        x = inp[n]
        m = 0.0
        for i in range(C):
            m += x[i]
        m /= C
        v = 0.0
        for i in range(C):
            d = x[i] - m
            v += d * d
        v /= C
        s = 1.0 / math.sqrt(v + 1e-5)
        o = out[n]
        mt, st = x.dtype.type(m), x.dtype.type(s)  # sums in float64, the row in its own precision
        for i in range(C):
            o[i] = (x[i] - mt) * st * weight[i] + bias[i]
        mean[n] = m
        rstd[n] = s


@njit(**JIT)
def layernorm_backward(dinp, dweight, dbias, dout, inp, mean, rstd, weight, N):
    # accumulates into dinp (N, C), dweight, dbias (C,)
    C = inp.shape[1]
    for n in range(N):
        x, g, di = inp[n], dout[n], dinp[n]
        m, s = mean[n], rstd[n]
        dnorm_mean = 0.0
        dnorm_norm_mean = 0.0
        for i in range(C):
            norm = (x[i] - m) * s
            dnorm = weight[i] * g[i]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
        dnorm_mean = x.dtype.type(dnorm_mean / C)  # sums in float64, the row in its own precision
        dnorm_norm_mean = x.dtype.type(dnorm_norm_mean / C)
        for i in range(C):
            norm = (x[i] - m) * s
            dnorm = weight[i] * g[i]
            dbias[i] += g[i]
            dweight[i] += norm * g[i]
            di[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s


# ----------------------------------------------------------------------------------
# linear layer: out = inp @ W + b, W stored (in, out) as GPT-2's Conv1D

@njit(**JIT)
def matmul_product(out, inp, weight, N, accumulate):
    # out (N, OC) (+)= inp (N, IC) @ weight (IC, OC): matmul_forward without its bias
    IC, OC = weight.shape
    if N == 1:  # one row (decoding): BLAS would pack the whole weight for a single row
        o, x = out[0], inp[0]
        if not accumulate:
            o[:OC] = 0.0
        for i in range(IC):
            xi = x[i]
            w = weight[i]
            for j in range(OC):
                o[j] += xi * w[j]
    else:
        gemm(NOTRANS, NOTRANS, N, OC, IC, 1.0, inp, weight, 1.0 if accumulate else 0.0, out)


@njit(**JIT)
def matmul_forward(out, inp, weight, bias, N, accumulate):
    # out (N, OC), inp (N, IC), weight (IC, OC), bias (OC,); accumulate: out += ...
    matmul_product(out, inp, weight, N, accumulate)
    OC = weight.shape[1]
    for n in range(N):
        o = out[n]
        for i in range(OC):
            o[i] += bias[i]


@njit(**JIT)
def matmul_backward_products(dinp, dweight, dout, inp, weight, N, accumulate_dinp):
    # dweight (IC, OC) += inp^T @ dout; dinp (N, IC) (+)= dout @ W^T: matmul_backward without its bias
    IC, OC = weight.shape
    gemm(TRANS, NOTRANS, IC, OC, N, 1.0, inp, dout, 1.0, dweight)
    gemm(NOTRANS, TRANS, N, IC, OC, 1.0, dout, weight, 1.0 if accumulate_dinp else 0.0, dinp)


@njit(**JIT)
def matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, accumulate_dinp):
    # dweight (IC, OC) += inp^T @ dout; dbias += column sums; dinp (N, IC) (+)= dout @ W^T
    OC = weight.shape[1]
    for n in range(N):
        g = dout[n]
        for i in range(OC):
            dbias[i] += g[i]
    matmul_backward_products(dinp, dweight, dout, inp, weight, N, accumulate_dinp)


# ----------------------------------------------------------------------------------
# GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

@njit(inline="always", **JIT)
def _gelu(x):
    return F(0.5) * x * (F(1) + fast_tanh(GELU_SCALE * (x + GELU_CUBE * x * x * x)))


@njit(inline="always", **JIT)
def _gelu_grad(x):
    u = GELU_SCALE * (x + GELU_CUBE * x * x * x)
    du = GELU_SCALE * (F(1) + GELU_CUBE * x * x * F(3))
    tanh, dtanh = fast_tanh_and_grad(u)
    return F(0.5) * (F(1) + tanh) + F(0.5) * x * dtanh * du


@njit(**JIT)
def gelu_forward(out, inp, N):
    # out, inp (N, 4C)
    for n in range(N):
        x, o = inp[n], out[n]
        for i in range(x.shape[0]):
            o[i] = _gelu(x[i])


@njit(**JIT)
def bias_gelu_forward(out, inp, bias, N):
    # inp (N, 4C) += bias (4C,), then out = gelu(inp): the fc layer's bias and GELU in one pass
    for n in range(N):
        x, o = inp[n], out[n]
        for i in range(x.shape[0]):
            xi = x[i] + bias[i]
            x[i] = xi
            o[i] = _gelu(xi)


@njit(**JIT)
def gelu_backward(dinp, inp, dout, N):
    # dinp = gelu'(inp) * dout; dinp may be dout itself
    for n in range(N):
        x, g, d = inp[n], dout[n], dinp[n]
        for i in range(x.shape[0]):
            d[i] = _gelu_grad(x[i]) * g[i]


@njit(**JIT)
def gelu_backward_bias(dinp, dbias, inp, dout, N):
    # gelu_backward, and dbias (4C,) += the column sums of dinp (the fc layer's bias
    # gradient, summed row by row as matmul_backward sums it), in one pass
    for n in range(N):
        x, g, d = inp[n], dout[n], dinp[n]
        for i in range(x.shape[0]):
            di = _gelu_grad(x[i]) * g[i]
            d[i] = di
            dbias[i] += di


# ----------------------------------------------------------------------------------
# residual stream: the block's input is copied, then the projection adds onto it

@njit(**JIT)
def copy_rows(out, inp, N):
    # out[:N] = inp[:N], both (N, C)
    C = out.shape[1]
    for n in range(N):
        o, x = out[n], inp[n]
        for i in range(C):
            o[i] = x[i]


@njit(**JIT)
def add_rows(out, a, b, N):
    # out[:N] = a[:N] + b[:N], all (N, C)
    C = out.shape[1]
    for n in range(N):
        o, x, y = out[n], a[n], b[n]
        for i in range(C):
            o[i] = x[i] + y[i]


# ----------------------------------------------------------------------------------
# cross-entropy through a max-subtracted log-softmax (no log of a probability anywhere)

@njit(**JIT)
def crossentropy_forward(probs, logits, targets, T):
    # probs (T, V) <- softmax(logits), may alias logits; returns the summed loss over T positions
    total = 0.0
    for t in range(T):
        row, p = logits[t], probs[t]
        target_logit = row[targets[t]]
        mx = row_max(row, row.shape[0], -np.inf)
        for i in range(row.shape[0]):
            p[i] = row[i]
        s = exp_shifted(p, p.shape[0], mx)
        inv = p.dtype.type(1.0 / s)
        for i in range(row.shape[0]):
            p[i] *= inv
        total += mx + math.log(s) - target_logit
    return total


@njit(**JIT)
def crossentropy_backward(dlogits, probs, targets, scale, T):
    # dlogits (T, V) = (probs - onehot(targets)) * scale; may alias probs
    for t in range(T):
        d, p = dlogits[t], probs[t]
        for i in range(d.shape[0]):
            d[i] = p[i] * scale
        d[targets[t]] -= scale
