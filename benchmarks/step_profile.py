"""An instrumented copy of one training step's shard pass, for benchmarks/bench_step_account.py.

numba has no timer inside compiled code, so this module reads the CPU's time-stamp counter
(`llvm.readcyclecounter`, RDTSC on x86: constant and invariant here, a few nanoseconds a
read) between the kernel calls of the shard pass. `profiled_forward`, `profiled_backward`
and `profiled_shard` are `core.passes.gpt_forward`, `gpt_backward` and `shard_pass` in
TRAIN mode, call for call, dropout included (a `Dropout`, its masks drawn as the step
draws them), with `matmul_forward` / `matmul_backward` and `projection_forward` /
`projection_backward` opened into their products (`matmul_product`, `gemm`), their bias
loops and their masks, so that each product and each element-wise pass has its own clock;
`profiled_run_shards` runs them one shard per thread in a `prange`, as
`core.workspace.run_shards` does. The arithmetic is the same, so the gradients are the
same bit for bit, with and without dropout (tests/test_step_account.py checks it): if
core/passes.py changes, this copy must follow.

Each shard adds the ticks of part k to clock[k]; clock[ENTRY] and clock[EXIT] are the
counter when the shard began and ended, so the launch, the wait for the slower shard and
the return can be told apart from Python, which reads the same counter (`tsc`).
"""

from __future__ import annotations

from pathlib import Path

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from cllm.core.kernel_cache import drop_stale_module
from cllm.core.kernels import (
    ATTENTION_OUT,
    EMBEDDING,
    JIT,
    MLP_OUT,
    NOTRANS,
    TRANS,
    Dropout,
    add_rows,
    bias_gelu_forward,
    copy_rows,
    crossentropy_backward,
    crossentropy_forward,
    dropout_rows,
    encoder_backward,
    encoder_forward,
    gelu_backward_bias,
    gemm,
    layernorm_backward,
    layernorm_forward,
    matmul_product,
    site_key,
)
from cllm.core.layout import act_views, param_views
from cllm.core.passes import attention_backward_pass, attention_forward_pass

# The parts of a step a shard times, in the order they run; (name, kind): "product" parts
# are matrix products (rated in GFLOP/s), "pass" parts stream memory (GB/s), "glue" is
# the rest of the shard's loop (views, loss bookkeeping, progress). Attention's own
# dropout (on its probabilities) is part of attention; the dropout parts, with no time
# at rate 0, are the masks of the embeddings and both residual branches, and the
# branches' residual adds (at rate 0 the branch's product accumulates onto the residual
# copy instead).
PARTS = (
    ("zero the shard's gradients", "pass"),
    ("embedding fwd (wte + wpe)", "pass"),
    ("LayerNorm 1 fwd", "pass"),
    ("qkv product fwd", "product"),
    ("qkv bias fwd", "pass"),
    ("attention fwd", "product"),
    ("residual copy (attention)", "pass"),
    ("attention projection fwd", "product"),
    ("attention projection bias fwd", "pass"),
    ("LayerNorm 2 fwd", "pass"),
    ("MLP fc product fwd", "product"),
    ("MLP fc bias + GELU fwd", "pass"),
    ("residual copy (MLP)", "pass"),
    ("MLP projection fwd", "product"),
    ("MLP projection bias fwd", "pass"),
    ("LayerNorm f fwd", "pass"),
    ("head (logits) fwd", "product"),
    ("cross-entropy fwd (softmax rows)", "pass"),
    ("cross-entropy bwd", "pass"),
    ("head bwd: d wte", "product"),
    ("head bwd: d lnf", "product"),
    ("LayerNorm f bwd (+ zero d residual)", "pass"),
    ("MLP projection bwd: dW", "product"),
    ("MLP projection bwd: d bias", "pass"),
    ("MLP projection bwd: d input", "product"),
    ("GELU bwd + MLP fc d bias", "pass"),
    ("MLP fc bwd: dW", "product"),
    ("MLP fc bwd: d input", "product"),
    ("LayerNorm 2 bwd", "pass"),
    ("attention projection bwd: dW", "product"),
    ("attention projection bwd: d bias", "pass"),
    ("attention projection bwd: d input", "product"),
    ("attention bwd", "product"),
    ("qkv bwd: dW", "product"),
    ("qkv bwd: d bias", "pass"),
    ("qkv bwd: d input", "product"),
    ("LayerNorm 1 bwd", "pass"),
    ("embedding bwd", "pass"),
    ("dropout fwd (embedding and branch masks, residual adds)", "pass"),
    ("dropout bwd (embedding and branch masks)", "pass"),
    ("shard loop glue (views, losses, progress)", "glue"),
)
(ZERO_GRADS, EMB_F, LN1_F, QKV_F, QKV_BIAS_F, ATT_F, RES2_COPY, ATTPROJ_F, ATTPROJ_BIAS_F, LN2_F, FC_F, FC_BIAS_GELU_F,
 RES3_COPY, FCPROJ_F, FCPROJ_BIAS_F, LNF_F, HEAD_F, CE_F, CE_B, HEAD_DW, HEAD_DX, LNF_B, FCPROJ_DW,
 FCPROJ_DB, FCPROJ_DX, GELU_FC_DB, FC_DW, FC_DX, LN2_B, ATTPROJ_DW, ATTPROJ_DB, ATTPROJ_DX, ATT_B, QKV_DW,
 QKV_DB, QKV_DX, LN1_B, EMB_B, DROPOUT_F, DROPOUT_B, SHARD_GLUE) = range(len(PARTS))
