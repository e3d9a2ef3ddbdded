"""Validation during training: compute a stage's validation metrics, choose the best checkpoint, record both.

A *validation* computes metrics on the validation split (``run(step, sanity) -> ValidationOutput``);
``GenerationValidation`` generates reports and scores them with an injected scorer (``mrg evaluate``'s by
default), which is what every report-generation stage uses. Methods with other tasks (e.g. contrastive
pre-training: retrieval and zero-shot AUROC) supply their own. ``ValidationRecorder`` turns an output into
the record the loop sees: the selection score of ``train.select``, ``val_metrics.jsonl``, the validation
predictions and the trackers.

The test split is never read here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrg.console import info
from mrg.distributed import Collate, predict
from mrg.errors import ConfigError, MrgError
from mrg.files import read_jsonl, write_jsonl_atomic
from mrg.metrics.registry import headline_metrics
from mrg.provenance import utc_now
from mrg.runs import VAL_METRICS_NAME, val_predictions_name
from mrg.seeds import mix_seed

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.progress import Progress
    from torch import nn
    from torch.utils.data import Dataset

Scorer = Callable[[list[str], list[str]], dict[str, float]]
"""``scorer(predictions, references) -> {metric: value}``, e.g. ``mrg.evaluate.make_scorer(...)``."""


@dataclass
class ValidationOutput:
    """What one validation computed."""

    metrics: dict[str, float]
    num_items: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Per-item outputs to keep (``{"id", "prediction", "reference"}``); empty when the task has none."""


def val_subset(num_val: int, subset: int | None, seed: int) -> list[int]:
    """All validation indices, or a fixed seeded sample of ``subset`` of them (kept in dataset order)."""
    if subset is None or subset >= num_val:
        return list(range(num_val))
    return sorted(random.Random(mix_seed(seed, 2)).sample(range(num_val), subset))


def share_from_main(accelerator: Accelerator, compute: Callable[[], Any]) -> Any:
    """Run ``compute`` on the main process only and hand its result (or its ``MrgError``) to every process."""
    from accelerate.utils import broadcast_object_list

    value: Any = None
    if accelerator.is_main_process:
        try:
            value = compute()
        except MrgError as err:  # let every process raise it, rather than wait forever for the result
            value = err
    if accelerator.num_processes > 1:
        value = broadcast_object_list([value])[0]
    if isinstance(value, MrgError):
        raise value
    return value


class GenerationValidation:
    """Generate reports for the validation studies and score them (on process 0: METEOR's JVM runs there once).

    Args:
        indices: the validation studies (all, or ``train.val_subset`` of them).
        sanity_items: how many studies a sanity validation generates (``train.sanity_val_batches`` batches
            per process).
    """

    def __init__(self, accelerator: Accelerator, model: nn.Module, dataset: Dataset, collate_fn: Collate, gen_cfg: Any,
                 scorer: Scorer, *, indices: Sequence[int], sanity_items: int, num_workers: int = 0,
                 progress: Progress | None = None) -> None:
        self.accelerator, self.model, self.dataset, self.collate_fn = accelerator, model, dataset, collate_fn
        self.gen_cfg, self.scorer, self.indices = gen_cfg, scorer, list(indices)
        self.sanity_items, self.num_workers, self.progress = sanity_items, num_workers, progress

    def run(self, step: int, *, sanity: bool = False) -> ValidationOutput:
        indices = self.indices[: self.sanity_items] if sanity else self.indices
        rows = predict(self.accelerator, self.model, self.dataset, self.collate_fn, self.gen_cfg, indices=indices,
                       num_workers=self.num_workers, progress=self.progress,
                       description="sanity validation" if sanity else f"validation at step {step}")
        metrics = share_from_main(self.accelerator,
                                  lambda: self.scorer([r["prediction"] for r in rows], [r["reference"] for r in rows]))
        kept = [{k: r[k] for k in ("id", "prediction", "reference")} for r in rows]
        return ValidationOutput(metrics, len(rows), kept)


def selection_score(metrics: dict[str, float], select: dict[str, float]) -> float:
    """The weighted sum of ``train.select``.

    Raises:
        ConfigError: the validation did not produce a metric the rule needs.
    """
    missing = [name for name in select if name not in metrics]
    if missing:
        raise ConfigError(f"train.select uses {', '.join(missing)}, which the validation does not return; "
                          f"choose from {', '.join(sorted(metrics))}")
    return float(sum(weight * float(metrics[name]) for name, weight in select.items()))


class ValidationRecorder:
    """Run a validation and record it: the score, ``val_metrics.jsonl``, the predictions, the trackers, a log line."""

    def __init__(self, accelerator: Accelerator, validation: Any, stage_dir: Path, select: dict[str, float], *,
                 task: str) -> None:
        self.accelerator, self.validation, self.stage_dir, self.select, self.task = accelerator, validation, stage_dir, select, task

    def __call__(self, step: int, epoch: int, *, sanity: bool = False) -> dict[str, Any]:
        out = self.validation.run(step, sanity=sanity)
        record: dict[str, Any] = {"step": step, "epoch": epoch, "metrics": out.metrics,
                                  "score": selection_score(out.metrics, self.select), "num_studies": out.num_items}
        if sanity:
            info(f"sanity validation: {out.num_items} items validated (score {record['score']:.4f})")
            return record
        if self.accelerator.is_main_process:
            if out.rows:
                record["predictions"] = val_predictions_name(step)
                write_jsonl_atomic(self.stage_dir / record["predictions"], out.rows)
            record["time"] = utc_now()
            _rewrite_jsonl(self.stage_dir / VAL_METRICS_NAME, record, keep_until_step=step - 1)
            self.accelerator.log({f"val/{k}": v for k, v in out.metrics.items()} | {"val/score": record["score"]}, step=step)
        info(self.line(record))
        return record

    def line(self, record: dict[str, Any]) -> str:
        metrics = record["metrics"]
        headline = headline_metrics(self.task)
        names = [n for n in headline if n in metrics] + [n for n in self.select if n not in headline]
        shown = ", ".join(f"{n} {metrics[n]:.4f}" for n in names)
        rule = " + ".join(f"{w:g}*{k}" for k, w in self.select.items())
        return (f"validation at step {record['step']}: score {record['score']:.4f} ({rule}); {shown} "
                f"(all in {VAL_METRICS_NAME})")


def _rewrite_jsonl(path: Path, record: dict[str, Any], *, keep_until_step: int) -> None:
    """Rewrite ``path`` atomically with its records up to ``keep_until_step`` plus ``record``."""
    rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= keep_until_step] if path.is_file() else []
    write_jsonl_atomic(path, [*rows, record])
