"""Metrics of synthesized chest radiographs (report -> image): FID, clinical consistency, MS-SSIM diversity.

Input: a folder of ``<id>.png`` (8-bit grayscale) with ``<id>.json`` sidecars holding at least ``{"id", "prompt"
(the report text), "study_id" (str or null), "seed"}`` (what ``mrg synthesize`` writes), and the prepared dataset
the prompts come from. :func:`evaluate_synthesis` scores the folder and two baselines with the same scorers:

* **Clinical consistency** (``consistency_f1`` micro, ``consistency_macro_f1``): a small CNN classifier
  (:class:`ConsistencyClassifier`), trained on the dataset's real *train* images (first view) with the 14 CheXpert
  labels (multi-label BCE, positive = 1.0, everything else 0), labels each synthesized image (P >= 0.5); the labels
  are scored against the *prompt's* labels: the gold labels of ``study_id`` when it is set and found in the
  dataset, else mrg's CheXpert labeler applied to the prompt (positive = 1.0, as the CE metrics count). Micro F1
  over the 14 classes; macro F1 over the classes with at least one positive prompt. The classifier's own F1 on the
  real ``--split`` images against their gold labels (``classifier_f1``) is the ceiling to read it against. It is
  trained once per dataset and settings and cached (safetensors + JSON) under ``DATA/synthesis_classifier/``.
* **FID** (``fid``): the Fréchet distance between Gaussian fits of the features of the real ``--split`` images
  (first view) and of the synthesized ones. Features: the classifier's penultimate layer (pooled, 128-wide) by
  default, because no pretrained CXR or Inception network can be downloaded here and a network trained on the set
  sees what distinguishes its findings; or any vision backbone by hub id, local folder or ``random:<kind>`` spec
  through mrg's ``VisualEncoder`` (patch tokens averaged). FIDs computed with different encoders do not compare.
* **MS-SSIM** (``ms_ssim``): the mean MS-SSIM over pairs of synthesized images (all pairs up to ``max_pairs``,
  else that many seeded random pairs); lower means more diverse. The real ``--split`` images' own value is
  reported beside it as the reference.

Baselines, one image per prompt, scored identically: **mean image** (the pixel mean of the real training images)
and **nearest real** (the training image whose positive-label vector is nearest the prompt's in Hamming distance;
among ties the one at position ``sha256(id) mod ties``, so the choice is deterministic yet spread over the ties).

MS-SSIM follows Wang, Simoncelli & Bovik (2003): at each scale the contrast-structure term of SSIM (Gaussian
window 11 / 1.5, K1 0.01, K2 0.03, as ``mrg.metrics.image.ssim``), then 2x2 average pooling; the luminance term
at the last scale; exponents (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). An 11-pixel window needs every scale to be
at least 11 pixels, so images smaller than 176 px use the first M scales that fit (128 px: 4, 64 px: 3) with those
weights renormalised to sum to 1; negative terms are clamped to 0 before the powers (as pytorch-msssim).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mrg.data.chexpert import OBSERVATIONS, POSITIVE
from mrg.data.images import UNREADABLE_FIX, load_image
from mrg.data.prepared import PreparedDataset, Study, load_prepared_dataset
from mrg.errors import ConfigError, DataError, MetricError
from mrg.files import read_json, sha256_file, write_json_atomic
from mrg.metrics.image import ssim_maps
from mrg.metrics.stats import ItemStatistic, paired_test

KIND = "image-synthesis"
"""``metrics.json``'s ``kind`` for a synthesized-image evaluation."""
SIDECAR_FIELDS: tuple[str, ...] = ("id", "prompt", "study_id", "seed")
"""The fields every ``<id>.json`` sidecar must hold."""
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang et al. (2003)'s exponents of the five scales, finest first."""
SSIM_WINDOW = 11
CLASSIFIER_ENCODER = "classifier"
"""The default ``encoder``: the consistency classifier's penultimate features."""
CACHE_FOLDER = "synthesis_classifier"
CLASSIFIER_VERSION = 1
"""Bump when the classifier's architecture or training changes, so cached classifiers are retrained."""
COLUMNS: tuple[str, ...] = ("synthesized", "mean_image", "nearest_real")
"""The columns of a synthesis evaluation, in table order."""



