"""Whole-model passes built from the layer kernels: one sequence forward and backward,
the parallel training step over shards, evaluation, and one-token decoding with a
key/value cache.

Parameters, gradients and activations are flat buffers; `param_views` and `act_views`
cut them into named pieces with offsets computed once in Python (`Layout`,
`ActivationLayout`), so the kernels and the file format share one description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from core.threads import run_split, run_tasks, single_threaded_blas
from core.kernel_cache import drop_stale_pass_cache
from core.config import ModelConfig
from core.kernels import (
    JIT, attention_backward, attention_forward, crossentropy_backward, crossentropy_forward,
    encoder_backward, encoder_forward, gelu_backward, gelu_forward, layernorm_backward,
    layernorm_forward, matmul_backward, matmul_forward, copy_rows, gemm, NOTRANS, TRANS,
)


GROUP_ROWS = 256  # sequences are processed in groups of about this many positions


def group_size(config: ModelConfig, max_rows: int) -> int:
    """Sequences per group: enough rows for efficient matrix products, no more than a
    shard holds, and groups of even size. Progress counters advance one group at a time."""
    target = max(1, min(max_rows, -(-GROUP_ROWS // config.ctx)))
    n_groups = -(-max_rows // target)
    return -(-max_rows // n_groups)


drop_stale_pass_cache()


def dims_of(config: ModelConfig, group: int = 1) -> np.ndarray:
    """The sizes the kernels need: V, maxT, C, L, NH and G (sequences per group)."""
    c = config
    return np.array([c.vocab_size, c.ctx, c.n_embd, c.n_layer, c.n_head, group], dtype=np.int64)


ACT_BLOCKS = (
    "encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "att", "atty", "res2", "ln2", "ln2_mean",
    "ln2_rstd", "fch", "fchg", "res3", "lnf", "lnf_mean", "lnf_rstd", "logits",
    "dres", "dln", "dqkv", "dfch", "dfchg", "datt",
)


@dataclass(frozen=True)
class ActivationLayout:
    """Offsets of one thread's activation and backward scratch buffer, for groups of
    G sequences (N = G * maxT rows)."""

    offsets: np.ndarray

    @classmethod
    def of(cls, config: ModelConfig, group: int = 1) -> "ActivationLayout":
        V, T, C, L, NH, G = (int(x) for x in dims_of(config, group))
        N = G * T
        sizes = {
            "encoded": N * C, "ln1": L * N * C, "ln1_mean": L * N, "ln1_rstd": L * N,
            "qkv": L * N * 3 * C, "att": L * G * NH * T * T, "atty": L * N * C, "res2": L * N * C,
            "ln2": L * N * C, "ln2_mean": L * N, "ln2_rstd": L * N, "fch": L * N * 4 * C,
            "fchg": L * N * 4 * C, "res3": L * N * C, "lnf": N * C, "lnf_mean": N, "lnf_rstd": N,
            "logits": N * V, "dres": N * C, "dln": N * C, "dqkv": N * 3 * C, "dfch": N * 4 * C,
            "dfchg": N * 4 * C, "datt": T * T,
        }
        offsets = np.zeros(len(ACT_BLOCKS) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([sizes[b] for b in ACT_BLOCKS])
        return cls(offsets)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])


@njit(**JIT)
def param_views(flat, off, dims):
    V, T, C, L = dims[0], dims[1], dims[2], dims[3]
    return (
        flat[off[0]:off[1]].reshape((V, C)),            # wte
        flat[off[1]:off[2]].reshape((T, C)),            # wpe
        flat[off[2]:off[3]].reshape((L, C)),            # ln1w
        flat[off[3]:off[4]].reshape((L, C)),            # ln1b
        flat[off[4]:off[5]].reshape((L, C, 3 * C)),     # qkvw
        flat[off[5]:off[6]].reshape((L, 3 * C)),        # qkvb
        flat[off[6]:off[7]].reshape((L, C, C)),         # attprojw
        flat[off[7]:off[8]].reshape((L, C)),            # attprojb
        flat[off[8]:off[9]].reshape((L, C)),            # ln2w
        flat[off[9]:off[10]].reshape((L, C)),           # ln2b
        flat[off[10]:off[11]].reshape((L, C, 4 * C)),   # fcw
        flat[off[11]:off[12]].reshape((L, 4 * C)),      # fcb
        flat[off[12]:off[13]].reshape((L, 4 * C, C)),   # fcprojw
        flat[off[13]:off[14]].reshape((L, C)),          # fcprojb
        flat[off[14]:off[15]],                          # lnfw
        flat[off[15]:off[16]],                          # lnfb
    )


@njit(**JIT)
def act_views(flat, off, dims):
    V, T, C, L, NH, G = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    N = G * T
    return (
        flat[off[0]:off[1]].reshape((N, C)),                # encoded
        flat[off[1]:off[2]].reshape((L, N, C)),             # ln1
        flat[off[2]:off[3]].reshape((L, N)),                # ln1_mean
        flat[off[3]:off[4]].reshape((L, N)),                # ln1_rstd
        flat[off[4]:off[5]].reshape((L, N, 3 * C)),         # qkv
        flat[off[5]:off[6]].reshape((L, G, NH, T, T)),      # att
        flat[off[6]:off[7]].reshape((L, N, C)),             # atty
        flat[off[7]:off[8]].reshape((L, N, C)),             # res2
        flat[off[8]:off[9]].reshape((L, N, C)),             # ln2
        flat[off[9]:off[10]].reshape((L, N)),               # ln2_mean
        flat[off[10]:off[11]].reshape((L, N)),              # ln2_rstd
        flat[off[11]:off[12]].reshape((L, N, 4 * C)),       # fch
        flat[off[12]:off[13]].reshape((L, N, 4 * C)),       # fchg
        flat[off[13]:off[14]].reshape((L, N, C)),           # res3
        flat[off[14]:off[15]].reshape((N, C)),              # lnf
        flat[off[15]:off[16]],                              # lnf_mean
        flat[off[16]:off[17]],                              # lnf_rstd
        flat[off[17]:off[18]].reshape((N, V)),              # logits (then probs)
        flat[off[18]:off[19]].reshape((N, C)),              # dres
        flat[off[19]:off[20]].reshape((N, C)),              # dln
        flat[off[20]:off[21]].reshape((N, 3 * C)),          # dqkv
        flat[off[21]:off[22]].reshape((N, 4 * C)),          # dfch
        flat[off[22]:off[23]].reshape((N, 4 * C)),          # dfchg
        flat[off[23]:off[24]].reshape((T, T)),              # datt
    )


@njit(**JIT)
def gpt_forward(P, A, tokens, T, n_head):
    """Logits (R*T, V) of R sequences `tokens` (R, >=T) into A's logits; keeps every
    activation for backward. Row-wise work and matrix products run over all R*T rows at
    once; attention runs per sequence."""
    wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb = P
    (encoded, ln1, ln1_mean, ln1_rstd, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch, fchg, res3,
     lnf, lnf_mean, lnf_rstd, logits, dres, dln, dqkv, dfch, dfchg, datt) = A
    L = ln1w.shape[0]
    R = tokens.shape[0]
    N = R * T
    for r in range(R):
        encoder_forward(encoded[r * T:(r + 1) * T], tokens[r], wte, wpe, T)
    for l in range(L):
        residual = encoded if l == 0 else res3[l - 1]
        layernorm_forward(ln1[l], ln1_mean[l], ln1_rstd[l], residual, ln1w[l], ln1b[l], N)
        matmul_forward(qkv[l], ln1[l], qkvw[l], qkvb[l], N, False)
        for r in range(R):
            rows = slice(r * T, (r + 1) * T)
            attention_forward(atty[l, rows], att[l, r], qkv[l, rows], n_head, T)
        copy_rows(res2[l], residual, N)
        matmul_forward(res2[l], atty[l], attprojw[l], attprojb[l], N, True)
        layernorm_forward(ln2[l], ln2_mean[l], ln2_rstd[l], res2[l], ln2w[l], ln2b[l], N)
        matmul_forward(fch[l], ln2[l], fcw[l], fcb[l], N, False)
        gelu_forward(fchg[l], fch[l], N)
        copy_rows(res3[l], res2[l], N)
        matmul_forward(res3[l], fchg[l], fcprojw[l], fcprojb[l], N, True)
    layernorm_forward(lnf, lnf_mean, lnf_rstd, res3[L - 1], lnfw, lnfb, N)
    C = lnf.shape[1]
    gemm(NOTRANS, TRANS, N, wte.shape[0], C, 1.0, lnf, wte, 0.0, logits)


@njit(**JIT)
def gpt_backward(G, P, A, tokens, T, n_head):
    """Accumulates the gradients of R sequences into G, given dlogits in A's logits."""
    wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb = P
    (dwte, dwpe, dln1w, dln1b, dqkvw, dqkvb, dattprojw, dattprojb, dln2w, dln2b, dfcw, dfcb,
     dfcprojw, dfcprojb, dlnfw, dlnfb) = G
    (encoded, ln1, ln1_mean, ln1_rstd, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch, fchg, res3,
     lnf, lnf_mean, lnf_rstd, dlogits, dres, dln, dqkv, dfch, dfchg, datt) = A
    L = ln1w.shape[0]
    V, C = wte.shape
    R = tokens.shape[0]
    N = R * T
    # logits = lnf @ wte^T
    gemm(TRANS, NOTRANS, V, C, N, 1.0, dlogits, lnf, 1.0, dwte)
    gemm(NOTRANS, NOTRANS, N, C, V, 1.0, dlogits, wte, 0.0, dln)
    dres[:N] = 0.0
    layernorm_backward(dres, dlnfw, dlnfb, dln, res3[L - 1], lnf_mean, lnf_rstd, lnfw, N)
    for l in range(L - 1, -1, -1):
        residual = encoded if l == 0 else res3[l - 1]
        # res3 = res2 + gelu(ln2 @ fcw + fcb) @ fcprojw + fcprojb; dres flows through unchanged
        matmul_backward(dfchg, dfcprojw[l], dfcprojb[l], dres, fchg[l], fcprojw[l], N, False)
        gelu_backward(dfch, fch[l], dfchg, N)
        matmul_backward(dln, dfcw[l], dfcb[l], dfch, ln2[l], fcw[l], N, False)
        layernorm_backward(dres, dln2w[l], dln2b[l], dln, res2[l], ln2_mean[l], ln2_rstd[l], ln2w[l], N)
        # res2 = residual + attention(ln1 @ qkvw + qkvb) @ attprojw + attprojb
        matmul_backward(dln, dattprojw[l], dattprojb[l], dres, atty[l], attprojw[l], N, False)
        for r in range(R):
            rows = slice(r * T, (r + 1) * T)
            attention_backward(dqkv[rows], datt, dln[rows], qkv[l, rows], att[l, r], n_head, T)
        matmul_backward(dln, dqkvw[l], dqkvb[l], dqkv, ln1[l], qkvw[l], N, False)
        layernorm_backward(dres, dln1w[l], dln1b[l], dln, residual, ln1_mean[l], ln1_rstd[l], ln1w[l], N)
    for r in range(R):
        encoder_backward(dwte, dwpe, dres[r * T:(r + 1) * T], tokens[r], T)


