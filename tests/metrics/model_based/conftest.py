"""Session-wide tiny random-weight models of each metric family (built by ``builders``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.metrics.model_based import builders


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-metrics")


@pytest.fixture(scope="session")
def chexbert_dir(model_root: Path) -> Path:
    return builders.build_chexbert(model_root)


@pytest.fixture(scope="session")
def bertscore_dir(model_root: Path) -> Path:
    return builders.build_roberta(model_root)


@pytest.fixture(scope="session")
def bert6_dir(model_root: Path) -> Path:
    return builders.build_bert6(model_root)


@pytest.fixture(scope="session")
def radgraph_dir(model_root: Path) -> Path:
    return builders.build_radgraph(model_root)


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "metric-cache")


@pytest.fixture(scope="session")
def rate_ner_dir(model_root: Path) -> Path:
    return builders.build_rate_ner(model_root)


@pytest.fixture(scope="session")
def rate_embed_dir(model_root: Path) -> Path:
    return builders.build_rate_encoder(model_root)


@pytest.fixture(scope="session")
def llama_dir(model_root: Path) -> Path:
    return builders.build_llama(model_root)
