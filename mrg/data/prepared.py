"""The prepared-dataset format that every ``mrg prepare`` source writes and every later stage reads.

A prepared dataset is one folder::

    DIR/
      images/<id>/<k>.png    the study's images (k = 0, 1, ... in source order); absent with --skip-images
      annotation.json        R2Gen's format: {"train": [...], "val": [...], "test": [...]},
                             entries {"id", "report", "image_path": [paths relative to images/], "split"}
      studies.jsonl          one entry per line: id, split, report (raw selected section),
                             report_clean (normalised), image_paths (relative to DIR), sections,
                             labels (CheXpert-14, when the source has them), labels_source, extra
      prepare.json           written last: the completion stamp (source, protocol, counts, checksums, versions)
      .mrg-prepare.json      written first: which source/protocol this folder is being prepared from

``prepare.json`` exists only when everything else is complete, so a reader that finds it can trust the
folder, and an interrupted run never looks finished. The ``.mrg-prepare.json`` marker lets a re-run
resume (or refuse a folder that belongs to another source).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mrg.data.chexpert import OBSERVATIONS
from mrg.data.text import NORMALIZE_MODES, normalize_report
from mrg.errors import DataError, OutputDirError
from mrg.files import read_json, read_jsonl, sha256_file, write_json_atomic, write_jsonl_atomic
from mrg.provenance import provenance

SPLITS: tuple[str, ...] = ("train", "val", "test")
STAMP_NAME = "prepare.json"
MARKER_NAME = ".mrg-prepare.json"
FORMAT_VERSION = 1


@dataclass
class Study:
    """One entry of a prepared dataset (a study, or an image of a study under per-image protocols)."""

    id: str
    split: str
    report: str
    """The raw text of the selected section(s), exactly as in the source."""
    image_paths: list[str]
    """Image files relative to the dataset folder, e.g. ``images/<id>/0.png``."""
    sections: dict[str, str] = field(default_factory=dict)
    """Every section the source provides (findings, impression, indication, comparison, ...)."""
    labels: dict[str, float] | None = None
    """CheXpert-14 labels (observation -> 1.0 / 0.0 / -1.0; a missing observation is blank)."""
    labels_source: str | None = None
    """Where ``labels`` come from, e.g. ``synthetic-truth`` or ``mimic-cxr-2.0.0-chexpert``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific fields (MeSH terms, subject/study ids, view positions, ...)."""
    report_clean: str = ""
    """The normalised report; filled in by ``write_prepared_dataset``."""

    def annotation_entry(self) -> dict[str, Any]:
        """This study as an R2Gen ``annotation.json`` entry (image paths relative to ``images/``)."""
        rel = [p[len("images/") :] if p.startswith("images/") else p for p in self.image_paths]
        entry: dict[str, Any] = {"id": self.id}
        for key in ("study_id", "subject_id"):
            if key in self.extra:
                entry[key] = self.extra[key]
        entry.update({"report": self.report, "image_path": rel, "split": self.split})
        return entry


_STUDY_FIELDS = tuple(f.name for f in fields(Study))

# ------------------------------------------------------------------------------------ output folder state

DirState = Literal["fresh", "resume", "complete"]


def prepare_output_dir(out_dir: Path, source: dict[str, Any], *, force: bool) -> DirState:
    """Check and claim ``out_dir`` for a prepare run from ``source`` (a dict with at least ``kind``).

    Returns ``complete`` when a finished dataset from the same source and options is already there
    (the caller skips the work), ``resume`` when an unfinished run of the same source left files, and
    ``fresh`` otherwise. With ``force`` a finished stamp is removed and the work redone.

    Raises:
        OutputDirError: the folder holds files of another source, options or program.
    """
    out_dir = Path(out_dir)
    stamp, marker = out_dir / STAMP_NAME, out_dir / MARKER_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"--out {out_dir}: exists and is not a directory; choose another --out")
    existing = list(out_dir.iterdir()) if out_dir.is_dir() else []
    if existing == [marker] and not stamp.exists():
        # claimed by a run that failed (bad input, a kill) before it wrote anything: nothing to protect or resume
        marker.unlink()
        existing = []
    previous: dict[str, Any] | None = None
    if stamp.is_file():
        previous = read_json(stamp).get("source")
    elif marker.is_file():
        previous = read_json(marker).get("source")
    elif existing:
        raise OutputDirError(
            f"--out {out_dir}: directory is not empty and was not made by 'mrg prepare'; "
            "choose an empty or new folder"
        )
    if previous is not None and previous != source and not force:
        what = previous.get("kind", "another source")
        raise OutputDirError(
            f"--out {out_dir}: holds a dataset prepared from {what} with other options "
            f"({_describe_difference(previous, source)}); choose another --out, or pass --force to replace it"
        )
    if stamp.is_file() and not force:
        return "complete"
    if force and out_dir.is_dir():
        # an explicit redo: drop the stamp first so an interruption cannot leave it pointing at stale files
        stamp.unlink(missing_ok=True)
        if previous is not None and previous != source:
            for path in existing:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    state: DirState = "resume" if marker.is_file() or stamp.exists() else "fresh"
    if state == "resume":
        _remove_temporaries(out_dir)
    write_json_atomic(marker, {"source": source})
    return state


def _remove_temporaries(out_dir: Path) -> None:
    """Delete the ``.<name>.<random>.tmp`` files of atomic writes that a killed run (``kill -9``) left behind.

    Every file mrg writes into a dataset goes through such a temporary and a rename, so these are never part
    of a finished file; without the sweep they would stay in ``images/`` forever.
    """
    for dirpath, _dirnames, filenames in os.walk(out_dir):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(dirpath, name).unlink(missing_ok=True)


def _describe_difference(previous: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(set(previous) | set(current))
    diffs = [f"{k}: {previous.get(k)!r} here vs {current.get(k)!r} now" for k in keys if previous.get(k) != current.get(k)]
    return "; ".join(diffs[:3]) or "different settings"


# ------------------------------------------------------------------------------------------------ writing


def _check_study(study: Study, seen: set[str], out_dir: Path, check_images: bool) -> None:
    """Refuse an entry with an unknown split, an id in ``seen``, an empty report, unknown labels or missing images."""
    if study.split not in SPLITS:
        raise DataError(f"study {study.id}: split {study.split!r} is not one of {', '.join(SPLITS)}")
    if study.id in seen:
        raise DataError(f"study id {study.id} appears twice; ids must be unique within a dataset")
    if not study.report.strip():
        raise DataError(f"study {study.id}: the selected report section is empty")
    if study.labels:
        unknown = set(study.labels) - set(OBSERVATIONS)
        if unknown:
            raise DataError(f"study {study.id}: unknown CheXpert observations {sorted(unknown)}")
    if check_images:
        for rel in study.image_paths:
            if not (out_dir / rel).is_file():
                raise DataError(f"study {study.id}: image {out_dir / rel} is missing; re-run the prepare command")


def _prepare_record(
    out_dir: Path, rows: list[Study], *, source: dict[str, Any], protocol: dict[str, Any], normalize: str,
    images: dict[str, Any] | None, checksums: dict[str, str] | None,
) -> dict[str, Any]:
    """The prepare.json record: format, source, protocol, counts, images, labels and the written files' checksums."""
    counts = Counter(s.split for s in rows)
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "protocol": protocol,
        "normalize": normalize,
        "counts": {split: counts.get(split, 0) for split in SPLITS},
        "num_images": sum(len(s.image_paths) for s in rows),
        "images": images or {},
        "labels": sorted({s.labels_source for s in rows if s.labels_source}),
        "checksums": {
            "source": checksums or {},
            "annotation.json": sha256_file(out_dir / "annotation.json"),
            "studies.jsonl": sha256_file(out_dir / "studies.jsonl"),
        },
        "provenance": provenance(),
    }


