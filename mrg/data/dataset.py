"""Studies as model inputs: images -> normalised tensors, reports -> cleaned target text, and collation.

An item is a dict ``{"id": str, "pixel_values": (V, C, H, W) float32, "report": str}``; V is the
number of views of the study (at most ``max_views``; the first ones in the study's order are kept).
``collate_studies`` pads a list of items to ``(B, Vmax, C, H, W)`` with a ``(B, Vmax)`` boolean
``view_mask`` (True = a real view), so padded views can be left out of the encoder and the view
average. Batches are plain dicts, which accelerate and DDP move between devices as they are.

Images are read with ``mrg.data.images.load_image`` (PNG, JPEG, 16-bit PNG, DICOM -> 8-bit
grayscale), resized to ``image_size`` x ``image_size`` (bicubic, no crop: what the Swin/ViT image
processors of R2GenGPT do), scaled to [0, 1], replicated to the backbone's channel count and
normalised with the backbone's image-processor mean/std (ImageNet's when it ships none). Reports are
tokenized in the collate step (``ReportCollator``), which takes the LLM's tokenizer as an argument, so the
dataset stays model-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from mrg.data.images import load_image
from mrg.data.prepared import PreparedDataset, load_prepared_dataset
from mrg.data.text import NORMALIZE_MODES, normalize_report, resolve_cleaning
from mrg.errors import DataError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSettings:
    """How pixels are normalised for one vision backbone (from its ``preprocessor_config.json``)."""

    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    num_channels: int = 3

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ReportDataset`` / ``ImageFileDataset``."""
        return {"image_mean": self.image_mean, "image_std": self.image_std, "num_channels": self.num_channels}


class ImageTransform:
    """8-bit grayscale PIL image -> normalised (C, H, W) float tensor, with optional light augmentation."""

    def __init__(
        self,
        image_size: int,
        *,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        num_channels: int = 3,
        augment: bool = False,
    ) -> None:
        if image_size < 1:
            raise DataError(f"image_size must be at least 1, got {image_size}")
        mean, std = list(image_mean), list(image_std)
        if len(mean) == 1:
            mean = mean * num_channels
        if len(std) == 1:
            std = std * num_channels
        if len(mean) != num_channels or len(std) != num_channels:
            raise DataError(
                f"image mean/std have {len(mean)}/{len(std)} values but the backbone expects {num_channels} channels; "
                "fix image_mean/image_std in the backbone's preprocessor_config.json"
            )
        self.image_size = image_size
        self.num_channels = num_channels
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "L":
            img = img.convert("L")
        if self.augment:
            img = self._augment(img)
        img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        gray = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)  # (H, W) in [0, 1]
        pixels = gray.unsqueeze(0).expand(self.num_channels, -1, -1)  # (C, H, W): grayscale replicated
        return (pixels - self.mean) / self.std

    @staticmethod
    def _augment(img: Image.Image) -> Image.Image:
        """Random crop of 85-100% of the area (aspect kept) and a rotation of at most 5 degrees.

        The torch RNG drives it, so seeding (and the per-worker seeds of the DataLoader) makes it
        reproducible.
        """
        width, height = img.size
        scale = math.sqrt(0.85 + 0.15 * torch.rand(()).item())
        crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
        left = int(torch.randint(0, width - crop_w + 1, ()).item())
        top = int(torch.randint(0, height - crop_h + 1, ()).item())
        img = img.crop((left, top, left + crop_w, top + crop_h))
        angle = (torch.rand(()).item() * 2.0 - 1.0) * 5.0
        return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)


