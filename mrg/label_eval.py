"""``mrg evaluate`` on a label-probability CSV (``mrg perceive``'s output) instead of report texts.

The CSV is the CheXpert label layout with the study id in front: ``id`` then the 14 observations, each cell a
probability in [0, 1] or empty (the class is not predicted). The references are report texts (a prepared
dataset's split, or a references file) labelled by mrg's CheXpert labeler, as ``mrg evaluate`` labels
reference reports for clinical efficacy. Scores (``mrg.metrics.labels``): the clinical-efficacy family on the
labels thresholded at ``eval.label_threshold`` (recorded), and per-class AUROC (``auroc``, ``auroc/<class>``).
Writes ``metrics.json``, ``per_sample.csv`` and ``metrics.md`` like a text evaluation.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrg.config import EvalConfig
from mrg.data.chexpert import OBSERVATIONS
from mrg.errors import ConfigError, DataError
from mrg.files import atomic_write, write_json_atomic, write_text_atomic
from mrg.provenance import provenance

ID_COLUMN = "id"
KIND = "label-probabilities"
"""``metrics.json``'s ``protocol.name`` (and ``inputs.predictions_format``) for a label-probability CSV."""


def is_label_csv(path: str | Path) -> bool:
    """Whether ``path`` is a ``.csv`` whose header is ``id`` followed by the 14 CheXpert observations."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader([handle.readline()]), [])
    except (OSError, UnicodeDecodeError):
        return False  # read_text_file names the problem
    return bool(header) and header[0].strip() == ID_COLUMN and set(OBSERVATIONS) <= {h.strip() for h in header[1:]}


def _probability(cell: str, path: Path, line: int, name: str, option: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DataError(f"{option} {path}:{line}: column {name!r} holds {cell!r}, not a probability in [0, 1]")
    return value


def read_label_csv(path: str | Path, *, option: str = "--predictions") -> dict[str, dict[str, float]]:
    """``{id: {class: probability}}`` of a label-probability CSV, in file order; empty cells left out.
    ``option`` names the file in errors.

    Raises:
        DataError: a cell that is not a number in [0, 1], an empty or duplicate id, no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: file not found")
    if not is_label_csv(path):
        raise DataError(f"{option} {path}: not a label-probability CSV (a .csv whose header is 'id' and the 14 "
                        "CheXpert observations, as mrg perceive writes)")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    rows: dict[str, dict[str, float]] = {}
    for record in reader:
        line = reader.line_num
        item_id = (record.get(ID_COLUMN) or "").strip()
        if not item_id:
            raise DataError(f"{option} {path}:{line}: empty id")
        if item_id in rows:
            raise DataError(f"{option} {path}:{line}: id {item_id!r} appears twice; give one row per study")
        rows[item_id] = {name: _probability(cell, path, line, name, option) for name in OBSERVATIONS
                         if (cell := (record.get(name) or "").strip())}
    if not rows:
        raise DataError(f"{option} {path}: no rows under the header; give one row per study")
    return rows


@dataclass
class LabelEvalReport:
    """What ``run_label_evaluation`` computed and wrote (``record`` is ``metrics.json``)."""

    out_dir: Path
    record: dict[str, Any]


def _reference_texts(pred_ids: list[str], references: str | Path | None, data: str | Path | None,
                     split: str) -> tuple[list[str], dict[str, Any]]:
    """The reference report of every predicted id, and where they came from."""
    if references is not None:
        from mrg.evaluate import read_text_file

        ref_file = read_text_file(references, role="references")
        texts = {k: (v[0] if isinstance(v, list) else v) for k, v in ref_file.texts.items()}
        name, sources = f"--references {references}", {"references": str(references)}
    elif data is not None:
        from mrg.data.prepared import load_prepared_dataset

        texts = {s.id: s.report for s in load_prepared_dataset(data).split(split)}
        name = f"--data {data} --split {split}"
        sources = {"references": f"{data} ({split} split, raw 'report' of studies.jsonl)", "data": str(data),
                   "split": split}
    else:
        raise ConfigError("a label-probability CSV holds no references; give --data DIR (with --split) or "
                          "--references FILE")
    missing = [i for i in pred_ids if i not in texts]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} predicted id(s) have no reference in {name}: {shown}; score the split the "
                        "CSV was made from")
    return [texts[i] for i in pred_ids], sources


