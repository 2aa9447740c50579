"""A byte-level BPE of the `tokenizers` library encoded by tiktoken, where that gives the
same ids: tiktoken encodes several times faster, which is what preparing a large corpus
spends its time on (docs/DATASETS.md).

The two libraries split a text into the same pieces (GPT-2's regex) but merge inside a
piece differently: `tokenizers` applies the learned merges (pairs) in their order,
tiktoken merges the adjacent pair whose concatenation has the lowest rank, and takes a
piece that is itself a token whole. With the token ids as ranks they agree when the
merges are "rank-consistent", which `rank_encoder` checks:

- every multi-byte token is made by exactly one merge, and the merges' results have
  increasing ids (the merge order is the id order, as `BpeTrainer` writes them);
- every token is what the merges make of its own bytes (so tiktoken's shortcut for a
  piece that is a token changes nothing);
- no normalizer, no added tokens, GPT-2's regex, all 256 bytes in the vocabulary.

That leaves one way to differ: a pair that is not a learned merge but whose
concatenation is a token (a token with two splits) meeting inside a longer piece. No
cheap check rules that out, so `agrees` compares the ids of both libraries on real
text; core/prepare.py runs it on the tokenizer's sample and on part of every batch, and
encodes with `tokenizers` from the first difference on.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import tiktoken

from cllm.core.config import default_threads

# GPT-2's pre-tokenizer regex, as the `tokenizers` ByteLevel pre-tokenizer uses it.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: the character a byte is written as in a
    byte-level vocabulary -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    """A tokenizer.json's merges: ["a", "b"] pairs, or "a b" strings in older files."""
    pairs = [m if isinstance(m, list) else m.split(" ", 1) for m in merges]
    return [(a, b) for a, b in pairs]


def _bpe(symbols: list[str], rank: dict[tuple[str, str], int]) -> list[str]:
    """What `tokenizers` makes of one piece: the learned merge of lowest rank first, the
    leftmost of equals."""
    while len(symbols) > 1:
        best, at = None, -1
        for i in range(len(symbols) - 1):
            r = rank.get((symbols[i], symbols[i + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        symbols[at:at + 2] = [symbols[at] + symbols[at + 1]]
    return symbols


OFF_ENV = "CLLM_TIKTOKEN"  # "0": always the tokenizers library (a reference for benchmarks, or a doubt)


def not_rank_consistent(spec: dict) -> str | None:
    """Why tiktoken cannot stand in for this HF tokenizer (its tokenizer.json as a dict);
    None if it can."""
    if os.environ.get(OFF_ENV) == "0":
        return f"{OFF_ENV}=0"
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix") or model.get("byte_fallback"):
        return "not a plain BPE model"
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space") \
            or spec.get("normalizer"):
        return "not GPT-2's byte-level pre-tokenizer"
    if spec.get("added_tokens"):
        return "it has added tokens"
    vocab: dict[str, int] = model.get("vocab") or {}
    to_byte = _unicode_to_byte()
    if not set(to_byte) <= vocab.keys():
        return "not every byte is in its vocabulary"
    if any(ch not in to_byte for token in vocab for ch in token):
        return "its vocabulary is not byte-level"
    pairs = _merge_pairs(model.get("merges") or [])
    made = [vocab.get(a + b, -1) for a, b in pairs]
    if -1 in made:
        return "a merge makes a token that is not in the vocabulary"
    if any(x >= y for x, y in itertools.pairwise(made)):
        return "its merges are not in the order of their tokens' ids"
    if len(made) != sum(1 for token in vocab if len(token) > 1):
        return "a multi-byte token is not made by exactly one merge"
    rank = {pair: i for i, pair in enumerate(pairs)}
    for token in vocab:
        if len(token) > 1 and _bpe(list(token), rank) != [token]:
            return f"the merges do not make the token {token!r} from its own bytes"
    return None


def rank_encoder(spec: dict) -> tiktoken.Encoding | None:
    """tiktoken's encoder for this HF byte-level BPE (token ids as ranks), or None if
    its merges are not rank-consistent (`not_rank_consistent`)."""
    if not_rank_consistent(spec) is not None:
        return None
    to_byte = _unicode_to_byte()
    ranks = {bytes(to_byte[ch] for ch in token): i for token, i in spec["model"]["vocab"].items()}
    return tiktoken.Encoding("cllm-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def encode_batch(encoder: tiktoken.Encoding, texts: Sequence[str]) -> list[np.ndarray]:
    """Each text's ids (uint32), the texts spread over the cores in groups of about equal
    length, one per thread (tiktoken releases the GIL while it encodes)."""
    def encode(group: Sequence[str]) -> list[np.ndarray]:  # encode_ordinary: ~1.5x encode_to_numpy's speed here
        return [np.array(encoder.encode_ordinary(text), dtype=np.uint32) for text in group]

    n = min(default_threads(), len(texts))
    if n <= 1:
        return encode(texts)
    with ThreadPoolExecutor(n) as pool:
        groups = pool.map(lambda ab: encode(texts[ab[0]:ab[1]]), deal([len(t) for t in texts], n))
        return [ids for group in groups for ids in group]


def deal(sizes: Sequence[int], groups: int) -> list[tuple[int, int]]:
    """[start, stop) bounds of at most `groups` contiguous runs of items of about equal
    total size, none empty (work spread over threads or processes)."""
    total, bounds, size = sum(sizes), [0], 0
    for i, n in enumerate(sizes[:-1]):
        size += n
        if len(bounds) < groups and size * groups >= total * len(bounds):
            bounds.append(i + 1)
    bounds.append(len(sizes))
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
