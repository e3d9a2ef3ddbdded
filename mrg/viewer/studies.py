"""The per-study rows of the report: texts, CheXpert labels of both sides, per-item scores and thumbnails.

Texts come from ``per_sample.csv`` when it carries them, else from the predictions JSONL the evaluation
scored (``{"id", "prediction", "reference"}``), else the reference from the prepared dataset. Labels come
from ``per_sample.csv`` when it carries both 14-label vectors, else ``mrg.metrics.labeler`` labels both
texts here. Images come from the prepared dataset (``mrg.data.prepared``); an image that is missing or
unreadable becomes a placeholder and is counted, never an error.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrg.data.chexpert import OBSERVATIONS, POSITIVE
from mrg.errors import DataError
from mrg.metrics.registry import titled
from mrg.viewer.inputs import label_columns, parse_label

# Per-item score columns shown in the table, in this order, when present (others are left out: the tp/fp/fn
# counts behind the micro scores mean little per study).
SCORE_COLUMNS: tuple[tuple[str, str], ...] = (*titled(("bleu_4", "meteor", "rouge_l", "cider")), ("ce_example_f1", "CE F1"))

_TEXT_COLUMNS = {"prediction": ("prediction", "generated", "hypothesis", "pred"), "reference": ("reference", "ref", "ground_truth")}


@dataclass
class StudyRow:
    """One study of the per-study table."""

    id: str
    prediction: str
    reference: str
    pred_labels: dict[str, float]
    ref_labels: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)
    image_paths: list[Path] = field(default_factory=list)
    thumbnails: list[str | None] = field(default_factory=list)
    """``data:`` URIs, or None where an image could not be read."""
    perceived: dict[str, float] = field(default_factory=dict)
    """Class -> predicted probability (a label-probability CSV such as ``mrg perceive``'s), when one was given."""

    @property
    def disagreements(self) -> list[str]:
        """Observations positive on one side only (the headline CE rule: uncertain and blank count as negative)."""
        return [
            obs for obs in OBSERVATIONS
            if (self.pred_labels.get(obs) == POSITIVE) != (self.ref_labels.get(obs) == POSITIVE)
        ]


@dataclass
class StudyTable:
    """The rows of one per-study table and where they came from."""

    title: str
    rows: list[StudyRow]
    score_columns: list[tuple[str, str]]
    labels_source: str
    """``per_sample.csv`` or the labeler's name and version."""
    images_source: str | None = None
    """The dataset folder the images came from (None when no images are shown)."""
    missing_images: int = 0
    thumbnail_size: int = 96
    """Pixels on the longer side of each thumbnail; shown at two thirds of it, enlarged on hover."""
    notes: list[str] = field(default_factory=list)
    perception_source: str | None = None
    """The label-probability CSV whose probabilities fill the "perceived" column (None: no such column)."""
    perceive_threshold: float = 0.5
    """P from which a class is listed as perceived."""


def _text(row: dict[str, str], side: str) -> str | None:
    for column in _TEXT_COLUMNS[side]:
        if row.get(column) is not None:
            return row[column]
    return None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _row(study_id: str, sample: dict[str, str], pred_row: dict[str, Any], dataset_reports: dict[str, str] | None,
         label_cols: dict[str, tuple[str, str]] | None, score_columns: list[tuple[str, str]]) -> tuple[StudyRow, tuple[bool, bool]]:
    """One study's row, and whether its (prediction, reference) texts came from ``per_sample.csv``."""
    prediction, reference = _text(sample, "prediction"), _text(sample, "reference")
    scored = (prediction is not None, reference is not None)
    if prediction is None:
        prediction = pred_row.get("prediction")
    if reference is None:
        reference = pred_row.get("reference")
    if reference is None and dataset_reports is not None:
        reference = dataset_reports.get(study_id)
    if prediction is None:
        raise DataError(
            f"study {study_id}: no prediction text in per_sample.csv or the predictions file; "
            "pass the predictions JSONL that was evaluated with --predictions"
        )
    pred_labels: dict[str, float] = {}
    ref_labels: dict[str, float] = {}
    if label_cols is not None:
        for obs, (pred_col, ref_col) in label_cols.items():
            if (value := parse_label(sample.get(pred_col))) is not None:
                pred_labels[obs] = value
            if (value := parse_label(sample.get(ref_col))) is not None:
                ref_labels[obs] = value
    scores = {key: v for key, _ in score_columns if (v := _number(sample.get(key))) is not None}
    return StudyRow(study_id, str(prediction), str(reference or ""), pred_labels, ref_labels, scores), scored


def _label_here(rows: list[StudyRow], scored_text: list[tuple[bool, bool]], normalize: str | None) -> str:
    """Label both texts of every row with ``mrg.metrics.labeler`` (after the protocol's cleaner); returns its name."""
    from mrg.data.text import NORMALIZE_MODES, normalize_report
    from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, label_reports

    def as_scored(text: str, already: bool) -> str:
        # per_sample.csv holds the texts as scored; a predictions file holds them before the protocol's cleaner
        return text if already or normalize not in NORMALIZE_MODES else normalize_report(text, normalize)

    pred_labels_all = label_reports([as_scored(r.prediction, p) for r, (p, _) in zip(rows, scored_text, strict=True)])
    ref_labels_all = label_reports([as_scored(r.reference, q) for r, (_, q) in zip(rows, scored_text, strict=True)])
    for row, pred, ref in zip(rows, pred_labels_all, ref_labels_all, strict=True):
        row.pred_labels, row.ref_labels = pred, ref
    return f"{LABELER_NAME} {LABELER_VERSION} (labelled for this report)"


def build_rows(
    per_sample: Sequence[dict[str, str]],
    columns: Sequence[str],
    predictions: Sequence[dict[str, Any]] | None,
    dataset_reports: dict[str, str] | None = None,
    *,
    normalize: str | None = None,
) -> tuple[list[StudyRow], list[tuple[str, str]], str]:
    """Join per-sample scores, prediction texts and labels into rows (per-sample order, else prediction order).

    Args:
        per_sample: ``per_sample.csv`` rows (may be empty).
        columns: its columns.
        predictions: the predictions JSONL rows (may be None).
        dataset_reports: id -> reference report from the prepared dataset, for predictions without one.
        normalize: the ``normalize_report`` mode the evaluation applied. Only when ``per_sample.csv`` carries no
            labels are the texts labelled here, after this cleaner, as ``mrg evaluate`` labels them.

    Returns:
        The rows, the score columns present (key, title), and where the labels came from.

    Raises:
        DataError: a study has no prediction text anywhere.
    """
    by_id = {str(p.get("id")): p for p in predictions or []}
    order = [str(r["id"]) for r in per_sample] if per_sample else list(by_id)
    sample_by_id = {str(r["id"]): r for r in per_sample}
    label_cols = label_columns(list(columns)) if per_sample else None
    score_columns = [(key, title) for key, title in SCORE_COLUMNS if key in columns]
    rows: list[StudyRow] = []
    scored_text: list[tuple[bool, bool]] = []  # per row: (prediction, reference) taken from per_sample.csv
    for study_id in order:
        row, scored = _row(study_id, sample_by_id.get(study_id, {}), by_id.get(study_id, {}), dataset_reports,
                           label_cols, score_columns)
        rows.append(row)
        scored_text.append(scored)
    if label_cols is not None:
        return rows, score_columns, "per_sample.csv"
    return rows, score_columns, _label_here(rows, scored_text, normalize)


# ------------------------------------------------------------------------------------------ thumbnails


def thumbnail_data_uri(path: Path, size: int, quality: int = 70) -> str:
    """A JPEG ``data:`` URI of the image at ``path``, its longer side ``size`` pixels (never upsampled).

    Raises:
        DataError: the image is missing or unreadable (``mrg.data.images.load_image``).
    """
    from PIL import Image

    img = _open_small(path, size)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _open_small(path: Path, size: int) -> Any:
    """The image as 8-bit grayscale; a JPEG is decoded at reduced scale (at least ``2 * size`` pixels).

    MIMIC-CXR's films are ~2,500 px JPEGs; libjpeg's DCT scaling decodes them at 1/2..1/8 size (measured: 16 ms
    instead of 33 ms for a 2500 x 3000 film). Everything else (PNG, 16-bit PNG, DICOM, a damaged file) goes through
    ``mrg.data.images.load_image`` and its errors.
    """
    from PIL import Image, UnidentifiedImageError

    from mrg.data.images import load_image

    if path.suffix.lower() in (".jpg", ".jpeg"):
        try:
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("L", (2 * size, 2 * size))
                    img.load()
                    return img.convert("L")
        except (OSError, UnidentifiedImageError, SyntaxError):
            pass  # load_image names the problem
    return load_image(path)


def attach_thumbnails(rows: Sequence[StudyRow], size: int, max_views: int, workers: int | None = None) -> int:
    """Fill ``row.thumbnails`` from ``row.image_paths`` (at most ``max_views`` per study); returns how many failed."""
    jobs = [(row, path) for row in rows for path in row.image_paths[:max_views]]
    if not jobs:
        return 0

    def one(path: Path) -> str | None:
        try:
            return thumbnail_data_uri(path, size)
        except DataError:
            return None

    from mrg.console import track

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # image decoding releases the GIL
        uris = list(track(pool.map(one, (path for _, path in jobs)), "thumbnails", total=len(jobs)))
    for row in rows:
        row.thumbnails = []
    for (row, _), uri in zip(jobs, uris, strict=True):
        row.thumbnails.append(uri)
    return sum(uri is None for uri in uris)
