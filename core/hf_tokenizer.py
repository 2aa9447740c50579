"""CLLM tokenizers as Hugging Face tokenizer files (`tokenizer.json` and
`tokenizer_config.json`), and the tokenizer of a Hugging Face GPT-2 folder as a CLLM one.

Every CLLM tokenizer maps onto a `tokenizers` pipeline that gives the same ids and
decodes to the same text (docs/HUGGING_FACE.md):

- char: a BPE model whose vocabulary is the characters and whose merges are empty (so a
  text splits into its characters), no pre-tokenizer, and the `Fuse` decoder, which
  concatenates tokens (with no decoder, `tokenizers` would join them with spaces);
- word: a WordLevel model (unknown pieces become `<unk>`, id 0) after a `Split`
  pre-tokenizer whose pattern is Python's `\\w+|\\s+|[^\\w\\s]` written out as explicit
  character ranges (Oniguruma's `\\w` and `\\s` are not Python's), and `Fuse`;
- bpe and gpt2: byte-level BPE is what `tokenizers` already is: its JSON as it stands.

`tokenizer_config.json` names the generic `PreTrainedTokenizerFast` class, so that
`transformers` uses `tokenizer.json` as it is: with model_type gpt2 it would otherwise
pick `GPT2Tokenizer`, which (in transformers 5) rebuilds a byte-level pipeline from the
vocabulary and ignores the file's own pre-tokenizer and decoder.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from cllm.core.errors import HuggingFaceFolderError, TokenizerError
from cllm.core.tokenizer import (
    UNK,
    BpeTokenizer,
    CharTokenizer,
    Gpt2Tokenizer,
    Tokenizer,
    WordTokenizer,
)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
GPT2_SPECIAL = "<|endoftext|>"  # GPT2Tokenizer's default unk, bos and eos token
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


# -- the word tokenizer's splitting rule, for Oniguruma ------------------------------

def _ranges(pattern: str) -> list[tuple[int, int]]:
    """Code point ranges (first, last) of the characters Python's `re` matches with
    `pattern`, a one-character class. Surrogates are left out: no text holds them."""
    ranges: list[tuple[int, int]] = []
    for first, last in ((0, 0xD7FF), (0xE000, sys.maxunicode)):
        chars = "".join(map(chr, range(first, last + 1)))
        for m in re.finditer(pattern + "+", chars):
            ranges.append((first + m.start(), first + m.end() - 1))
    return ranges


def _class_body(ranges: list[tuple[int, int]]) -> str:
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)


@functools.cache
def word_split_pattern() -> str:
    """`\\w+|\\s+|[^\\w\\s]` (the word tokenizer's rule) with Python's meaning of `\\w` and
    `\\s`, as explicit code point ranges an Oniguruma regex (HF `tokenizers`) reads alike."""
    word, space = _class_body(_ranges(r"\w")), _class_body(_ranges(r"\s"))
    return f"[{word}]+|[{space}]+|[^{word}{space}]"


_WORD_PATTERN_SHAPE = re.compile(r"\[([^\[\]]*)\]\+\|\[([^\[\]]*)\]\+\|\[\^([^\[\]]*)\]")


def _is_word_pattern(pattern: str) -> bool:
    """A pattern `word_split_pattern` wrote, on this Python or another (another Python's
    Unicode database may draw the ranges slightly differently)."""
    m = _WORD_PATTERN_SHAPE.fullmatch(pattern)
    return m is not None and m.group(3) == m.group(1) + m.group(2)


# -- export -------------------------------------------------------------------------

@dataclass(frozen=True)
class HfTokenizerFiles:
    """What an exported folder holds for a tokenizer."""

    tokenizer_json: str
    tokenizer_config: dict
    bos_id: int | None  # a real beginning-of-text token (gpt2 kind), else None
    eos_id: int | None


def to_hf(tokenizer: Tokenizer, ctx: int) -> HfTokenizerFiles:
    """The `tokenizers` pipeline that encodes and decodes as `tokenizer` does."""
    config: dict = {"tokenizer_class": TOKENIZER_CLASS, "model_max_length": ctx,
                    "clean_up_tokenization_spaces": False}
    bos = eos = None
    if isinstance(tokenizer, CharTokenizer):
        hf = HFTokenizer(models.BPE({ch: i for i, ch in enumerate(tokenizer.vocab)}, []))
        hf.decoder = decoders.Fuse()
    elif isinstance(tokenizer, WordTokenizer):
        hf = HFTokenizer(models.WordLevel({tok: i for i, tok in enumerate(tokenizer.vocab)}, unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(word_split_pattern()), behavior="isolated")
        hf.decoder = decoders.Fuse()
    elif isinstance(tokenizer, BpeTokenizer):
        hf = tokenizer.hf
        config["add_prefix_space"] = False
        if isinstance(tokenizer, Gpt2Tokenizer):
            bos, eos = tokenizer.bos_id, tokenizer.eos_id
            for role, token in (("bos_token", tokenizer.bos_token), ("eos_token", tokenizer.eos_token)):
                if token is not None:
                    config[role] = token
    else:
        raise TokenizerError(f"cannot export a {tokenizer.kind!r} tokenizer to Hugging Face")
    return HfTokenizerFiles(hf.to_str(), config, bos, eos)


# -- import -------------------------------------------------------------------------

def _error(file: Path, message: str) -> HuggingFaceFolderError:
    return HuggingFaceFolderError(f"{file}: {message}")


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(file, f"cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _error(file, "is not a JSON object")
    return data


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_tokens(folder: Path) -> dict:
    """bos/eos/unk tokens and the settings transformers reads beside the vocabulary:
    tokenizer_config.json, with special_tokens_map.json filling in what it lacks."""
    config = _read_json(folder / TOKENIZER_CONFIG) if (folder / TOKENIZER_CONFIG).exists() else {}
    special = _read_json(folder / SPECIAL_TOKENS_MAP) if (folder / SPECIAL_TOKENS_MAP).exists() else {}
    return {**special, **config}


def _check_adds_nothing(folder: Path, settings: dict, hf: HFTokenizer) -> None:
    for key in ("add_bos_token", "add_eos_token"):
        if settings.get(key):
            raise _error(folder / TOKENIZER_CONFIG, f"{key} is true: transformers adds that token to every text, "
                                                   "which CLLM's GPT-2 tokenizer never does")
    if hf.post_processor is not None and hf.post_processor.num_special_tokens_to_add(False):
        raise _error(folder / TOKENIZER_FILE, "its post-processor adds special tokens to every text, which CLLM's "
                                              "GPT-2 tokenizer never does")


def _roles(settings: dict, hf: HFTokenizer) -> dict:
    """bos_token and eos_token for a Gpt2Tokenizer: as declared where they are in the
    vocabulary; if undeclared, GPT-2's <|endoftext|> where the vocabulary has it."""
    roles = {}
    for role in ("bos_token", "eos_token"):
        token = _token_text(settings.get(role))
        if token is None and role not in settings:
            token = GPT2_SPECIAL
        roles[role] = token if token is not None and hf.token_to_id(token) is not None else None
    return roles


def _from_vocab_and_merges(folder: Path) -> Gpt2Tokenizer:
    """GPT-2's original files, built as transformers' GPT2Tokenizer builds them: BPE with
    no subword prefix or suffix, the ByteLevel pre-tokenizer (add_prefix_space from
    tokenizer_config.json, default false) and decoder, and the special tokens (unk, bos,
    eos: <|endoftext|> unless declared otherwise) matched in the text."""
    settings = _special_tokens(folder)
    try:
        vocab, merges = models.BPE.read_file(str(folder / VOCAB_FILE), str(folder / MERGES_FILE))
        hf = HFTokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                                    fuse_unk=False))
    except Exception as exc:  # tokenizers raises plain Exception for unreadable files
        raise _error(folder / VOCAB_FILE, f"with {MERGES_FILE}: not a readable GPT-2 vocabulary ({exc})") from None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space", False)))
    hf.decoder = decoders.ByteLevel()
    specials = []
    for role in ("unk_token", "bos_token", "eos_token", "pad_token"):
        token = _token_text(settings.get(role, GPT2_SPECIAL if role != "pad_token" else None))
        if token is not None and token not in specials:
            specials.append(token)
    for token in settings.get("additional_special_tokens") or []:
        text = _token_text(token)
        if text is not None and text not in specials:
            specials.append(text)
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    _check_adds_nothing(folder, settings, hf)
    return Gpt2Tokenizer(hf, **_roles(settings, hf))


