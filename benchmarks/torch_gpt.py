"""The PyTorch peer: CLLM's arithmetic written the way nanoGPT writes it.

- wte, wpe; pre-LayerNorm blocks (eps 1e-5, biases everywhere); causal attention through
  F.scaled_dot_product_attention(is_causal=True); MLP of width 4C with tanh GELU
  (nn.GELU(approximate="tanh")); final LayerNorm; the head tied to wte. No dropout.
- AdamW betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on the 2-D weights only (wte and wpe
  included, as in nanoGPT and CLLM), gradient clip 1.0 on the global norm.
- Learning rate: `lr_at` is CLLM's (and nanoGPT's) schedule, linear warm-up then cosine
  to min_lr at the last step; the speed benchmark uses it too (its value does not change
  the cost of a step).
- Parameter names are GPT-2's, as CLLM's `GPT.tensors()` gives them; CLLM stores the
  linear weights (in, out), nn.Linear keeps (out, in), so `load_cllm` transposes them.
- Samplers: `generate_recompute` re-runs the whole (sliding) context for every token, as
  nanoGPT's sample.py does; `generate_kv` keeps a key/value cache and, like CLLM's
  sampler, rebuilds it from the last ctx/2 tokens when the context is full.

`python benchmarks/torch_gpt.py --check` loads a CLLM model into this one and compares
logits, loss, one step's gradients, the parameters after one AdamW step and the
cached-decoding logits (tolerance 1e-4).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Config:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    ctx: int = 64


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_head = c.n_head
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)

    def qkv(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))

    def forward(self, x, cache=None, pos=0):
        B, T, C = x.shape
        q, k, v = self.qkv(x)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # prefill from position 0 (T >= 1) or one new position
            kc, vc = cache
            kc[:, :, pos:pos + T] = k
            vc[:, :, pos:pos + T] = v
            y = F.scaled_dot_product_attention(q, kc[:, :, :pos + T], vc[:, :, :pos + T], is_causal=T > 1)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=1e-5)
        self.attn = Attention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=1e-5)
        self.mlp = MLP(c)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.ctx, c.n_embd)
        self.h = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, eps=1e-5)
        # GPT-2 initialisation, as CLLM's init_params (LayerNorm keeps its ones and zeros).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))
            elif is_linear_weight(name) or name in ("wte.weight", "wpe.weight"):
                nn.init.normal_(p, 0.0, 0.02)
            elif is_linear_weight(name.replace(".bias", ".weight")):
                nn.init.zeros_(p)

    def forward(self, idx, targets=None, cache=None, pos=0):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T, device=idx.device))
        for l, block in enumerate(self.h):
            x = block(x, None if cache is None else cache[l], pos)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def new_cache(self):
        c = self.config
        shape = (1, c.n_head, c.ctx, c.n_embd // c.n_head)
        dtype = self.wte.weight.dtype
        return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(c.n_layer)]


# -- training -------------------------------------------------------------------------

def lr_at(step: int, steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """CLLM's core.config.lr_at (nanoGPT's schedule)."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step >= steps:
        return min_lr
    ratio = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def make_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1, betas=(0.9, 0.99)):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


def train_step(model, opt, batch: torch.Tensor, lr: float, grad_clip: float = 1.0) -> tuple[float, float]:
    """One step on batch (B, T+1) int64. Returns (loss, gradient norm before clipping)."""
    for group in opt.param_groups:
        group["lr"] = lr
    _, loss = model(batch[:, :-1], batch[:, 1:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else torch.tensor(0.0)
    opt.step()
    return float(loss), float(norm)


def char_tokens(text: str) -> tuple[np.ndarray, list[str]]:
    """Character-level ids, vocabulary sorted (CLLM's and nanoGPT's char tokenizer)."""
    vocab = sorted(set(text))
    lut = {ch: i for i, ch in enumerate(vocab)}
    return np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text)), vocab


def split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CLLM's split: the last 10% held out."""
    n_val = len(tokens) // 10
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]


