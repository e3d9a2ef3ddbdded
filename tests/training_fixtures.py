"""Fixtures for the trainer, checkpoint and generate tests.

Two kinds of runs:

- a *toy* run (``toy_training``): a few-hundred-parameter stand-in for ``ReportModel`` with the same
  methods, an in-memory dataset and a word-overlap scorer, so the mechanics of ``fit`` (resume,
  checkpoints, NaN handling, accumulation) are tested in milliseconds per step;
- a *tiny* run (``synthetic_data`` + the ``tiny`` preset): the real model (random ViT + Llama) on a
  small ``mrg prepare synthetic`` dataset, for the acceptance tests.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mrg.config import RunConfig, load_config
from mrg.errors import CheckpointError

VOCAB = ["the", "heart", "lungs", "are", "clear", "normal", "size", "no", "effusion", "pneumothorax", "."]
REPORTS = [
    "the heart is normal in size .",
    "the lungs are clear .",
    "no effusion .",
    "no pneumothorax . the lungs are clear .",
]


class ToyDataset(Dataset):
    """``{"id", "pixel_values" (2, 3, 4, 4), "report"}`` items whose pixels tell which report they carry."""

    def __init__(self, size: int, *, offset: int = 0, augment: bool = False) -> None:
        self.size = size
        self.offset = offset
        self.augment = augment

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        number = index + self.offset
        kind = number % len(REPORTS)
        generator = torch.Generator().manual_seed(number)
        pixels = torch.rand(2, 3, 4, 4, generator=generator) * 0.2
        pixels[:, kind % 3] += 1.0 + kind / 4  # the report's class is visible in one channel
        if self.augment:  # random, from the global generator, as real augmentation is
            pixels = pixels + 0.1 * torch.randn(pixels.shape)
        return {"id": f"toy-{number:04d}", "pixel_values": pixels, "report": REPORTS[kind]}


class ToyReportModel(nn.Module):
    """The ``ReportModel`` contract in miniature: bag-of-words prediction from pooled pixels.

    ``frozen`` stands in for the frozen LLM: many parameters, never trained, never checkpointed.
    Set ``nan_after_calls`` to make the loss NaN from that forward call on (to test the NaN stop).
    """

    def __init__(self, *, dim: int = 16, dropout: float = 0.1, frozen_size: int = 128) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, dim)
        self.norm = nn.LayerNorm(dim)
        self.prompt = nn.Parameter(torch.randn(dim) * 0.1)
        self.head = nn.Linear(dim, len(VOCAB))
        self.dropout = nn.Dropout(dropout)
        self.frozen = nn.Linear(frozen_size, frozen_size)
        self.frozen.requires_grad_(False)
        self.image_settings = None
        self.tokenizer = None
        self.forward_calls = 0
        self.nan_after_calls: int | None = None

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        pixels = batch["pixel_values"]  # (B, V, C, H, W)
        pooled = pixels.mean(dim=(1, 3, 4))  # (B, C)
        hidden = self.dropout(self.norm(self.encoder(pooled)) + self.prompt)  # (B, D)
        return self.head(hidden)  # (B, vocab)

    def forward(self, batch: dict[str, Any]) -> Any:
        from mrg.model.report_model import ModelOutput

        self.forward_calls += 1
        logits = self._logits(batch)
        counts = [Counter(w for w in report.split() if w in VOCAB) for report in batch["reports"]]
        target = torch.tensor([[c[w] for w in VOCAB] for c in counts], dtype=torch.float32, device=logits.device)
        target = target / target.sum(dim=1, keepdim=True)
        loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        if self.nan_after_calls is not None and self.forward_calls > self.nan_after_calls:
            loss = loss * float("nan")
        return ModelOutput(loss=loss, num_target_tokens=sum(len(r.split()) for r in batch["reports"]))

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], gen_cfg: Any) -> list[str]:
        logits = self._logits(batch)
        if gen_cfg.strategy == "sample":
            generator = torch.Generator().manual_seed(gen_cfg.seed)
            picks = torch.multinomial(torch.softmax(logits.float().cpu(), dim=1), 4, generator=generator)
        else:
            picks = logits.topk(4, dim=1).indices
        return [" ".join(VOCAB[i] for i in row) for row in picks.tolist()]

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.trainable_named_parameters()}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        params = dict(self.trainable_named_parameters())
        if strict and set(params) != set(state_dict):
            raise CheckpointError(f"keys differ: {sorted(set(params) ^ set(state_dict))}")
        with torch.no_grad():
            for name, tensor in state_dict.items():
                params[name].copy_(tensor)

    def parameter_counts(self) -> dict[str, int]:
        counts = {"trainable": 0, "frozen": 0}
        for p in self.parameters():
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        return counts

    def no_decay_parameter_names(self) -> set[str]:
        return {"encoder.bias", "norm.weight", "norm.bias", "prompt", "head.bias"}


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
    """A RunConfig for toy runs: fp32, 16 training studies, micro batch 2, no TensorBoard, fast steps."""
    base = [
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


class ToyTraining:
    """Handle returned by the ``toy_training`` fixture: the model instances built and the dataset sizes."""

    def __init__(self) -> None:
        self.models: list[ToyReportModel] = []
        self.num_train = 16
        self.num_val = 7
        self.dropout = 0.1
        self.nan_after_calls: int | None = None
        self.splits_built: list[str] = []
        self.real_build_datasets: Any = None
        self.augment = False


@pytest.fixture
def toy_training(monkeypatch: pytest.MonkeyPatch) -> ToyTraining:
    """Make ``mrg.trainer.fit`` build the toy model and datasets instead of the configured ones."""
    import mrg.trainer as trainer
    from mrg.data.dataset import collate_studies

    handle = ToyTraining()
    handle.real_build_datasets = trainer._build_datasets

    def build_model(cfg: RunConfig, *, load_init: bool = True) -> ToyReportModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = ToyReportModel(dropout=handle.dropout)
        model.nan_after_calls = handle.nan_after_calls
        handle.models.append(model)
        return model

    def build_datasets(cfg: RunConfig, model: Any, splits: tuple[str, ...] = trainer.TRAIN_SPLITS) -> dict[str, Dataset]:
        handle.splits_built.extend(splits)
        sizes = {"train": (handle.num_train, 0), "val": (handle.num_val, 1000)}
        return {split: ToyDataset(sizes[split][0], offset=sizes[split][1], augment=handle.augment and split == "train")
                for split in splits}

    monkeypatch.setattr(trainer, "_build_model", build_model)
    monkeypatch.setattr(trainer, "_build_datasets", build_datasets)
    monkeypatch.setattr(trainer, "_build_collate", lambda model: collate_studies)
    return handle


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
    from mrg.trainer import fit

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    fit(load_config("tiny", tiny_overrides(synthetic_data, "train.max_steps=2")), run)
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
    from mrg.trainer import fit

    run_dir, *overrides = argv
    fit(load_config("tiny", overrides), run_dir, scorer=overlap_scorer)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