def write_prepared_dataset(
    out_dir: Path,
    studies: Iterable[Study],
    *,
    source: dict[str, Any],
    protocol: dict[str, Any],
    normalize: str,
    images: dict[str, Any] | None = None,
    checksums: dict[str, str] | None = None,
    check_images: bool = True,
) -> dict[str, Any]:
    """Write annotation.json and studies.jsonl, then the prepare.json stamp (last).

    Args:
        out_dir: the dataset folder (already claimed with ``prepare_output_dir``).
        studies: the entries, in the order they should appear within each split.
        source: what the data came from (kind, urls or paths, archive names); must equal the claim.
        protocol: how entries were selected (name, section, split rule, counts that define it).
        normalize: the ``normalize_report`` mode used for ``report_clean``.
        images: how images were placed (e.g. {"placed": True, "resized_to": 512}).
        checksums: sha256 of the source files, recorded for provenance.
        check_images: verify that every listed image file exists.

    Returns:
        The prepare.json record.

    Raises:
        DataError: duplicate ids, unknown splits or labels, missing images, empty reports.
    """
    if normalize not in NORMALIZE_MODES:
        raise DataError(f"normalize mode {normalize!r} is not one of {', '.join(NORMALIZE_MODES)}")
    out_dir = Path(out_dir)
    rows = list(studies)
    seen: set[str] = set()
    for study in rows:
        _check_study(study, seen, out_dir, check_images)
        seen.add(study.id)
        study.report_clean = normalize_report(study.report, normalize)

    annotation = {split: [s.annotation_entry() for s in rows if s.split == split] for split in SPLITS}
    write_json_atomic(out_dir / "annotation.json", annotation, indent=None)
    # a shallow dict per study: dataclasses.asdict deep-copies, which is half the time of a 270k-entry run
    write_jsonl_atomic(out_dir / "studies.jsonl", ({f: getattr(s, f) for f in _STUDY_FIELDS} for s in rows))

    record = _prepare_record(out_dir, rows, source=source, protocol=protocol, normalize=normalize, images=images,
                             checksums=checksums)
    write_json_atomic(out_dir / STAMP_NAME, record)
    (out_dir / MARKER_NAME).unlink(missing_ok=True)
    return record


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class PreparedDataset:
    """A finished prepared dataset, loaded from its folder."""

    root: Path
    info: dict[str, Any]
    studies: list[Study]

    @property
    def normalize(self) -> str:
        """The ``normalize_report`` mode recorded when the dataset was prepared."""
        return str(self.info.get("normalize", "none"))

    def split(self, name: str) -> list[Study]:
        """The studies of one split, in file order."""
        if name not in SPLITS:
            raise DataError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        return [s for s in self.studies if s.split == name]

    def image_path(self, rel: str) -> Path:
        """Absolute path of an image listed in a study."""
        return self.root / rel


def load_prepared_dataset(root: str | os.PathLike[str]) -> PreparedDataset:
    """Load a folder written by ``mrg prepare``.

    Raises:
        DataError: the folder is missing, unfinished (no prepare.json) or malformed.
    """
    root = Path(root)
    stamp = root / STAMP_NAME
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; create it with 'mrg prepare synthetic --out {root}' or another source")
    if not stamp.is_file():
        hint = "an interrupted 'mrg prepare' left it unfinished; re-run it" if (root / MARKER_NAME).exists() else (
            "it was not written by 'mrg prepare'"
        )
        raise DataError(f"{root}: no {STAMP_NAME} ({hint})")
    info = read_json(stamp)
    rows = read_jsonl(root / "studies.jsonl")
    known = set(Study.__dataclass_fields__)
    studies = []
    for lineno, row in enumerate(rows, start=1):
        missing = {"id", "split", "report", "image_paths"} - set(row)
        if missing:
            raise DataError(f"{root / 'studies.jsonl'}:{lineno}: missing keys {sorted(missing)}")
        studies.append(Study(**{k: v for k, v in row.items() if k in known}))
    return PreparedDataset(root=root, info=info, studies=studies)