def random_batch(train: np.ndarray, ctx: int, batch: int, rng: np.random.Generator) -> torch.Tensor:
    """CLLM's batches: `batch` random windows of ctx+1 tokens."""
    starts = rng.integers(0, len(train) - ctx - 1, batch)
    return torch.from_numpy(np.stack([train[s:s + ctx + 1] for s in starts]).astype(np.int64))


@torch.no_grad()
def evaluate(model: TorchGPT, val: np.ndarray, batch: int = 64) -> float:
    """CLLM's protocol (core.trainer.evaluate): mean cross-entropy over every position of
    consecutive non-overlapping ctx+1 chunks of the held-out tokens."""
    ctx = model.config.ctx
    n = len(val) // (ctx + 1)
    chunks = torch.from_numpy(val[: n * (ctx + 1)].reshape(n, ctx + 1).astype(np.int64))
    total = 0.0
    for i in range(0, n, batch):
        part = chunks[i:i + batch]
        _, loss = model(part[:, :-1], part[:, 1:])
        total += float(loss) * len(part)
    return total / n


# -- sampling -------------------------------------------------------------------------

def _pick(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, -float("inf")), logits)
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=gen))


@torch.no_grad()
def generate_recompute(model: TorchGPT, prompt: list[int], max_new: int, temperature: float = 1.0,
                       top_k: int = 0, seed: int = 0):
    """nanoGPT's sample.py: every token re-runs the last ctx tokens. Yields token ids."""
    gen = torch.Generator().manual_seed(seed)
    ctx = model.config.ctx
    idx = torch.tensor([prompt[-ctx:]], dtype=torch.long)
    for _ in range(max_new):
        logits, _ = model(idx[:, -ctx:])
        token = _pick(logits[0, -1], temperature, top_k, gen)
        yield token
        idx = torch.cat([idx, torch.tensor([[token]])], dim=1)[:, -ctx:]


