"""``mrg answer``: answers to visual questions from a checkpoint, scored against the truth for a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.console import console, is_main_process


def _pct(group: dict[str, Any] | None, key: str) -> str:
    return f"{100 * group[key]:.1f}" if group and key in group else "-"


def answer_table_rows(result: dict[str, Any]) -> list[tuple[str, str, int, str, str, str]]:
    """(type, metric, questions, model [CI], majority, subject majority) rows, per type then overall, in %."""
    from mrg.metrics.registry import display_name
    from mrg.metrics.vqa import METRIC_NAMES

    baselines = result.get("baselines", {})
    rows = []
    for name, group in [*sorted(result["types"].items()), ("overall", result["overall"])]:
        bases = [baselines.get(b, {}).get("overall") if name == "overall" else baselines.get(b, {}).get("types", {}).get(name)
                 for b in ("majority", "subject majority")]
        for key in METRIC_NAMES:
            if key not in group:
                continue
            interval = group.get("intervals", {}).get(key)
            ci = f" [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]" if interval else ""
            count = group["num_closed"] if key == "closed_accuracy" else group["num_open"]
            rows.append((name, display_name(key), count, _pct(group, key) + ci, _pct(bases[0], key), _pct(bases[1], key)))
    return rows


def print_answer_table(result: dict[str, Any]) -> None:
    """Per question type and overall: the model's scores (with intervals) beside the majority-answer baselines."""
    table = Table(title="VQA scores (%; 95% bootstrap CI) vs majority-answer baselines", header_style="bold")
    for name in ("type", "metric", "n", "model", "majority", "subject majority"):
        table.add_column(name, justify="left" if name in ("type", "metric") else "right")
    for row in answer_table_rows(result):
        table.add_row(row[0], row[1], str(row[2]), *row[3:])
    console.print(table)


@app.command("answer")
def answer_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-k", help="RUN_DIR (best, else last), a pointer or a "
                                             "step folder of a run of any method with an LLM.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file of answers; FILE.meta.json records how, "
                                      "FILE.metrics.json the scores (dataset splits).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="generate.key=value overrides of the answer "  # noqa: UP007
                                                          "decoding (greedy, 1-16 new tokens).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="A 'mrg prepare vqa' folder.", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Its split: test, val or train.")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image file of one study (repeat for its views); "  # noqa: UP007
                                                     "needs --question.", show_default=False)] = None,
    question: Annotated[str | None, typer.Option("--question", help="The question about --image.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Resamples for the confidence intervals (0: none).",
                                           min=0)] = 1000,
) -> None:
    """Answer visual questions in batches; for a dataset split, score them (closed accuracy, open exact match and
    token F1 per question type, with bootstrap CIs) beside the majority-answer baselines.

    Examples: mrg answer --checkpoint runs/vqa --data data/synthetic-vqa --split test --out runs/vqa/answers.jsonl;
    mrg answer --checkpoint runs/vqa --image film.png --question "Is there a pleural effusion?" --out a.jsonl.
    """
    from mrg.answer import answer_questions

    result = answer_questions(checkpoint, out_path=out, data=data, split=split, image=image, question=question,
                              overrides=overrides)
    if not is_main_process():
        return
    console.print(f"{result.num_answers:,} answers from {result.checkpoint} (step {result.step}) -> {result.out_path} "
                  f"({result.seconds:.1f} s)", soft_wrap=True)
    if result.vqa_root is None:
        from mrg.files import read_jsonl

        for row in read_jsonl(result.out_path):
            console.print(f"{row['question']} -> [bold]{row['prediction']}[/]", soft_wrap=True)
        return
    from mrg.metrics.vqa import evaluate_answers

    scores = evaluate_answers(result.out_path, result.vqa_root, resamples=bootstrap)
    print_answer_table(scores)
    console.print(f"scores -> {scores['metrics_path']}", soft_wrap=True)
