"""Tokenizers: characters, words, byte-level BPE (trained with HF `tokenizers`), and
GPT-2's own byte-level BPE with its special tokens (imported from Hugging Face folders).

All share one small interface (`Tokenizer`) and describe themselves as a JSON object
with a "type" key, which is what a .cllm file stores.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import tiktoken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from cllm.core import fast_bpe
from cllm.core.errors import ConfigError, TokenizerError

TRAINABLE_KINDS = ("char", "word", "bpe")  # what `train_tokenizer` builds from a text ("gpt2" is imported)
DEFAULT_VOCAB = {"word": 2000, "bpe": 512}  # char: the text decides
MIN_VOCAB = {"word": 2, "bpe": 256}  # word: <unk> and one more; bpe: one token per byte
MAX_VOCAB = 65536
UNK = "<unk>"

# Words, whitespace runs, or one other character: the pieces concatenate back to the text.
_WORD_RE = re.compile(r"\w+|\s+|[^\w\s]")

# Split points for long texts: before a "\n" that follows a non-space character. GPT-2's
# pre-tokenizer regex always has a boundary there and its look-ahead never crosses it, and
# _WORD_RE's whitespace run starts there, so encoding the pieces separately gives exactly
# the ids of encoding the whole text (byte-level BPE and words; chars trivially).
_BPE_CHUNK_MIN = 16384


def split_pieces(text: str, size: int = _BPE_CHUNK_MIN) -> list[str]:
    """`text` cut into pieces of at least `size` characters (the last one may be
    shorter), each cut before a "\n" that follows a non-space character: encoded
    separately, the pieces give the text's ids (see the split points above)."""
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut > 0 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut < 0:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


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
        points = np.array([ord(ch) for ch in self.vocab], dtype=np.int64)
        self._table = np.full(int(points.max(initial=-1)) + 1, -1, dtype=np.int32)  # code point -> id (-1: none)
        self._table[points] = np.arange(len(points), dtype=np.int32)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Looks the code points up in a table (hundreds of MB/s: a prepared corpus is
        encoded this way); a dictionary per character gives the message when a
        character is missing."""
        try:
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:  # a lone surrogate: found missing below
            points = None
        if points is not None and (not len(points) or int(points.max()) < len(self._table)):
            ids = self._table[points]
            if not len(ids) or int(ids.min()) >= 0:
                return ids
        missing = set(text) - self._ids.keys()
        if missing:
            shown = ", ".join(repr(ch) for ch in sorted(missing)[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TokenizerError(
                f"the text contains characters the model's vocabulary lacks: {shown}{more} "
                f"(a character-level model only knows the {self.vocab_size} characters of its training text)"
            )
        lookup = self._ids
        return np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        vocab = self.vocab
        return "".join(vocab[i] for i in _id_list(ids, self.vocab_size))

    def to_json(self) -> dict:
        return {"type": "char", "vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, data: dict) -> CharTokenizer:
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
    def train(cls, text: str, vocab_size: int) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for piece in split_pieces(text, 1 << 20):  # the words of a megabyte at a time, not of the whole sample
            counts.update(_WORD_RE.findall(piece))
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
    def from_json(cls, data: dict) -> WordTokenizer:
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not vocab or vocab[0] != UNK:
            raise TokenizerError(f"word tokenizer: 'vocab' must be a list of tokens starting with {UNK!r}")
        if not all(isinstance(tok, str) and tok for tok in vocab):
            raise TokenizerError("word tokenizer: every 'vocab' entry must be a non-empty string")
        if len(set(vocab)) != len(vocab):
            raise TokenizerError("word tokenizer: 'vocab' has repeated tokens")
        return cls(vocab)


def _chunk_safe(spec: dict) -> bool:
    """Whether encoding a text in pieces cut by `split_pieces` gives the ids of
    encoding it whole: GPT-2's splitting regex (the ByteLevel pre-tokenizer's own), and
    no special token that contains a newline or eats the whitespace around it."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or spec.get("normalizer"):
        return False
    return all("\n" not in t.get("content", "") and not t.get("lstrip") and not t.get("rstrip")
               for t in spec.get("added_tokens") or [])