class ReportDataset(Dataset):
    """One split of a prepared dataset as ``{"id", "pixel_values", "report"}`` items.

    Args:
        prepared: the dataset from ``load_prepared_dataset``.
        split: ``train``, ``val`` or ``test``.
        image_size: side of the square image the encoder sees.
        max_views: at most this many images per study (the first ones).
        normalize: report cleaning mode (``r2gen-iu``, ``r2gen-mimic``, ``none``) or ``auto`` for
            the mode recorded in the dataset's ``prepare.json``.
        augment: light random crop/rotation (training only).
        image_mean, image_std, num_channels: the backbone's pixel normalisation
            (``ReportModel.image_settings.kwargs()``); ImageNet's by default.

    Raises:
        DataError: unknown split or normalize mode, an empty split, a study without images.
    """

    def __init__(
        self,
        prepared: PreparedDataset,
        split: str,
        *,
        image_size: int,
        max_views: int,
        normalize: str,
        augment: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        num_channels: int = 3,
    ) -> None:
        if max_views < 1:
            raise DataError(f"max_views must be at least 1, got {max_views}")
        mode = resolve_cleaning(normalize, prepared.normalize)
        if mode not in NORMALIZE_MODES:
            raise DataError(f"data.normalize {normalize!r} is not one of auto, {', '.join(NORMALIZE_MODES)}")
        self.root = prepared.root
        self.split = split
        self.studies = prepared.split(split)
        if not self.studies:
            counts = ", ".join(f"{k}={v}" for k, v in prepared.info.get("counts", {}).items())
            raise DataError(f"{prepared.root}: split {split!r} has no studies ({counts or 'no counts recorded'})")
        for study in self.studies:
            if not study.image_paths:
                raise DataError(f"{prepared.root}: study {study.id} lists no images; re-run 'mrg prepare'")
        self.max_views = max_views
        self.normalize = mode
        # the prepared dataset stores its own cleaning; recompute only when another mode is asked for
        self._reuse_clean = mode == prepared.normalize
        self.transform = ImageTransform(
            image_size, image_mean=image_mean, image_std=image_std, num_channels=num_channels, augment=augment
        )

    def __len__(self) -> int:
        return len(self.studies)

    def report(self, index: int) -> str:
        """The normalised target report of study ``index`` (no image loading)."""
        study = self.studies[index]
        if self._reuse_clean and study.report_clean:
            return study.report_clean
        return normalize_report(study.report, self.normalize)

    def __getitem__(self, index: int) -> dict[str, Any]:
        study = self.studies[index]
        views = [self.transform(load_image(self.root / rel)) for rel in study.image_paths[: self.max_views]]
        return {"id": study.id, "pixel_values": torch.stack(views), "report": self.report(index)}


class ImageFileDataset(Dataset):
    """Studies given as image files (``mrg generate --images``): ``{"id", "pixel_values"}`` items.

    Args:
        studies: one list of image paths per study (PNG, JPEG or DICOM).
        ids: one id per study; default: the first image's file name without its suffix.
        image_size, max_views, image_mean, image_std, num_channels: as for ``ReportDataset``.

    Raises:
        DataError: an empty study, ids of the wrong length, or (when an item is read) an unreadable image.
    """

    def __init__(
        self,
        studies: Sequence[Sequence[str | Path]],
        *,
        image_size: int,
        max_views: int,
        ids: Sequence[str] | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        num_channels: int = 3,
    ) -> None:
        self.studies = [[Path(p) for p in study] for study in studies]
        for number, study in enumerate(self.studies, start=1):
            if not study:
                raise DataError(f"study {number} of the image list has no image files")
        if ids is not None and len(ids) != len(self.studies):
            raise DataError(f"got {len(ids)} ids for {len(self.studies)} studies; give one id per study")
        self.ids = list(ids) if ids is not None else [study[0].stem for study in self.studies]
        self.max_views = max_views
        self.transform = ImageTransform(image_size, image_mean=image_mean, image_std=image_std, num_channels=num_channels)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> dict[str, Any]:
        views = [self.transform(load_image(path)) for path in self.studies[index][: self.max_views]]
        return {"id": self.ids[index], "pixel_values": torch.stack(views)}