ENTRY, EXIT = len(PARTS), len(PARTS) + 1
CLOCK_SLOTS = (len(PARTS) + 2 + 7) // 8 * 8 + 8  # a shard's row, padded so no two shards share a cache line


@intrinsic
def _read_counter(typingctx):
    """The time-stamp counter (llvm.readcyclecounter)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(**JIT)
def tsc():
    """The time-stamp counter, for Python to read on the same clock as the shards."""
    return _read_counter()  # type: ignore[call-arg]  # numba's stubs count the typing context as an argument


@njit(inline="always", **JIT)
def lap(clock, part, t0):
    """Adds the ticks since t0 to `part`; returns now."""
    t1: int = _read_counter()  # type: ignore[call-arg]
    clock[part] += t1 - t0
    return t1


@njit(inline="always", **JIT)
def add_bias(out, bias, N):
    """matmul_forward's bias loop."""
    OC = bias.shape[0]
    for n in range(N):
        o = out[n]
        for i in range(OC):
            o[i] += bias[i]


@njit(**JIT)
def linear_backward(dinp, dweight, dbias, dout, inp, weight, N, clock, t, dw_part, db_part, dx_part):
    """matmul_backward (accumulate_dinp False), each of its three parts timed."""
    IC, OC = weight.shape
    gemm(TRANS, NOTRANS, IC, OC, N, 1.0, inp, dout, 1.0, dweight)
    t = lap(clock, dw_part, t)
    for n in range(N):
        g = dout[n]
        for i in range(OC):
            dbias[i] += g[i]
    t = lap(clock, db_part, t)
    gemm(NOTRANS, TRANS, N, IC, OC, 1.0, dout, weight, 0.0, dinp)
    return lap(clock, dx_part, t)


@njit(**JIT)
def drop_branch(x, D, layer, site, R, T):
    """The masks of a residual branch's R sequences (projection_forward / _backward's loop)."""
    for r in range(R):
        dropout_rows(x[r * T:(r + 1) * T], T, site_key(D, r, layer, site), D.resid)


@njit(**JIT)
def projection_forward(out, residual, inp, weight, bias, scratch, D, layer, site, R, T, clock, t, copy_part,
                       product_part, bias_part):
    """core.passes.projection_forward, timed: the residual copy, the product and the bias
    at rate 0; the product into `scratch`, its bias, then the masks and the residual add
    (DROPOUT_F) under dropout. Returns the counter."""
    N = R * T
    if D.resid > 0.0:
        matmul_product(scratch, inp, weight, N, False)
        t = lap(clock, product_part, t)
        add_bias(scratch, bias, N)
        t = lap(clock, bias_part, t)
        drop_branch(scratch, D, layer, site, R, T)
        add_rows(out, residual, scratch, N)
        return lap(clock, DROPOUT_F, t)
    copy_rows(out, residual, N)
    t = lap(clock, copy_part, t)
    matmul_product(out, inp, weight, N, True)
    t = lap(clock, product_part, t)
    add_bias(out, bias, N)
    return lap(clock, bias_part, t)


@njit(**JIT)
def projection_backward(dinp, dweight, dbias, dout, inp, weight, scratch, D, layer, site, R, T, clock, t, dw_part,
                        db_part, dx_part):
    """core.passes.projection_backward, timed: under dropout, dout masked into `scratch`
    (DROPOUT_B) first. Returns the counter."""
    N = R * T
    if D.resid > 0.0:
        copy_rows(scratch, dout, N)
        drop_branch(scratch, D, layer, site, R, T)
        t = lap(clock, DROPOUT_B, t)
        return linear_backward(dinp, dweight, dbias, scratch, inp, weight, N, clock, t, dw_part, db_part, dx_part)
    return linear_backward(dinp, dweight, dbias, dout, inp, weight, N, clock, t, dw_part, db_part, dx_part)


