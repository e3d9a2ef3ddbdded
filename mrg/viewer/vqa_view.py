"""The VQA section of the report: the scores of a ``mrg answer`` file per question type beside the majority
baselines, and examples (image, question, answer, truth).

A folder holds answers when it has ``<answers>.jsonl`` next to ``<answers>.jsonl.metrics.json`` (what ``mrg
answer --data DIR --split S`` writes). Images are read from the questions' ``images_root`` (``vqa.json`` of the
``--data`` folder recorded in ``<answers>.jsonl.meta.json``); a missing image becomes a "missing" cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from mrg.errors import DataError
from mrg.files import read_json, read_jsonl
from mrg.metrics.registry import VQA_METRICS, display_name

METRICS_SUFFIX = ".jsonl.metrics.json"
VQA_STAMP_NAME = "vqa.json"  # mrg.data.vqa's, named here so that reading a page's inputs never imports torch
METRIC_NAMES = tuple(m.name for m in VQA_METRICS)
EXAMPLES_PER_TYPE = 4


@dataclass
class VQAInputs:
    """A scored ``mrg answer`` file, read."""

    answers_path: Path
    scores: dict[str, Any]
    rows: list[dict[str, Any]]
    images_root: Path | None
    thumbnails: dict[str, str | None] = field(default_factory=dict)
    """Question id -> thumbnail data URI of its first image (examples only)."""

    @property
    def name(self) -> str:
        return str(self.answers_path)


def answer_files(folder: Path) -> list[Path]:
    """The scored answer files of ``folder`` (``X.jsonl`` with ``X.jsonl.metrics.json``)."""
    out = []
    for metrics in sorted(folder.glob(f"*{METRICS_SUFFIX}")):
        answers = metrics.with_name(metrics.name[: -len(".metrics.json")])
        if answers.is_file():
            out.append(answers)
    return out


def read_vqa(answers: Path) -> VQAInputs:
    """Read a scored answer file, its scores and where its images are.

    Raises:
        DataError: the scores file is not a ``mrg answer`` score record.
    """
    scores = read_json(answers.with_name(answers.name + ".metrics.json"))
    if not isinstance(scores, dict) or "types" not in scores or "overall" not in scores:
        raise DataError(f"{answers}.metrics.json: not a score record of 'mrg answer' (no types/overall)")
    root = None
    meta_path = answers.with_name(answers.name + ".meta.json")
    data = read_json(meta_path).get("input", {}).get("data") if meta_path.is_file() else None
    if data and (Path(data) / VQA_STAMP_NAME).is_file():
        root = Path(read_json(Path(data) / VQA_STAMP_NAME)["images_root"])
    return VQAInputs(answers, scores, read_jsonl(answers), root)


def examples(vqa: VQAInputs, per_type: int = EXAMPLES_PER_TYPE) -> list[dict[str, Any]]:
    """The first ``per_type`` answers of each question type, types in name order."""
    chosen: dict[str, list[dict[str, Any]]] = {}
    for row in vqa.rows:
        bucket = chosen.setdefault(str(row.get("question_type", "")), [])
        if len(bucket) < per_type:
            bucket.append(row)
    return [row for qtype in sorted(chosen) for row in chosen[qtype]]


def attach_vqa_thumbnails(vqa: VQAInputs, size: int) -> int:
    """Thumbnails of the examples' first images; returns how many are missing."""
    from mrg.viewer.studies import thumbnail_data_uri

    missing = 0
    for row in examples(vqa):
        paths = row.get("image_paths") or []
        uri = None
        if paths and vqa.images_root is not None:
            try:
                uri = thumbnail_data_uri(vqa.images_root / paths[0], size)
            except (OSError, DataError, ValueError):
                uri = None
        missing += uri is None
        vqa.thumbnails[row["id"]] = uri
    return missing


def _norm(text: str) -> str:
    """``mrg.data.vqa.normalize_answer`` (lower case, punctuation out), without importing torch."""
    import re

    text = re.sub(r"[^\w\s,]", " ", str(text).lower())
    return " ".join(re.sub(r"\s*,\s*", ", ", text).split()).strip(" ,")


def _pct(group: dict[str, Any] | None, key: str) -> str:
    return f"{100 * group[key]:.1f}" if group and key in group else "–"


def _scores_table(scores: dict[str, Any]) -> str:
    baselines = scores.get("baselines", {})
    body = []
    for name, group in [*sorted(scores["types"].items()), ("overall", scores["overall"])]:
        bases = [baselines.get(b, {}).get("overall") if name == "overall" else
                 baselines.get(b, {}).get("types", {}).get(name) for b in ("majority", "subject majority")]
        for key in METRIC_NAMES:
            if key not in group:
                continue
            interval = group.get("intervals", {}).get(key)
            ci = f' <span class="ci">[{100 * interval["low"]:.1f}, {100 * interval["high"]:.1f}]</span>' if interval else ""
            count = group["num_closed"] if key == "closed_accuracy" else group["num_open"]
            body.append(f"<tr><th scope=\"row\">{escape(name)}</th><td>{escape(display_name(key))}</td><td>{count}</td>"
                        f"<td>{_pct(group, key)}{ci}</td><td>{_pct(bases[0], key)}</td><td>{_pct(bases[1], key)}</td></tr>")
    head = "".join(f'<th scope="col">{h}</th>' for h in ("type", "metric", "n", "model (%)", "majority", "subject majority"))
    return (f'<table class="metrics"><caption>Answers per question type (95% bootstrap CI) beside the majority-answer '
            f'baselines of the training questions</caption><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _examples_table(vqa: VQAInputs) -> str:
    rows = []
    for row in examples(vqa):
        uri = vqa.thumbnails.get(row["id"])
        image = (f'<img src="{escape(uri)}" alt="study {escape(str(row.get("study_id")))}" loading="lazy">' if uri else
                 '<span class="noimg" role="img" aria-label="image missing">missing</span>')
        truth = row.get("answer")
        right = truth is not None and _norm(row["prediction"]) == _norm(truth)
        mark = "" if truth is None else (' class="ok"' if right else ' class="wrong"')
        rows.append(f'<tr><td class="img">{image}</td><td>{escape(str(row.get("question_type", "")))}</td>'
                    f'<td>{escape(row["question"])}</td><td{mark}>{escape(row["prediction"])}</td>'
                    f'<td>{escape(str(truth) if truth is not None else "–")}</td></tr>')
    head = "".join(f'<th scope="col">{h}</th>' for h in ("image", "type", "question", "answer", "truth"))
    return (f'<div class="scroll"><table class="studies vqa" style="--thumb: 64px"><caption>Examples: the first '
            f'{EXAMPLES_PER_TYPE} questions of each type</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def vqa_section(vqa: VQAInputs, index: int) -> str:
    """The section of one scored answer file."""
    scores = vqa.scores
    meta = (f'<p class="meta">{scores.get("num_questions", len(vqa.rows))} questions of {escape(vqa.name)}; '
            f'{scores.get("bootstrap", 0)} bootstrap resamples</p>')
    return (f'<section class="vqa" id="vqa-{index}" aria-labelledby="vqa-{index}-h"><h2 id="vqa-{index}-h">Visual '
            f'question answering</h2>{meta}{_scores_table(scores)}{_examples_table(vqa)}</section>')
