"""Confidence intervals and paired significance tests for every metric, from per-item statistics.

No paper in the field reports how much its numbers move with the test sample; this module answers it.

Every corpus metric is expressed as an ``ItemStatistic``: an (items, k) array of per-item sufficient
statistics and a function that turns their (weighted) sum into the metric. A bootstrap resample is then a
vector of item multiplicities ``w`` and its score is ``aggregate(w @ stats)`` -- BLEU from pooled n-gram
counts, METEOR from the jar's pooled statistics (no JVM call), clinical efficacy from pooled tp/fp/fn --
exactly what scoring that resample as a test set would give.

CIDEr-D is the exception: its document frequencies come from the references of the evaluated set, so a
resample recomputes them on the resample's references (an item drawn twice counts twice) and uses
``log(resample size)``, again what scoring the resample as a test set does. For a paired comparison the
references are shared, so document frequencies are fixed and per-item CIDEr scores can be swapped freely.

* ``bootstrap``: percentile intervals (default 95%) from ``n`` resamples of the items, seeded, all metrics on
  the same resamples.
* ``paired_test``: system A vs B on the same items. The p-value is approximate randomisation (a permutation
  test): each resample swaps A's and B's output on a random half of the items, and
  ``p = (1 + #{|delta*| >= |delta|}) / (n + 1)``, two-sided. The interval of the difference is a paired
  bootstrap (the same items drawn for both systems).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrg.errors import MetricError
from mrg.metrics.meteor import MeteorResult, aggregable, meteor_from_stats
from mrg.metrics.nlg import N_GRAM, NlgScores, bleu_from_stats

Aggregate = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(R, k) summed statistics and (R,) total weights -> (R,) metric values."""

_CHUNK = 128  # resamples scored at once; bounds memory at about CHUNK x items floats


@dataclass
class ItemStatistic:
    """One corpus metric as a function of summed per-item statistics."""

    key: str
    stats: np.ndarray
    """(items, k) per-item sufficient statistics; must not depend on other items' predictions."""
    aggregate: Aggregate
    resample: Callable[[np.ndarray], np.ndarray] | None = None
    """Optional (R, items) weights -> (R,) values, for metrics whose statistics change under resampling."""

    def values(self, weights: np.ndarray) -> np.ndarray:
        """The metric for each row of item multiplicities ``weights`` (R, items)."""
        if self.resample is not None:
            return self.resample(weights)
        return self.aggregate(weights @ self.stats, weights.sum(axis=1))

    def value(self) -> float:
        """The metric on the full set."""
        return float(self.aggregate(self.stats.sum(axis=0)[None, :], np.array([float(len(self.stats))]))[0])


def _mean(sums: np.ndarray, totals: np.ndarray) -> np.ndarray:
    return sums[:, 0] / totals


def mean_statistic(key: str, item_values: np.ndarray) -> ItemStatistic:
    """A metric that is the plain mean of per-item values (ROUGE-L, example-based CE)."""
    return ItemStatistic(key, np.asarray(item_values, dtype=np.float64).reshape(-1, 1), _mean)


# ------------------------------------------------------------------------------------------- builders


def nlg_statistics(scores: NlgScores) -> list[ItemStatistic]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of an ``NlgScores`` as item statistics."""
    out = []
    for k in range(N_GRAM):
        out.append(ItemStatistic(f"bleu_{k + 1}", scores.bleu_stats, lambda s, t, k=k: bleu_from_stats(s)[:, k]))
    out.append(mean_statistic("rouge_l", scores.rouge_l_items))
    cider = scores.cider_stats

    def cider_resample(weights: np.ndarray) -> np.ndarray:
        return np.array([cider.corpus_score(row) for row in weights])

    out.append(ItemStatistic("cider", scores.cider_items.reshape(-1, 1), _mean, resample=cider_resample))
    return out


def meteor_statistic(result: MeteorResult) -> ItemStatistic:
    """METEOR from the jar's per-item statistics (pooled as the jar pools them)."""
    return ItemStatistic("meteor", aggregable(result.stats), lambda s, t: meteor_from_stats(s))


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(a, b).shape)
        np.divide(a, b, out=out, where=b > 0)
        return out

    return divide(tp, tp + fp), divide(tp, tp + fn), divide(2 * tp, 2 * tp + fp + fn)


