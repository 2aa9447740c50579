"""Shared fixtures: small texts and tiny models, made fresh for every test session."""

from __future__ import annotations

import pytest

from cllm.core.corpus import Corpus
from tests.helpers import make_corpus, make_text


@pytest.fixture(scope="session")
def small_text() -> str:
    return make_text()


@pytest.fixture(scope="session")
def small_corpus(small_text) -> Corpus:
    return make_corpus(small_text)