FORWARD, LOSS, TRAIN = 0, 1, 2  # what train_shard computes: logits; and the loss; and gradients


@njit(**JIT)
def train_shard(params, grads, acts, off, aoff, dims, batch, lo, hi, scale, zero, mode, losses, progress, stop):
    """Runs rows lo:hi of `batch` (B, T+1) through the model, in groups of dims[5]
    sequences: forward only (FORWARD, logits left in the activations), with the loss
    (LOSS), or with the backward pass too (TRAIN), accumulating into this shard's own
    gradient buffer `grads` (zeroed first when `zero`) with its own scratch `acts`.
    losses[b] gets the mean loss of row b; progress[0] counts finished rows; a non-zero
    stop[0] ends the shard after its current group. Training, evaluation and the
    sampler's prompt pass share this one compiled kernel, one call per shard thread."""
    T = batch.shape[1] - 1
    n_head, group = dims[4], dims[5]
    if zero and mode == TRAIN:
        grads[:] = 0.0
    P = param_views(params, off, dims)
    G = param_views(grads, off, dims)
    A = act_views(acts, aoff, dims)
    logits = A[17]
    for b0 in range(lo, hi, group):
        if stop[0] != 0:
            break
        b1 = min(b0 + group, hi)
        tokens = batch[b0:b1]
        gpt_forward(P, A, tokens, T, n_head)
        if mode != FORWARD:
            for r in range(b1 - b0):
                rows = logits[r * T:(r + 1) * T]
                losses[b0 + r] = crossentropy_forward(rows, rows, tokens[r, 1:], T) / T
                if mode == TRAIN:
                    crossentropy_backward(rows, rows, tokens[r, 1:], scale, T)
        if mode == TRAIN:
            gpt_backward(G, P, A, tokens, T, n_head)
        progress[0] += b1 - b0


