"""Training texts: the built-in corpora and checked loading of the user's text files."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cllm.core.errors import CorpusError


@dataclass(frozen=True)
class Corpus:
    """A training text. `path` is None for a built-in corpus."""

    name: str
    text: str
    sha256: str  # hex digest of the UTF-8 encoded text
    path: Path | None


def _python_docs() -> str:
    """CPython's documentation topics (the text behind `help("if")`): ships with every
    CPython, so it needs no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


BUILTIN_CORPORA: dict[str, Callable[[], str]] = {"python-docs": _python_docs}


def list_builtin() -> list[str]:
    return sorted(BUILTIN_CORPORA)


def _make(name: str, text: str, path: Path | None) -> Corpus:
    return Corpus(name, text, hashlib.sha256(text.encode("utf-8")).hexdigest(), path)


@functools.cache
def _builtin(name: str) -> Corpus:
    return _make(name, BUILTIN_CORPORA[name](), None)


def load_corpus(source: str | Path | None) -> Corpus:
    """None or a built-in name gives that corpus; anything else is a path to a UTF-8 file."""
    if source is None:
        return _builtin("python-docs")
    if isinstance(source, str) and source in BUILTIN_CORPORA:
        return _builtin(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a text file")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise CorpusError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise CorpusError(f"{path}: the file is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path}: looks like a binary file (NUL byte at byte offset {nul}), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: is not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}: {exc.reason})"
        ) from None
    if not text.strip():
        raise CorpusError(f"{path}: contains only whitespace")
    return _make(path.name, text, path.resolve())
