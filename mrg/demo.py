"""``mrg demo``: the whole pipeline on the embedded synthetic default, on a CPU, in minutes.

Stages (each reuses finished work when run again into the same folder):

1. ``mrg prepare synthetic``: chest-film-like images whose structures encode the findings.
2. ``mrg train-lm``: a small causal LM trained on the training reports with the labeler's findings as
   context, then frozen and loaded by path like any hub LLM (no pretrained LLM can be downloaded).
3. ``mrg train``: the promptbook-wise MRG-LLM model (preset ``demo``) with validation-based selection.
4. ``mrg generate`` on the test split and ``mrg evaluate`` on the result.
5. The most-frequent-report baseline, scored the same way, so the run shows what the image adds.
6. ``mrg report``: one self-contained HTML page.

Everything is written under the output folder; ``demo.json`` summarises timings and scores.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrg.baselines import most_frequent_report
from mrg.config import EvalConfig, LMConfig, build_config, load_config
from mrg.console import console
from mrg.data.chexpert import OBSERVATIONS
from mrg.data.prepared import PreparedDataset, Study, load_prepared_dataset
from mrg.files import read_jsonl, write_json_atomic, write_jsonl_atomic
from mrg.metrics.registry import display_name
from mrg.provenance import provenance

if TYPE_CHECKING:
    from mrg.evaluate import EvalReport
    from mrg.methods import Method

DEMO_METRICS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1")
"""The rows of the demo's summary table (registered metric names)."""


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo flavour: the dataset, and overrides of the LM and report-model configs."""

    name: str
    n: int
    image_size: int
    lm_overrides: tuple[str, ...]
    train_overrides: tuple[str, ...]
    seed: int = 0


FULL = DemoPlan(
    name="full",
    n=2000,
    image_size=128,
    lm_overrides=("steps=500",),
    train_overrides=(),
)
FAST = DemoPlan(
    name="fast",
    n=800,
    image_size=128,
    lm_overrides=("steps=200",),
    train_overrides=("train.max_steps=200", "train.val_every=200", "train.val_subset=60"),
)


@dataclass
class DemoResult:
    """What ``run_demo`` produced (also written to ``OUT/demo.json``)."""

    out_dir: Path
    metrics: dict[str, float]
    baseline: dict[str, float]
    examples: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    report_html: Path | None = None
    method: str = "mrg-llm"
    extras: dict[str, Any] = field(default_factory=dict)


def _pick_examples(test: list[Study], predictions: dict[str, str]) -> list[dict[str, Any]]:
    """Three test studies to show: a normal one, one with one finding and one with several."""
    from mrg.data.sources.synthetic import findings_in_words

    def abnormal(study: Study) -> int:
        return sum(1 for obs, v in (study.labels or {}).items() if v == 1.0 and obs not in ("No Finding", "Support Devices"))

    chosen: list[Study] = []
    for wanted in (lambda s: abnormal(s) == 0, lambda s: abnormal(s) == 1, lambda s: abnormal(s) >= 2):
        match = next((s for s in test if wanted(s) and s not in chosen and s.id in predictions), None)
        if match is not None:
            chosen.append(match)
    return [
        {
            "id": s.id,
            "true_findings": findings_in_words(s),
            "generated": predictions[s.id],
            "reference": s.report_clean,
            "image": s.image_paths[0] if s.image_paths else None,
        }
        for s in chosen
    ]


def _demo_method(method: str) -> Method:
    """The registered method ``method``; refuses one without a demo preset, naming those that have one."""
    from mrg.methods import get_method, list_methods

    chosen = get_method(method)
    if chosen.demo_preset is None:
        from mrg.errors import ConfigError

        with_demo = [m.name for m in list_methods() if m.demo_preset]
        raise ConfigError(f"--method {method}: has no demo preset; methods with a demo: {', '.join(with_demo)}")
    return chosen


def _stage_timer(
    stages: list[str], on_stage: Callable[[int, int, str], None] | None, seconds: dict[str, float]
) -> Callable[[int, str], contextlib.AbstractContextManager[None]]:
    """``timed(index, key)``: announces stage ``index`` and, when it finishes without error, stores its seconds."""

    @contextlib.contextmanager
    def timed(index: int, key: str) -> Iterator[None]:
        if on_stage is not None:
            on_stage(index + 1, len(stages), stages[index])
        started = time.perf_counter()
        yield
        seconds[key] = time.perf_counter() - started

    return timed


def run_demo(out_dir: str | Path, *, fast: bool = False, method: str = "mrg-llm",
             on_stage: Callable[[int, int, str], None] | None = None) -> DemoResult:
    """Run the demo pipeline into ``out_dir`` and return its scores and examples.

    Args:
        out_dir: the demo folder (data/, lm/, run/, eval/, report.html, demo.json).
        fast: the smaller flavour used by CI (fewer studies and steps).
        method: the registered method to train (its ``demo_preset``).
        on_stage: called as ``on_stage(index, total, title)`` when a stage starts (for the CLI's headings).

    Raises:
        MrgError: any stage's error (e.g. Java missing for METEOR).
    """
    from mrg.data.sources.synthetic import prepare_synthetic
    from mrg.domain_lm import train_report_lm
    from mrg.evaluate import make_scorer, run_evaluation
    from mrg.generate import generate_reports
    from mrg.recipes.train import train
    from mrg.viewer import build_report

    plan = FAST if fast else FULL
    chosen = _demo_method(method)
    out_dir = Path(out_dir)
    data_dir, lm_dir, run_dir, eval_dir = out_dir / "data", out_dir / "lm", out_dir / "run", out_dir / "eval"
    seconds: dict[str, float] = {}
    stages = ["prepare synthetic data", "train the frozen LM", f"train {chosen.name}", "generate test reports",
              "evaluate", "most-frequent-report baseline", "HTML report"]
    timed = _stage_timer(stages, on_stage, seconds)

    with timed(0, "prepare"):
        prepare_synthetic(data_dir, n=plan.n, seed=plan.seed, image_size=plan.image_size, views=1)
    with timed(1, "train_lm"):
        lm = train_report_lm(data_dir, lm_dir, build_config(LMConfig, {}, list(plan.lm_overrides)))
    with timed(2, "train"):
        cfg = load_config(chosen.demo_preset, [f"data.root={data_dir}", f"model.llm.name_or_path={lm_dir}",
                                               *plan.train_overrides,
                                               *chosen.demo_overrides(data_dir, out_dir, fast=fast)])
        dataset = load_prepared_dataset(data_dir)
        scorer = make_scorer(cfg.eval, dataset.normalize)  # starts METEOR's JVM now, in the background
        train(cfg, run_dir, resume="auto", scorer=scorer)
    with timed(3, "generate"):
        predictions_path = out_dir / "test_predictions.jsonl"
        generate_reports(run_dir, out_path=predictions_path, data_root=data_dir, split="test")
    with timed(4, "evaluate"):
        evaluation = run_evaluation(predictions_path, eval_dir, cfg.eval, data=data_dir, split="test")
    with timed(5, "baseline"):
        constant, baseline = _most_frequent_baseline(dataset, cfg.eval, data_dir, out_dir)
    with timed(6, "report"):
        # before the page: a method's extras may hold per-study class probabilities the page shows (TRRG's perception)
        extras = chosen.demo_extras(cfg, run_dir, data_dir, out_dir)
        perceived = {"perceptions": extras.get("perceived_csv"), "perceive_threshold": extras.get("perceive_threshold", 0.5)}
        # MAViLT's synthesized test reports, beside the real image and its reconstruction
        drawn = {"synthesized": extras.get("synthesized_dir"), "reconstructed": extras.get("reconstructed_dir")}
        report = build_report([run_dir, eval_dir], out_dir / "report.html", data=data_dir, title="mrg demo", **perceived,
                              **drawn)

    predicted = {row["id"]: row["prediction"] for row in read_jsonl(predictions_path)}
    metrics = _flat(evaluation.record)
    baseline_metrics = _flat(baseline.record)
    examples = _pick_examples(dataset.split("test"), predicted)
    result = DemoResult(out_dir, metrics, baseline_metrics, examples, seconds, report.path, chosen.name, extras)
    _write_demo_json(result, plan, constant, lm.record)
    return result


def _most_frequent_baseline(
    dataset: PreparedDataset, eval_cfg: EvalConfig, data_dir: Path, out_dir: Path
) -> tuple[str, EvalReport]:
    """The most frequent training report, predicted for every test study and scored like the method."""
    from mrg.evaluate import run_evaluation

    test = dataset.split("test")
    constant = most_frequent_report(dataset.split("train"))
    baseline_path = out_dir / "baseline" / "most_frequent_predictions.jsonl"
    write_jsonl_atomic(baseline_path, ({"id": s.id, "prediction": constant} for s in test))
    baseline = run_evaluation(baseline_path, out_dir / "baseline", eval_cfg, data=data_dir, split="test")
    return constant, baseline


def _write_demo_json(result: DemoResult, plan: DemoPlan, constant: str, lm_record: dict[str, Any]) -> None:
    """``OUT/demo.json``: the plan, scores, baseline, examples, timings and the LM's held-out losses."""
    write_json_atomic(
        result.out_dir / "demo.json",
        {
            "plan": plan.name,
            "method": result.method,
            "metrics": result.metrics,
            "extras": result.extras,
            "most_frequent_baseline": {"report": constant, "metrics": result.baseline},
            "examples": result.examples,
            "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
            "lm": {k: lm_record.get(k) for k in ("heldout_loss_with_context", "heldout_loss_without_context")},
            "observations": list(OBSERVATIONS),
            "provenance": provenance(),
        },
    )


def _flat(record: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a metrics.json record (its flat float keys)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def print_summary(result: DemoResult) -> None:
    """The metric table (the method vs the most-frequent-report baseline) and three studies side by side."""
    from rich.table import Table

    table = Table(title="test split", title_justify="left")
    table.add_column("metric")
    table.add_column(result.method, justify="right")
    table.add_column("most-frequent report", justify="right")
    for key in DEMO_METRICS:
        label = display_name(key) + (" (micro, 14)" if key == "ce_f1" else "")
        if key in result.metrics:
            table.add_row(label, f"{result.metrics[key]:.3f}", f"{result.baseline.get(key, float('nan')):.3f}")
    console.print(table)
    studies = Table(title="three test studies", title_justify="left", show_lines=True)
    studies.add_column("true findings (from the image generator)", ratio=1)
    studies.add_column("generated report", ratio=2)
    studies.add_column("reference report", ratio=2)
    for example in result.examples:
        studies.add_row(", ".join(example["true_findings"]), example["generated"], example["reference"])
    console.print(studies)