N_CHUNKS = 256  # fixed partition of flat buffers, so sums do not depend on thread count


@njit(**JIT)
def reduce_chunks(grads, partial, c0, c1):
    """For chunks c0:c1 of N_CHUNKS equal pieces: grads[0] += grads[1:] in shard order,
    and partial[c] = the squared norm of chunk c of the sum, accumulated in float64."""
    n_shards, n = grads.shape
    size = (n + N_CHUNKS - 1) // N_CHUNKS
    for c in range(c0, c1):
        lo, hi = min(c * size, n), min((c + 1) * size, n)
        total = grads[0, lo:hi]  # views from 0: provably non-negative indices, so it vectorises
        for s in range(1, n_shards):
            part = grads[s, lo:hi]
            for i in range(hi - lo):
                total[i] += part[i]
        acc = 0.0
        for i in range(hi - lo):
            acc += np.float64(total[i]) * total[i]
        partial[c] = acc


@njit(**JIT)
def adamw_range(params, grad, m, v, segments, lo, hi, coef):
    """One AdamW step on elements lo:hi, in the parameters' own precision and in
    PyTorch's order of operations (decoupled decay on segments flagged 1). coef, of
    the parameters' dtype: decay factor 1 - lr * wd, 1 - beta1, beta2, 1 - beta2,
    sqrt(bias correction 2), eps, step size lr / bias correction 1, gradient scale."""
    shrink, w1, beta2, w2, bc2_sqrt, eps, step_size, grad_scale = (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7])
    for k in range(segments.shape[0]):
        a, b, decay = max(segments[k, 0], lo), min(segments[k, 1], hi), segments[k, 2]
        if a >= b:
            continue
        # views from 0, so the indices are provably non-negative and the loop vectorises
        P, G, M, V = params[a:b], grad[a:b], m[a:b], v[a:b]
        for i in range(b - a):
            g = G[i] * grad_scale
            mi = M[i] + w1 * (g - M[i])
            vi = V[i] * beta2 + w2 * g * g
            M[i] = mi
            V[i] = vi
            p = P[i] * shrink if decay else P[i]
            P[i] = p - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


