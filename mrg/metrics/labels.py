"""Scores of predicted label *probabilities* (e.g. ``mrg perceive``'s CSV) against reference labels.

Two views of the same (N, 14) probability matrix:

* **label metrics**: each probability thresholded (``p >= threshold`` is positive, else negative; an empty cell
  stays blank) and scored by the clinical-efficacy code that scores labelled reports
  (``mrg.metrics.clinical``: micro/macro, 14 and 5 observations, uncertain as negative or positive), so a
  classifier and a report generator are compared on the same footing;
* **AUROC** per class, threshold-free: positive = the reference label is positive (1), anything else (negative,
  uncertain, unmentioned) is not; classes with both outcomes only; ``auroc`` is their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrg.data.chexpert import OBSERVATIONS, POSITIVE
from mrg.metrics.registry import LABEL_CLASSIFICATION, Metric, register_metric

AUROC_PROTOCOL = ("per CheXpert class, Mann-Whitney AUROC (ties at mean rank) of the probability against the "
                  "reference label (positive vs not positive), classes with both outcomes; mean over them")
register_metric(Metric("auroc", "AUROC", "labels", inputs=("probabilities", "labels"), protocol=AUROC_PROTOCOL,
                       tasks=(LABEL_CLASSIFICATION,), headline=True, description="mean per-class AUROC of predicted label probabilities (mrg "
                                                  "evaluate on a label-probability CSV); auroc/<class> per class"))

Probabilities = dict[str, float]


def threshold_labels(rows: Sequence[Probabilities], threshold: float) -> list[dict[str, float]]:
    """Labels from probabilities: 1.0 where ``p >= threshold``, 0.0 below; classes without a probability blank."""
    return [{c: (1.0 if p >= threshold else 0.0) for c, p in row.items()} for row in rows]


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic, tied scores at their mean rank.

    ``scores`` (N,), ``positive`` (N,) bool with both outcomes present.
    """
    scores = np.asarray(scores, dtype=float)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    ranks[order] = np.arange(1, len(scores) + 1, dtype=float)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]  # every tie at the mean rank of its group
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auroc(rows: Sequence[Probabilities], ref_labels: Sequence[dict[str, float]]) -> dict[str, float]:
    """``auroc/<class>`` for each class with a probability in every row and both reference outcomes, and their
    mean ``auroc`` (NaN when no class qualifies)."""
    out: dict[str, float] = {}
    for name in OBSERVATIONS:
        if not rows or any(name not in r for r in rows):
            continue
        scores = np.array([r[name] for r in rows], dtype=float)
        positive = np.array([ref.get(name) == POSITIVE for ref in ref_labels], dtype=bool)
        if 0 < positive.sum() < len(positive):
            out[f"auroc/{name}"] = auroc(scores, positive)
    values = list(out.values())
    out["auroc"] = float(np.mean(values)) if values else float("nan")
    return out
