"""The three tokenizers: round trips, unknown input, and their JSON descriptions."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.core.corpus import load_corpus
from cllm.core.errors import ConfigError, TokenizerError
from cllm.core.tokenizer import Tokenizer, tokenizer_from_json, train_tokenizer

TRAIN_TEXT = "The quick brown fox jumps over the lazy dog.\nThe dog sleeps; the fox runs!\n" * 20


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", load_corpus("python-docs").text, 300)


@pytest.fixture(scope="module")
def char():
    return train_tokenizer("char", TRAIN_TEXT)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_interface(kind):
    tok = train_tokenizer(kind, TRAIN_TEXT)
    assert isinstance(tok, Tokenizer) and tok.kind == kind
    ids = tok.encode(TRAIN_TEXT)
    assert ids.dtype == np.int32 and 0 <= ids.min() and ids.max() < tok.vocab_size
    assert tok.decode(ids) == TRAIN_TEXT
    assert tok.decode(ids.tolist()) == TRAIN_TEXT
    data = tok.to_json()
    assert data["type"] == kind
    again = tokenizer_from_json(json.loads(json.dumps(data)))
    assert again.vocab_size == tok.vocab_size
    assert np.array_equal(again.encode(TRAIN_TEXT), ids)


def test_char_vocab_is_sorted_characters(char):
    assert char.to_json()["vocab"] == sorted(set(TRAIN_TEXT))
    assert char.vocab_size == len(set(TRAIN_TEXT))


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=sorted(set(TRAIN_TEXT))))
def test_char_round_trip(char, text):
    assert char.decode(char.encode(text)) == text


def test_char_rejects_unknown_characters(char):
    with pytest.raises(TokenizerError) as info:
        char.encode("The fox ate 7 €")
    message = str(info.value)
    assert "'7'" in message and "'€'" in message and "vocabulary lacks" in message


def test_char_lists_only_a_few_unknown_characters(char):
    with pytest.raises(TokenizerError) as info:
        char.encode("0123456789")
    assert "and 5 more" in str(info.value)


def test_word_maps_unknowns_to_unk():
    tok = train_tokenizer("word", TRAIN_TEXT)
    assert tok.to_json()["vocab"][0] == "<unk>"
    ids = tok.encode("The cat jumps.")
    assert ids[2] == 0  # "cat" is not in the vocabulary
    assert tok.decode(ids) == "The <unk> jumps."


def test_word_vocab_is_most_frequent_with_stable_ties():
    tok = train_tokenizer("word", "b a b a c d", vocab_size=4)
    # " " x5, then "a" and "b" x2 (ties by token), "c" and "d" left out
    assert tok.to_json()["vocab"] == ["<unk>", " ", "a", "b"]
    assert tok.vocab_size == 4
    assert tok.decode(tok.encode("a d")) == "a <unk>"


def test_word_default_vocab_size():
    text = " ".join(f"w{i}" for i in range(3000))
    assert train_tokenizer("word", text).vocab_size == 2000


def test_bpe_vocab_and_determinism(bpe):
    assert bpe.vocab_size == 300
    again = train_tokenizer("bpe", load_corpus("python-docs").text, 300)
    assert again.to_json() == bpe.to_json()
    assert json.loads(bpe.to_json()["tokenizer"])["model"]["type"] == "BPE"


def test_bpe_long_text_matches_whole_text_encoding(bpe):
    text = load_corpus("python-docs").text[:200_000]
    ids = bpe.encode(text)
    assert ids.tolist() == bpe.hf.encode(text).ids
    assert bpe.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_bpe_round_trip_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="ab \n\t\r.é", min_size=1, max_size=300))
def test_bpe_chunked_encoding_is_exact(bpe, piece):
    text = piece * (16384 // len(piece) + 1)  # long enough to be encoded in chunks
    assert bpe.encode(text).tolist() == bpe.hf.encode(text).ids


def test_decode_rejects_ids_outside_vocabulary(char, bpe):
    for tok in (char, bpe):
        with pytest.raises(TokenizerError, match="outside the vocabulary"):
            tok.decode([0, tok.vocab_size])


@pytest.mark.parametrize("data, problem", [
    ({"type": "sentencepiece"}, "unknown tokenizer type"),
    ({"vocab": ["a"]}, "unknown tokenizer type"),
    ({"type": "char"}, "'vocab'"),
    ({"type": "char", "vocab": ["a", "bc"]}, "single character"),
    ({"type": "char", "vocab": ["a", "a"]}, "repeated"),
    ({"type": "word", "vocab": ["a", "b"]}, "<unk>"),
    ({"type": "bpe", "tokenizer": "{not json"}, "broken"),
    ({"type": "bpe", "tokenizer": '{"model": {"type": "BPE"}}'}, "broken"),
    ({"type": "bpe"}, "'tokenizer'"),
])
def test_broken_json(data, problem):
    with pytest.raises(TokenizerError, match=problem):
        tokenizer_from_json(data)


def test_bad_training_arguments():
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        train_tokenizer("sentencepiece", TRAIN_TEXT)
    with pytest.raises(ConfigError, match="at least 256"):
        train_tokenizer("bpe", TRAIN_TEXT, 100)


def test_a_word_tokenizer_counts_a_long_sample_in_pieces_as_a_whole():
    """Counted a megabyte at a time (bounded memory), the vocabulary is that of counting
    the whole text."""
    from collections import Counter

    from cllm.core.tokenizer import _WORD_RE, WordTokenizer
    from tests.helpers import make_text

    text = "\n".join(make_text(160_000, seed=s) + "ünïcode  \t x\r\n" * s for s in range(6))
    assert len(text) > 2 << 20
    ranked = sorted(Counter(_WORD_RE.findall(text)).items(), key=lambda item: (-item[1], item[0]))
    assert WordTokenizer.train(text, 500).vocab == ["<unk>"] + [tok for tok, _ in ranked[:499]]