@torch.no_grad()
def generate_kv(model: TorchGPT, prompt: list[int], max_new: int, temperature: float = 1.0,
                top_k: int = 0, seed: int = 0):
    """Key/value cache; when the context is full the cache is rebuilt from the last ctx/2
    tokens (what CLLM's core.sampler.generate does). Yields token ids."""
    gen = torch.Generator().manual_seed(seed)
    ctx = model.config.ctx
    cache = model.new_cache()
    ids = list(prompt[-ctx:])
    logits, _ = model(torch.tensor([ids]), cache=cache, pos=0)
    pos = len(ids)
    for _ in range(max_new):
        token = _pick(logits[0, -1], temperature, top_k, gen)
        yield token
        ids.append(token)
        if pos >= ctx:
            keep = ids[-(ctx // 2):]
            logits, _ = model(torch.tensor([keep]), cache=cache, pos=0)
            pos = len(keep)
        else:
            logits, _ = model(torch.tensor([[token]]), cache=cache, pos=pos)
            pos += 1


# -- CLLM interop ---------------------------------------------------------------------

def is_linear_weight(name: str) -> bool:
    return name.endswith(".weight") and (".attn." in name or ".mlp." in name)


def from_cllm(cllm_model, dtype=torch.float32) -> TorchGPT:
    """A TorchGPT with the shape and the weights of a CLLM core.model.GPT."""
    c = cllm_model.config
    model = TorchGPT(Config(c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.ctx)).to(dtype)
    load_cllm(model, cllm_model)
    return model


@torch.no_grad()
def load_cllm(model: TorchGPT, cllm_model) -> None:
    params = dict(model.named_parameters())
    tensors = cllm_model.tensors()
    missing = set(params) ^ set(tensors)
    if missing:
        raise ValueError(f"names differ between CLLM and the torch model: {sorted(missing)}")
    for name, value in tensors.items():
        value = torch.from_numpy(np.ascontiguousarray(value.T if is_linear_weight(name) else value))
        params[name].copy_(value.to(params[name].dtype))


def cllm_named(cllm_model, flat: np.ndarray) -> dict[str, np.ndarray]:
    """A flat CLLM buffer (gradients, say) as GPT-2 tensors in torch's orientation."""
    return {name: (v.T if is_linear_weight(name) else v) for name, v in cllm_model.layout.named_views(flat).items()}


# -- the check ------------------------------------------------------------------------

def cllm_logits(params: np.ndarray, config, tokens: np.ndarray) -> np.ndarray:
    """Logits (T, V) of one sequence by CLLM's training forward pass."""
    from cllm.core.workspace import forward_logits

    return np.array(forward_logits(params, config, tokens)[0])


def check(args) -> bool:
    from cllm.core.config import ModelConfig, TrainConfig
    from cllm.core.config import lr_at as cllm_lr_at
    from cllm.core.model import GPT
    from cllm.core.optimizer import adamw_update
    from cllm.core.sampler import Decoder
    from cllm.core.tokenizer import train_tokenizer
    from cllm.core.trainer import ADAM_EPS
    from cllm.core.workspace import loss_and_grad

    torch.manual_seed(0)
    corpus = Path(args.corpus)
    text = corpus.read_text() if corpus.exists() else "".join(chr(32 + i) for i in range(65)) * 200
    tok = train_tokenizer("char", text)
    cfg = ModelConfig(vocab_size=tok.vocab_size, n_layer=args.layers, n_head=args.heads, n_embd=args.embd,
                      ctx=args.ctx).validate()
    cllm = GPT.create(cfg, tok, seed=1234)
    rng = np.random.default_rng(0)
    # Perturb the zero biases and unit LayerNorm weights so every parameter is exercised.
    cllm.params += rng.normal(0, 0.02, cllm.params.shape).astype(np.float32)
    tm = from_cllm(cllm)
    ids = tok.encode(text[: 20000]).astype(np.int64)
    starts = rng.integers(0, len(ids) - cfg.ctx - 1, args.batch)
    batch = np.stack([ids[s:s + cfg.ctx + 1] for s in starts]).astype(np.int32)
    tb = torch.from_numpy(batch.astype(np.int64))
    tol = args.tol
    results = []

    def report(what, err, scale=1.0, of="max |ref|"):
        rel = err / scale if scale else err
        ok = rel <= tol
        results.append(ok)
        print(f"  {'ok  ' if ok else 'FAIL'} {what:<56} max abs diff {err:.3g}" +
              (f" (relative to {of} {scale:.3g}: {rel:.3g})" if scale != 1.0 else ""))

    print(f"CLLM vs torch, float32, {cfg.n_layer}L {cfg.n_head}H {cfg.n_embd}w ctx{cfg.ctx}, batch {args.batch}, "
          f"vocab {cfg.vocab_size}, tolerance {tol:g}")
    # Logits and loss.
    cl_logits = cllm_logits(cllm.params, cfg, batch[0, :-1])
    cl_loss, cl_grad = loss_and_grad(cllm.params, cfg, batch, n_shards=2)
    tm.zero_grad()
    t_logits, t_loss = tm(tb[:, :-1], tb[:, 1:])
    report("logits of row 0", float(np.abs(cl_logits - t_logits[0].detach().numpy()).max()))
    report(f"loss ({cl_loss:.6f})", abs(cl_loss - t_loss.item()))
    # Gradients, each tensor relative to its largest entry.
    t_loss.backward()
    worst, worst_name, worst_scale = 0.0, "", 1.0
    for name, g in cllm_named(cllm, cl_grad).items():
        grad_of = dict(tm.named_parameters())[name].grad
        assert grad_of is not None  # after backward
        tg = grad_of.numpy()
        scale = float(np.abs(tg).max()) or 1.0
        err = float(np.abs(g - tg).max())
        if err / scale >= worst / worst_scale:
            worst, worst_name, worst_scale = err, name, scale
    report(f"gradients (worst tensor {worst_name})", worst, worst_scale)
    # Three AdamW steps with clipping, lr from the schedule at steps 10-12 of 100 (warm-up
    # 5), with the gradient times 1, -0.5 and 2 so the moments differ from step 1's. Both
    # optimisers get CLLM's gradients: Adam's first step is lr * g / (|g| + eps), which turns
    # float32 noise in the tiniest gradients (|g| ~ 1e-8) into differences of order lr.
    tcfg = TrainConfig(steps=100, warmup=5, lr=1e-3, min_lr=1e-4)
    lr = cllm_lr_at(10, tcfg)
    lr_err = max(abs(cllm_lr_at(s, tcfg) - lr_at(s, 100, 1e-3, 1e-4, 5)) for s in range(0, 120, 3))
    report("learning-rate schedule", lr_err)
    norm = math.sqrt(float((cl_grad.astype(np.float64) ** 2).sum()))
    t_grads = [p.grad.norm() for p in tm.parameters() if p.grad is not None]
    t_norm = float(torch.linalg.vector_norm(torch.stack(t_grads)))
    report(f"gradient norm ({norm:.4f})", abs(norm - t_norm), norm, "the norm")
    params = cllm.params.copy()
    m, v = np.zeros_like(params), np.zeros_like(params)
    opt = make_optimizer(tm, lr=lr)
    named = dict(tm.named_parameters())
    for t, factor in enumerate((1.0, -0.5, 2.0), start=1):
        grad = (cl_grad * np.float32(factor)).astype(np.float32)
        g_norm = math.sqrt(float((grad.astype(np.float64) ** 2).sum()))
        clip = 1.0 / (g_norm + 1e-6) if g_norm > 1.0 else 1.0
        step_lr = cllm_lr_at(9 + t, tcfg)
        adamw_update(params, grad, m, v, cllm.layout.decay_segments(), step_lr, 0.9, 0.99, ADAM_EPS, 0.1, t, clip)
        for name, g in cllm_named(cllm, grad).items():
            named[name].grad = torch.from_numpy(np.ascontiguousarray(g))
        torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = step_lr
        opt.step()
    after = GPT(cfg, tok, params)
    # Beyond one float32 ulp of the parameter: the two may round the decay and the update
    # at different points (CLLM's compiler may fuse them into one multiply-add).
    step_err = 0.0
    for n, v in cllm_named(after, params).items():
        theirs = dict(tm.named_parameters())[n].detach().numpy()
        step_err = max(step_err, float(np.maximum(np.abs(v - theirs) - np.spacing(np.abs(theirs)), 0).max()))
    report("parameters after three AdamW steps, beyond 1 ulp", step_err, lr, "lr")
    # Cached decoding: CLLM's decoder and torch's cache against torch's full forward.
    with torch.no_grad():
        seq = batch[1, : cfg.ctx]
        full, _ = tm(torch.from_numpy(seq[None].astype(np.int64)))
        full = full[0].numpy()
        dec = Decoder(after)
        half = cfg.ctx // 2
        cl = [dec.prefill(seq[:half]).copy()] + [dec.step(int(t)).copy() for t in seq[half:]]
        report("CLLM KV-cache decoding logits", float(np.abs(np.array(cl) - full[half - 1:]).max()))
        cache = tm.new_cache()
        tk = [tm(torch.from_numpy(seq[None, :half].astype(np.int64)), cache=cache, pos=0)[0][0, -1]]
        for p in range(half, cfg.ctx):
            tk.append(tm(torch.tensor([[int(seq[p])]]), cache=cache, pos=p)[0][0, -1])
        report("torch KV-cache decoding logits", float(np.abs(torch.stack(tk).numpy() - full[half - 1:]).max()))
    ok = all(results)
    print("check " + ("passed" if ok else "FAILED"))
    return ok


def main() -> int:
    from benchmarks.common import DEFAULT_CORPUS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare against CLLM (logits, loss, gradients, a step)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--embd", type=int, default=128)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args()
    if not args.check:
        p.print_help()
        return 0
    from cllm.core.threads import single_threaded_blas

    torch.set_num_threads(1)
    with single_threaded_blas():  # CLLM's kernels run parallel shards, each calling BLAS
        return 0 if check(args) else 1


if __name__ == "__main__":
    sys.exit(main())