# ------------------------------------------------------------------------------------------------ input


@dataclass(frozen=True)
class SynthesizedImage:
    """One synthesized image and its sidecar."""

    id: str
    path: Path
    prompt: str
    study_id: str | None
    seed: int


def read_synthesized_folder(folder: str | os.PathLike[str], *, option: str = "--images") -> list[SynthesizedImage]:
    """The ``<id>.png`` + ``<id>.json`` pairs of ``folder``, sorted by file name.

    Raises:
        DataError: the folder is missing or holds no PNG, a PNG has no sidecar, a sidecar is not JSON or lacks a
            field (the message names the file and the fix).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{option} {folder}: folder not found; give the folder 'mrg synthesize' wrote")
    pngs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not pngs:
        raise DataError(f"{option} {folder}: no <id>.png images in it; give the folder 'mrg synthesize' wrote")
    items = []
    seen: set[str] = set()
    for png in pngs:
        sidecar = png.with_suffix(".json")
        if not sidecar.is_file():
            raise DataError(f"{option} {png}: no sidecar {sidecar.name} beside it; each image needs "
                            f"{{{', '.join(SIDECAR_FIELDS)}}} (as mrg synthesize writes) or remove the image")
        meta = read_json(sidecar)
        if not isinstance(meta, dict):
            raise DataError(f"{option} {sidecar}: expected a JSON object with {', '.join(SIDECAR_FIELDS)}")
        missing = [f for f in SIDECAR_FIELDS if f not in meta]
        if missing:
            raise DataError(f"{option} {sidecar}: missing field(s) {', '.join(repr(m) for m in missing)}; a sidecar "
                            f"holds {', '.join(SIDECAR_FIELDS)} (study_id may be null)")
        item_id, prompt, study_id, seed = (meta[f] for f in SIDECAR_FIELDS)
        if not isinstance(item_id, str) or not item_id:
            raise DataError(f"{option} {sidecar}: 'id' must be a non-empty string, got {item_id!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{option} {sidecar}: 'prompt' must be the report text, got {prompt!r}")
        if study_id is not None and not isinstance(study_id, str):
            raise DataError(f"{option} {sidecar}: 'study_id' must be a string or null, got {study_id!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"{option} {sidecar}: 'seed' must be an integer, got {seed!r}")
        if item_id in seen:
            raise DataError(f"{option} {sidecar}: id {item_id!r} appears in two sidecars; ids must be unique")
        seen.add(item_id)
        items.append(SynthesizedImage(item_id, png, prompt, study_id, seed))
    return items


def load_gray(paths: Sequence[Path], image_size: int, *, fix: str = UNREADABLE_FIX) -> torch.Tensor:
    """(N, 1, S, S) float32 pixels in [0, 1] of ``paths`` (grayscale, resized squarely, bicubic).

    Raises:
        DataError: an image is missing or unreadable (the message names it and ends with ``fix``).
    """
    out = torch.empty(len(paths), 1, image_size, image_size, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            img = load_image(path)
        except DataError as err:
            raise DataError(str(err).replace(UNREADABLE_FIX, fix)) from None
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out[i, 0] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return out.float() / 255.0


def positive_vector(labels: dict[str, Any] | None) -> np.ndarray:
    """(14,) bool: which CheXpert classes are positive (1.0); negative, uncertain and blank are not."""
    labels = labels or {}
    return np.array([labels.get(name) == POSITIVE for name in OBSERVATIONS], dtype=bool)


def study_labels(studies: Sequence[Study]) -> np.ndarray:
    """(N, 14) bool positive labels of studies: their gold labels, else mrg's labeler on their report."""
    from mrg.metrics.labeler import label_reports

    missing = [i for i, s in enumerate(studies) if not s.labels]
    labelled = dict(zip(missing, label_reports([studies[i].report for i in missing]), strict=True))
    return np.stack([positive_vector(s.labels or labelled.get(i)) for i, s in enumerate(studies)]) if studies else (
        np.zeros((0, len(OBSERVATIONS)), dtype=bool))


