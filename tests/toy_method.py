"""A toy method registered from outside the package: a method needs no edit of the loop, CLI, generate or evaluate.

``import tests.toy_method`` registers ``toy``: a few-hundred-parameter report "model" (bag of words from pooled
pixels) on an in-memory dataset, so the mechanics of training (resume, checkpoints, NaN handling,
accumulation) are tested in milliseconds per step through the real recipe. Its knobs are its config
section (``method.num_train=3``, ``method.nan_after_calls=4``, ...), as any method's are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mrg.config import MethodOptions, RunConfig
from mrg.methods import Method, Stage, register_method
from mrg.model.report_model import ModelOutput
from mrg.model.trainable import TrainableState

VOCAB = ["the", "heart", "lungs", "are", "clear", "normal", "size", "no", "effusion", "pneumothorax", "."]
REPORTS = [
    "the heart is normal in size .",
    "the lungs are clear .",
    "no effusion .",
    "no pneumothorax . the lungs are clear .",
]
SPLIT_OFFSETS = {"train": 0, "val": 1000, "test": 2000}


class ToyDataset(Dataset):
    """``{"id", "pixel_values" (2, 3, 4, 4), "report"}`` items whose pixels tell which report they carry."""

    def __init__(self, size: int, *, offset: int = 0, augment: bool = False) -> None:
        self.size, self.offset, self.augment = size, offset, augment

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


class ToyReportModel(TrainableState, nn.Module):
    """The report-model contract in miniature: bag-of-words prediction from pooled pixels.

    ``frozen`` stands in for the frozen LLM: many parameters, never trained, never checkpointed.
    """

    def __init__(self, *, dim: int = 16, dropout: float = 0.1, frozen_size: int = 128,
                 nan_after_calls: int | None = None, crash_at_call: int | None = None) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, dim)
        self.norm = nn.LayerNorm(dim)
        self.prompt = nn.Parameter(torch.randn(dim) * 0.1)
        self.head = nn.Linear(dim, len(VOCAB))
        self.dropout = nn.Dropout(dropout)
        self.frozen = nn.Linear(frozen_size, frozen_size)
        self.prompt._mrg_no_decay = True  # type: ignore[attr-defined]  # an embedding, as prompt tokens are
        self.forward_calls = 0
        self.nan_after_calls = nan_after_calls
        self.crash_at_call = crash_at_call

    def frozen_prefixes(self) -> tuple[str, ...]:
        return ("frozen.",)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        pooled = batch["pixel_values"].mean(dim=(1, 3, 4))  # (B, V, C, H, W) -> (B, C)
        hidden = self.dropout(self.norm(self.encoder(pooled)) + self.prompt)  # (B, D)
        return self.head(hidden)  # (B, vocab)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        if self.crash_at_call is not None and self.forward_calls == self.crash_at_call:
            raise RuntimeError("simulated crash")
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


@dataclass(frozen=True, kw_only=True)
class ToyOptions(MethodOptions):
    """The toy method's settings: the sizes of its in-memory splits and fault injection for the tests."""

    num_train: int = 16
    num_val: int = 7
    num_test: int = 5
    dropout: float = 0.1
    nan_after_calls: int | None = None
    """The loss is NaN from this forward call on."""
    crash_at_call: int | None = None
    """Forward call number that raises (a crash between checkpoints)."""
    extra: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"'method.{k}' must be at least 0" for k in ("num_train", "num_val") if getattr(self, k) < 0]


class ToyMethod(Method):
    name = "toy"
    summary = "bag of words from pooled pixels (tests only)"
    options = ToyOptions
    stages = (Stage("train", "everything but the frozen block trains", trains=("encoder.*", "norm.*", "prompt", "head.*")),)

    def __init__(self) -> None:
        self.models: list[ToyReportModel] = []
        """Every model built, in order (tests look at them)."""
        self.splits_built: list[str] = []

    def never_trains(self, name: str) -> bool:
        return name.startswith("frozen.")

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        o: ToyOptions = cfg.method  # type: ignore[assignment]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = ToyReportModel(dropout=o.dropout, nan_after_calls=o.nan_after_calls, crash_at_call=o.crash_at_call)
        self.models.append(model)
        return model

    def _split(self, cfg: RunConfig, split: str, augment: bool) -> ToyDataset:
        o: ToyOptions = cfg.method  # type: ignore[assignment]
        size = {"train": o.num_train, "val": o.num_val, "test": o.num_test}[split]
        return ToyDataset(size, offset=SPLIT_OFFSETS[split], augment=augment)

    def datasets(self, cfg: RunConfig, stage: Stage, model: nn.Module, splits: Sequence[str]) -> dict[str, Dataset]:
        self.splits_built.extend(splits)
        return {s: self._split(cfg, s, cfg.data.augment and s == "train") for s in splits}

    def split_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, split: str) -> Dataset:
        return self._split(cfg, split, False)

    def image_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, studies: Sequence[Sequence[Path]],
                      ids: Sequence[str]) -> Dataset:
        raise NotImplementedError("the toy method reads no image files")

    def collate(self, cfg: RunConfig, stage: Stage, model: nn.Module, *, data_root: str | Path | None = None) -> Any:
        from mrg.data.dataset import collate_studies

        return collate_studies


TOY = register_method(ToyMethod(), replace=True)
