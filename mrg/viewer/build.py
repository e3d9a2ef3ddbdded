"""``build_report``: from run and evaluation folders to one self-contained HTML file.

Where the per-study texts, images and the checkpoint come from, in order:

* texts and labels: the evaluation's ``per_sample.csv`` (the texts as scored, both label vectors); else the
  predictions JSONL, labelled here by ``mrg.metrics.labeler``.
* the predictions file: ``--predictions``; else ``inputs.predictions`` of ``metrics.json``; else
  ``predictions.jsonl`` in the evaluation folder. Its ``<file>.meta.json`` sidecar (written by
  ``mrg generate``) names the checkpoint, the step and the dataset or image files.
* images: the prepared dataset given with ``--data``; else the one the evaluation recorded (``inputs.data``,
  or the dataset named in ``inputs.references`` when ``mrg evaluate --data`` was used); else the one in
  the predictions' sidecar; else, for a run, its ``data.root``. Image files given to
  ``mrg generate --images`` are used directly. Without any of these the table has no image column.
* A training run without an evaluation shows the validation predictions of its best step
  (``val/step-NNNNNN.jsonl``), labelled here.

Recorded paths are tried as written (relative to where the command ran), then relative to the folder that
recorded them and its parent.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrg
from mrg.errors import DataError
from mrg.files import read_json, read_jsonl, write_text_atomic
from mrg.provenance import utc_now
from mrg.viewer.html import render_page
from mrg.viewer.inputs import EvalInputs, ReportInputs, RunInputs, discover, validation_predictions_path
from mrg.viewer.studies import StudyTable, attach_thumbnails, build_rows
from mrg.viewer.synthesis_view import SynthesisInputs, attach_synthesis_thumbnails, read_synthesis

DEFAULT_THUMBNAIL_SIZE = 96
DEFAULT_MAX_VIEWS = 2

# mrg evaluate --data DIR records the references as "DIR (test split, raw 'report' of studies.jsonl)".
_DATASET_REFERENCES = re.compile(r"^(?P<root>.+) \((?P<split>[A-Za-z0-9_-]+) split\b")
_TEXT_COLUMNS = ("prediction", "generated", "hypothesis", "pred")


@dataclass
class ReportResult:
    """What ``build_report`` wrote."""

    path: Path
    size_bytes: int
    runs: int
    evaluations: int
    studies: int
    thumbnails: int
    missing_images: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    """Parts left out and why (shown on the page too)."""
    analyses: int = 0
    """Folders written by ``mrg analyze``."""
    answers: int = 0
    """Scored ``mrg answer`` files (a VQA section each)."""
    synthesized: int = 0
    """Synthesized images shown (the Synthesized images section)."""


@dataclass
class _Sources:
    """What an evaluation (or a run's validation) points at."""

    predictions: list[dict[str, Any]] | None = None
    predictions_path: Path | None = None
    generation: dict[str, Any] | None = None
    """The ``.meta.json`` sidecar of the predictions (``mrg generate``)."""
    data: Path | None = None
    image_files: list[list[str]] | None = None


def _resolve(recorded: str, *bases: Path) -> Path | None:
    """A recorded path as written, else relative to each of ``bases`` (first that exists)."""
    path = Path(recorded)
    candidates = [path] + ([] if path.is_absolute() else [b / path for b in bases] + [b / path.name for b in bases])
    return next((c for c in candidates if c.exists()), None)


def _eval_sources(ev: EvalInputs, explicit_predictions: Path | None, notes: list[str]) -> _Sources:
    sources = _Sources()
    inputs = ev.extra.get("inputs") if isinstance(ev.extra.get("inputs"), dict) else {}
    bases = (ev.root, ev.root.parent)
    if explicit_predictions is not None:
        if not explicit_predictions.is_file():
            raise DataError(f"--predictions {explicit_predictions}: file not found")
        sources.predictions_path = explicit_predictions
    elif isinstance(inputs.get("predictions"), str):
        sources.predictions_path = _resolve(inputs["predictions"], *bases)
        if sources.predictions_path is None:
            notes.append(f"the evaluated predictions file {inputs['predictions']} is not here (pass --predictions FILE)")
    elif (ev.root / "predictions.jsonl").is_file():
        sources.predictions_path = ev.root / "predictions.jsonl"
    if sources.predictions_path is not None and sources.predictions_path.suffix == ".jsonl":
        sources.predictions = read_jsonl(sources.predictions_path)
        sidecar = sources.predictions_path.with_name(sources.predictions_path.name + ".meta.json")
        if sidecar.is_file():
            meta = read_json(sidecar)
            sources.generation = meta if isinstance(meta, dict) else None

    recorded_data = inputs.get("data") if isinstance(inputs.get("data"), str) else None
    if recorded_data is None and inputs.get("references_format") == "prepared-dataset":
        match = _DATASET_REFERENCES.match(str(inputs.get("references", "")))
        recorded_data = match.group("root") if match else None
    generation_input = (sources.generation or {}).get("input") or {}
    if recorded_data is None and isinstance(generation_input.get("data"), str):
        recorded_data = generation_input["data"]
        bases = (*bases, sources.predictions_path.parent) if sources.predictions_path else bases
    if recorded_data is not None:
        sources.data = _resolve(recorded_data, *bases)
        if sources.data is None:
            notes.append(f"the dataset folder {recorded_data} is not here; pass --data DIR to show the images")
    if isinstance(generation_input.get("images"), list):
        sources.image_files = generation_input["images"]
    return sources


def _load_dataset(data_dir: Path, notes: list[str], *, explicit: bool) -> Any:
    from mrg.data.prepared import load_prepared_dataset

    try:
        return load_prepared_dataset(data_dir)
    except DataError as err:
        if explicit:
            raise DataError(f"--data {data_dir}: {err}") from None
        notes.append(f"{err}; studies are shown without images")
        return None


def _make_table(
    title: str,
    per_sample: list[dict[str, str]],
    columns: list[str],
    sources: _Sources,
    dataset: Any,
    normalize: str | None,
    notes: list[str],
) -> StudyTable | None:
    if not sources.predictions and not any(c in columns for c in _TEXT_COLUMNS):
        notes.append(f"{title}: no report texts (per_sample.csv has none and no predictions file was found); "
                     "pass the evaluated predictions JSONL with --predictions to show the per-study table")
        return None
    studies = {s.id: s for s in dataset.studies} if dataset is not None else {}
    reports = {sid: s.report_clean or s.report for sid, s in studies.items()} or None
    rows, score_columns, labels_source = build_rows(per_sample, columns, sources.predictions, reports, normalize=normalize)
    table = StudyTable(title, rows, score_columns, labels_source)
    if dataset is not None:
        table.images_source = str(dataset.root)
        for row in rows:
            study = studies.get(row.id)
            row.image_paths = [dataset.image_path(p) for p in study.image_paths] if study is not None else []
    elif sources.image_files is not None and sources.predictions is not None and len(sources.image_files) == len(sources.predictions):
        # mrg generate --images: the sidecar lists each study's files in the order of the predictions
        table.images_source = "the image files given to 'mrg generate --images'"
        files = {str(p.get("id")): paths for p, paths in zip(sources.predictions, sources.image_files, strict=True)}
        for row in rows:
            row.image_paths = [Path(p) for p in files.get(row.id, [])]
    return table


class _Datasets:
    """Prepared datasets by folder, each loaded once: the one given with ``--data`` wins; none without images."""

    def __init__(self, explicit: Any, images: bool, notes: list[str]) -> None:
        self.explicit, self.images, self.notes = explicit, images, notes
        self.loaded: dict[Path, Any] = {}

    def __call__(self, path: Path | None) -> Any:
        if not self.images:
            return None
        if self.explicit is not None:
            return self.explicit
        if path is None:
            return None
        key = path.resolve()
        if key not in self.loaded:
            self.loaded[key] = _load_dataset(path, self.notes, explicit=False)
        return self.loaded[key]


def _check_options(out: Path, thumbnail_size: int, max_views: int) -> None:
    if not 16 <= thumbnail_size <= 512:
        raise DataError(f"--thumbnail-size {thumbnail_size}: choose between 16 and 512 pixels")
    if max_views < 1:
        raise DataError(f"--views {max_views}: show at least one view per study (or pass --no-images)")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; give the HTML file to write, e.g. {out / 'report.html'}")


def _evaluation_tables(found: ReportInputs, predictions: Path | None, datasets: _Datasets) -> list[tuple[StudyTable, int | None]]:
    """The per-study table of each evaluation (its notes go to the table, or to the evaluation without one)."""
    tables: list[tuple[StudyTable, int | None]] = []
    for index, ev in enumerate(found.evaluations):
        table_notes: list[str] = []
        sources = _eval_sources(ev, predictions, table_notes)
        ev.generation = sources.generation or {}
        if not datasets.images:
            sources.image_files = None
        normalize = ev.protocol.get("normalize_mode")
        title_i = "Studies" + (f" of {ev.root}" if len(found.evaluations) > 1 else "")
        table = _make_table(title_i, ev.per_sample, ev.per_sample_columns, sources, datasets(sources.data),
                            normalize if isinstance(normalize, str) else None, table_notes)
        if table is not None:
            if table.labels_source == "per_sample.csv" and ev.labeler:
                table.labels_source = f"{ev.labeler}, from per_sample.csv"
            table.notes.extend(table_notes)
            tables.append((table, index))
        else:
            ev.notes.extend(table_notes)
    return tables


def _attach_perceptions(tables: list[tuple[StudyTable, int | None]], path: Path, threshold: float,
                        notes: list[str]) -> None:
    """Each row's probabilities from the label-probability CSV ``path`` (rows without an entry keep none)."""
    from mrg.label_eval import read_label_csv

    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"--perceive-threshold {threshold}: must be within [0, 1]")
    found = read_label_csv(path, option="--perceptions")
    for table, _ in tables:
        matched = 0
        for row in table.rows:
            if row.id in found:
                row.perceived = found[row.id]
                matched += 1
        table.perception_source, table.perceive_threshold = str(path), threshold
        if matched < len(table.rows):
            notes.append(f"--perceptions {path}: {len(table.rows) - matched} of {len(table.rows)} studies have no "
                         "row in it (shown without perceived classes)")