def prompt_labels(items: Sequence[SynthesizedImage], dataset: PreparedDataset) -> tuple[np.ndarray, dict[str, int]]:
    """(N, 14) bool positive labels of each prompt and how many came from each source.

    Gold labels of ``study_id`` when it is set, found in ``dataset`` and labelled there; otherwise mrg's CheXpert
    labeler applied to the prompt text. Sources: ``{"gold": n, "labeler": m}``.
    """
    from mrg.metrics.labeler import label_reports

    by_id = {s.id: s for s in dataset.studies}
    gold = [by_id.get(item.study_id) if item.study_id is not None else None for item in items]
    need = [i for i, study in enumerate(gold) if study is None or not study.labels]
    labelled = dict(zip(need, label_reports([items[i].prompt for i in need]), strict=True))
    rows = [positive_vector(labelled[i] if i in labelled else gold[i].labels)  # type: ignore[union-attr]
            for i in range(len(items))]
    return np.stack(rows), {"gold": len(items) - len(need), "labeler": len(need)}


# ------------------------------------------------------------------------------------------------ FID


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigendecomposition; negative rounding clamped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))`` of two Gaussians (Heusel et al. 2017).

    ``Tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``S1^(1/2) S2 S1^(1/2)`` (symmetric
    PSD, similar to ``S1 S2``), so no general matrix square root (scipy) is needed. Float64 throughout.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    root1 = _sqrtm_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, N - 1; zero for a single row) of ``(N, D)`` features."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise MetricError(f"FID needs (N, D) features with N >= 1, got shape {features.shape}")
    mu = features.mean(0)
    if len(features) == 1:
        return mu, np.zeros((features.shape[1], features.shape[1]))
    return mu, np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two ``(N, D)`` feature sets (0 for identical sets)."""
    return frechet_distance(*gaussian_fit(real_features), *gaussian_fit(fake_features))


# ------------------------------------------------------------------------------------------------ MS-SSIM


def ms_ssim_scales(image_size: int, window: int = SSIM_WINDOW) -> int:
    """How many of the 5 scales an ``image_size`` image affords: every scale at least ``window`` pixels."""
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and image_size // (2**scales) >= window:
        scales += 1
    if scales == 0:
        raise MetricError(f"MS-SSIM needs images of at least {window} px, got {image_size}")
    return scales


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) MS-SSIM of each pair of ``(B, 1, H, W)`` images in [0, 1] (see the module docstring for the scales)."""
    scales = ms_ssim_scales(min(x.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    values = torch.ones(x.shape[0], dtype=torch.float64)
    for level in range(scales):
        luminance, contrast_structure = ssim_maps(x, y)
        cs = contrast_structure.flatten(1).mean(1).double().clamp_min(0.0)
        if level == scales - 1:
            lum = luminance.flatten(1).mean(1).double().clamp_min(0.0)
            values = values * (lum * cs) ** weights[level]
        else:
            values = values * cs ** weights[level]
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return values.float()


def _pairs(n: int, max_pairs: int, seed: int) -> np.ndarray:
    """(P, 2) index pairs i != j: every unordered pair when there are at most ``max_pairs``, else seeded random ones."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, size=max_pairs)
    second = (first + rng.integers(1, n, size=max_pairs)) % n  # never equal to first
    return np.stack([first, second], 1)


def ms_ssim_diversity(images: torch.Tensor, *, max_pairs: int = 500, seed: int = 0, batch_size: int = 64) -> float:
    """Mean MS-SSIM over pairs of ``(N, 1, H, W)`` images (lower = more diverse; 1 when all are identical).

    Raises:
        MetricError: fewer than two images.
    """
    if len(images) < 2:
        raise MetricError(f"MS-SSIM diversity needs at least 2 images, got {len(images)}")
    pairs = torch.from_numpy(_pairs(len(images), max_pairs, seed))
    values = [ms_ssim(images[chunk[:, 0]], images[chunk[:, 1]]) for chunk in pairs.split(batch_size)]
    return float(torch.cat(values).double().mean())


# ------------------------------------------------------------------------------------------------ classifier


@dataclass(frozen=True)
class ClassifierConfig:
    """How the consistency classifier is trained (every field is part of its cache key)."""

    image_size: int = 128
    """Side every image is resized to (real, synthesized and baseline images alike)."""
    width: int = 16
    """Channels of the first block (doubling over 4 stride-2 blocks; features are 8 x width wide)."""
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    view: int = 0
    """Which image of each study (0: the first, frontal view, the one MAViLT synthesizes)."""


class ConsistencyClassifier(nn.Module):
    """A small CNN: 4 blocks of (stride-2 conv, BN, ReLU, conv, BN, ReLU), global average pool, linear to 14 logits."""

    def __init__(self, width: int = 16, num_classes: int = len(OBSERVATIONS)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for i in range(4):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) in [0, 1] -> (B, 8 x width) pooled penultimate features."""
        return self.body((images - 0.5) / 0.25).mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 14) logits."""
        return self.head(self.features(images))


def _view_path(dataset: PreparedDataset, study: Study, view: int) -> Path:
    if not study.image_paths:
        raise DataError(f"--data {dataset.root}: study {study.id} has no images (prepared with --skip-images?); "
                        "prepare the images first")
    return dataset.image_path(study.image_paths[min(view, len(study.image_paths) - 1)])


def split_images(dataset: PreparedDataset, split: str, cfg: ClassifierConfig) -> tuple[list[Study], torch.Tensor]:
    """The studies of ``split`` and their ``cfg.view`` images, ``(N, 1, S, S)`` in [0, 1].

    Raises:
        DataError: the split is empty or an image is missing.
    """
    studies = dataset.split(split)
    if not studies:
        raise DataError(f"--data {dataset.root}: the {split} split is empty")
    paths = [_view_path(dataset, s, cfg.view) for s in studies]
    return studies, load_gray(paths, cfg.image_size, fix="; re-run mrg prepare")


def train_classifier(images: torch.Tensor, labels: np.ndarray, cfg: ClassifierConfig,
                     progress: Callable[[int, float], None] | None = None) -> ConsistencyClassifier:
    """Train a :class:`ConsistencyClassifier` on ``(N, 1, S, S)`` images and ``(N, 14)`` bool labels (seeded)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = ConsistencyClassifier(cfg.width)
    targets = torch.from_numpy(labels.astype(np.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(cfg.steps, 1))))
    model.train()
    for step in range(cfg.steps):
        index = torch.randint(0, len(images), (min(cfg.batch_size, len(images)),), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(images[index]), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, loss.item())
    return model.eval()