def ce_statistics(counts: Any, keys: Sequence[str]) -> list[ItemStatistic]:
    """Clinical-efficacy scores as item statistics, from ``mrg.metrics.clinical.CECounts``.

    Micro scores pool tp/fp/fn over items and observations, macro scores pool them per observation and
    average, example-based scores average per-item values; every key of ``keys`` that follows the naming
    of ``mrg.metrics.clinical`` is built (others are skipped).
    """
    from mrg.data.chexpert import FIVE_OBSERVATIONS, OBSERVATIONS

    five = np.array([OBSERVATIONS.index(name) for name in FIVE_OBSERVATIONS])
    families = {
        "ce": (counts.pred_uneg, counts.ref_uneg, np.arange(len(OBSERVATIONS))),
        "ce5": (counts.pred_uneg, counts.ref_uneg, five),
        "ce_upos": (counts.pred_upos, counts.ref_upos, np.arange(len(OBSERVATIONS))),
        "ce5_upos": (counts.pred_upos, counts.ref_upos, five),
    }
    metric_index = {"precision": 0, "recall": 1, "f1": 2}
    out: list[ItemStatistic] = []
    cache: dict[str, np.ndarray] = {}

    def family_stats(name: str) -> np.ndarray:
        if name not in cache:
            pred, ref, columns = families[name]
            pred, ref = pred[:, columns], ref[:, columns]
            cache[name] = np.concatenate([pred & ref, pred & ~ref, ~pred & ref], axis=1).astype(np.float64)
        return cache[name]

    example = None
    for key in keys:
        parts = key.split("_")
        metric = parts[-1]
        if metric not in metric_index:
            continue
        if key.startswith("ce_example_"):
            if example is None:
                pred, ref = counts.pred_uneg, counts.ref_uneg
                tp, fp, fn = ((pred & ref).sum(1), (pred & ~ref).sum(1), (~pred & ref).sum(1))
                example = np.column_stack(_prf(tp.astype(float), fp.astype(float), fn.astype(float)))
            out.append(mean_statistic(key, example[:, metric_index[metric]]))
            continue
        if key in ("ce_precision", "ce_recall", "ce_f1"):
            family, averaging = "ce", "micro"
        elif key.startswith("ce_macro_"):
            family, averaging = "ce", "macro"
        else:
            family, averaging = "_".join(parts[:-2]), parts[-2]
        if family not in families or averaging not in ("micro", "macro"):
            continue
        stats = family_stats(family)
        width = stats.shape[1] // 3

        def aggregate(s: np.ndarray, t: np.ndarray, width: int = width, averaging: str = averaging,
                      m: int = metric_index[metric]) -> np.ndarray:
            tp, fp, fn = s[:, :width], s[:, width : 2 * width], s[:, 2 * width :]
            if averaging == "micro":
                return _prf(tp.sum(1), fp.sum(1), fn.sum(1))[m]
            return _prf(tp, fp, fn)[m].mean(axis=1)

        out.append(ItemStatistic(key, stats, aggregate))
    return out


# --------------------------------------------------------------------------------------------- bootstrap


@dataclass
class Interval:
    """A bootstrap percentile interval."""

    low: float
    high: float
    std: float
    """Standard deviation of the bootstrap distribution (a standard error of the metric)."""

    def as_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "std": self.std}


def _multiplicities(rng: np.random.Generator, rows: int, items: int) -> np.ndarray:
    draws = rng.integers(0, items, size=(rows, items))
    flat = (draws + np.arange(rows)[:, None] * items).ravel()
    return np.bincount(flat, minlength=rows * items).reshape(rows, items).astype(np.float64)