def reduce_shards(grads: np.ndarray) -> float:
    """Sums every shard's gradient into grads[0], in shard order, one thread per shard.
    Returns the squared norm of the sum; neither depends on the thread count."""
    partial = np.zeros(N_CHUNKS, np.float64)
    run_split(lambda c0, c1: reduce_chunks(grads, partial, c0, c1), N_CHUNKS, grads.shape[0])
    return float(partial.sum())


def adamw_update(params: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, segments: np.ndarray,
                 lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, t: int,
                 grad_scale: float, threads: int = 1) -> None:
    """One AdamW step over every parameter (step number t from 1, gradient times
    `grad_scale` for clipping), on `threads` threads."""
    coef = np.array([1.0 - lr * weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, math.sqrt(1.0 - beta2 ** t), eps,
                     lr / (1.0 - beta1 ** t), grad_scale], dtype=params.dtype)
    run_split(lambda lo, hi: adamw_range(params, grad, m, v, segments, lo, hi, coef), len(params), threads)


@njit(**JIT)
def decode_step(params, off, dims, kcache, vcache, token, pos, x, xn, qkv, att, y, h, hg, logits):
    """Logits (V,) for `token` at position `pos`, attending over the cached keys and values
    of positions < pos; stores this position's key and value in the caches.
    kcache, vcache (L, maxT, C); x, xn, y (1, C); qkv (1, 3C); att (maxT,); h, hg (1, 4C)."""
    wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb = param_views(params, off, dims)
    L, NH = dims[3], dims[4]
    C = wte.shape[1]
    hs = C // NH
    scale = 1.0 / math.sqrt(hs)
    # Compile time: one row as a run-time count rather than the literal 1 lets numba reuse
    # the training pass's compiled kernels; scratch made like x rather than from x.dtype and
    # element loops rather than slice assignments avoid compiling numba's shape-error paths.
    one = x.shape[0]
    mean = np.empty_like(x[:, 0])
    rstd = np.empty_like(x[:, 0])
    for i in range(C):
        x[0, i] = wte[token, i] + wpe[pos, i]
    for l in range(L):
        layernorm_forward(xn, mean, rstd, x, ln1w[l], ln1b[l], one)
        matmul_forward(qkv, xn, qkvw[l], qkvb[l], one, False)
        for i in range(C):
            kcache[l, pos, i] = qkv[0, C + i]
            vcache[l, pos, i] = qkv[0, 2 * C + i]
        for hd in range(NH):
            q = qkv[0, hd * hs:(hd + 1) * hs]
            mx = -np.inf
            for u in range(pos + 1):
                k = kcache[l, u, hd * hs:(hd + 1) * hs]
                s = 0.0
                for i in range(hs):
                    s += q[i] * k[i]
                att[u] = s * scale
                mx = max(mx, att[u])
            total = 0.0
            for u in range(pos + 1):
                e = math.exp(att[u] - mx)
                att[u] = e
                total += e
            out = y[0, hd * hs:(hd + 1) * hs]
            out[:] = 0.0
            for u in range(pos + 1):
                w = att[u] / total
                vv = vcache[l, u, hd * hs:(hd + 1) * hs]
                for i in range(hs):
                    out[i] += w * vv[i]
        matmul_forward(x, y, attprojw[l], attprojb[l], one, True)
        layernorm_forward(xn, mean, rstd, x, ln2w[l], ln2b[l], one)
        matmul_forward(h, xn, fcw[l], fcb[l], one, False)
        gelu_forward(hg, h, one)
        matmul_forward(x, hg, fcprojw[l], fcprojb[l], one, True)
    layernorm_forward(xn, mean, rstd, x, lnfw, lnfb, one)
    x0, out = xn[0], logits[0]
    for v in range(wte.shape[0]):  # one row: dot products with each embedding
        e = wte[v]
        acc = 0.0
        for i in range(C):
            acc += x0[i] * e[i]
        out[v] = acc


