"""Scores of visual question answers: closed-question accuracy, open-question exact match and token F1.

Answers and truths are compared after ``mrg.data.vqa.normalize_answer`` (lower case, punctuation removed).
Closed (yes/no) questions are scored by accuracy; open questions by exact match and token F1 (SQuAD's: the
harmonic mean of token precision and recall over the multiset of words; commas separate words too). Every
number comes per question type and overall, with percentile bootstrap intervals over the questions
(``mrg.metrics.stats.bootstrap``) when asked for.

Two baselines are scored on the same questions, from the answers of the training questions alone:

* ``majority``: the most frequent training answer of the question's type (what a model that ignores the image
  and the question's words can reach);
* ``subject majority``: the most frequent training answer of the question's type and subject (e.g. "is there
  pneumothorax?" -> no), a stronger prior that reads the question but not the image; the type's majority where
  training has no question about the subject.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrg.data.vqa import Question, normalize_answer
from mrg.errors import MetricError
from mrg.metrics.registry import VQA_METRICS
from mrg.metrics.stats import Interval, bootstrap, mean_statistic

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in VQA_METRICS)
"""The registered answer metrics (``mrg.metrics.registry.VQA_METRICS``), in table order."""


def answer_tokens(text: str) -> list[str]:
    """Words of a normalised answer (commas separate them too)."""
    return [t for t in re.split(r"[\s,]+", normalize_answer(text)) if t]


def token_f1(prediction: str, truth: str) -> float:
    """SQuAD token F1 of one answer."""
    pred, gold = Counter(answer_tokens(prediction)), Counter(answer_tokens(truth))
    common = sum((pred & gold).values())
    if not pred or not gold:
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(gold.values())
    return 2 * precision * recall / (precision + recall)


@dataclass
class GroupScores:
    """The scores of one question type (or of all questions)."""

    num_closed: int
    num_open: int
    values: dict[str, float]
    """``closed_accuracy``, ``open_exact_match``, ``open_token_f1`` (a metric without questions is absent)."""
    intervals: dict[str, Interval] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"num_closed": self.num_closed, "num_open": self.num_open, **self.values,
                "intervals": {k: v.as_dict() for k, v in self.intervals.items()}}


def _group(rows: Sequence[dict[str, Any]], predictions: Sequence[str], resamples: int, seed: int,
           confidence: float) -> GroupScores:
    closed = [(p, r) for p, r in zip(predictions, rows, strict=True) if r["closed"]]
    opened = [(p, r) for p, r in zip(predictions, rows, strict=True) if not r["closed"]]
    per_item: dict[str, np.ndarray] = {}
    if closed:
        per_item["closed_accuracy"] = np.array([normalize_answer(p) == normalize_answer(r["answer"]) for p, r in closed], float)
    if opened:
        per_item["open_exact_match"] = np.array([normalize_answer(p) == normalize_answer(r["answer"]) for p, r in opened], float)
        per_item["open_token_f1"] = np.array([token_f1(p, r["answer"]) for p, r in opened])
    scores = GroupScores(len(closed), len(opened), {k: float(v.mean()) for k, v in per_item.items()})
    if resamples > 0:
        for key, values in per_item.items():
            if len(values) >= 2:
                scores.intervals |= bootstrap([mean_statistic(key, values)], resamples, seed, confidence)
    return scores


def majority_answers(train: Iterable[Question]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The most frequent normalised training answer per type, and per (type, subject); ties: the first seen."""
    by_type: dict[str, Counter[str]] = {}
    by_subject: dict[tuple[str, str], Counter[str]] = {}
    for q in train:
        answer = normalize_answer(q.answer)
        by_type.setdefault(q.question_type, Counter())[answer] += 1
        if q.subject:
            by_subject.setdefault((q.question_type, q.subject), Counter())[answer] += 1
    return ({t: c.most_common(1)[0][0] for t, c in by_type.items()},
            {k: c.most_common(1)[0][0] for k, c in by_subject.items()})


def baseline_predictions(rows: Sequence[dict[str, Any]], train: Sequence[Question]) -> dict[str, list[str]]:
    """The ``majority`` and ``subject majority`` answers of every row (module docstring)."""
    per_type, per_subject = majority_answers(train)
    majority = [per_type.get(r["question_type"], "") for r in rows]
    subject = [per_subject.get((r["question_type"], r.get("subject", "")), m) for r, m in zip(rows, majority, strict=True)]
    return {"majority": majority, "subject majority": subject}


def score_answers(rows: Sequence[dict[str, Any]], *, train: Sequence[Question] = (), resamples: int = 0, seed: int = 0,
                  confidence: float = 0.95) -> dict[str, Any]:
    """Score answers (rows with ``prediction``, ``answer`` (the truth), ``question_type``, ``closed``).

    Returns:
        ``{"overall": {...}, "types": {type: {...}}, "baselines": {name: {"overall", "types"}}}``, each group as
        ``GroupScores.as_dict()``; baselines only when ``train`` questions are given.

    Raises:
        MetricError: no rows, or a row without its truth.
    """
    if not rows:
        raise MetricError("no answers to score")
    missing = [r.get("id") for r in rows if r.get("answer") is None]
    if missing:
        raise MetricError(f"answer of question {missing[0]} has no truth; score answers of a dataset split")

    def table(predictions: Sequence[str], intervals: int) -> dict[str, Any]:
        types = sorted({r["question_type"] for r in rows})
        out = {"overall": _group(rows, predictions, intervals, seed, confidence).as_dict(), "types": {}}
        for qtype in types:
            chosen = [i for i, r in enumerate(rows) if r["question_type"] == qtype]
            out["types"][qtype] = _group([rows[i] for i in chosen], [predictions[i] for i in chosen], intervals, seed,
                                         confidence).as_dict()
        return out

    result = table([r["prediction"] for r in rows], resamples)
    if train:
        result["baselines"] = {name: table(preds, 0) for name, preds in baseline_predictions(rows, train).items()}
    return result


def evaluate_answers(answers_path: str | Path, vqa_root: str | Path | None, *, out_path: str | Path | None = None,
                     resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Score a ``mrg answer`` file; the baselines come from the training questions of ``vqa_root``.

    Writes the result to ``out_path`` (default ``<answers>.metrics.json``) and returns it.

    Raises:
        MetricError: no answers, or answers without truths (a single-image run).
    """
    from mrg.data.vqa import load_vqa_set
    from mrg.files import read_jsonl, write_json_atomic

    answers_path = Path(answers_path)
    rows = read_jsonl(answers_path)
    train = load_vqa_set(vqa_root).split("train") if vqa_root is not None else []
    result = score_answers(rows, train=train, resamples=resamples, seed=seed, confidence=confidence)
    result |= {"answers": str(answers_path), "num_questions": len(rows), "bootstrap": resamples,
               "confidence": confidence}
    out = Path(out_path) if out_path is not None else answers_path.with_name(answers_path.name + ".metrics.json")
    write_json_atomic(out, result)
    result["metrics_path"] = str(out)
    return result
