"""Reading what ``mrg train`` and ``mrg evaluate`` leave behind, for the HTML report.

A folder is recognised by its files:

* a **training run** (``mrg train``): ``metrics.csv`` (long format ``step,name,value,time``; names such as
  ``train/loss``, ``train/lr``, ``val/bleu_4``), ``val_metrics.jsonl`` (one record per validation:
  ``step``, ``epoch``, ``metrics``, ``score``, ``num_studies``, ``predictions``), ``config.yaml``,
  ``step-NNNNNN/meta.json`` checkpoints and the ``best``/``last`` pointers;
* an **evaluation** (``mrg evaluate``): ``metrics.json`` (flat metric keys, a ``protocol`` block, bootstrap
  intervals when they were asked for), ``per_sample.csv`` (per-item scores and both label vectors) and
  ``metrics.md``;
* an **analysis** (``mrg analyze``): ``analysis.json`` (format ``mrg-analysis``) and the PNG figures it lists;
* **answers** (``mrg answer``): ``X.jsonl`` with its scores ``X.jsonl.metrics.json`` (``mrg.viewer.vqa_view``).

Sub-folders are searched one level down (checkpoint folders excepted), so ``mrg report runs/demo`` finds the
run and the evaluation that ``mrg demo`` writes into sub-folders, and ``mrg report runs/tiny`` also finds an
evaluation written to ``runs/tiny/eval``. Files that are present but damaged raise a
``DataError`` naming the file; files that are merely absent leave their part of the page out.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrg.data.chexpert import OBSERVATIONS
from mrg.errors import DataError
from mrg.files import read_json, read_jsonl
from mrg.runs import ANALYSIS_FORMAT, ANALYSIS_NAME

RUN_FILES = ("metrics.csv", "val_metrics.jsonl")
EVAL_FILES = ("metrics.json", "per_sample.csv")
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class RunInputs:
    """A training run folder, read."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    """``config.yaml`` parsed (empty when absent)."""
    config_text: str = ""
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Metric name (as logged, e.g. ``train/loss``) -> (step, value) pairs in step order."""
    validations: list[dict[str, Any]] = field(default_factory=list)
    """``val_metrics.jsonl`` records in step order."""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """``meta.json`` of every complete step folder, oldest first (with ``dir`` added)."""
    best_step: int | None = None
    last_step: int | None = None
    notes: list[str] = field(default_factory=list)
    """Things a reader should know (files missing or unreadable parts)."""

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def best_validation(self) -> dict[str, Any] | None:
        """The validation record of the best checkpoint, if any."""
        if self.best_step is not None:
            for record in self.validations:
                if record.get("step") == self.best_step:
                    return record
        return None


@dataclass
class EvalInputs:
    """An evaluation folder, read."""

    root: Path
    metrics: dict[str, float] = field(default_factory=dict)
    """Every numeric top-level value of ``metrics.json``."""
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """metric -> (low, high) of its confidence interval, when bootstrapped."""
    confidence: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other non-numeric block of ``metrics.json`` (provenance, counts, ...)."""
    per_sample: list[dict[str, str]] = field(default_factory=list)
    per_sample_columns: list[str] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    """The ``.meta.json`` sidecar of the evaluated predictions (checkpoint, step, decoding), when found."""
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def labeler(self) -> str:
        """The labeler's name and version as the protocol block records them ("" when not recorded)."""
        labeler = self.protocol.get("labeler")
        if isinstance(labeler, dict):
            return " ".join(str(labeler[k]) for k in ("name", "version") if labeler.get(k))
        return str(labeler) if labeler else ""


@dataclass
class AnalysisFolder:
    """A folder written by ``mrg analyze``, read: its record and the figures that are present."""

    root: Path
    analyses: dict[str, dict[str, Any]]
    """Kind (``prompts``, ``attention``) -> its section of ``analysis.json``."""
    figures: dict[str, bytes] = field(default_factory=dict)
    """File name -> PNG bytes of every figure the sections list that is present."""
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.root)


@dataclass
class ReportInputs:
    """Every folder given to ``mrg report``, classified and read."""

    runs: list[RunInputs] = field(default_factory=list)
    evaluations: list[EvalInputs] = field(default_factory=list)
    analyses: list[AnalysisFolder] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    """Scored ``mrg answer`` files (``mrg.viewer.vqa_view.VQAInputs``)."""


# ------------------------------------------------------------------------------------------- discovery