def _check(statistics: Sequence[ItemStatistic], resamples: int) -> int:
    if resamples < 1:
        raise MetricError(f"--bootstrap must be a positive number of resamples, got {resamples}")
    sizes = {len(s.stats) for s in statistics}
    if len(sizes) > 1:
        raise MetricError(f"metrics were computed on different numbers of items: {sorted(sizes)}")
    items = sizes.pop() if sizes else 0
    if items < 2:
        raise MetricError("confidence intervals need at least 2 items")
    return items


def bootstrap(
    statistics: Sequence[ItemStatistic], resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Interval]:
    """Percentile bootstrap intervals for every statistic, all on the same seeded resamples of the items."""
    items = _check(statistics, resamples)
    rng = np.random.default_rng(seed)
    values = {s.key: [] for s in statistics}
    for start in range(0, resamples, _CHUNK):
        weights = _multiplicities(rng, min(_CHUNK, resamples - start), items)
        for statistic in statistics:
            values[statistic.key].append(statistic.values(weights))
    tail = (1 - confidence) / 2 * 100
    out = {}
    for key, chunks in values.items():
        draws = np.concatenate(chunks)
        low, high = np.percentile(draws, [tail, 100 - tail])
        out[key] = Interval(float(low), float(high), float(draws.std(ddof=1)) if len(draws) > 1 else 0.0)
    return out


# ------------------------------------------------------------------------------------------ paired test


@dataclass
class Comparison:
    """System A minus system B on one metric."""

    a: float
    b: float
    delta: float
    p_value: float
    """Two-sided approximate-randomisation p-value."""
    ci_low: float
    ci_high: float
    """Paired-bootstrap percentile interval of the difference."""

    def as_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "delta": self.delta, "p_value": self.p_value,
                "ci_low": self.ci_low, "ci_high": self.ci_high}


def paired_test(
    stats_a: Sequence[ItemStatistic],
    stats_b: Sequence[ItemStatistic],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Comparison]:
    """Compare two systems scored on the same items, metric by metric (keys present in both)."""
    by_key_b = {s.key: s for s in stats_b}
    pairs = [(a, by_key_b[a.key]) for a in stats_a if a.key in by_key_b]
    items = _check([s for pair in pairs for s in pair], resamples)
    rng = np.random.default_rng(seed)
    totals = np.full(1, float(items))
    observed = {a.key: (a.value(), b.value()) for a, b in pairs}
    exceed = {a.key: 0 for a, _ in pairs}
    deltas: dict[str, list[np.ndarray]] = {a.key: [] for a, _ in pairs}
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        swap = rng.integers(0, 2, size=(rows, items)).astype(np.float64)
        weights = _multiplicities(rng, rows, items)
        for a, b in pairs:
            diff = swap @ (b.stats - a.stats)
            sum_a, sum_b = a.stats.sum(axis=0), b.stats.sum(axis=0)
            t = np.repeat(totals, rows)
            permuted = a.aggregate(sum_a + diff, t) - b.aggregate(sum_b - diff, t)
            value_a, value_b = observed[a.key]
            reference = abs(value_a - value_b)
            exceed[a.key] += int(np.sum(np.abs(permuted) >= reference - 1e-12 * max(1.0, reference)))
            deltas[a.key].append(a.values(weights) - b.values(weights))
    tail = (1 - confidence) / 2 * 100
    out = {}
    for a, _ in pairs:
        value_a, value_b = observed[a.key]
        low, high = np.percentile(np.concatenate(deltas[a.key]), [tail, 100 - tail])
        out[a.key] = Comparison(
            a=value_a,
            b=value_b,
            delta=value_a - value_b,
            p_value=(1 + exceed[a.key]) / (resamples + 1),
            ci_low=float(low),
            ci_high=float(high),
        )
    return out