@torch.no_grad()
def classify(model: ConsistencyClassifier, images: torch.Tensor, *, threshold: float = 0.5,
             batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 14)`` bool predicted labels (P >= threshold) and ``(N, D)`` penultimate features of ``images``."""
    model.eval()
    labels, features = [], []
    for chunk in images.split(batch_size):
        feats = model.features(chunk)
        labels.append((torch.sigmoid(model.head(feats)) >= threshold).numpy())
        features.append(feats.double().numpy())
    return np.concatenate(labels), np.concatenate(features)


def label_f1(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | int]:
    """Micro F1 over all classes and macro F1 over the classes with a reference positive, of ``(N, C)`` bool arrays.

    0/0 is 0. Returns ``micro_f1``, ``macro_f1`` (NaN when no class has a positive) and ``num_classes`` (present).
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise MetricError(f"label arrays differ in shape: {pred.shape} vs {ref.shape}")
    tp, fp, fn = (pred & ref).sum(0), (pred & ~ref).sum(0), (~pred & ref).sum(0)
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / denom) if denom else 0.0
    present = ref.sum(0) > 0
    per_class = 2 * tp[present] / np.maximum(2 * tp[present] + fp[present] + fn[present], 1)
    macro = float(per_class.mean()) if present.any() else float("nan")
    return {"micro_f1": micro, "macro_f1": macro, "num_classes": int(present.sum())}