def is_run_dir(path: Path) -> bool:
    """A folder written by ``mrg train`` (its metrics or a checkpoint are there)."""
    if any((path / name).is_file() for name in RUN_FILES):
        return True
    return (path / "config.yaml").is_file() and any(
        _STEP_DIR.match(p.name) for p in path.iterdir() if p.is_dir()
    )


def is_eval_dir(path: Path) -> bool:
    """A folder written by ``mrg evaluate``."""
    return any((path / name).is_file() for name in EVAL_FILES)


def is_analysis_dir(path: Path) -> bool:
    """A folder written by ``mrg analyze``."""
    return (path / ANALYSIS_NAME).is_file()


def is_answers_dir(path: Path) -> bool:
    """A folder holding a scored ``mrg answer`` file (``X.jsonl`` and ``X.jsonl.metrics.json``)."""
    from mrg.viewer.vqa_view import answer_files

    return bool(answer_files(path))


def _recognised(path: Path) -> bool:
    return is_run_dir(path) or is_eval_dir(path) or is_analysis_dir(path) or is_answers_dir(path)


def discover(dirs: list[Path]) -> ReportInputs:
    """Classify and read every folder and its sub-folders (one level down).

    Raises:
        DataError: a folder is missing, holds nothing mrg wrote, or holds a damaged file.
    """
    if not dirs:
        raise DataError("no folder given; pass a training run folder and/or an evaluation folder")
    found = ReportInputs()
    seen: set[Path] = set()
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"{directory}: folder not found; pass a folder written by 'mrg train' or 'mrg evaluate'")
        # the folder itself and its sub-folders (not checkpoints): a run folder often holds its evaluation
        candidates = [directory] if _recognised(directory) else []
        candidates += sorted(p for p in directory.iterdir() if p.is_dir() and not _STEP_DIR.match(p.name) and _recognised(p))
        if not candidates:
            raise DataError(
                f"{directory}: no training run ({', '.join(RUN_FILES)}), evaluation ({', '.join(EVAL_FILES)}), "
                f"analysis ({ANALYSIS_NAME}) or answers (X.jsonl.metrics.json) files here or in its sub-folders; pass a "
                "folder written by 'mrg train', 'mrg evaluate', 'mrg analyze' or 'mrg answer'"
            )
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            seen.add(key)
            if is_run_dir(candidate):
                found.runs.append(read_run(candidate))
            if is_eval_dir(candidate):
                found.evaluations.append(read_evaluation(candidate))
            if is_analysis_dir(candidate):
                found.analyses.append(read_analysis(candidate))
            if is_answers_dir(candidate):
                from mrg.viewer.vqa_view import answer_files, read_vqa

                found.answers += [read_vqa(path) for path in answer_files(candidate)]
    return found


def read_analysis(folder: Path) -> AnalysisFolder:
    """Read ``analysis.json`` and the PNG figures its sections list (a missing figure becomes a note).

    Raises:
        DataError: ``analysis.json`` is damaged or was not written by ``mrg analyze``.
    """
    path = folder / ANALYSIS_NAME
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != ANALYSIS_FORMAT or not isinstance(record.get("analyses"), dict):
        raise DataError(f"{path}: not an 'mrg analyze' record (no format {ANALYSIS_FORMAT!r} with analyses)")
    found = AnalysisFolder(folder, {k: v for k, v in record["analyses"].items() if isinstance(v, dict)})
    for section in found.analyses.values():
        for figure in section.get("figures") or []:
            name = Path(str(figure.get("file", ""))).name
            if (folder / name).is_file():
                found.figures[name] = (folder / name).read_bytes()
            else:
                found.notes.append(f"{folder / name}: figure missing; rerun 'mrg analyze' into {folder}")
    return found


# ----------------------------------------------------------------------------------------- run folders


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value