@njit(**JIT)
def profiled_forward(P, A, tokens, T, n_head, D, clock, t):
    """core.passes.gpt_forward (all logits), timed part by part; returns the counter."""
    L = P.ln1w.shape[0]
    R = tokens.shape[0]
    N = R * T
    for r in range(R):
        encoder_forward(A.encoded[r * T:(r + 1) * T], tokens[r], P.wte, P.wpe, T)
        if D.embd > 0.0:
            t = lap(clock, EMB_F, t)
            dropout_rows(A.encoded[r * T:(r + 1) * T], T, site_key(D, r, 0, EMBEDDING), D.embd)
            t = lap(clock, DROPOUT_F, t)
    t = lap(clock, EMB_F, t)
    for l in range(L):
        residual = A.encoded if l == 0 else A.res3[l - 1]
        layernorm_forward(A.ln1[l], A.ln1_mean[l], A.ln1_rstd[l], residual, P.ln1w[l], P.ln1b[l], N)
        t = lap(clock, LN1_F, t)
        matmul_product(A.qkv[l], A.ln1[l], P.qkvw[l], N, False)
        t = lap(clock, QKV_F, t)
        add_bias(A.qkv[l], P.qkvb[l], N)
        t = lap(clock, QKV_BIAS_F, t)
        for r in range(R):
            attention_forward_pass(A, l, r, T, n_head, D)
        t = lap(clock, ATT_F, t)
        t = projection_forward(A.res2[l], residual, A.atty[l], P.attprojw[l], P.attprojb[l], A.dbranch, D, l,
                               ATTENTION_OUT, R, T, clock, t, RES2_COPY, ATTPROJ_F, ATTPROJ_BIAS_F)
        layernorm_forward(A.ln2[l], A.ln2_mean[l], A.ln2_rstd[l], A.res2[l], P.ln2w[l], P.ln2b[l], N)
        t = lap(clock, LN2_F, t)
        matmul_product(A.fch[l], A.ln2[l], P.fcw[l], N, False)
        t = lap(clock, FC_F, t)
        bias_gelu_forward(A.fchg[l], A.fch[l], P.fcb[l], N)
        t = lap(clock, FC_BIAS_GELU_F, t)
        t = projection_forward(A.res3[l], A.res2[l], A.fchg[l], P.fcprojw[l], P.fcprojb[l], A.dbranch, D, l,
                               MLP_OUT, R, T, clock, t, RES3_COPY, FCPROJ_F, FCPROJ_BIAS_F)
    layernorm_forward(A.lnf, A.lnf_mean, A.lnf_rstd, A.res3[L - 1], P.lnfw, P.lnfb, N)
    t = lap(clock, LNF_F, t)
    V, C = P.wte.shape
    gemm(NOTRANS, TRANS, N, V, C, 1.0, A.lnf, P.wte, 0.0, A.logits)
    return lap(clock, HEAD_F, t)