def collate_studies(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad items to a batch.

    Returns:
        ``{"ids": list[str], "pixel_values": (B, Vmax, C, H, W), "view_mask": (B, Vmax) bool,
        "reports": list[str]}``; ``reports`` only when every item has one (not for image files).
    """
    if not items:
        raise DataError("cannot collate an empty batch")
    num_views = [item["pixel_values"].shape[0] for item in items]
    first = items[0]["pixel_values"]
    pixel_values = first.new_zeros((len(items), max(num_views), *first.shape[1:]))  # (B, Vmax, C, H, W)
    view_mask = torch.zeros(len(items), max(num_views), dtype=torch.bool)  # (B, Vmax)
    for row, item in enumerate(items):
        pixel_values[row, : num_views[row]] = item["pixel_values"]
        view_mask[row, : num_views[row]] = True
    batch: dict[str, Any] = {"ids": [item["id"] for item in items], "pixel_values": pixel_values, "view_mask": view_mask}
    if all("report" in item for item in items):
        batch["reports"] = [item["report"] for item in items]
    return batch


class ReportCollator:
    """``collate_studies`` plus the report tokens the LLM is trained on.

    A report longer than ``max_report_tokens - 1`` tokens is cut and always ends with EOS, so the model
    learns to stop. Ids come from ``token_ids`` (a ``mrg prepare tokenize`` cache made with the same
    tokenizer, special tokens already stripped; see ``mrg.data.tokenize.training_token_ids``) when the study
    is there, else from the tokenizer.

    Adds to the batch: ``report_ids`` (B, R) long, right-padded; ``report_mask`` (B, R) bool;
    ``num_target_tokens`` (int, the tokens the loss averages over).
    """

    def __init__(self, tokenizer: Any, max_report_tokens: int, token_ids: Mapping[str, Sequence[int]] | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_report_tokens = max_report_tokens
        self.token_ids = token_ids or {}
        self.cache_hits = 0
        """Reports whose ids came from the cache (for tests and the run summary)."""

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_studies(items)
        if any("question" in item for item in items):
            batch.update(self._questions(items))
            return batch
        if "reports" not in batch:
            return batch
        cached = [self.token_ids.get(str(item["id"])) for item in items]
        self.cache_hits += sum(c is not None for c in cached)
        batch.update(report_tensors(self.tokenizer, batch["reports"], self.max_report_tokens, cached))
        return batch


    def _questions(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Batches with VQA items: training targets (answers, reports) or, without answers, the questions alone."""
        if all("question" in item and "answer" not in item for item in items):
            return question_tensors(self.tokenizer, [item["question"] for item in items])
        if any("question" in item and "answer" not in item for item in items):
            raise ValueError("a batch mixes questions with and without answers")
        cached = [None if "question" in item else self.token_ids.get(str(item["id"])) for item in items]
        self.cache_hits += sum(c is not None for c in cached)
        return task_tensors(self.tokenizer, items, self.max_report_tokens, cached)


QUESTION_FORMAT = "Question: {question} Answer:"
"""How a question follows the method's prompt in the LLM input; the answer is generated after it."""
MAX_QUESTION_TOKENS = 48
"""Question tokens kept (the end of a longer question is cut)."""


def question_ids(tokenizer: Any, questions: Sequence[str]) -> list[list[int]]:
    """The ids of each question as it follows the prompt (``QUESTION_FORMAT``, at most ``MAX_QUESTION_TOKENS``)."""
    texts = [QUESTION_FORMAT.format(question=q.strip()) for q in questions]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=MAX_QUESTION_TOKENS)["input_ids"]
    return [list(row) for row in encoded]


def question_tensors(tokenizer: Any, questions: Sequence[str]) -> dict[str, Any]:
    """Questions for answering: ``question_ids`` (B, Q) right-padded and ``question_mask`` (B, Q) bool."""
    rows = [torch.tensor(ids, dtype=torch.long) for ids in question_ids(tokenizer, questions)]
    lengths = torch.tensor([len(r) for r in rows])  # (B,)
    ids = pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)  # (B, Q)
    return {"question_ids": ids, "question_mask": torch.arange(ids.shape[1])[None, :] < lengths[:, None],
            "questions": list(questions)}


