"""Fixtures for the trainer, checkpoint and generate tests.

Two kinds of runs:

- a *toy* run (``toy_training``, ``toy_config``): the ``toy`` method of ``tests/toy_method.py`` (a
  few-hundred-parameter report model on an in-memory dataset) with a word-overlap scorer, trained through the
  real recipe, so the mechanics of training (resume, checkpoints, NaN handling, accumulation) are tested in
  milliseconds per step;
- a *tiny* run (``synthetic_data`` + the ``tiny`` preset): the real model (random ViT + Llama) on a
  small ``mrg prepare synthetic`` dataset, for the acceptance tests.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from mrg.config import RunConfig, load_config
from tests.toy_method import REPORTS, TOY, ToyMethod


def overlap_scorer(predictions: list[str], references: list[str]) -> dict[str, float]:
    """A stand-in for ``mrg.evaluate.make_scorer``: mean unigram F1 (as bleu_4) and precision (as cider)."""
    f1s, precisions = [], []
    for prediction, reference in zip(predictions, references, strict=True):
        pred, ref = Counter(prediction.split()), Counter(reference.split())
        common = sum((pred & ref).values())
        p = common / max(1, sum(pred.values()))
        r = common / max(1, sum(ref.values()))
        f1s.append(0.0 if common == 0 else 2 * p * r / (p + r))
        precisions.append(p)
    return {"bleu_4": sum(f1s) / len(f1s), "cider": sum(precisions) / len(precisions)}


def toy_config(*overrides: str) -> RunConfig:
    """A RunConfig of the ``toy`` method: fp32, 16 training studies, micro batch 2, no TensorBoard, fast steps."""
    base = [
        "model.method=toy",
        "data.root=toy",
        "train.micro_batch_size=2",
        "train.grad_accum_steps=1",
        "train.epochs=1",
        "train.lr=0.05",
        "train.min_lr=0.001",
        "train.warmup_steps=2",
        "train.precision=fp32",
        "train.log_every=1",
        "train.val_every=-1",
        "train.sanity_val_batches=0",
        "train.trackers=csv",
        "train.keep_last=0",
        "generate.batch_size=3",
        "generate.strategy=greedy",
    ]
    return load_config(None, [*base, *overrides])


@pytest.fixture
def toy_training() -> ToyMethod:
    """The registered ``toy`` method, its records of built models and datasets cleared."""
    TOY.models.clear()
    TOY.splits_built.clear()
    return TOY


def trainable_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "trainable.safetensors"))


def write_fixture_dataset(root: Path, counts: dict[str, int], *, image_size: int = 64, views: int = 2) -> Path:
    """A prepared dataset of ``counts`` studies per split: PNG views whose brightness pattern tells the report."""
    import numpy as np
    from PIL import Image

    from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset

    source = {"kind": "test-fixture"}
    prepare_output_dir(root, source, force=True)
    studies = []
    for split, count in counts.items():
        for number in range(count):
            sid = f"{split}-{number:03d}"
            kind = number % len(REPORTS)
            rng = np.random.default_rng(hash((split, number)) % 2**32)
            paths = []
            for view in range(views):
                pixels = rng.integers(0, 60, size=(image_size, image_size), dtype=np.uint8)
                pixels[:, kind * image_size // 4 : (kind + 1) * image_size // 4] += 150
                rel = f"images/{sid}/{view}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode="L").save(root / rel)
                paths.append(rel)
            studies.append(Study(id=sid, split=split, report=REPORTS[kind].capitalize(), image_paths=paths))
    write_prepared_dataset(root, studies, source=source, protocol={"name": "fixture"}, normalize="r2gen-iu")
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared dataset (16 train, 6 val, 5 test studies of two 64 px views), built once per session."""
    return write_fixture_dataset(tmp_path_factory.mktemp("prepared") / "data", {"train": 16, "val": 6, "test": 5})


@pytest.fixture(scope="session")
def overfit_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training studies (one micro-batch: every step sees the same studies, so the loss must fall), 2 val, 1 test."""
    return write_fixture_dataset(tmp_path_factory.mktemp("prepared") / "overfit", {"train": 4, "val": 2, "test": 1})


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The session's cache of ``random:<kind>`` models (tests/conftest.py points MRG_CACHE_DIR at a temporary folder)."""
    return Path(os.environ["MRG_CACHE_DIR"])


@pytest.fixture(scope="session")
def tiny_run(synthetic_data: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the tiny preset trained for 2 steps on ``synthetic_data`` (no validation); generate tests start here."""
    from mrg.recipes.train import train

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    train(load_config("tiny", tiny_overrides(synthetic_data, "train.max_steps=2")), run)
    return run


def tiny_overrides(data_root: Path, *extra: str) -> list[str]:
    """Overrides that make the ``tiny`` preset train in seconds on a small synthetic dataset."""
    return [
        f"data.root={data_root}",
        "train.micro_batch_size=4",
        "train.epochs=1",
        "train.log_every=1",
        "train.val_every=-1",
        "train.sanity_val_batches=0",
        "train.trackers=csv",
        "generate.strategy=greedy",
        "generate.min_new_tokens=1",
        "generate.max_new_tokens=6",
        "generate.batch_size=4",
        *extra,
    ]


def _main(argv: list[str]) -> None:
    """``torchrun ... tests/training_fixtures.py RUN_DIR [overrides]``: a tiny-preset run validated with ``overlap_scorer``.

    The multi-process test launches this, because ``mrg train`` would score with ``mrg.evaluate``'s scorer.
    """
    from mrg.distributed import end_worker_process
    from mrg.recipes.train import train

    run_dir, *overrides = argv
    train(load_config("tiny", overrides), run_dir, scorer=overlap_scorer)
    end_worker_process(0)  # as mrg's CLI ends a torchrun worker


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