@njit(**JIT)
def profiled_backward(G, P, A, tokens, T, n_head, D, clock, t):
    """core.passes.gpt_backward, timed part by part; returns the counter."""
    L = P.ln1w.shape[0]
    V, C = P.wte.shape
    R = tokens.shape[0]
    N = R * T
    dlogits, dres, dbranch = A.logits, A.dresidual, A.dbranch
    gemm(TRANS, NOTRANS, V, C, N, 1.0, dlogits, A.lnf, 1.0, G.wte)
    t = lap(clock, HEAD_DW, t)
    gemm(NOTRANS, NOTRANS, N, C, V, 1.0, dlogits, P.wte, 0.0, dbranch)
    t = lap(clock, HEAD_DX, t)
    dres[:N] = 0.0
    layernorm_backward(dres, G.lnfw, G.lnfb, dbranch, A.res3[L - 1], A.lnf_mean, A.lnf_rstd, P.lnfw, N)
    t = lap(clock, LNF_B, t)
    for l in range(L - 1, -1, -1):
        residual = A.encoded if l == 0 else A.res3[l - 1]
        t = projection_backward(A.dfchg, G.fcprojw[l], G.fcprojb[l], dres, A.fchg[l], P.fcprojw[l], dbranch, D, l,
                                MLP_OUT, R, T, clock, t, FCPROJ_DW, FCPROJ_DB, FCPROJ_DX)
        gelu_backward_bias(A.dfch, G.fcb[l], A.fch[l], A.dfchg, N)
        t = lap(clock, GELU_FC_DB, t)
        gemm(TRANS, NOTRANS, C, 4 * C, N, 1.0, A.ln2[l], A.dfch, 1.0, G.fcw[l])
        t = lap(clock, FC_DW, t)
        gemm(NOTRANS, TRANS, N, C, 4 * C, 1.0, A.dfch, P.fcw[l], 0.0, dbranch)
        t = lap(clock, FC_DX, t)
        layernorm_backward(dres, G.ln2w[l], G.ln2b[l], dbranch, A.res2[l], A.ln2_mean[l], A.ln2_rstd[l],
                           P.ln2w[l], N)
        t = lap(clock, LN2_B, t)
        t = projection_backward(dbranch, G.attprojw[l], G.attprojb[l], dres, A.atty[l], P.attprojw[l],
                                A.dfch[:, :C], D, l, ATTENTION_OUT, R, T, clock, t, ATTPROJ_DW, ATTPROJ_DB,
                                ATTPROJ_DX)
        for r in range(R):
            attention_backward_pass(A, l, r, T, n_head, D)
        t = lap(clock, ATT_B, t)
        t = linear_backward(dbranch, G.qkvw[l], G.qkvb[l], A.dqkv, A.ln1[l], P.qkvw[l], N, clock, t,
                            QKV_DW, QKV_DB, QKV_DX)
        layernorm_backward(dres, G.ln1w[l], G.ln1b[l], dbranch, residual, A.ln1_mean[l], A.ln1_rstd[l],
                           P.ln1w[l], N)
        t = lap(clock, LN1_B, t)
    for r in range(R):
        if D.embd > 0.0:
            dropout_rows(dres[r * T:(r + 1) * T], T, site_key(D, r, 0, EMBEDDING), D.embd)
            t = lap(clock, DROPOUT_B, t)
        encoder_backward(G.wte, G.wpe, dres[r * T:(r + 1) * T], tokens[r], T)
        t = lap(clock, EMB_B, t)
    return t


@njit(**JIT)
def profiled_shard(params, grads, acts, ptable, atable, n_head, group, batch, lo, hi, scale, zero, losses, progress,
                   dropout, clock):
    """core.passes.shard_pass in TRAIN mode (no stop flag), timed into `clock`; `dropout`
    a `Dropout`, keyed to batch row 0 as there."""
    T = batch.shape[1] - 1
    t: int = _read_counter()  # type: ignore[call-arg]
    clock[ENTRY] = t
    if zero:
        grads[:] = 0.0
    t = lap(clock, ZERO_GRADS, t)
    P = param_views(params, ptable)
    G = param_views(grads, ptable)
    A = act_views(acts, atable)
    for b0 in range(lo, hi, group):
        b1 = min(b0 + group, hi)
        tokens = batch[b0:b1]
        D = Dropout(dropout.embd, dropout.attn, dropout.resid, dropout.seed, dropout.step, dropout.first_row + b0)
        t = lap(clock, SHARD_GLUE, t)
        t = profiled_forward(P, A, tokens, T, n_head, D, clock, t)
        for r in range(b1 - b0):
            rows = A.logits[r * T:(r + 1) * T]
            losses[b0 + r] = crossentropy_forward(rows, rows, tokens[r, 1:], T) / T
            t = lap(clock, CE_F, t)
            crossentropy_backward(rows, rows, tokens[r, 1:], scale, T)
            t = lap(clock, CE_B, t)
        t = profiled_backward(G, P, A, tokens, T, n_head, D, clock, t)
        progress[0] += b1 - b0
    t = lap(clock, SHARD_GLUE, t)
    clock[EXIT] = t


@njit(parallel=True, **JIT)
def profiled_run_shards(params, grads, acts, ptable, atable, n_head, group, batch, bounds, scale, zero, losses,
                        progress, dropout, clocks):
    """core.workspace.run_shards for `profiled_shard`: shard s on its own thread, its
    clock in clocks[s]."""
    for s in prange(grads.shape[0]):
        profiled_shard(params, grads[s], acts[s], ptable, atable, n_head, group, batch, bounds[s], bounds[s + 1],
                       scale, zero, losses, progress[s:s + 1], dropout, clocks[s])


def _drop_stale_cache() -> None:
    """numba stamps cached code with its own file only, and this copy compiles core's
    passes and kernels into itself: drop its cached code when they change, as
    core.kernel_cache does for core's modules (before anything here is compiled or loaded)."""
    cache = getattr(profiled_shard, "_cache", None)  # numba's, private
    path = getattr(cache, "_cache_path", None)
    if path:
        drop_stale_module(Path(path), "step_profile", ("kernels.py", "attention_kernels.py", "layout.py", "passes.py"))


_drop_stale_cache()
