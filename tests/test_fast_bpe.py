"""tiktoken standing in for the `tokenizers` library's byte-level BPE when a corpus is
prepared: the same ids on varied text, the check that falls back where the merges are
not rank-consistent, and a difference found while encoding handing the rest back."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tiktoken
from tokenizers import Tokenizer as HFTokenizer

from cllm.core import fast_bpe
from cllm.core.prepare import SEPARATOR, TokenizerPlan, prepare
from cllm.core.tokenizer import BpeTokenizer, encode_many, split_pieces, train_tokenizer
from tests.helpers import make_text

CODE = '''def mean(xs: list[float]) -> float:
    """The mean; 0.0 for [] (it's defined so)."""
    if not xs:\treturn 0.0
    return sum(xs) / len(xs)  # O(n)\r\n
class Point:   \n        x: int = 0x1F; y = 1_000_000 ** 2
print(f"{mean([1.5, 2.5])!r:>10}", end="\\n\\n")
'''
PROSE = ("It's the cat's toy; we'll see, they've gone, I'm sure, you'd know. THE CAT'S TOY'LL "
         "roll... \u201cQuoted\u201d text - and a dash \u2014 na\u00efve caf\u00e9 fa\u00e7ade.\n")
UNICODE = ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac "
           "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0639\u0631\u0628\u064a emoji \U0001f600\U0001f44d\U0001f3fd "
           "e\u0301 \u00a0nbsp \u2028 \ufeff\u200d \U00010348 \u0663\u0664 \u00bd\n")
WHITESPACE = "a  b   c\t\td \n\n\n  \n\t\n x" + " " * 70 + "y\r\n\r\n" + "\n" * 9 + "  z  "


def training_text() -> str:
    return (CODE * 20 + PROSE * 20 + UNICODE * 5 + WHITESPACE * 5 + make_text(4000, seed=1)) * 2


def varied_texts() -> list[str]:
    """Code, prose, unicode, whitespace runs, documents joined as a corpus joins them,
    and random strings over all of them (texts the tokenizer was not trained on too)."""
    rng = random.Random(7)
    alphabet = CODE + PROSE + UNICODE + WHITESPACE + "'sdmtllvere0123456789"
    texts = [CODE, PROSE, UNICODE, WHITESPACE, "", " ", "\n", "'", "'s", " 's", "''ll", "x'S", "   ",
             SEPARATOR.join([CODE, PROSE, UNICODE]), make_text(3000, seed=9), "=" * 5000, " " * 5000,
             "\n" * 3000 + "end", "\U0001f600" * 500, "ab" * 10000]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))) for _ in range(300)]
    texts += [" ".join(rng.choice(PROSE.split() + CODE.split()) for _ in range(2000))]
    return texts


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    tok = train_tokenizer("bpe", training_text(), 600)
    assert isinstance(tok, BpeTokenizer)
    return tok


def hf_ids(tok: BpeTokenizer, text: str) -> list[int]:
    return tok.hf.encode(text, add_special_tokens=False).ids


def test_a_trained_bpe_is_rank_consistent_and_tiktoken_gives_its_ids(bpe):
    assert fast_bpe.not_rank_consistent(bpe._spec) is None
    fast = bpe.fast
    assert fast is not None
    texts = varied_texts()
    for text, got in zip(texts, encode_many(bpe, texts), strict=True):
        assert got.tolist() == hf_ids(bpe, text), text[:60]
        assert fast.encode_ordinary(text) == hf_ids(bpe, text), text[:60]
    assert bpe.agrees(texts) and bpe.fast is not None


def test_rank_consistent_bpes_of_several_sizes_agree_with_tokenizers():
    text = training_text()
    texts = varied_texts()[:60]
    for size in (256, 300, 1000, 3000):
        tok = train_tokenizer("bpe", text, size)
        assert isinstance(tok, BpeTokenizer)
        assert tok.fast is not None, (size, tok.slow_reason)
        for got, t in zip(encode_many(tok, texts), texts, strict=True):
            assert got.tolist() == hf_ids(tok, t)


def spec_with(bpe: BpeTokenizer, **model) -> dict:
    spec = json.loads(json.dumps(bpe._spec))
    spec["model"].update(model)
    return spec


def test_merges_that_are_not_rank_consistent_fall_back_to_tokenizers(bpe):
    merges = bpe._spec["model"]["merges"]
    vocab = bpe._spec["model"]["vocab"]
    swapped = merges[:10] + [merges[11], merges[10]] + merges[12:]
    assert "order" in (fast_bpe.not_rank_consistent(spec_with(bpe, merges=swapped)) or "")
    assert "exactly one merge" in (fast_bpe.not_rank_consistent(spec_with(bpe, merges=merges[:-1])) or "")
    # a token made by a merge that its own bytes never reach: "abc" from (a, bc) while (a, b) comes first
    small = {c: i for i, c in enumerate(sorted(fast_bpe._unicode_to_byte()))}
    small.update({"ab": 256, "bc": 257, "abc": 258})
    spec = spec_with(bpe, vocab=small, merges=[["a", "b"], ["b", "c"], ["a", "bc"]])
    assert "'abc' from its own bytes" in (fast_bpe.not_rank_consistent(spec) or "")
    tok = BpeTokenizer(HFTokenizer.from_str(json.dumps(spec)))
    assert tok.fast is None and "'abc'" in (tok.slow_reason or "")
    assert encode_many(tok, ["abc abcabc"])[0].tolist() == hf_ids(tok, "abc abcabc")
    assert bpe._spec["model"]["vocab"] == vocab  # the trained one is untouched
    with_added = dict(bpe._spec, added_tokens=[{"id": 600, "content": "<|endoftext|>"}])
    assert "added tokens" in (fast_bpe.not_rank_consistent(with_added) or "")


def wrong_encoder(tok: BpeTokenizer) -> tiktoken.Encoding:
    """tiktoken with the ranks of two tokens swapped: a stand-in that gives other ids."""
    fast = tok.fast
    assert fast is not None
    ranks = dict(fast._mergeable_ranks)
    first, second = (k for k, v in ranks.items() if v in (300, 301))
    ranks[first], ranks[second] = ranks[second], ranks[first]
    return tiktoken.Encoding("wrong", pat_str=fast_bpe.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def test_a_difference_found_while_preparing_hands_the_rest_to_tokenizers(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    texts = {f"doc{i}.txt": make_text(800, seed=i) + CODE + UNICODE for i in range(6)}
    for name, text in texts.items():
        (corpus / name).write_text(text)
    plan_notes: list[str] = []
    reference = prepare([corpus], tmp_path / "ref", TokenizerPlan("bpe", 400), on_note=plan_notes.append)
    assert any(n.startswith("encoding with tiktoken") for n in plan_notes), plan_notes
    tok = reference.tokenizer
    assert isinstance(tok, BpeTokenizer)
    slow = BpeTokenizer(tok.hf)
    slow._fast = wrong_encoder(slow)
    notes: list[str] = []
    ds = prepare([corpus], tmp_path / "ds", slow, on_note=notes.append)
    assert slow.fast is None and any("encoding with the tokenizers library: tiktoken's ids differ" in n for n in notes)
    for split in ("train", "val"):  # encoded by tiktoken, and all by tokenizers after the first check
        a, b = getattr(reference, split), getattr(ds, split)
        assert len(a) > 1000 and np.array_equal(a[0:len(a)], b[0:len(b)])


def test_long_texts_are_cut_where_the_ids_do_not_change(bpe):
    text = (CODE + WHITESPACE + "line  \n\n   \n" * 50 + PROSE + UNICODE) * 40
    pieces = split_pieces(text, 500)
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(len(p) >= 500 and p[-1] != "\n" and not p[-1].isspace() for p in pieces[:-1])
    assert all(p.startswith("\n") for p in pieces[1:])
    assert encode_many(bpe, [text])[0].tolist() == hf_ids(bpe, text) == bpe.encode(text).tolist()


def test_cllm_tiktoken_0_keeps_the_tokenizers_library(monkeypatch):
    monkeypatch.setenv("CLLM_TIKTOKEN", "0")
    tok = train_tokenizer("bpe", training_text(), 300)
    assert isinstance(tok, BpeTokenizer) and tok.fast is None and tok.slow_reason == "CLLM_TIKTOKEN=0"
    assert encode_many(tok, [CODE])[0].tolist() == hf_ids(tok, CODE)
