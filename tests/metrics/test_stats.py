"""Bootstrap intervals and paired tests: resampled statistics equal rescoring, p-values behave."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from mrg.errors import MetricError
from mrg.metrics.nlg import score_nlg
from mrg.metrics.stats import bootstrap, ce_statistics, mean_statistic, nlg_statistics, paired_test


def _labels(rng: random.Random, n: int) -> list[dict[str, float]]:
    from mrg.data.chexpert import OBSERVATIONS

    out = []
    for _ in range(n):
        chosen = rng.sample(OBSERVATIONS, rng.randint(0, 4))
        out.append({name: rng.choice([1.0, 1.0, 0.0, -1.0]) for name in chosen})
    return out


def test_nlg_statistics_value_equals_the_scores(corpus) -> None:
    preds, refs = corpus(80)
    scores = score_nlg(preds, [[r] for r in refs])
    values = {s.key: s.value() for s in nlg_statistics(scores)}
    expected = scores.as_dict()
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=1e-12), key


def test_resampled_statistics_equal_rescoring_the_resample(corpus) -> None:
    preds, refs = corpus(60)
    scores = score_nlg(preds, [[r] for r in refs])
    draw = np.random.default_rng(5).integers(0, 60, size=60)
    weights = np.bincount(draw, minlength=60).astype(float)[None, :]
    rescored = score_nlg([preds[i] for i in draw], [[refs[i]] for i in draw]).as_dict()
    for statistic in nlg_statistics(scores):
        assert statistic.values(weights)[0] == pytest.approx(rescored[statistic.key], abs=1e-9), statistic.key


def test_ce_statistics_equal_the_clinical_module() -> None:
    from mrg.metrics.clinical import ce_counts, clinical_efficacy_from_counts, metric_keys

    rng = random.Random(3)
    pred, ref = _labels(rng, 200), _labels(rng, 200)
    counts = ce_counts(pred, ref)
    statistics = ce_statistics(counts, metric_keys())
    assert [s.key for s in statistics] == metric_keys()
    full = clinical_efficacy_from_counts(counts)
    indices = np.random.default_rng(1).integers(0, 200, size=200)
    resampled = clinical_efficacy_from_counts(counts, indices)
    weights = np.bincount(indices, minlength=200).astype(float)[None, :]
    for statistic in statistics:
        assert statistic.value() == pytest.approx(full[statistic.key], abs=1e-12), statistic.key
        assert statistic.values(weights)[0] == pytest.approx(resampled[statistic.key], abs=1e-12), statistic.key


def test_bootstrap_is_seeded_and_brackets_the_estimate(corpus) -> None:
    preds, refs = corpus(150)
    statistics = nlg_statistics(score_nlg(preds, [[r] for r in refs]))
    first = bootstrap(statistics, resamples=200, seed=7)
    again = bootstrap(statistics, resamples=200, seed=7)
    other = bootstrap(statistics, resamples=200, seed=8)
    for statistic in statistics:
        interval = first[statistic.key]
        assert interval == again[statistic.key]
        assert interval.low < statistic.value() < interval.high
        assert interval.std > 0
    assert first["bleu_4"] != other["bleu_4"]


def test_bootstrap_of_a_mean_matches_a_direct_bootstrap() -> None:
    values = np.random.default_rng(0).normal(size=400)
    interval = bootstrap([mean_statistic("x", values)], resamples=2000, seed=1)["x"]
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    assert interval.std == pytest.approx(standard_error, rel=0.1)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * standard_error, rel=0.1)


def test_paired_test_identical_systems() -> None:
    values = np.random.default_rng(0).random(100)
    result = paired_test([mean_statistic("m", values)], [mean_statistic("m", values)], resamples=200)["m"]
    assert result.delta == 0 and result.p_value == 1.0
    assert result.ci_low == result.ci_high == 0.0


def test_paired_test_detects_a_real_difference_and_not_noise(corpus) -> None:
    preds, refs = corpus(200)
    references = [[r] for r in refs]
    good = [r if i % 2 else p for i, (p, r) in enumerate(zip(preds, refs, strict=True))]  # half copied from refs
    stats_good = nlg_statistics(score_nlg(good, references))
    stats_base = nlg_statistics(score_nlg(preds, references))
    result = paired_test(stats_good, stats_base, resamples=300, seed=0)
    for key in ("bleu_4", "rouge_l", "cider"):
        assert result[key].delta > 0
        assert result[key].p_value < 0.01
        assert result[key].ci_low > 0
    # two halves of the same system's noise: swapping one item makes no significant difference
    nudged = list(preds)
    nudged[0] = refs[0]
    result = paired_test(nlg_statistics(score_nlg(nudged, references)), stats_base, resamples=300, seed=0)
    assert result["rouge_l"].p_value > 0.2
    assert result["rouge_l"].ci_low <= result["rouge_l"].delta <= result["rouge_l"].ci_high


def test_permutation_p_value_converges_to_the_exact_one() -> None:
    a = np.array([0.9, 0.8, 0.75, 0.6, 0.7, 0.65, 0.5, 0.55])
    b = np.array([0.7, 0.75, 0.6, 0.65, 0.5, 0.6, 0.52, 0.4])
    observed = abs(a.mean() - b.mean())
    extreme = 0
    for signs in itertools.product([0, 1], repeat=len(a)):
        swap = np.array(signs, dtype=bool)
        permuted = np.where(swap, b, a).mean() - np.where(swap, a, b).mean()
        extreme += abs(permuted) >= observed - 1e-12
    exact = extreme / 2 ** len(a)
    result = paired_test([mean_statistic("m", a)], [mean_statistic("m", b)], resamples=20000, seed=2)["m"]
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_invalid_requests() -> None:
    with pytest.raises(MetricError, match="positive number"):
        bootstrap([mean_statistic("m", np.ones(5))], resamples=0)
    with pytest.raises(MetricError, match="at least 2 items"):
        bootstrap([mean_statistic("m", np.ones(1))], resamples=10)
    with pytest.raises(MetricError, match="different numbers of items"):
        bootstrap([mean_statistic("m", np.ones(3)), mean_statistic("n", np.ones(4))], resamples=10)