def _char_vocab(spec: dict) -> list[str] | None:
    """The characters of an exported char tokenizer, in id order; None if `spec` is not one."""
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if (model.get("type") != "BPE" or model.get("merges") or spec.get("pre_tokenizer") or spec.get("normalizer")
            or (spec.get("decoder") or {}).get("type") != "Fuse" or spec.get("added_tokens")
            or not isinstance(vocab, dict)):
        return None
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))) or not all(len(ch) == 1 for ch, _ in by_id):
        return None
    return [ch for ch, _ in by_id]


def _word_vocab(spec: dict) -> list[str] | None:
    """The tokens of an exported word tokenizer, in id order; None if `spec` is not one."""
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    pre = spec.get("pre_tokenizer") or {}
    pattern = (pre.get("pattern") or {}).get("Regex")
    if (model.get("type") != "WordLevel" or model.get("unk_token") != UNK or not isinstance(vocab, dict)
            or pre.get("type") != "Split" or pre.get("behavior") != "Isolated" or pre.get("invert")
            or not isinstance(pattern, str) or not _is_word_pattern(pattern) or spec.get("normalizer")
            or (spec.get("decoder") or {}).get("type") != "Fuse" or spec.get("added_tokens")):
        return None
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))) or not by_id or by_id[0][0] != UNK:
        return None
    return [tok for tok, _ in by_id]


