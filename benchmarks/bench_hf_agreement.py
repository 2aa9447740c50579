"""How closely transformers and CLLM agree on the same weights, both ways.

- Export: for each tokenizer kind (char, word, bpe), a model of nanoGPT's CPU shape (4L
  4H 128w, ctx 64) trained --steps steps on the corpus, written with `cllm export` and
  loaded with `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained`:
  the largest |logit difference| over --sequences held-out sequences of ctx tokens, and
  whether transformers' token ids equal CLLM's on the corpus' last 100,000 characters
  (and decode to CLLM's text).
- Import: GPT-2 small as benchmarks/bench_gpt2.py writes it (transformers' random
  weights, GPT-2's vocabulary), read by `cllm import`: the largest |logit difference|
  over a 1000-token sequence, and the ids on the corpus' first 100,000 characters.

The tests (tests/test_hf_transformers.py) assert 1e-4 on tiny models; this prints the
figures for models of a realistic size.

    python benchmarks/bench_hf_agreement.py
    python benchmarks/bench_hf_agreement.py --write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (
    DEFAULT_CORPUS,
    ROOT,
    command_line,
    load_text,
    machine_lines,
    table,
    torch_available,
    write_section,
)

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, ctx=64)


def logits_diff(cllm_model, hf_model, sequences) -> tuple[float, float]:
    """Largest |difference| and the largest |logit| over the sequences."""
    import torch

    from cllm.core.workspace import forward_logits

    worst, scale = 0.0, 0.0
    for seq in sequences:
        ours, _ = forward_logits(cllm_model.params, cllm_model.config, np.asarray(seq, np.int32))
        with torch.no_grad():
            theirs = hf_model(torch.tensor([list(seq)], dtype=torch.long)).logits[0].numpy()
        worst = max(worst, float(np.abs(ours - theirs).max()))
        scale = max(scale, float(np.abs(theirs).max()))
    return worst, scale


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--gpt2", default=str(ROOT / ".bench_data" / "gpt2-small" / "hf"))
    p.add_argument("--write", action="store_true", help="write the section 'Hugging Face agreement' of RESULTS.md")
    a = p.parse_args()
    if not torch_available():
        sys.exit("needs torch and transformers: pip install torch==2.13.0 transformers")
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.hf_export import export_gpt
    from cllm.core.hf_import import load_hf_folder
    from cllm.core.trainer import Trainer

    torch.set_num_threads(2)
    corpus = load_corpus(a.corpus)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("char", "word", "bpe"):
            trainer = Trainer.new(corpus, SHAPE, TrainConfig(steps=a.steps, batch=12, eval_interval=0),
                                  tokenizer=kind, vocab_size={"word": 2000, "bpe": 512}.get(kind))
            trainer.run()
            model = trainer.model
            export_gpt(model, Path(tmp) / kind)
            hf_model = GPT2LMHeadModel.from_pretrained(Path(tmp) / kind)
            hf_tok = AutoTokenizer.from_pretrained(Path(tmp) / kind)
            val = trainer.val_tokens
            T = SHAPE["ctx"]
            starts = np.linspace(0, len(val) - T - 1, a.sequences).astype(int)
            worst, scale = logits_diff(model, hf_model, [val[s:s + T] for s in starts])
            text = corpus.text[-100_000:]
            ids = model.tokenizer.encode(text)
            same_ids = hf_tok(text)["input_ids"] == ids.tolist()
            same_text = hf_tok.decode(ids.tolist()) == model.tokenizer.decode(ids)
            rows.append([f"export, {kind} ({model.config.vocab_size} tokens, trained {a.steps} steps)",
                         f"{worst:.2g}", f"{scale:.3g}", f"{len(ids):,}", "yes" if same_ids else "NO",
                         "yes" if same_text else "NO"])
            print(rows[-1], flush=True)
    gpt2 = Path(a.gpt2)
    if (gpt2 / "config.json").exists():
        loaded = load_hf_folder(gpt2).model
        hf_model = GPT2LMHeadModel.from_pretrained(gpt2).eval()
        hf_tok = AutoTokenizer.from_pretrained(gpt2)
        text = load_text(a.corpus)[:100_000]
        ids = loaded.tokenizer.encode(text)
        worst, scale = logits_diff(loaded, hf_model, [ids[:1000]])
        rows.append(["import, GPT-2 small (transformers' random weights, GPT-2's vocabulary)", f"{worst:.2g}",
                     f"{scale:.3g}", f"{len(ids):,}", "yes" if hf_tok(text)["input_ids"] == ids.tolist() else "NO",
                     "yes" if hf_tok.decode(ids.tolist()) == loaded.tokenizer.decode(ids) else "NO"])
        print(rows[-1], flush=True)
    else:
        print(f"{gpt2} not found: run benchmarks/bench_gpt2.py first for the GPT-2 small row")
    out = ["CLLM against transformers on the same weights, float32: the largest |logit difference| (and, for "
           f"scale, the largest |logit|) over {a.sequences} held-out sequences of ctx tokens (GPT-2 small: one "
           "sequence of 1000 tokens), and whether transformers' tokenizer gives CLLM's ids on 100,000 characters "
           "of the corpus and decodes them to CLLM's text.", ""]
    out += machine_lines() + [f"- command: `{command_line()}`", ""]
    out += [table(["model", "max abs logit diff", "max abs logit", "tokens compared", "same ids", "same text"],
                  rows)]
    text = "\n".join(out)
    print("\n" + text)
    if a.write:
        write_section("Hugging Face agreement", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