def _classifier_key(dataset: PreparedDataset, cfg: ClassifierConfig) -> str:
    images = (dataset.info.get("images") or {}).get("sha256") or ""
    blob = json.dumps({"studies": sha256_file(dataset.root / "studies.jsonl"), "images": images,
                       "config": asdict(cfg), "version": CLASSIFIER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_or_train_classifier(dataset: PreparedDataset, cfg: ClassifierConfig, *, cache_dir: Path | None = None,
                             progress: Callable[[int, float], None] | None = None,
                             train: tuple[list[Study], torch.Tensor] | None = None,
                             ) -> tuple[ConsistencyClassifier, dict[str, Any]]:
    """The consistency classifier of ``dataset`` under ``cfg``: loaded from its cache folder, or trained on the
    train split's images and cached there (``model.safetensors``, then ``classifier.json`` last).

    The folder is ``cache_dir/cls-<key>`` (default ``DATA/synthesis_classifier/``), the key a hash of the dataset's
    ``studies.jsonl``, its images' digest, ``cfg`` and the classifier version. Returns the model and its record
    (``path``, ``trained``: whether this call trained it, ``config``, ``train_images``, ``train_seconds``).
    ``train``: the train split's studies and images as :func:`split_images` returns them, when the caller has
    loaded them already (they are not read again).
    """
    from safetensors.torch import load_file, save_file

    folder = Path(cache_dir or dataset.root / CACHE_FOLDER) / f"cls-{_classifier_key(dataset, cfg)}"
    record_path, weights_path = folder / "classifier.json", folder / "model.safetensors"
    if record_path.is_file() and weights_path.is_file():
        model = ConsistencyClassifier(cfg.width)
        model.load_state_dict(load_file(str(weights_path)))
        return model.eval(), {**read_json(record_path), "path": str(folder), "trained": False}
    studies, images = train if train is not None else split_images(dataset, "train", cfg)
    start = time.perf_counter()
    model = train_classifier(images, study_labels(studies), cfg, progress)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".model.{os.getpid()}.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights_path)
    record = {"config": asdict(cfg), "version": CLASSIFIER_VERSION, "dataset": str(dataset.root),
              "train_images": len(studies), "train_seconds": round(seconds, 1)}
    write_json_atomic(record_path, record)
    return model, {**record, "path": str(folder), "trained": True}


# ------------------------------------------------------------------------------------------------ encoders


class BackboneFeatures:
    """Features of any vision backbone (hub id, local folder or ``random:<kind>``) through mrg's ``VisualEncoder``:
    grayscale replicated to its channels, resized to its native size, ImageNet-normalised, patch tokens averaged."""

    def __init__(self, spec: str) -> None:
        from mrg.model.encoder import VisualEncoder, load_backbone
        from mrg.model.random_models import resolve_model_path

        self.encoder = VisualEncoder(load_backbone(resolve_model_path(spec), option="--encoder"))
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        self.std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        out = []
        for chunk in images.split(batch_size):
            size = self.encoder.native_image_size
            if size and chunk.shape[-1] != size:
                chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)
            channels = self.encoder.num_channels
            pixels = chunk.expand(-1, channels, -1, -1)
            if channels == 3:
                pixels = (pixels - self.mean) / self.std
            out.append(self.encoder.encode_images(pixels).mean(1).double().numpy())
        return np.concatenate(out)


# ------------------------------------------------------------------------------------------------ baselines


def mean_image(train_images: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies of the pixel mean of ``(N, 1, S, S)`` training images (the mean-image baseline)."""
    return train_images.mean(0, keepdim=True).expand(n, -1, -1, -1).contiguous()


def nearest_by_labels(train_labels: np.ndarray, query_labels: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """For each query, the index of the training row nearest in Hamming distance of the bool label vectors.

    Among the rows at the minimal distance, the one at position ``int(sha256(id), 16) mod ties`` (train order), so
    the choice is deterministic and different prompts with the same labels spread over the ties.
    """
    distance = (train_labels[None, :, :] != query_labels[:, None, :]).sum(2)  # (Q, N)
    out = np.empty(len(query_labels), dtype=np.int64)
    for q, item_id in enumerate(ids):
        ties = np.flatnonzero(distance[q] == distance[q].min())
        out[q] = ties[int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % len(ties)]
    return out


# ------------------------------------------------------------------------------------------------ evaluation


def _column_scores(model: ConsistencyClassifier, images: torch.Tensor, targets: np.ndarray,
                   real_features: np.ndarray, features_of: Callable[[torch.Tensor], np.ndarray],
                   max_pairs: int, seed: int) -> tuple[dict[str, float], np.ndarray]:
    pred, _ = classify(model, images)
    f1 = label_f1(pred, targets)
    return {"consistency_f1": f1["micro_f1"], "consistency_macro_f1": f1["macro_f1"],
            "fid": fid(real_features, features_of(images)),
            "ms_ssim": ms_ssim_diversity(images, max_pairs=max_pairs, seed=seed) if len(images) > 1
            else float("nan")}, pred


def consistency_statistic(pred: np.ndarray, ref: np.ndarray) -> ItemStatistic:
    """Micro consistency F1 as an ``mrg.metrics.stats.ItemStatistic``: per image (tp, fp, fn) summed over the
    classes, pooled -> 2 tp / (2 tp + fp + fn) (what :func:`label_f1` gives on the whole set)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    stats = np.stack([(pred & ref).sum(1), (pred & ~ref).sum(1), (~pred & ref).sum(1)], 1).astype(np.float64)

    def aggregate(sums: np.ndarray, totals: np.ndarray) -> np.ndarray:
        denom = 2 * sums[:, 0] + sums[:, 1] + sums[:, 2]
        return np.divide(2 * sums[:, 0], denom, out=np.zeros(len(sums)), where=denom > 0)

    return ItemStatistic("consistency_f1", stats, aggregate)


def evaluate_synthesis(
    images_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | PreparedDataset,
    *,
    split: str = "test",
    encoder: str = CLASSIFIER_ENCODER,
    classifier: ClassifierConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_pairs: int = 500,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score a folder of synthesized images and the mean-image and nearest-real baselines.

    Args:
        images_dir: ``<id>.png`` + ``<id>.json`` sidecars (``mrg synthesize``'s output).
        data: the prepared dataset the prompts come from (its train split trains the classifier; ``split``'s
            real images are FID's reference and the classifier's ceiling).
        split: the real split FID compares against.
        encoder: FID features: ``classifier`` (default) or a vision backbone's hub id, folder or ``random:<kind>``.
        classifier: the consistency classifier's settings (default :class:`ClassifierConfig`).
        cache_dir: where trained classifiers are cached (default ``DATA/synthesis_classifier``).
        max_pairs: MS-SSIM pairs per column (all pairs when there are fewer).
        seed: seed of the MS-SSIM pair sample.
        progress: called with a short message at each stage.

    Returns:
        ``{"kind", "num_images", "columns": {"synthesized"|"mean_image"|"nearest_real": {metric: value}},
        "paired": {"mean_image"|"nearest_real": {"a", "b", "delta", "p_value", "ci_low", "ci_high"}} (synthesized
        minus the baseline on micro consistency F1; empty for a single image),
        "real": {"ms_ssim", "classifier_f1", "classifier_macro_f1", "num_images"}, "prompt_labels",
        "classifier", "encoder", "inputs", "protocol"}``; the synthesized column's metrics are also at the top level.

    Raises:
        DataError: bad folder, sidecar, image or dataset (the message names it and the fix).
        ConfigError: an unknown ``split``.
    """
    start = time.perf_counter()
    cfg = classifier or ClassifierConfig()
    say = progress or (lambda message: None)
    items = read_synthesized_folder(images_dir)
    if isinstance(data, PreparedDataset):
        dataset = data
    else:
        try:
            dataset = load_prepared_dataset(data)
        except DataError as err:
            raise DataError(f"--data {err}") from None
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split!r} is not one of train, val, test")
    say(f"{len(items)} synthesized images; loading them and the real {split} images")
    synth = load_gray([item.path for item in items], cfg.image_size, fix="; re-run mrg synthesize or remove the file")
    targets, sources = prompt_labels(items, dataset)
    real_studies, real_images = split_images(dataset, split, cfg)
    say("consistency classifier: loading or training on the train split")
    train_studies, train_images = split_images(dataset, "train", cfg)
    model, cls_record = load_or_train_classifier(dataset, cfg, cache_dir=Path(cache_dir) if cache_dir else None,
                                                 train=(train_studies, train_images))
    train_labels = study_labels(train_studies)

    if encoder == CLASSIFIER_ENCODER:
        def features_of(images: torch.Tensor) -> np.ndarray:
            return classify(model, images)[1]
        encoder_record = {"name": CLASSIFIER_ENCODER, "dim": model.feature_dim,
                          "description": "the consistency classifier's pooled penultimate features"}
    else:
        backbone = BackboneFeatures(encoder)
        features_of = backbone
        encoder_record = {"name": encoder, "description": "VisualEncoder patch tokens, averaged"}

    real_pred, _ = classify(model, real_images)
    ceiling = label_f1(real_pred, study_labels(real_studies))
    real_features = features_of(real_images)
    say("scoring the synthesized images and the baselines")
    baselines = {
        "synthesized": synth,
        "mean_image": mean_image(train_images, len(items)),
        "nearest_real": train_images[torch.from_numpy(nearest_by_labels(train_labels, targets,
                                                                          [i.id for i in items]))],
    }
    scored = {name: _column_scores(model, images, targets, real_features, features_of, max_pairs, seed)
              for name, images in baselines.items()}
    columns = {name: scores for name, (scores, _) in scored.items()}
    paired = _paired_against_baselines({name: pred for name, (_, pred) in scored.items()}, targets, seed) \
        if len(items) > 1 else {}
    real = {"num_images": len(real_studies), "classifier_f1": ceiling["micro_f1"],
            "classifier_macro_f1": ceiling["macro_f1"],
            "ms_ssim": ms_ssim_diversity(real_images, max_pairs=max_pairs, seed=seed) if len(real_images) > 1
            else float("nan")}
    return {
        "kind": KIND,
        **columns["synthesized"],
        "classifier_f1": ceiling["micro_f1"],
        "num_images": len(items),
        "columns": columns,
        "paired": paired,
        "real": real,
        "prompt_labels": {**sources, "classes_present": int(targets.any(0).sum())},
        "classifier": cls_record,
        "encoder": encoder_record,
        "inputs": {"images": str(images_dir), "data": str(dataset.root), "split": split},
        "protocol": {
            "image_size": cfg.image_size, "view": cfg.view, "threshold": 0.5,
            "ms_ssim_scales": ms_ssim_scales(cfg.image_size), "ms_ssim_pairs": max_pairs, "seed": seed,
            "positive": "label value 1.0; negative, uncertain and blank are not positive",
            "macro": "over classes with at least one positive prompt",
            "nearest_real": "train image nearest in Hamming distance of positive-label vectors; ties by sha256(id)",
            "paired": "synthesized minus each baseline, micro consistency F1: approximate-randomisation p-value "
                      "and paired-bootstrap 95% interval over the prompts, 1000 resamples (mrg.metrics.stats)",
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def _paired_against_baselines(preds: dict[str, np.ndarray], targets: np.ndarray, seed: int) -> dict[str, Any]:
    """Synthesized minus each baseline on micro consistency F1, paired over the prompts (``stats.paired_test``)."""
    synthesized = consistency_statistic(preds["synthesized"], targets)
    return {name: paired_test([synthesized], [consistency_statistic(preds[name], targets)], seed=seed)
            ["consistency_f1"].as_dict() for name in ("mean_image", "nearest_real")}


def run_synthesis_evaluation(images_dir: str | os.PathLike[str], data: str | os.PathLike[str] | PreparedDataset,
                             out_dir: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """:func:`evaluate_synthesis` (same keyword ``options``), then ``metrics.md`` and, last, ``metrics.json``
    (atomic writes, the record plus provenance). Returns the record.

    ``out_dir`` is a folder (``out_dir/metrics.md``, ``out_dir/metrics.json``), or a path ending in ``.json``: the
    record is written there and the table beside it with the suffix ``.md`` (``F.json``, ``F.md``).

    Raises:
        OutputDirError: ``out_dir`` exists and is not a folder (and does not end in ``.json``), or it ends in
            ``.json`` and is a folder.
    """
    from mrg.errors import OutputDirError
    from mrg.files import write_text_atomic
    from mrg.provenance import provenance

    json_path, md_path = synthesis_output_paths(out_dir)
    out = Path(out_dir)
    if out.suffix.lower() == ".json" and out.is_dir():
        raise OutputDirError(f"--out {out}: is a folder but ends in .json; give a new F.json file or a folder name "
                             "without the .json suffix")
    if out.suffix.lower() != ".json" and out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a folder; give a folder for metrics.json and metrics.md "
                             "or a file name ending in .json")
    record = evaluate_synthesis(images_dir, data, **options)
    record["provenance"] = provenance()
    write_text_atomic(md_path, render_synthesis_markdown(record))
    write_json_atomic(json_path, record)
    return record


def synthesis_output_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(metrics.json, metrics.md)`` paths of ``--out``: ``F.json`` and ``F.md`` for a name ending in ``.json``,
    else ``OUT/metrics.json`` and ``OUT/metrics.md`` in the folder ``OUT``."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        return out, out.with_suffix(".md")
    return out / "metrics.json", out / "metrics.md"


def write_real_as_synthesized(data: str | os.PathLike[str] | PreparedDataset, split: str, out_dir: str | os.PathLike[str],
                              *, limit: int | None = None, view: int = 0, with_study_id: bool = True) -> int:
    """Write a split's real images as a "synthesized" folder (``<id>.png`` + sidecar with the report as prompt): the
    upper bound of every synthesis metric. ``with_study_id=False`` leaves ``study_id`` null (prompt labels then come
    from the labeler). Returns the number of images written."""
    dataset = data if isinstance(data, PreparedDataset) else load_prepared_dataset(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = dataset.split(split)[:limit]
    for study in studies:
        image = load_image(_view_path(dataset, study, view))
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study.id)
        image.save(out / f"{safe}.png")
        write_json_atomic(out / f"{safe}.json", {"id": study.id, "prompt": study.report,
                                                 "study_id": study.id if with_study_id else None, "seed": 0})
    return len(studies)


def render_synthesis_markdown(record: dict[str, Any]) -> str:
    """``metrics.md`` of a synthesis evaluation: one row per metric, one column per image source."""
    from mrg.metrics.registry import display_name

    lines = [f"# Synthesized images: {record['num_images']} images, real {record['inputs']['split']} split as "
             "reference", "", "| metric | synthesized | mean image | nearest real | real |", "|---|---:|---:|---:|---:|"]
    for name in ("consistency_f1", "consistency_macro_f1", "fid", "ms_ssim"):
        cells = [_fmt(record["columns"][c][name]) for c in COLUMNS]
        real = {"consistency_f1": record["real"]["classifier_f1"],
                "consistency_macro_f1": record["real"]["classifier_macro_f1"], "fid": float("nan"),
                "ms_ssim": record["real"]["ms_ssim"]}[name]
        lines.append(f"| {display_name(name)} | {' | '.join(cells)} | {_fmt(real)} |")
    lines += ["", f"Real column: the classifier's F1 on the real images (the ceiling) and their own MS-SSIM. "
              f"FID encoder: {record['encoder']['name']}. Prompt labels: {record['prompt_labels']['gold']} gold, "
              f"{record['prompt_labels']['labeler']} from the labeler.", ""]
    for name, c in record.get("paired", {}).items():
        lines.append(f"Synthesized minus {name.replace('_', ' ')}, consistency F1: {c['delta']:+.4f} (95% CI "
                     f"{c['ci_low']:+.4f} to {c['ci_high']:+.4f}, paired p = {c['p_value']:.3f}).")
    if record.get("paired"):
        lines.append("")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "–" if value != value else f"{value:.4f}"

