"""Clinical efficacy: every CE definition against hand-computed values, resampling, tables and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrg.data.chexpert import FIVE_OBSERVATIONS, OBSERVATIONS
from mrg.errors import MetricError
from mrg.metrics.clinical import (
    ce_counts,
    clinical_efficacy,
    clinical_efficacy_from_counts,
    metric_keys,
    per_observation_table,
    per_sample_ce,
)

CM, ED, PE, NF, SD, AT = "Cardiomegaly", "Edema", "Pleural Effusion", "No Finding", "Support Devices", "Atelectasis"

# Three report pairs, small enough to count by hand:
#   1: pred {CM 1, ED -1}       ref {CM 1, ED 1}
#   2: pred {NF 1}              ref {PE 1}
#   3: pred {}                  ref {NF 1}
PRED = [{CM: 1.0, ED: -1.0}, {NF: 1.0}, {}]
REF = [{CM: 1.0, ED: 1.0}, {PE: 1.0}, {NF: 1.0}]


def test_keys_are_flat_and_named_by_definition() -> None:
    scores = clinical_efficacy(PRED, REF)
    assert list(scores) == metric_keys()
    assert scores.keys() >= {"ce_precision", "ce_recall", "ce_f1", "ce_macro_f1", "ce5_micro_f1", "ce5_macro_f1"}
    assert scores.keys() >= {"ce_upos_micro_f1", "ce_upos_macro_f1", "ce5_upos_micro_f1", "ce5_upos_macro_f1"}
    assert scores.keys() >= {"ce_example_precision", "ce_example_recall", "ce_example_f1"}
    assert not any("chexbert" in key for key in scores)


def test_r2gen_micro_headline_uncertain_as_negative() -> None:
    # tp: (1, CM); fp: (2, NF); fn: (1, ED) (pred is uncertain), (2, PE), (3, NF)
    scores = clinical_efficacy(PRED, REF)
    assert scores["ce_precision"] == pytest.approx(1 / 2)
    assert scores["ce_recall"] == pytest.approx(1 / 4)
    assert scores["ce_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 3))


def test_macro_averages_all_fourteen_observations() -> None:
    # only Cardiomegaly has P = R = F1 = 1; the other 13 score 0 (0/0 counts as 0)
    scores = clinical_efficacy(PRED, REF)
    for metric in ("precision", "recall", "f1"):
        assert scores[f"ce_macro_{metric}"] == pytest.approx(1 / 14)


def test_five_observation_variants() -> None:
    # within CM, ED, CO, AT, PE: tp (1, CM); fn (1, ED), (2, PE); no fp
    scores = clinical_efficacy(PRED, REF)
    assert scores["ce5_micro_precision"] == pytest.approx(1.0)
    assert scores["ce5_micro_recall"] == pytest.approx(1 / 3)
    assert scores["ce5_micro_f1"] == pytest.approx(2 / (2 + 0 + 2))
    assert scores["ce5_macro_f1"] == pytest.approx(1 / 5)


def test_uncertain_as_positive_variants() -> None:
    # ED -1 now counts: tp (1, CM), (1, ED); fp (2, NF); fn (2, PE), (3, NF)
    scores = clinical_efficacy(PRED, REF)
    assert scores["ce_upos_micro_precision"] == pytest.approx(2 / 3)
    assert scores["ce_upos_micro_recall"] == pytest.approx(2 / 4)
    assert scores["ce_upos_micro_f1"] == pytest.approx(4 / (4 + 1 + 2))
    assert scores["ce_upos_macro_f1"] == pytest.approx(2 / 14)
    assert scores["ce5_upos_micro_f1"] == pytest.approx(4 / (4 + 0 + 1))
    assert scores["ce5_upos_macro_f1"] == pytest.approx(2 / 5)


def test_example_based_like_promptmrg() -> None:
    # report 1: tp 1, fp 0, fn 1 -> P 1, R 1/2, F1 1/(1 + 1/2) = 2/3
    # report 2: tp 0, fp 1, fn 1 -> 0; report 3: tp 0, fp 0, fn 1 -> 0
    scores = clinical_efficacy(PRED, REF)
    assert scores["ce_example_precision"] == pytest.approx(1 / 3)
    assert scores["ce_example_recall"] == pytest.approx(1 / 6)
    assert scores["ce_example_f1"] == pytest.approx((2 / 3) / 3)


def test_example_based_scores_zero_when_neither_side_is_positive() -> None:
    # PromptMRG's nan_to_num: an all-negative pair scores 0, not 1 (micro is 0 too: nothing to find)
    scores = clinical_efficacy([{CM: 0.0}], [{CM: 0.0, ED: -1.0}])
    assert scores["ce_example_f1"] == 0.0
    assert scores["ce_f1"] == 0.0
    assert scores["ce_upos_micro_recall"] == 0.0 and scores["ce_upos_micro_precision"] == 0.0


def test_perfect_agreement_scores_one_where_defined() -> None:
    labels = [{CM: 1.0, PE: 1.0}, {NF: 1.0, SD: 1.0}]
    scores = clinical_efficacy(labels, labels)
    assert scores["ce_f1"] == scores["ce_precision"] == scores["ce_recall"] == 1.0
    assert scores["ce_example_f1"] == 1.0
    assert scores["ce5_micro_f1"] == 1.0
    assert scores["ce_macro_f1"] == pytest.approx(4 / 14)  # 10 observations never occur and score 0


def test_blank_values_none_and_nan_mean_not_mentioned() -> None:
    a = clinical_efficacy([{CM: None, ED: float("nan"), PE: 1.0}], [{PE: 1.0}])
    b = clinical_efficacy([{PE: 1.0}], [{PE: 1.0}])
    assert a == b


def test_from_counts_scores_any_resample() -> None:
    rng = np.random.default_rng(0)
    values = [None, 0.0, -1.0, 1.0]
    pred = [{obs: values[rng.integers(4)] for obs in OBSERVATIONS} for _ in range(40)]
    ref = [{obs: values[rng.integers(4)] for obs in OBSERVATIONS} for _ in range(40)]
    counts = ce_counts(pred, ref)
    assert len(counts) == 40
    assert clinical_efficacy_from_counts(counts) == clinical_efficacy(pred, ref)
    sample = rng.integers(0, 40, size=40)  # with repeats, like a bootstrap resample
    expected = clinical_efficacy([pred[i] for i in sample], [ref[i] for i in sample])
    got = clinical_efficacy_from_counts(counts, sample)
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == pytest.approx(expected[key], abs=1e-12)


def test_per_sample_counts_rebuild_micro_and_example_scores() -> None:
    rows = per_sample_ce(PRED, REF)
    assert len(rows) == 3
    assert rows[0] == {
        "ce_tp": 1, "ce_fp": 0, "ce_fn": 1,
        "ce5_tp": 1, "ce5_fp": 0, "ce5_fn": 1,
        "ce_upos_tp": 2, "ce_upos_fp": 0, "ce_upos_fn": 0,
        "ce5_upos_tp": 2, "ce5_upos_fp": 0, "ce5_upos_fn": 0,
        "ce_example_precision": 1.0, "ce_example_recall": 0.5, "ce_example_f1": pytest.approx(2 / 3),
    }  # fmt: skip
    scores = clinical_efficacy(PRED, REF)
    for prefix, key in (("ce", "ce_f1"), ("ce5", "ce5_micro_f1"), ("ce_upos", "ce_upos_micro_f1")):
        tp, fp, fn = (sum(row[f"{prefix}_{name}"] for row in rows) for name in ("tp", "fp", "fn"))
        assert scores[key] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["ce_example_f1"] == pytest.approx(sum(row["ce_example_f1"] for row in rows) / 3)


def test_per_observation_table() -> None:
    table = per_observation_table(PRED, REF)
    assert [row["observation"] for row in table] == list(OBSERVATIONS)
    by_name = {row["observation"]: row for row in table}
    assert by_name[CM] == {
        "observation": CM, "support": 1, "predicted": 1, "tp": 1, "fp": 0, "fn": 0,
        "precision": 1.0, "recall": 1.0, "f1": 1.0,
    }  # fmt: skip
    assert by_name[NF]["support"] == 1 and by_name[NF]["predicted"] == 1 and by_name[NF]["f1"] == 0.0
    assert by_name[ED]["support"] == 1 and by_name[ED]["recall"] == 0.0
    upos = {row["observation"]: row for row in per_observation_table(PRED, REF, uncertain_as_positive=True)}
    assert upos[ED]["tp"] == 1 and upos[ED]["f1"] == 1.0
    assert set(FIVE_OBSERVATIONS) <= set(by_name)


def test_macro_equals_mean_of_table_f1() -> None:
    table = per_observation_table(PRED, REF)
    assert clinical_efficacy(PRED, REF)["ce_macro_f1"] == pytest.approx(sum(row["f1"] for row in table) / 14)


@pytest.mark.parametrize(
    ("pred", "ref", "message"),
    [
        ([{}], [{}, {}], "1 predicted label sets but 2 reference label sets"),
        ([], [], "at least one report pair"),
        ([{"Cardiomegally": 1.0}], [{}], "unknown observation 'Cardiomegally'"),
        ([{CM: 2.0}], [{}], "label 2.0 is not one of 1.0, 0.0, -1.0 or blank"),
        ([{}], [{CM: "yes"}], "references[0]['Cardiomegaly']: label 'yes'"),
    ],
)
def test_bad_labels_are_metric_errors(pred: list, ref: list, message: str) -> None:
    with pytest.raises(MetricError, match=message.replace("[", r"\[").replace("(", r"\(")):
        clinical_efficacy(pred, ref)


def test_scores_are_plain_finite_floats() -> None:
    scores = clinical_efficacy(PRED, REF)
    assert all(type(value) is float and math.isfinite(value) for value in scores.values())


def test_equals_sklearn_when_available() -> None:
    """sklearn is not a dependency; where it is installed, check the hand-written definitions against it."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    values = [None, 0.0, -1.0, 1.0]
    pred = [{obs: values[rng.integers(4)] for obs in OBSERVATIONS} for _ in range(30)]
    ref = [{obs: values[rng.integers(4)] for obs in OBSERVATIONS} for _ in range(30)]
    scores = clinical_efficacy(pred, ref)
    for upos, key_micro, key_macro in ((False, "ce_", "ce_macro_"), (True, "ce_upos_micro_", "ce_upos_macro_")):
        accept = (1.0, -1.0) if upos else (1.0,)
        p = np.array([[item.get(obs) in accept for obs in OBSERVATIONS] for item in pred])
        g = np.array([[item.get(obs) in accept for obs in OBSERVATIONS] for item in ref])
        for average, prefix in (("micro", key_micro), ("macro", key_macro)):
            expected = metrics.precision_recall_fscore_support(g, p, average=average, zero_division=0)[:3]
            for metric, value in zip(("precision", "recall", "f1"), expected, strict=True):
                assert scores[prefix + metric] == pytest.approx(value, abs=1e-12)
