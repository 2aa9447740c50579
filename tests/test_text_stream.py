"""Streaming text out of sampled tokens: the pieces add up to the whole decoded text, cut
before the stop string, show as soon as they can, and only a short tail is decoded again."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.core.text_stream import TextStream
from cllm.core.tokenizer import Tokenizer, train_tokenizer

# Accents, a euro sign and an emoji: byte-level BPE splits their UTF-8 bytes over tokens.
TEXT = "Le café coûte 3 € — très cher! 😀 The café is closed; the fox sleeps.\n" * 30
TOKENIZERS = {kind: train_tokenizer(kind, TEXT, 300) for kind in ("char", "word", "bpe")}


def stream_all(tok, ids: list[int], stop: str | None) -> tuple[list[str], bool]:
    """Pushes `ids` until the stream stops; each step's piece, then the flush."""
    stream = TextStream(tok, stop)
    pieces = []
    for k, token in enumerate(ids, 1):
        pieces.append(stream.push(token))
        shown = "".join(pieces)
        if stream.stopped:
            return pieces, True
        now = tok.decode(ids[:k]).rstrip("\ufffd")
        assert now.startswith(shown)
        held = now[len(shown):]  # only what may still be the start of the stop string
        assert held == "" or (stop is not None and len(held) < len(stop) and stop.startswith(held))
    pieces.append(stream.flush())
    return pieces, False


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(TOKENIZERS)), data=st.data(),
       stop=st.one_of(st.none(), st.text(alphabet="caf é€😀e ", min_size=1, max_size=3)))
def test_pieces_add_up_to_the_decoded_text_cut_at_the_stop(kind, data, stop):
    tok = TOKENIZERS[kind]
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    pieces, stopped = stream_all(tok, ids, stop)
    full = tok.decode(ids)
    expected = full[: full.index(stop)] if stop is not None and stop in full else full
    assert "".join(pieces) == expected
    assert stopped == (stop is not None and stop in full)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_a_real_text_streams_back_exactly(kind):
    tok = TOKENIZERS[kind]
    ids = tok.encode(TEXT).tolist()
    pieces, _ = stream_all(tok, ids, None)
    assert "".join(pieces) == TEXT
    cut, stopped = stream_all(tok, ids, "closed")
    assert stopped and "".join(cut) == TEXT[: TEXT.index("closed")]


def test_only_the_unfinished_tail_is_decoded_again():
    tok = TOKENIZERS["bpe"]
    lengths = []

    class Recording:
        def decode(self, ids):
            lengths.append(len(ids))
            return tok.decode(ids)

    stream = TextStream(cast(Tokenizer, Recording()))  # TextStream only decodes
    ids = tok.encode(TEXT).tolist()
    assert "".join(stream.push(t) for t in ids) + stream.flush() == TEXT
    assert len(ids) > 500 and max(lengths) <= 4  # an emoji is at most 4 byte tokens


def test_after_the_stop_string_nothing_more_comes():
    tok = TOKENIZERS["char"]
    stream = TextStream(tok, "fox")
    pieces = [stream.push(t) for t in tok.encode("the fox")]
    assert stream.stopped and "".join(pieces) == "the "
    assert stream.flush() == ""
    with pytest.raises(RuntimeError):
        stream.push(int(tok.encode("a")[0]))