def _attach_images(tables: list[tuple[StudyTable, int | None]], thumbnail_size: int, max_views: int) -> tuple[int, int]:
    """Thumbnails for every table with images; returns (thumbnails made, images missing)."""
    thumbnails = missing = 0
    for table, _ in tables:
        if table.images_source is None:
            continue
        table.thumbnail_size = thumbnail_size
        table.missing_images = attach_thumbnails(table.rows, thumbnail_size, max_views)
        table.missing_images += sum(1 for r in table.rows if not r.image_paths)
        thumbnails += sum(1 for r in table.rows for uri in r.thumbnails if uri is not None)
        missing += table.missing_images
    return thumbnails, missing


def _all_notes(found: ReportInputs, tables: list[tuple[StudyTable, int | None]]) -> list[str]:
    notes = [*(n for ev in found.evaluations for n in ev.notes), *(n for run in found.runs for n in run.notes),
             *(n for t, _ in tables for n in t.notes), *(n for a in found.analyses for n in a.notes)]
    return list(dict.fromkeys(notes))


def build_report(
    dirs: list[Path],
    out: Path,
    *,
    data: Path | None = None,
    predictions: Path | None = None,
    title: str | None = None,
    thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE,
    max_views: int = DEFAULT_MAX_VIEWS,
    images: bool = True,
    perceptions: Path | None = None,
    perceive_threshold: float = 0.5,
    synthesized: Path | None = None,
    reconstructed: Path | None = None,
) -> ReportResult:
    """Write one self-contained HTML report of training runs, evaluations and analyses to ``out`` (atomically).

    Args:
        dirs: folders written by ``mrg train``, ``mrg evaluate`` and/or ``mrg analyze`` (or a folder holding them).
        out: the HTML file to write.
        data: the prepared dataset with the studies' images (overrides what the folders recorded).
        predictions: the predictions JSONL that was evaluated (needs exactly one evaluation folder).
        title: the page title (default "mrg report").
        thumbnail_size: the longer side of each thumbnail in pixels (JPEG, base64 inside the page).
        max_views: thumbnails per study (IU X-ray studies have two views).
        images: False leaves the image column out (a smaller file).
        perceptions: a label-probability CSV (``mrg perceive``): each study's perceived classes (P >=
            ``perceive_threshold``) become a column of the per-study tables.
        synthesized: a ``mrg synthesize`` output folder: a Synthesized images section, each image beside its
            study's real image (from ``data``, else the first run's dataset).
        reconstructed: a folder of ``<study_id>.png`` reconstructions through the image tokenizer, shown between
            them (with ``synthesized``).

    Raises:
        DataError: a folder holds nothing mrg wrote, a file is damaged, or an option names a missing file.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_options(out, thumbnail_size, max_views)
    found: ReportInputs = discover([Path(d) for d in dirs])
    if predictions is not None and len(found.evaluations) != 1:
        raise DataError(f"--predictions {predictions}: needs exactly one evaluation folder, found {len(found.evaluations)}")
    notes: list[str] = []
    datasets = _Datasets(_load_dataset(data, notes, explicit=True) if data is not None else None, images, notes)
    tables = _evaluation_tables(found, predictions, datasets)
    if not found.evaluations:
        for run in found.runs:
            table = _validation_table(run, datasets(_run_data_root(run)), notes)
            if table is not None:
                tables.append((table, None))
    if perceptions is not None:
        _attach_perceptions(tables, Path(perceptions), perceive_threshold, notes)
    thumbnails, missing = _attach_images(tables, thumbnail_size, max_views)
    if images:
        from mrg.viewer.vqa_view import attach_vqa_thumbnails

        missing += sum(attach_vqa_thumbnails(vqa, thumbnail_size) for vqa in found.answers)
    synthesis = _synthesis(synthesized, reconstructed, datasets, found, thumbnail_size)
    if synthesis is not None:
        missing += attach_synthesis_thumbnails(synthesis, thumbnail_size)
        thumbnails += sum(1 for row in synthesis.rows for uri in row.thumbnails.values() if uri is not None)
    targets: list[Any] = list(found.evaluations) or list(found.runs) or list(found.analyses)
    if targets:
        targets[0].notes.extend(notes)
    page = render_page(title=title or "mrg report", runs=found.runs, evaluations=found.evaluations, tables=tables,
                       generated=utc_now(), version=mrg.__version__, sources=[str(d) for d in dirs],
                       analyses=found.analyses, answers=found.answers,
                       synthesis=[synthesis] if synthesis is not None else [], thumbnail_size=thumbnail_size)
    write_text_atomic(out, page)
    _make_readable(out)
    return ReportResult(path=out, size_bytes=os.path.getsize(out), runs=len(found.runs), evaluations=len(found.evaluations),
                        studies=sum(len(t.rows) for t, _ in tables), thumbnails=thumbnails, missing_images=missing,
                        seconds=time.perf_counter() - started, notes=_all_notes(found, tables), analyses=len(found.analyses),
                        answers=len(found.answers),
                        synthesized=len(synthesis.rows) if synthesis is not None else 0)


def _synthesis(synthesized: Path | None, reconstructed: Path | None, datasets: _Datasets, found: ReportInputs,
               thumbnail_size: int) -> SynthesisInputs | None:
    """The synthesized folder read, real images from ``--data`` or else the first run's dataset."""
    if synthesized is None:
        if reconstructed is not None:
            raise DataError(f"--reconstructed {reconstructed}: needs --synthesized (the 'mrg synthesize' folder)")
        return None
    run_root = _run_data_root(found.runs[0]) if found.runs else None
    dataset = datasets.explicit if datasets.explicit is not None else datasets(run_root)
    return read_synthesis(Path(synthesized), dataset, Path(reconstructed) if reconstructed is not None else None)


def _make_readable(path: Path) -> None:
    # the atomic write's temporary file is created 0600; a report is meant to be shared like any file the user makes
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _run_data_root(run: RunInputs) -> Path | None:
    data = run.config.get("data") if isinstance(run.config, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    if not isinstance(root, str) or not root:
        return None
    return _resolve(root, run.root, run.root.parent)


def _validation_table(run: RunInputs, dataset: Any, notes: list[str]) -> StudyTable | None:
    path = validation_predictions_path(run)
    if path is None:
        return None
    sources = _Sources(predictions=read_jsonl(path), predictions_path=path)
    table = _make_table(f"Validation predictions at the best step ({run.best_step})", [], [], sources, dataset, None, notes)
    if table is not None:
        table.notes.append(
            f"From {path.relative_to(run.root)}: the validation split, not the test split. Per-study scores come from "
            "'mrg evaluate', so this table shows labels only."
        )
    return table