def _is_byte_level(spec: dict) -> bool:
    def kinds(part: dict | None, key: str) -> list[str | None]:
        if not part:
            return []
        return [t for p in part.get(key, []) for t in kinds(p, key)] if part.get("type") == "Sequence" \
            else [part.get("type")]

    return "ByteLevel" in kinds(spec.get("pre_tokenizer"), "pretokenizers") \
        and kinds(spec.get("decoder"), "decoders") == ["ByteLevel"]


def _from_tokenizer_json(folder: Path) -> Tokenizer:
    file = folder / TOKENIZER_FILE
    spec = _read_json(file)
    model_type = (spec.get("model") or {}).get("type")
    chars = _char_vocab(spec)
    if chars is not None:
        return CharTokenizer(chars)
    words = _word_vocab(spec)
    if words is not None:
        return WordTokenizer(words)
    if model_type != "BPE" or not _is_byte_level(spec):
        what = "byte-level BPE that is not GPT-2's kind" if model_type == "BPE" else f"a {model_type} model"
        raise _error(file, f"the tokenizer is {what}; CLLM imports GPT-2's byte-level BPE tokenizers "
                           "(and the char and word tokenizers it exports)")
    try:
        hf = HFTokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception for malformed files
        raise _error(file, f"not a valid tokenizers file ({exc})") from None
    settings = _special_tokens(folder)
    _check_adds_nothing(folder, settings, hf)
    if not spec.get("added_tokens"):
        return BpeTokenizer(hf)
    return Gpt2Tokenizer(hf, **_roles(settings, hf))


def tokenizer_files(folder: Path) -> list[str]:
    """The tokenizer files of `folder` that an import reads, [] if it has none."""
    if (folder / TOKENIZER_FILE).exists():
        return [TOKENIZER_FILE]
    if (folder / VOCAB_FILE).exists() and (folder / MERGES_FILE).exists():
        return [VOCAB_FILE, MERGES_FILE]
    return []


def tokenizer_kind(folder: Path) -> str:
    """The CLLM kind the folder's tokenizer becomes, read from the files (the vocabulary
    is parsed, the tokenizer is not built). HuggingFaceFolderError if there is none or it
    cannot be imported."""
    files = tokenizer_files(folder)
    if files == [TOKENIZER_FILE]:
        spec = _read_json(folder / TOKENIZER_FILE)
        if _char_vocab(spec) is not None:
            return "char"
        if _word_vocab(spec) is not None:
            return "word"
        if (spec.get("model") or {}).get("type") == "BPE" and _is_byte_level(spec):
            return "gpt2" if spec.get("added_tokens") else "bpe"
        return load_tokenizer(folder).kind  # raises with the reason
    if files:
        return "gpt2"
    raise _no_tokenizer(folder)


def _no_tokenizer(folder: Path) -> HuggingFaceFolderError:
    return _error(folder, f"has no tokenizer: neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE}")


def load_tokenizer(folder: Path) -> Tokenizer:
    """The folder's tokenizer as a CLLM tokenizer: `tokenizer.json` if there is one, else
    GPT-2's `vocab.json` + `merges.txt`. HuggingFaceFolderError names the file and the
    problem."""
    files = tokenizer_files(folder)
    if not files:
        raise _no_tokenizer(folder)
    try:
        return _from_tokenizer_json(folder) if files == [TOKENIZER_FILE] else _from_vocab_and_merges(folder)
    except TokenizerError as exc:
        raise _error(folder / files[0], str(exc)) from None