class BpeTokenizer:
    """Byte-level BPE as in GPT-2: any text can be encoded and decodes back exactly."""

    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        self._size = hf.get_vocab_size()
        self._spec = json.loads(hf.to_str())
        self._chunked = _chunk_safe(self._spec)
        self._fast: tiktoken.Encoding | None = None
        self.slow_reason: str | None = None  # why `encode_many` uses `tokenizers`, once `fast` was asked

    @property
    def fast(self) -> tiktoken.Encoding | None:
        """tiktoken's encoder giving this tokenizer's ids (core/fast_bpe.py), built on
        first use; None where its merges are not rank-consistent or it disagreed."""
        if self._fast is None and self.slow_reason is None:
            self.slow_reason = fast_bpe.not_rank_consistent(self._spec)
            if self.slow_reason is None:
                self._fast = fast_bpe.rank_encoder(self._spec)
        return self._fast

    def agrees(self, texts: Sequence[str]) -> bool:
        """Whether tiktoken gives `tokenizers`' ids on these texts; from the first
        difference on, `encode_many` uses `tokenizers` (True when it already does)."""
        fast = self.fast
        if fast is None:
            return True
        batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        slow = [enc.ids for enc in batch(list(texts), add_special_tokens=False)]
        for text, ids, fast_ids in zip(texts, slow, fast_bpe.encode_batch(fast, texts), strict=True):
            if not np.array_equal(ids, fast_ids):
                self._fast = None
                self.slow_reason = f"tiktoken's ids differ from tokenizers' on {text[:40]!r}..."
                return False
        return True

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BpeTokenizer:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(split_pieces(text, 4096), trainer)  # the words counted are the same
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str) -> np.ndarray:
        if len(text) < _BPE_CHUNK_MIN or not self._chunked:
            return np.array(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        encodings = batch(split_pieces(text), add_special_tokens=False)
        return np.fromiter((i for enc in encodings for i in enc.ids), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.hf.decode(_id_list(ids, self._size), skip_special_tokens=False)

    def to_json(self) -> dict:
        return {"type": "bpe", "tokenizer": self.hf.to_str()}

    @classmethod
    def _hf_from_json(cls, data: dict) -> HFTokenizer:
        kind = data.get("type")
        spec = data.get("tokenizer")
        if not isinstance(spec, str):
            raise TokenizerError(f"{kind} tokenizer: 'tokenizer' must be the HF tokenizer's JSON string")
        try:
            model_type = json.loads(spec)["model"]["type"]
            hf = HFTokenizer.from_str(spec)
        except Exception as exc:  # the HF library raises plain Exception for bad JSON
            raise TokenizerError(f"{kind} tokenizer: the HF tokenizer JSON is broken ({exc})") from None
        if model_type != "BPE":
            raise TokenizerError(f"{kind} tokenizer: the HF tokenizer is a {model_type} model, not BPE")
        return hf

    @classmethod
    def from_json(cls, data: dict) -> BpeTokenizer:
        return cls(cls._hf_from_json(data))


class Gpt2Tokenizer(BpeTokenizer):
    """GPT-2's tokenizer as a Hugging Face folder holds it: byte-level BPE with special
    tokens such as <|endoftext|>. A special token's text encodes to its id wherever it
    appears and its id decodes to that text, as in `transformers`; nothing is added to a
    text (no BOS or EOS token). `bos_token` and `eos_token` name the special tokens a
    model begins and ends documents with (GPT-2: both <|endoftext|>)."""

    kind = "gpt2"

    def __init__(self, hf: HFTokenizer, bos_token: str | None = None, eos_token: str | None = None) -> None:
        super().__init__(hf)
        self.bos_token, self.eos_token = bos_token, eos_token
        for role, token in (("bos_token", bos_token), ("eos_token", eos_token)):
            if token is not None and hf.token_to_id(token) is None:
                raise TokenizerError(f"gpt2 tokenizer: its {role} {token!r} is not in the vocabulary")

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self.hf.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else self.hf.token_to_id(self.eos_token)

    @property
    def special_tokens(self) -> list[str]:
        """The special tokens' texts, in id order."""
        added = self.hf.get_added_tokens_decoder()
        return [added[i].content for i in sorted(added) if added[i].special]

    def to_json(self) -> dict:
        return {"type": "gpt2", "tokenizer": self.hf.to_str(), "bos_token": self.bos_token,
                "eos_token": self.eos_token}

    @classmethod
    def from_json(cls, data: dict) -> Gpt2Tokenizer:
        hf = cls._hf_from_json(data)
        decoder = json.loads(hf.to_str()).get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            raise TokenizerError("gpt2 tokenizer: the HF tokenizer's decoder is not ByteLevel")
        tokens = {}
        for role in ("bos_token", "eos_token"):
            token = data.get(role)
            if token is not None and not isinstance(token, str):
                raise TokenizerError(f"gpt2 tokenizer: {role!r} must be a string or null")
            tokens[role] = token
        return cls(hf, **tokens)


_KINDS: dict[str, type[CharTokenizer] | type[WordTokenizer] | type[BpeTokenizer]] = {
    "char": CharTokenizer, "word": WordTokenizer, "bpe": BpeTokenizer, "gpt2": Gpt2Tokenizer}


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


def encode_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Each text's ids, as `tokenizer.encode` gives them. Byte-level BPE encodes all
    texts' pieces in one batch spread over every core: by tiktoken where it gives the
    same ids (`BpeTokenizer.fast`), else by the `tokenizers` library."""
    if not isinstance(tokenizer, BpeTokenizer) or not tokenizer._chunked:
        return [tokenizer.encode(text) for text in texts]
    fast = tokenizer.fast
    pieces, per_text = pieces_of(texts)
    if fast is not None:
        return join_pieces(fast_bpe.encode_batch(fast, pieces), per_text)
    batch = getattr(tokenizer.hf, "encode_batch_fast", tokenizer.hf.encode_batch)
    return join_pieces([np.array(enc.ids, dtype=np.int32) for enc in batch(pieces, add_special_tokens=False)],
                       per_text)


def pieces_of(texts: Sequence[str], size: int = _BPE_CHUNK_MIN) -> tuple[list[str], list[int]]:
    """Every text cut by `split_pieces` into pieces of at least `size` characters, in one
    list, and how many pieces each text has (at least one, "" too)."""
    pieces: list[str] = []
    per_text = []
    for text in texts:
        parts = split_pieces(text, size)
        pieces += parts
        per_text.append(len(parts))
    return pieces, per_text


def join_pieces(piece_ids: Sequence[np.ndarray], per_text: Sequence[int]) -> list[np.ndarray]:
    """Each text's ids from its pieces' (`pieces_of`'s order), as int32."""
    return [np.concatenate(piece_ids[at - n:at]).astype(np.int32, copy=False)
            for at, n in zip(itertools.accumulate(per_text), per_text, strict=True)]


def coverage_problem(tokenizer: Tokenizer, text: str) -> str | None:
    """Why `tokenizer` cannot encode `text`, or None if it can. Only a character
    tokenizer can fail: a word tokenizer maps unknown words to <unk>, and byte-level BPE
    encodes any text."""
    if isinstance(tokenizer, CharTokenizer):
        try:
            tokenizer.encode(text)
        except TokenizerError as exc:
            return str(exc)
    return None


def tokenizer_from_json(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_json()` output; TokenizerError if it is broken."""
    if not isinstance(data, dict):
        raise TokenizerError(f"a tokenizer description must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in _KINDS:
        raise TokenizerError(f"unknown tokenizer type {kind!r}; expected one of {', '.join(_KINDS)}")
    return _KINDS[kind].from_json(data)
