"""Turning sampled tokens into text as they come, in pieces that never need taking back.

Decoding the whole output again for every new token costs time in proportion to its
length, so a long sample slows down as it goes (12,000 BPE tokens: 634 tokens/s where
500 ran at 4,000). Here only the tokens since the text last ended on a whole character
are decoded: every tokenizer of CLLM decodes by concatenation (characters, words, or the
bytes of byte-level BPE), so the text of all tokens is the text up to such a point
followed by the text of the rest. A trailing U+FFFD is what byte-level BPE shows for an
unfinished UTF-8 sequence; the next token may complete it, so it is never shown.
"""

from __future__ import annotations

from cllm.core.tokenizer import Tokenizer


class TextStream:
    """Feed it tokens with `push`; it returns the text that can be shown now. With a
    `stop` string, the text ends just before the first occurrence of it, and a tail
    that may turn out to be its beginning is held back until it is known not to be."""

    def __init__(self, tokenizer: Tokenizer, stop: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.stop = stop or None
        self.stopped = False
        self._pending: list[int] = []  # tokens since the text last ended on a whole character
        self._held = ""  # text before those tokens that is not shown yet
        self._shown = 0  # characters of held + pending's text already returned

    def push(self, token: int) -> str:
        """The new text that `token` makes showable ("" if none). After the stop string
        appears, `stopped` is set and pushing more is an error."""
        if self.stopped:
            raise RuntimeError("the stream has already reached its stop string")
        self._pending.append(token)
        text = self._held + self.tokenizer.decode(self._pending)
        if self.stop is not None and self.stop in text:
            self.stopped = True
            return self._take(text[: text.index(self.stop)])
        piece = self._take(_showable(text, self.stop))
        if not text.endswith("\ufffd"):
            self._held, self._shown, self._pending = text[self._shown:], 0, []
        return piece

    def flush(self) -> str:
        """Whatever is left when generation ends: held-back text and unfinished bytes."""
        if self.stopped:
            return ""
        return self._take(self._held + self.tokenizer.decode(self._pending))

    def _take(self, ready: str) -> str:
        piece = ready[self._shown:]
        self._shown = max(self._shown, len(ready))
        return piece


def _showable(text: str, stop: str | None) -> str:
    """The part of `text` that can be shown now: not an unfinished UTF-8 sequence of
    byte-level BPE, and not a tail that may turn out to be the start of `stop`."""
    text = text.rstrip("\ufffd")
    if stop:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                return text[:-n]
    return text