@dataclass
class Workspace:
    """One model's kernel buffers for `shards` shards: activations and gradients per shard."""

    dims: np.ndarray
    act_offsets: np.ndarray
    acts: np.ndarray  # (shards, activation size)
    grads: np.ndarray  # (shards, parameter count)

    @classmethod
    def create(cls, config: ModelConfig, shards: int, rows_per_shard: int, dtype=np.float32) -> "Workspace":
        from core.model import Layout

        group = group_size(config, rows_per_shard)
        alay = ActivationLayout.of(config, group)
        return cls(dims_of(config, group), alay.offsets, np.zeros((shards, alay.size), dtype),
                   np.zeros((shards, Layout.of(config).size), dtype))

    def run(self, params: np.ndarray, offsets: np.ndarray, batch: np.ndarray, bounds: np.ndarray, scale: float,
            zero: bool, mode: int, losses: np.ndarray, progress: np.ndarray, stop: np.ndarray) -> None:
        """`train_shard` for every shard s over rows bounds[s]:bounds[s+1], one thread each."""
        def shard(s: int) -> None:
            train_shard(params, self.grads[s], self.acts[s], offsets, self.act_offsets, self.dims, batch,
                        bounds[s], bounds[s + 1], scale, zero, mode, losses, progress[s:s + 1], stop)

        run_tasks(shard, len(self.acts))

    def views(self, shard: int = 0) -> tuple:
        """Named activation views of one shard (as `act_views` gives them)."""
        return act_views(self.acts[shard], self.act_offsets, self.dims)


def loss_and_grad(params: np.ndarray, config: ModelConfig, batch: np.ndarray, n_shards: int = 1) -> tuple[float, np.ndarray]:
    """Mean loss over `batch` (B, T+1) and its gradient, in the dtype of `params`.
    For tests and tools; the trainer keeps its buffers between steps instead."""
    from core.model import Layout

    B, T = batch.shape[0], batch.shape[1] - 1
    bounds = np.array([B * s // n_shards for s in range(n_shards + 1)], dtype=np.int64)
    ws = Workspace.create(config, n_shards, int(np.diff(bounds).max()), params.dtype)
    losses = np.zeros(B, np.float64)
    with single_threaded_blas():
        ws.run(params, Layout.of(config).offsets, np.ascontiguousarray(batch, dtype=np.int32), bounds,
               1.0 / (B * T), True, TRAIN, losses, np.zeros(n_shards, np.int64), np.zeros(1, np.int64))
        reduce_shards(ws.grads)
    return float(losses.mean()), ws.grads[0].copy()


def forward_logits(params: np.ndarray, config: ModelConfig, tokens: np.ndarray, ws: "Workspace | None" = None):
    """Runs one sequence (T <= ctx tokens) through the model at once. Returns its logits
    (T, V) and the workspace, whose activations then hold every layer's keys and values."""
    from core.model import Layout

    ws = ws or Workspace.create(config, 1, 1, params.dtype)
    T = len(tokens)
    batch = np.zeros((1, T + 1), np.int32)
    batch[0, :T] = tokens
    ws.run(params, Layout.of(config).offsets, batch, np.array([0, 1], np.int64), 1.0, False, FORWARD,
           np.zeros(1), np.zeros(1, np.int64), np.zeros(1, np.int64))
    return ws.views()[17][:T], ws