def task_tensors(tokenizer: Any, items: Sequence[dict[str, Any]], max_report_tokens: int,
                 cached: Sequence[Sequence[int] | None]) -> dict[str, Any]:
    """Training targets of a batch that mixes reports and questions.

    A report row is ``report EOS`` (all targets); a question row is ``question answer EOS`` with only the answer
    and EOS as targets (the question is input, so the loss is on the answer tokens only). Adds ``report_ids``
    (B, R), ``report_mask`` (B, R), ``target_mask`` (B, R) and ``num_target_tokens``.
    """
    limit = max_report_tokens - 1
    questions = [i for i, item in enumerate(items) if "question" in item]
    q_ids = dict(zip(questions, question_ids(tokenizer, [items[i]["question"] for i in questions]), strict=True))
    targets = [items[i]["answer"] if i in q_ids else items[i]["report"] for i in range(len(items))]
    todo = [i for i in range(len(items)) if cached[i] is None]
    encoded = tokenizer([targets[i] for i in todo], add_special_tokens=False, truncation=True, max_length=limit)["input_ids"] if todo else []
    target_ids = {i: list(e) for i, e in zip(todo, encoded, strict=True)}
    rows, flags = [], []
    for i in range(len(items)):
        answer = target_ids[i] if i in target_ids else [int(t) for t in cached[i][:limit]]  # type: ignore[index]
        prefix = q_ids.get(i, [])
        rows.append(torch.tensor([*prefix, *answer, tokenizer.eos_token_id], dtype=torch.long))
        flags.append(torch.tensor([False] * len(prefix) + [True] * (len(answer) + 1)))
    lengths = torch.tensor([len(r) for r in rows])  # (B,)
    report_ids = pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)  # (B, R)
    target_mask = pad_sequence(flags, batch_first=True, padding_value=False)  # (B, R)
    report_mask = torch.arange(report_ids.shape[1])[None, :] < lengths[:, None]  # (B, R)
    return {"report_ids": report_ids, "report_mask": report_mask, "target_mask": target_mask,
            "num_target_tokens": int(target_mask.sum())}


def report_tensors(tokenizer: Any, reports: Sequence[str], max_report_tokens: int,
                   cached: Sequence[Sequence[int] | None] | None = None) -> dict[str, Any]:
    """Reports -> ``report_ids`` (B, R) ending in EOS (right-padded), ``report_mask`` (B, R), ``num_target_tokens``.

    Args:
        cached: per report, its ids from a token cache (special tokens stripped), or None to tokenize it.
    """
    limit = max_report_tokens - 1  # room for EOS, which is always kept
    ids: list[list[int]] = [[] for _ in reports]
    todo = [row for row in range(len(reports)) if cached is None or cached[row] is None]
    for row, row_ids in enumerate(cached or []):
        if row_ids is not None:
            ids[row] = [int(i) for i in row_ids[:limit]]
    if todo:
        encoded = tokenizer([reports[r] for r in todo], add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
        for row, row_ids in zip(todo, encoded, strict=True):
            ids[row] = list(row_ids)
    rows = [torch.tensor([*row_ids, tokenizer.eos_token_id], dtype=torch.long) for row_ids in ids]
    lengths = torch.tensor([len(r) for r in rows])  # (B,)
    report_ids = pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)  # (B, R)
    report_mask = torch.arange(report_ids.shape[1])[None, :] < lengths[:, None]  # (B, R)
    return {"report_ids": report_ids, "report_mask": report_mask, "num_target_tokens": int(lengths.sum())}


def dataset_from_config(
    cfg: Any,
    split: str,
    *,
    image_settings: ImageSettings | None = None,
    prepared: PreparedDataset | None = None,
    augment: bool | None = None,
) -> ReportDataset:
    """``ReportDataset`` for ``split`` from a ``RunConfig``'s data section.

    Args:
        cfg: the run configuration (``cfg.data`` is read).
        split: ``train``, ``val`` or ``test``.
        image_settings: the encoder's normalisation (``ReportModel.image_settings``); ImageNet's if None.
        prepared: an already loaded dataset (else ``cfg.data.root`` is loaded).
        augment: default: ``cfg.data.augment`` for the train split, off otherwise.
    """
    data = cfg.data
    prepared = prepared if prepared is not None else load_prepared_dataset(data.root)
    settings = image_settings or ImageSettings()
    return ReportDataset(
        prepared,
        split,
        image_size=data.image_size,
        max_views=data.max_views,
        normalize=data.normalize,
        augment=(data.augment and split == "train") if augment is None else augment,
        **settings.kwargs(),
    )
