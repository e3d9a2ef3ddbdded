"""``mrg.metrics.vqa``: closed accuracy, open exact match and token F1 per type, intervals, majority baselines."""

from __future__ import annotations

import pytest

from mrg.data.vqa import Question
from mrg.errors import MetricError
from mrg.metrics.registry import VQA, get_metric, metrics_for_task
from mrg.metrics.vqa import METRIC_NAMES, majority_answers, score_answers, token_f1


def _row(qtype: str, truth: str, prediction: str, subject: str = "") -> dict:
    return {"id": f"{qtype}-{truth}-{prediction}", "question_type": qtype, "answer": truth, "prediction": prediction,
            "closed": truth in ("yes", "no"), "subject": subject}


def _train(qtype: str, answer: str, subject: str = "", n: int = 1) -> list[Question]:
    return [Question(f"t{i}", "s", "train", [], "q?", answer, qtype, answer in ("yes", "no"), "x", subject)
            for i in range(n)]


def test_metrics_are_registered_for_the_vqa_task() -> None:
    assert {m.name for m in metrics_for_task(VQA)} >= set(METRIC_NAMES)
    assert get_metric("closed_accuracy").inputs == ("answers",)


def test_token_f1_and_normalisation() -> None:
    assert token_f1("Left.", "left") == 1.0
    assert token_f1("left lower lobe", "left") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert token_f1("cardiomegaly, edema", "edema,cardiomegaly") == 1.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_scores_per_type_and_overall() -> None:
    rows = [_row("presence", "yes", "Yes"), _row("presence", "no", "yes"), _row("presence", "no", "no"),
            _row("side", "left", "left"), _row("side", "right", "right lower"), _row("severity", "small", "large")]
    result = score_answers(rows)
    assert result["types"]["presence"]["closed_accuracy"] == pytest.approx(2 / 3)
    assert result["types"]["side"]["open_exact_match"] == 0.5
    assert result["types"]["side"]["open_token_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert "closed_accuracy" not in result["types"]["side"]
    assert result["overall"]["num_closed"] == 3 and result["overall"]["num_open"] == 3
    assert result["overall"]["open_exact_match"] == pytest.approx(1 / 3)


def test_bootstrap_intervals_bracket_the_value() -> None:
    rows = [_row("presence", "yes", "yes" if i % 3 else "no") for i in range(60)]
    result = score_answers(rows, resamples=200, seed=1)
    value = result["overall"]["closed_accuracy"]
    interval = result["overall"]["intervals"]["closed_accuracy"]
    assert interval["low"] < value < interval["high"]
    assert score_answers(rows, resamples=200, seed=1) == result  # seeded


def test_majority_baselines_come_from_training_answers() -> None:
    train = (_train("presence", "no", "Pneumothorax", 5) + _train("presence", "yes", "Cardiomegaly", 3)
             + _train("side", "right", "Pleural Effusion", 2))
    per_type, per_subject = majority_answers(train)
    assert per_type == {"presence": "no", "side": "right"} and per_subject[("presence", "Cardiomegaly")] == "yes"
    rows = [_row("presence", "yes", "yes", "Cardiomegaly"), _row("presence", "no", "no", "Pneumothorax"),
            _row("side", "left", "left", "Pleural Effusion")]
    result = score_answers(rows, train=train)
    assert result["baselines"]["majority"]["types"]["presence"]["closed_accuracy"] == 0.5
    assert result["baselines"]["subject majority"]["types"]["presence"]["closed_accuracy"] == 1.0
    assert result["baselines"]["majority"]["types"]["side"]["open_exact_match"] == 0.0


def test_answers_without_truth_are_refused() -> None:
    with pytest.raises(MetricError, match="no truth"):
        score_answers([{"id": "q", "prediction": "yes", "answer": None, "question_type": "x", "closed": True}])
    with pytest.raises(MetricError):
        score_answers([])
