"""FLOPs of one training step per token: the one count behind every "% of peak" of a
whole step in benchmarks/ (bench_train.py, bench_step_account.py's measured-step row,
bench_group_rows.py, bench_gpt2.py's fine-tuning).

Two counts, both 2 FLOPs a multiply-add and a backward pass twice the forward (3x):

- `useful` (the figure this project reports since session 3 of issue 24): the products the
  model needs, nothing it could skip. Every weight matrix once per token: qkv, the
  attention projection, the MLP's two, and the tied head (wte: its logits, its dW and the
  gradient into the last LayerNorm are real products, 29% of GPT-2 small's work); the
  embedding lookups are no products. Causal attention: query t meets t + 1 keys, so
  Q K^T and P V cost 2 x C x (T + 1) FLOPs per token and layer forward, on average half of
  the whole T x T. useful = 6 x (weight matrices' entries) + 6 x L x C x (T + 1).
- `nanogpt`: nanoGPT's `estimate_mfu` (PaLM's appendix B), for comparing with reports that
  use it: 6 x N + 12 x L x C x T, N = every parameter but wpe (`get_num_params`: wte stays,
  it is the head; biases and LayerNorms count), attention as the whole T x T.

Sessions 1 and 2 of issue 24 counted 6 x (every parameter but wte and wpe) + 12 x L x C x T
(the head left out, the whole T x T): 1.04x `useful` on nanoGPT's CPU config, 1.05x on
6L 192w ctx 128, 1.40x on 4L ctx 1024, 0.78x on GPT-2 small at ctx 1024. Their RESULTS.md
sections keep that count (benchmarks/README.md's table converts them).
"""

from __future__ import annotations

from dataclasses import dataclass

PRODUCT_WEIGHTS = ("wte", "qkvw", "attprojw", "fcw", "fcprojw")  # the matrices a token is multiplied by


@dataclass(frozen=True)
class TokenFlops:
    """FLOPs of one training step per token (forward + backward)."""

    useful: float
    nanogpt: float


def training_flops(cfg: dict, vocab: int) -> TokenFlops:
    """Both counts for a model of cfg's shape (n_layer, n_head, n_embd, ctx) and vocabulary."""
    from cllm.core.config import ModelConfig
    from cllm.core.layout import Layout

    L, C, T = cfg["n_layer"], cfg["n_embd"], cfg["ctx"]
    layout = Layout.params(ModelConfig(vocab_size=vocab, **{k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "ctx")}))
    sizes = {name: int(layout.table[i, 1] - layout.table[i, 0]) for i, name in enumerate(layout.names)}
    matrices = sum(sizes[name] for name in PRODUCT_WEIGHTS)
    return TokenFlops(useful=6 * matrices + 6 * L * C * (T + 1),
                      nanogpt=6 * (layout.size - sizes["wpe"]) + 12 * L * C * T)