def read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """The long-format ``metrics.csv`` as name -> (step, value) pairs (a later row of a step wins).

    Raises:
        DataError: the header lacks ``step``, ``name`` or ``value``, or a row's step or value is not a number.
    """
    series: dict[str, dict[float, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if header and "name" not in header and "step" in header:
                return _read_wide_metrics(reader, path)
            missing = {"step", "name", "value"} - set(header)
            if missing:
                raise DataError(
                    f"{path}: header {','.join(header) or '(empty)'} lacks {', '.join(sorted(missing))}; "
                    "expected the 'step,name,value,time' columns that 'mrg train' writes"
                )
            for lineno, row in enumerate(reader, start=2):
                step, value = _float(row.get("step")), _float(row.get("value"))
                if step is None or value is None:
                    raise DataError(f"{path}:{lineno}: step {row.get('step')!r} or value {row.get('value')!r} is not a number")
                series.setdefault(row["name"], {})[step] = value
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    return {name: sorted(points.items()) for name, points in series.items()}


def _read_wide_metrics(reader: csv.DictReader, path: Path) -> dict[str, list[tuple[float, float]]]:
    """A wide CSV (``step`` plus one column per metric), as other trainers write it."""
    series: dict[str, dict[float, float]] = {}
    for lineno, row in enumerate(reader, start=2):
        step = _float(row.get("step"))
        if step is None:
            raise DataError(f"{path}:{lineno}: step {row.get('step')!r} is not a number")
        for name, text in row.items():
            value = _float(text)
            if name != "step" and name is not None and value is not None:
                series.setdefault(name, {})[step] = value
    return {name: sorted(points.items()) for name, points in series.items()}


def _pointer_step(run_dir: Path, name: str) -> int | None:
    # The pointer format of mrg.checkpoint (a relative symlink, or a one-line file naming the folder), read
    # here without importing it: that module loads torch, two seconds a report does not need.
    link = run_dir / name
    try:
        target = os.readlink(link) if link.is_symlink() else link.read_text(encoding="utf-8").strip() if link.is_file() else ""
    except OSError:
        return None
    match = _STEP_DIR.match(Path(target).name) if target else None
    return int(match.group(1)) if match else None


def read_run(run_dir: Path) -> RunInputs:
    """Read a ``mrg train`` folder: config, metric curves, validations, checkpoints and the best step."""
    import yaml

    run = RunInputs(root=Path(run_dir))
    config_path = run.root / "config.yaml"
    if config_path.is_file():
        run.config_text = config_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(run.config_text)
        except yaml.YAMLError as err:
            raise DataError(f"{config_path}: not valid YAML ({str(err).splitlines()[0]})") from None
        run.config = loaded if isinstance(loaded, dict) else {}
    if (run.root / "metrics.csv").is_file():
        run.curves = read_metrics_csv(run.root / "metrics.csv")
    else:
        run.notes.append("no metrics.csv: training curves are not shown")
    if (run.root / "val_metrics.jsonl").is_file():
        records = read_jsonl(run.root / "val_metrics.jsonl")
        for lineno, record in enumerate(records, start=1):
            if not isinstance(record.get("step"), int) or not isinstance(record.get("metrics", {}), dict):
                raise DataError(f"{run.root / 'val_metrics.jsonl'}: record {lineno} lacks an integer 'step' or has non-object 'metrics'")
        run.validations = sorted(records, key=lambda r: r["step"])
    for step_dir in sorted(p for p in run.root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)):
        meta_path = step_dir / "meta.json"
        if meta_path.is_file():
            meta = read_json(meta_path)
            if isinstance(meta, dict):
                run.checkpoints.append({**meta, "dir": step_dir.name})
    run.best_step = _pointer_step(run.root, "best")
    run.last_step = _pointer_step(run.root, "last")
    if run.best_step is None:  # pointer missing (copied folder): the latest meta, else the best score, says
        for meta in reversed(run.checkpoints):
            best = meta.get("best")
            if isinstance(best, dict) and isinstance(best.get("step"), int):
                run.best_step = best["step"]
                break
    if run.best_step is None:
        scored = [r for r in run.validations if isinstance(r.get("score"), (int, float))]
        if scored:
            run.best_step = max(scored, key=lambda r: r["score"])["step"]
    if run.last_step is None and run.checkpoints:
        run.last_step = _step_of(run.checkpoints[-1]["dir"])
    return run


def _step_of(name: str) -> int | None:
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def validation_predictions_path(run: RunInputs, step: int | None = None) -> Path | None:
    """The predictions file of the validation at ``step`` (default: the best step), when it was kept."""
    step = run.best_step if step is None else step
    for record in run.validations:
        if record.get("step") == step and isinstance(record.get("predictions"), str):
            path = run.root / record["predictions"]
            return path if path.is_file() else None
    return None


# ---------------------------------------------------------------------------------------- eval folders

_INTERVAL_BLOCKS = ("ci", "intervals", "confidence_intervals", "bootstrap")


def _interval_pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):
        low = value.get("low", value.get("ci_low", value.get("lower")))
        high = value.get("high", value.get("ci_high", value.get("upper")))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
    else:
        return None
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return float(low), float(high)
    return None


