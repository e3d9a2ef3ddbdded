"""Clinical efficacy (CE): precision, recall and F1 of the 14 CheXpert observations, under every definition in use.

Papers call at least five different numbers "CE F1" (``../shared/research/metrics.md`` section 2.5 lists
them). mrg computes them all from the same two label lists, under names that say what they are:

=================================  =============  ===========  ===========================================
key                                observations   uncertain    averaging
=================================  =============  ===========  ===========================================
``ce_precision/recall/f1``         14             negative     micro (R2Gen ``compute_ce.py``; headline)
``ce_macro_precision/recall/f1``   14             negative     macro (R2Gen's second number)
``ce5_micro_*`` / ``ce5_macro_*``  5              negative     micro / macro (LLaVA-Rad "Micro-F1-5")
``ce_upos_micro_*``                14             positive     micro (f1chexbert / RadEval "rrg", ifcc)
``ce_upos_macro_*``                14             positive     macro
``ce5_upos_micro_*`` / ``_macro``  5              positive     micro / macro (LLaVA-Rad "Micro-F1-5+")
``ce_example_precision/recall/f1`` 14             negative     example-based (PromptMRG)
=================================  =============  ===========  ===========================================

Rules shared by all of them:

* A label is *positive* when it is 1.0; "uncertain negative" variants map -1.0 to negative, "uncertain
  positive" (``upos``) variants map it to positive. Blank (not mentioned) and 0.0 are always negative.
* micro: tp, fp and fn are summed over every (report, observation) pair, then P = tp/(tp+fp),
  R = tp/(tp+fn), F1 = 2 tp/(2 tp+fp+fn); macro: P, R and F1 per observation, then their plain mean over
  all 14 (or 5) observations, including observations that never occur. This is
  ``sklearn.metrics.precision_recall_fscore_support(average="micro"|"macro", zero_division=0)``, written
  here by hand: every 0/0 is 0.
* example-based (PromptMRG ``CheXbertMetrics``): per report, tp, fp and fn over the 14 observations, then
  P_i = tp/(tp+fp), R_i = tp/(tp+fn), F1_i = tp/(tp + (fp+fn)/2), each 0 when undefined, averaged over
  reports. A report where neither side has a positive label therefore scores 0, as in PromptMRG.
* The 5 observations are Cardiomegaly, Edema, Consolidation, Atelectasis and Pleural Effusion.

The labels come from whatever labeler the caller used; mrg's own is ``mrg.metrics.labeler``
(``mrg-chexpert-rules``), not CheXbert and not the original CheXpert labeler. Name the labeler next to
every number you publish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mrg.data.chexpert import FIVE_OBSERVATIONS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from mrg.errors import MetricError

Labels = Mapping[str, float]

_FIVE_INDEX = np.array([OBSERVATIONS.index(name) for name in FIVE_OBSERVATIONS])
_ALL_INDEX = np.arange(len(OBSERVATIONS))
_METRICS = ("precision", "recall", "f1")

# (key prefix, uncertain as positive, observation columns) for the micro/macro families, in output order.
_FAMILIES: tuple[tuple[str, bool, np.ndarray], ...] = (
    ("ce", False, _ALL_INDEX),
    ("ce5", False, _FIVE_INDEX),
    ("ce_upos", True, _ALL_INDEX),
    ("ce5_upos", True, _FIVE_INDEX),
)


def metric_keys() -> list[str]:
    """Every key :func:`clinical_efficacy` returns, in order."""
    keys = [f"ce_{m}" for m in _METRICS] + [f"ce_macro_{m}" for m in _METRICS]
    for prefix, _, _ in _FAMILIES[1:]:
        keys += [f"{prefix}_micro_{m}" for m in _METRICS] + [f"{prefix}_macro_{m}" for m in _METRICS]
    keys += [f"ce_example_{m}" for m in _METRICS]
    return keys


def _check_value(value: object, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetricError(f"{where}: label {value!r} is not one of 1.0, 0.0, -1.0 or blank") from None
    if math.isnan(number):
        return None
    if number not in (POSITIVE, NEGATIVE, UNCERTAIN):
        raise MetricError(f"{where}: label {value!r} is not one of 1.0, 0.0, -1.0 or blank")
    return number


def label_matrix(labels: Sequence[Labels], side: str = "labels") -> np.ndarray:
    """An (n, 14) float array of labels in CheXpert order; NaN where an observation is blank.

    Raises:
        MetricError: an unknown observation name or a value other than 1, 0, -1, None or NaN.
    """
    matrix = np.full((len(labels), len(OBSERVATIONS)), np.nan)
    column = {name: index for index, name in enumerate(OBSERVATIONS)}
    for row, item in enumerate(labels):
        for name, value in item.items():
            if name not in column:
                raise MetricError(
                    f"{side}[{row}]: unknown observation {name!r}; expected one of the 14 CheXpert observations"
                )
            number = _check_value(value, f"{side}[{row}][{name!r}]")
            if number is not None:
                matrix[row, column[name]] = number
    return matrix


@dataclass(frozen=True)
class CECounts:
    """Binary positive matrices of both sides under both uncertain mappings, shape (n, 14) each.

    Build once with :func:`ce_counts`; :func:`clinical_efficacy_from_counts` then scores any subset or
    resample of the rows (bootstrap) without relabelling.
    """

    pred_uneg: np.ndarray
    ref_uneg: np.ndarray
    pred_upos: np.ndarray
    ref_upos: np.ndarray

    def __len__(self) -> int:
        return int(self.pred_uneg.shape[0])


def ce_counts(pred_labels: Sequence[Labels], ref_labels: Sequence[Labels]) -> CECounts:
    """Positive-label matrices of predictions and references (see :class:`CECounts`).

    Raises:
        MetricError: the two lists differ in length or hold an invalid label.
    """
    if len(pred_labels) != len(ref_labels):
        raise MetricError(
            f"{len(pred_labels)} predicted label sets but {len(ref_labels)} reference label sets; they must pair up"
        )
    pred = label_matrix(pred_labels, "predictions")
    ref = label_matrix(ref_labels, "references")
    return CECounts(
        pred_uneg=pred == POSITIVE,
        ref_uneg=ref == POSITIVE,
        pred_upos=(pred == POSITIVE) | (pred == UNCERTAIN),
        ref_upos=(ref == POSITIVE) | (ref == UNCERTAIN),
    )


def _divide(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)  # zero_division = 0
    return out


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _divide(tp, tp + fp), _divide(tp, tp + fn), _divide(2 * tp, 2 * tp + fp + fn)


def _tp_fp_fn(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return pred & ref, pred & ~ref, ~pred & ref


def clinical_efficacy_from_counts(counts: CECounts, indices: np.ndarray | Sequence[int] | None = None) -> dict[str, float]:
    """The scores of :func:`clinical_efficacy` for the rows ``indices`` (all rows when None; repeats allowed).

    Raises:
        MetricError: no rows to score.
    """
    rows = np.arange(len(counts)) if indices is None else np.asarray(indices, dtype=np.int64)
    if rows.size == 0:
        raise MetricError("clinical efficacy needs at least one report pair")
    scores: dict[str, float] = {}
    for prefix, upos, columns in _FAMILIES:
        pred = (counts.pred_upos if upos else counts.pred_uneg)[np.ix_(rows, columns)]
        ref = (counts.ref_upos if upos else counts.ref_uneg)[np.ix_(rows, columns)]
        tp, fp, fn = (x.sum(axis=0) for x in _tp_fp_fn(pred, ref))  # per observation
        micro = _prf(tp.sum(), fp.sum(), fn.sum())
        macro = [values.mean() for values in _prf(tp, fp, fn)]
        micro_names = [f"ce_{m}" for m in _METRICS] if prefix == "ce" else [f"{prefix}_micro_{m}" for m in _METRICS]
        for name, value in zip(micro_names, micro, strict=True):
            scores[name] = float(value)
        for metric, value in zip(_METRICS, macro, strict=True):
            scores[f"{prefix}_macro_{metric}"] = float(value)
    example = _example_based(counts.pred_uneg[rows], counts.ref_uneg[rows])
    for metric, values in zip(_METRICS, example, strict=True):
        scores[f"ce_example_{metric}"] = float(values.mean())
    return {key: scores[key] for key in metric_keys()}


def _example_based(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp, fp, fn = (x.sum(axis=1) for x in _tp_fp_fn(pred, ref))  # per report
    return _prf(tp, fp, fn)


def clinical_efficacy(pred_labels: Sequence[Labels], ref_labels: Sequence[Labels]) -> dict[str, float]:
    """All clinical-efficacy scores of predicted vs reference labels (flat keys, see the module docstring).

    Args:
        pred_labels: one label dict per generated report (``mrg.metrics.labeler.label_reports`` output:
            only mentioned observations are keys; values 1.0, 0.0, -1.0; None or NaN also mean blank).
        ref_labels: one label dict per reference report, in the same order.

    Returns:
        ``{"ce_precision": ..., "ce_recall": ..., "ce_f1": ..., "ce_macro_precision": ..., ...}`` in the order
        of :func:`metric_keys`.

    Raises:
        MetricError: the lists differ in length, are empty, or hold an unknown observation or value.

    Example:
        >>> clinical_efficacy([{"Cardiomegaly": 1.0}], [{"Cardiomegaly": 1.0, "Edema": 1.0}])["ce_recall"]
        0.5
    """
    return clinical_efficacy_from_counts(ce_counts(pred_labels, ref_labels))


def per_observation_table(
    pred_labels: Sequence[Labels], ref_labels: Sequence[Labels], uncertain_as_positive: bool = False
) -> list[dict[str, float | int | str]]:
    """Per observation: reference positives (support), predicted positives, tp/fp/fn, precision, recall, F1.

    Rows follow CheXpert order; 0/0 is 0 as everywhere in this module.
    """
    counts = ce_counts(pred_labels, ref_labels)
    pred = counts.pred_upos if uncertain_as_positive else counts.pred_uneg
    ref = counts.ref_upos if uncertain_as_positive else counts.ref_uneg
    tp, fp, fn = (x.sum(axis=0) for x in _tp_fp_fn(pred, ref))
    precision, recall, f1 = _prf(tp, fp, fn)
    return [
        {
            "observation": name,
            "support": int(tp[i] + fn[i]),
            "predicted": int(tp[i] + fp[i]),
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
        }
        for i, name in enumerate(OBSERVATIONS)
    ]


def per_sample_ce(pred_labels: Sequence[Labels], ref_labels: Sequence[Labels]) -> list[dict[str, float | int]]:
    """Per report pair: the tp/fp/fn counts behind each micro score and the example-based scores.

    Keys per row: ``ce_tp``, ``ce_fp``, ``ce_fn`` (14, uncertain negative), ``ce5_tp`` ..., ``ce_upos_tp`` ...,
    ``ce5_upos_tp`` ..., and ``ce_example_precision/recall/f1``. Summing a column over any resample of rows and
    applying P = tp/(tp+fp), R = tp/(tp+fn), F1 = 2tp/(2tp+fp+fn) gives that resample's micro score; the mean of
    an example column gives its example-based score. (Macro scores need the per-observation counts; use
    :func:`ce_counts` and :func:`clinical_efficacy_from_counts` for those.)
    """
    counts = ce_counts(pred_labels, ref_labels)
    rows: list[dict[str, float | int]] = [{} for _ in range(len(counts))]
    for prefix, upos, columns in _FAMILIES:
        pred = (counts.pred_upos if upos else counts.pred_uneg)[:, columns]
        ref = (counts.ref_upos if upos else counts.ref_uneg)[:, columns]
        for name, values in zip(("tp", "fp", "fn"), _tp_fp_fn(pred, ref), strict=True):
            for row, value in zip(rows, values.sum(axis=1), strict=True):
                row[f"{prefix}_{name}"] = int(value)
    example = _example_based(counts.pred_uneg, counts.ref_uneg)
    for metric, values in zip(_METRICS, example, strict=True):
        for row, value in zip(rows, values, strict=True):
            row[f"ce_example_{metric}"] = float(value)
    return rows