def run_label_evaluation(predictions: str | Path, out_dir: str | Path, cfg: EvalConfig, *,
                         references: str | Path | None = None, data: str | Path | None = None,
                         split: str = "test") -> LabelEvalReport:
    """Score a label-probability CSV and write metrics.json, per_sample.csv and metrics.md into ``out_dir``.

    Raises:
        DataError: a bad CSV, references missing for some ids; ConfigError: no references, ``eval.bootstrap``
            (report texts only, so far).
    """
    from mrg.metrics import clinical, labeler
    from mrg.metrics.labels import AUROC_PROTOCOL, per_class_auroc, threshold_labels

    started = time.perf_counter()
    problems = cfg.problems()
    if problems:
        raise ConfigError(problems[0])
    if cfg.bootstrap:
        raise ConfigError("--bootstrap: not available for a label-probability CSV yet; drop it")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory")
    rows = read_label_csv(predictions)
    ids = list(rows)
    ref_texts, sources = _reference_texts(ids, references, data, split)
    ref_labels = labeler.label_reports(ref_texts)
    probs = [rows[i] for i in ids]
    pred_labels = threshold_labels(probs, cfg.label_threshold)
    record: dict[str, Any] = dict(clinical.clinical_efficacy(pred_labels, ref_labels))
    record.update(per_class_auroc(probs, ref_labels))
    record["threshold"] = cfg.label_threshold
    record["protocol"] = {
        "name": KIND, "num_items": len(ids), "threshold": cfg.label_threshold,
        "thresholding": f"a class is positive where p >= {cfg.label_threshold} (eval.label_threshold), negative "
                        "below, blank where the cell is empty; then clinical efficacy as for labelled reports",
        "auroc": AUROC_PROTOCOL,
        "labeler": {"name": labeler.LABELER_NAME, "version": labeler.LABELER_VERSION,
                    "labelled_text": "the raw reference reports"},
        "classes": [c for c in OBSERVATIONS if all(c in p for p in probs)],
    }
    record["inputs"] = {"predictions": str(predictions), "predictions_format": KIND, **sources}
    record["timings"] = {"total_s": round(time.perf_counter() - started, 3)}
    record["provenance"] = provenance()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_per_sample(out_dir / "per_sample.csv", ids, probs, pred_labels, ref_labels)
    table = clinical.per_observation_table(pred_labels, ref_labels)
    write_text_atomic(out_dir / "metrics.md", _markdown(record, table))
    write_json_atomic(out_dir / "metrics.json", record)  # last: its presence means the folder is complete
    return LabelEvalReport(out_dir, record)


def _write_per_sample(path: Path, ids: list[str], probs: list[dict[str, float]], pred: list[dict[str, float]],
                      ref: list[dict[str, float]]) -> None:
    """One row per study: each class's probability, thresholded label and reference label (empty: blank)."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([ID_COLUMN, *(f"{c} {part}" for c in OBSERVATIONS for part in ("p", "pred", "ref"))])
        for i, p, y, r in zip(ids, probs, pred, ref, strict=True):
            cells: list[str] = [i]
            for c in OBSERVATIONS:
                ref_value = r.get(c)
                cells += ["" if c not in p else f"{p[c]:.6f}", "" if c not in y else f"{y[c]:g}",
                          "" if ref_value is None or ref_value != ref_value else f"{ref_value:g}"]
            writer.writerow(cells)


def _markdown(record: dict[str, Any], table: list[dict[str, Any]]) -> str:
    """metrics.md: the headline label metrics, then per class the AUROC and the thresholded P/R/F1."""
    def fmt(value: Any) -> str:
        return "–" if value is None or value != value else f"{value:.4f}"

    lines = [f"# Label evaluation ({record['protocol']['num_items']} studies, threshold {record['threshold']})", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {fmt(record.get(key))} |" for key in ("auroc", "ce_precision", "ce_recall", "ce_f1",
                                                               "ce_macro_f1")]
    lines += ["", "| observation | AUROC | support | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for row in table:
        name = row["observation"]
        lines.append(f"| {name} | {fmt(record.get(f'auroc/{name}'))} | {row['support']} | "
                     f"{fmt(row['precision'])} | {fmt(row['recall'])} | {fmt(row['f1'])} |")
    return "\n".join(lines) + "\n"