def read_evaluation(eval_dir: Path) -> EvalInputs:
    """Read a ``mrg evaluate`` folder: metrics, intervals, protocol and the per-sample rows.

    Raises:
        DataError: ``metrics.json`` or ``per_sample.csv`` is present but unreadable.
    """
    ev = EvalInputs(root=Path(eval_dir))
    metrics_path = ev.root / "metrics.json"
    if metrics_path.is_file():
        data = read_json(metrics_path)
        if not isinstance(data, dict):
            raise DataError(f"{metrics_path}: expected a JSON object of metrics, got {type(data).__name__}")
        for key, value in data.items():
            if isinstance(value, bool):
                ev.extra[key] = value
            elif isinstance(value, (int, float)):
                if math.isfinite(float(value)):
                    ev.metrics[key] = float(value)
            elif key == "protocol" and isinstance(value, dict):
                ev.protocol = value
            elif key in _INTERVAL_BLOCKS and isinstance(value, dict):
                _read_interval_block(ev, value)
                ev.extra[key] = value
            elif isinstance(value, dict) and "value" in value and isinstance(value["value"], (int, float)):
                ev.metrics[key] = float(value["value"])  # {"value": v, "ci": [low, high]}
                pair = _interval_pair(value.get("ci", value))
                if pair:
                    ev.intervals[key] = pair
            else:
                ev.extra[key] = value
        for key in list(ev.metrics):  # flat "<metric>_ci_low"/"_ci_high" pairs
            if key.endswith("_ci_low") and key[:-7] + "_ci_high" in ev.metrics:
                base = key[:-7]
                ev.intervals.setdefault(base, (ev.metrics.pop(key), ev.metrics.pop(base + "_ci_high")))
        if ev.confidence is None:
            boot = ev.protocol.get("bootstrap")
            level = boot.get("confidence") if isinstance(boot, dict) else ev.protocol.get("confidence")
            ev.confidence = float(level) if isinstance(level, (int, float)) else None
    else:
        ev.notes.append("no metrics.json: the metric tables are not shown")
    per_sample_path = ev.root / "per_sample.csv"
    if per_sample_path.is_file():
        ev.per_sample, ev.per_sample_columns = read_per_sample(per_sample_path)
    return ev


def _read_interval_block(ev: EvalInputs, block: dict[str, Any]) -> None:
    level = block.get("confidence", block.get("level"))
    if isinstance(level, (int, float)) and not isinstance(level, bool):
        ev.confidence = float(level)
    source = block.get("intervals") if isinstance(block.get("intervals"), dict) else block
    for key, value in source.items():
        pair = _interval_pair(value)
        if pair is not None:
            ev.intervals[key] = pair


def read_per_sample(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of ``per_sample.csv`` (strings) and its columns.

    Raises:
        DataError: not UTF-8, not CSV, or without an ``id`` column.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            if "id" not in columns:
                raise DataError(f"{path}: no 'id' column (columns: {', '.join(columns[:8]) or 'none'}); expected the file 'mrg evaluate' writes")
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    return rows, columns


# ------------------------------------------------------------------------------------ label columns

_PRED_PREFIXES = ("pred_", "prediction_", "gen_", "generated_", "hyp_", "pred/", "prediction/")
_REF_PREFIXES = ("ref_", "reference_", "gt_", "ref/", "reference/")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def label_columns(columns: list[str]) -> dict[str, tuple[str, str]] | None:
    """observation -> (prediction column, reference column) when ``columns`` hold both 14-label vectors."""
    by_slug = {_slug(c): c for c in columns}
    found: dict[str, tuple[str, str]] = {}
    for observation in OBSERVATIONS:
        pred = next((by_slug[_slug(p + observation)] for p in _PRED_PREFIXES if _slug(p + observation) in by_slug), None)
        ref = next((by_slug[_slug(p + observation)] for p in _REF_PREFIXES if _slug(p + observation) in by_slug), None)
        if pred is None or ref is None:
            return None
        found[observation] = (pred, ref)
    return found


def parse_label(text: str | None) -> float | None:
    """A CheXpert label cell: ``1.0``/``0.0``/``-1.0`` (or ``1``/``0``/``-1``); blank or NaN is None."""
    value = _float(text)
    if value is None or math.isnan(value):
        return None
    if value not in (1.0, 0.0, -1.0):
        return None
    return value
