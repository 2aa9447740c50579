"""Shared fixtures: small texts and tiny models, made fresh for every test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cllm.core.corpus import Corpus
from cllm.core.model import init_params
from tests.helpers import GRADIENT_CONFIG, make_corpus, make_text, use_tiled_attention
from tests.tui_helpers import TEXT


@pytest.fixture(autouse=True, scope="session")
def dataset_cache(tmp_path_factory) -> Path:
    """Datasets prepared by the tests (and the CLI processes they start) go to a folder
    of this test session, never to the user's cache."""
    folder = tmp_path_factory.mktemp("dataset-cache")
    os.environ["CLLM_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def cllm_home(tmp_path: Path, monkeypatch) -> Path:
    """Every test has its own run journal (CLLM_HOME), never the user's."""
    home = tmp_path / "cllm-home"
    monkeypatch.setenv("CLLM_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def small_text() -> str:
    return make_text()


@pytest.fixture(scope="session")
def small_corpus(small_text) -> Corpus:
    return make_corpus(small_text)


@pytest.fixture
def tui_home(tmp_path: Path, monkeypatch) -> dict:
    """For an app under test: models/, a settings folder and a small corpus, all under
    tmp_path, which is also the working folder (typed paths stay short)."""
    models = tmp_path / "models"
    models.mkdir()
    config = tmp_path / "config"
    monkeypatch.setenv("CLLM_CONFIG_DIR", str(config))
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TEXT)
    return {"root": tmp_path, "models": models, "config": config, "corpus": corpus}


@pytest.fixture(params=["short", "tiled"])
def attention_kernels(request, monkeypatch) -> str:
    """The short kernels (what ctx 5 picks), or the tiled ones on 2 x 3 tiles: three
    query blocks against one or two key blocks each, partial tiles included."""
    if request.param == "tiled":
        use_tiled_attention(monkeypatch, query_block=2, key_block=3)
    return request.param


@pytest.fixture(scope="session")
def gradient_problem() -> tuple[np.ndarray, np.ndarray]:
    """float64 parameters of GRADIENT_CONFIG and a batch of 3 rows, for the gradient checks."""
    rng = np.random.default_rng(0)
    params = init_params(GRADIENT_CONFIG, seed=3, dtype=np.float64)
    # Move away from the symmetric start (LayerNorm weights 1, biases 0, tiny weights) so
    # that every term of every gradient is exercised.
    params += rng.normal(0.0, 0.3, params.shape)
    batch = rng.integers(0, GRADIENT_CONFIG.vocab_size, (3, GRADIENT_CONFIG.ctx + 1))
    return params, batch
