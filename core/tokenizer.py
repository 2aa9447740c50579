"""Tokenizers: characters, words, and byte-level BPE (trained with HF `tokenizers`).

All three share one small interface (`Tokenizer`) and describe themselves as a JSON
object with a "type" key, which is what a .cllm file stores.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from cllm.core.errors import ConfigError, TokenizerError

TRAINABLE_KINDS = ("char", "word", "bpe")  # what `train_tokenizer` builds from a text
DEFAULT_VOCAB = {"word": 2000, "bpe": 512}  # char: the text decides
MIN_VOCAB = {"word": 2, "bpe": 256}  # word: <unk> and one more; bpe: one token per byte
MAX_VOCAB = 65536
UNK = "<unk>"

# Words, whitespace runs, or one other character: the pieces concatenate back to the text.
_WORD_RE = re.compile(r"\w+|\s+|[^\w\s]")

# Split points for long texts: before a "\n" that follows a non-space character. GPT-2's
# pre-tokenizer regex always has a boundary there and its look-ahead never crosses it, so
# encoding the pieces separately gives exactly the ids of encoding the whole text.
_BPE_CHUNK_RE = re.compile(r"(?<=\S)(?=\n)")
_BPE_CHUNK_MIN = 16384


@runtime_checkable
class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def to_json(self) -> dict: ...


def _id_list(ids: Sequence[int] | np.ndarray, vocab_size: int) -> list[int]:
    flat = np.asarray(ids, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        bad = flat[(flat < 0) | (flat >= vocab_size)]
        raise TokenizerError(f"token id {int(bad[0])} is outside the vocabulary (0..{vocab_size - 1})")
    return flat.tolist()


class CharTokenizer:
    """One token per character; the vocabulary is the training text's characters, sorted."""

    kind = "char"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self._ids = {ch: i for i, ch in enumerate(self.vocab)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        missing = set(text) - self._ids.keys()
        if missing:
            shown = ", ".join(repr(ch) for ch in sorted(missing)[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TokenizerError(
                f"the text contains characters the model's vocabulary lacks: {shown}{more} "
                f"(a character-level model only knows the {self.vocab_size} characters of its training text)"
            )
        ids = self._ids
        return np.fromiter((ids[ch] for ch in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        vocab = self.vocab
        return "".join(vocab[i] for i in _id_list(ids, self.vocab_size))

    def to_json(self) -> dict:
        return {"type": "char", "vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, data: dict) -> "CharTokenizer":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not vocab:
            raise TokenizerError("char tokenizer: 'vocab' must be a non-empty list of characters")
        if not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab):
            raise TokenizerError("char tokenizer: every 'vocab' entry must be a single character")
        if len(set(vocab)) != len(vocab):
            raise TokenizerError("char tokenizer: 'vocab' has repeated characters")
        return cls(vocab)


class WordTokenizer:
    """Words, single punctuation characters and whitespace runs; the most frequent ones
    get ids, everything else becomes <unk> (id 0)."""

    kind = "word"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self._ids = {tok: i for i, tok in enumerate(self.vocab)}

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "WordTokenizer":
        counts = Counter(_WORD_RE.findall(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls([UNK] + [tok for tok, _ in ranked[: vocab_size - 1]])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        get = self._ids.get
        return np.array([get(tok, 0) for tok in _WORD_RE.findall(text)], dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        vocab = self.vocab
        return "".join(vocab[i] for i in _id_list(ids, self.vocab_size))

    def to_json(self) -> dict:
        return {"type": "word", "vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, data: dict) -> "WordTokenizer":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not vocab or vocab[0] != UNK:
            raise TokenizerError(f"word tokenizer: 'vocab' must be a list of tokens starting with {UNK!r}")
        if not all(isinstance(tok, str) and tok for tok in vocab):
            raise TokenizerError("word tokenizer: every 'vocab' entry must be a non-empty string")
        if len(set(vocab)) != len(vocab):
            raise TokenizerError("word tokenizer: 'vocab' has repeated tokens")
        return cls(vocab)


class BpeTokenizer:
    """Byte-level BPE as in GPT-2: any text can be encoded and decodes back exactly."""

    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        self._size = hf.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BpeTokenizer":
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(_BPE_CHUNK_RE.split(text), trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str) -> np.ndarray:
        if len(text) < _BPE_CHUNK_MIN:
            return np.array(self.hf.encode(text).ids, dtype=np.int32)
        batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        encodings = batch(_BPE_CHUNK_RE.split(text))
        return np.fromiter((i for enc in encodings for i in enc.ids), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.hf.decode(_id_list(ids, self._size))

    def to_json(self) -> dict:
        return {"type": "bpe", "tokenizer": self.hf.to_str()}

    @classmethod
    def from_json(cls, data: dict) -> "BpeTokenizer":
        spec = data.get("tokenizer")
        if not isinstance(spec, str):
            raise TokenizerError("bpe tokenizer: 'tokenizer' must be the HF tokenizer's JSON string")
        try:
            model_type = json.loads(spec)["model"]["type"]
            hf = HFTokenizer.from_str(spec)
        except Exception as exc:  # the HF library raises plain Exception for bad JSON
            raise TokenizerError(f"bpe tokenizer: the HF tokenizer JSON is broken ({exc})") from None
        if model_type != "BPE":
            raise TokenizerError(f"bpe tokenizer: the HF tokenizer is a {model_type} model, not BPE")
        return cls(hf)


_KINDS = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BpeTokenizer}


def check_vocab_size(kind: str, size: int) -> None:
    """ConfigError unless `size` is a vocabulary size a `kind` tokenizer can be trained to."""
    if kind not in TRAINABLE_KINDS:
        raise ConfigError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TRAINABLE_KINDS)}")
    if kind in MIN_VOCAB and size < MIN_VOCAB[kind]:
        why = f"with {UNK}" if kind == "word" else "one per byte"
        raise ConfigError(f"a {'word' if kind == 'word' else 'byte-level BPE'} vocabulary needs at least "
                          f"{MIN_VOCAB[kind]} entries ({why}), got {size}")
    if size > MAX_VOCAB:
        raise ConfigError(f"vocabulary size must be at most {MAX_VOCAB}, got {size}")


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Build a tokenizer from a training text. `vocab_size` is ignored for "char" (the
    text decides) and is an upper bound for "bpe" (a small text may yield fewer merges)."""
    if kind == "char":
        return CharTokenizer.train(text)
    size = DEFAULT_VOCAB.get(kind, 0) if vocab_size is None else vocab_size
    check_vocab_size(kind, size)
    if kind == "word":
        return WordTokenizer.train(text, size)
    return BpeTokenizer.train(text, size)


def tokenizer_from_json(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_json()` output; TokenizerError if it is broken."""
    if not isinstance(data, dict):
        raise TokenizerError(f"a tokenizer description must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in _KINDS:
        raise TokenizerError(f"unknown tokenizer type {kind!r}; expected one of {', '.join(_KINDS)}")
    return _KINDS[kind].from_json(data)
