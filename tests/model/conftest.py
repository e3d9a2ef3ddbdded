"""Fixtures for the model tests: a private random-model cache, tiny configs, a tiny prepared dataset, batches."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrg.config import RunConfig, build_config

REPORTS = [
    "the heart size is normal . the lungs are clear . no pleural effusion .",
    "mild cardiomegaly . small left pleural effusion . bibasilar atelectasis .",
    "no acute cardiopulmonary disease .",
    "patchy opacity at the right lung base may represent pneumonia .",
]


@pytest.fixture(scope="session")
def random_model_cache() -> Path:
    """The session's cache of ``random:<kind>`` models (tests/conftest.py points MRG_CACHE_DIR at a temporary folder)."""
    return Path(os.environ["MRG_CACHE_DIR"])


TINY = {
    "data": {"image_size": 64, "max_views": 2},
    "model": {
        "encoder": {"name_or_path": "random:vit", "trainable": "full"},
        "promptbook": {"mode": "promptbook-wise", "num_tokens": 4, "book_size": 3, "hidden_size": 16},
        "llm": {"name_or_path": "random:llama", "dtype": "float32"},
        "max_report_tokens": 24,
    },
    "generate": {"max_new_tokens": 6, "min_new_tokens": 1, "num_beams": 2},
}


@pytest.fixture
def make_cfg() -> Callable[..., RunConfig]:
    """``make_cfg("model.promptbook.mode=static", ...)``: the tiny config plus dotted overrides."""

    def _make(*overrides: str) -> RunConfig:
        return build_config(RunConfig, copy.deepcopy(TINY), list(overrides))  # build_config edits nested dicts

    return _make


@pytest.fixture
def tiny_batch() -> dict:
    """Three studies of 64 px images; the second has one real view of two."""
    gen = torch.Generator().manual_seed(0)
    return {
        "ids": ["a", "b", "c"],
        "pixel_values": torch.randn(3, 2, 3, 64, 64, generator=gen),
        "view_mask": torch.tensor([[True, True], [True, False], [True, True]]),
        "reports": REPORTS[:3],
    }


@pytest.fixture
def tiny_prepared(tmp_path: Path):
    """A prepared dataset (4 train, 2 val studies, one or two 48 px PNG views) written with the real writer."""
    from mrg.data.prepared import Study, load_prepared_dataset, write_prepared_dataset

    root = tmp_path / "prepared"
    root.mkdir()
    rng = np.random.default_rng(0)
    studies = []
    for number in range(6):
        sid = f"study{number}"
        paths = []
        for k in range(1 + number % 2):
            rel = f"images/{sid}/{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), mode="L").save(root / rel)
            paths.append(rel)
        split = "train" if number < 4 else "val"
        studies.append(Study(id=sid, split=split, report=REPORTS[number % len(REPORTS)], image_paths=paths))
    write_prepared_dataset(root, studies, source={"kind": "test"}, protocol={"name": "test"}, normalize="r2gen-iu")
    return load_prepared_dataset(root)
