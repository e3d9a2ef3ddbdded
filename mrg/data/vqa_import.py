"""Importers of local copies of the public chest X-ray VQA formats into ``mrg.data.vqa.Question`` records.

Each format is checked against its documented schema before anything is written; a missing field is a one-line
``DataError`` naming the file, the entry and the field.

* ``vqa-rad``: VQA-RAD's ``VQA_RAD Dataset Public.json`` (a list of {qid, image_name, question, answer,
  answer_type CLOSED/OPEN, question_type, phrase_type}); images under ``--images``; split: ``test`` for
  phrase_type ``test_freeform``/``test_para``, else ``train``.
* ``slake``: SLAKE's ``train.json`` / ``validate.json`` / ``test.json`` (lists of {qid, img_name, question,
  answer, answer_type, content_type, q_lang}); the split is the file's; English questions only; images under
  ``--images``.
* ``mimic-diff-vqa``: MIMIC-Diff-VQA's ``mimic_pair_questions.csv`` (study_id, subject_id, ref_id, question_type,
  question, answer, split); images from the prepared MIMIC-CXR dataset (``--from``) by study id. Difference
  questions compare two studies and are left out (counted).
* ``mimic-ext-vqa``: MIMIC-Ext-VQA's ``train.json`` / ``valid.json`` / ``test.json`` (lists of {study_id,
  semantic_type verify/choose/query, content_type, question, answer: [...]}); the split is the file's; images
  from ``--from`` by study id.

Questions about MIMIC-CXR studies must be about studies of the ``--from`` dataset and carry their study's split
(``mrg.data.vqa.check_splits``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mrg.data.prepared import Study
from mrg.data.vqa import Question
from mrg.errors import DataError

FORMATS: tuple[str, ...] = ("vqa-rad", "slake", "mimic-diff-vqa", "mimic-ext-vqa")
YES_NO = {"yes", "no"}
_FILE_SPLITS = {"train": "train", "validate": "val", "valid": "val", "val": "val", "test": "test"}


def _require(entry: Any, fields: Sequence[str], path: Path, where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is not an object; is this the right --format?")
    missing = [f for f in fields if f not in entry]
    if missing:
        raise DataError(f"{path}: {where} has no field '{missing[0]}' (the format needs {', '.join(fields)}); "
                        "is this the right --format?")


def _json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(data).__name__}; is this the right --format?")
    return data


def _split_files(path: Path, names: Sequence[str]) -> list[tuple[Path, str]]:
    """A split file, or a folder with the format's split files, as (file, split) pairs."""
    if path.is_dir():
        found = [(path / f"{n}.json", _FILE_SPLITS[n]) for n in names if (path / f"{n}.json").is_file()]
        if not found:
            raise DataError(f"{path}: holds none of {', '.join(n + '.json' for n in names)}")
        return found
    split = _FILE_SPLITS.get(path.stem.lower())
    if split is None:
        raise DataError(f"{path}: cannot tell the split from the file name; name it {', '.join(n + '.json' for n in names)} "
                        "or give the folder that holds them")
    return [(path, split)]


def _image_of(images: Path | None, name: str, path: Path) -> list[str]:
    if images is None:
        raise DataError(f"{path}: this format's images are files; give their folder with --images")
    return [name]


def import_vqa_rad(path: Path, images: Path | None) -> list[Question]:
    """VQA-RAD's public json."""
    out = []
    fields = ("qid", "image_name", "question", "answer", "answer_type", "question_type")
    for number, entry in enumerate(_json_list(path)):
        _require(entry, fields, path, f"entry {number}")
        phrase = str(entry.get("phrase_type", ""))
        qtype = str(entry["question_type"]).split(",")[0].strip().lower() or "other"
        out.append(Question(f"vqa-rad:{entry['qid']}", str(entry["image_name"]),
                            "test" if phrase.startswith("test") else "train",
                            _image_of(images, str(entry["image_name"]), path), str(entry["question"]),
                            str(entry["answer"]), qtype, str(entry["answer_type"]).upper() == "CLOSED", "vqa-rad"))
    return out


def import_slake(path: Path, images: Path | None) -> list[Question]:
    """SLAKE's split json files (English questions)."""
    out = []
    fields = ("qid", "img_name", "question", "answer", "answer_type", "content_type", "q_lang")
    for file, split in _split_files(path, ("train", "validate", "test")):
        for number, entry in enumerate(_json_list(file)):
            _require(entry, fields, file, f"entry {number}")
            if entry["q_lang"] != "en":
                continue
            out.append(Question(f"slake:{entry['qid']}", str(entry["img_name"]), split,
                                _image_of(images, str(entry["img_name"]), file), str(entry["question"]),
                                str(entry["answer"]), str(entry["content_type"]).lower(),
                                str(entry["answer_type"]).upper() == "CLOSED", "slake"))
    return out


def _study_index(studies: Sequence[Study] | None, path: Path) -> dict[str, Study]:
    """MIMIC-CXR study id (digits, no ``s``) -> the first prepared entry of that study."""
    if studies is None:
        raise DataError(f"{path}: questions about MIMIC-CXR studies need the prepared MIMIC-CXR dataset; give --from DATA")
    index: dict[str, Study] = {}
    for study in studies:
        key = str(study.extra.get("study_id", study.id)).lstrip("s")
        index.setdefault(key, study)
    return index


def _mimic_question(qid: str, entry: dict[str, Any], split: str, index: dict[str, Study], path: Path,
                    qtype: str, answer: str, closed: bool, source: str) -> Question:
    study_key = str(entry["study_id"]).lstrip("s")
    study = index.get(study_key)
    if study is None:
        raise DataError(f"{path}: question {qid} is about study {entry['study_id']}, which the --from dataset does not "
                        "have; questions are written only for the source's studies")
    return Question(qid, study.id, split, list(study.image_paths), str(entry["question"]), answer, qtype, closed, source)


def import_mimic_diff_vqa(path: Path, studies: Sequence[Study] | None) -> tuple[list[Question], int]:
    """MIMIC-Diff-VQA's csv; returns the questions and how many difference questions were left out."""
    index = _study_index(studies, path)
    fields = ("study_id", "question_type", "question", "answer", "split")
    out, skipped = [], 0
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [f for f in fields if f not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column '{missing[0]}' (the format needs {', '.join(fields)}); is this the right --format?")
        for lineno, row in enumerate(reader, start=2):
            qtype = row["question_type"].strip().lower()
            if qtype == "difference":
                skipped += 1
                continue
            split = {"valid": "val"}.get(row["split"].strip(), row["split"].strip())
            answer = row["answer"].strip()
            out.append(_mimic_question(f"mimic-diff-vqa:{lineno}", row, split, index, path, qtype, answer,
                                       answer.lower() in YES_NO, "mimic-diff-vqa"))
    return out, skipped


def import_mimic_ext_vqa(path: Path, studies: Sequence[Study] | None) -> list[Question]:
    """MIMIC-Ext-VQA's split json files."""
    index = _study_index(studies, path)
    fields = ("study_id", "semantic_type", "content_type", "question", "answer")
    out = []
    for file, split in _split_files(path, ("train", "valid", "test")):
        for number, entry in enumerate(_json_list(file)):
            _require(entry, fields, file, f"entry {number}")
            answer = entry["answer"]
            answer = ", ".join(str(a) for a in answer) if isinstance(answer, list) else str(answer)
            qid = f"mimic-ext-vqa:{entry.get('idx', f'{split}-{number}')}"
            out.append(_mimic_question(qid, entry, split, index, file, str(entry["content_type"]).lower(), answer,
                                       str(entry["semantic_type"]).lower() == "verify", "mimic-ext-vqa"))
    return out


def import_questions(fmt: str, path: Path, *, studies: Sequence[Study] | None,
                     images: Path | None) -> tuple[list[Question], dict[str, int]]:
    """The questions of a public-format file (or split folder) and what was left out, by reason.

    Raises:
        DataError: an unknown format, a missing file or field, a study the ``--from`` dataset lacks.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"--import {path}: not found")
    readers: dict[str, Callable[[], Any]] = {
        "vqa-rad": lambda: (import_vqa_rad(path, images), {}),
        "slake": lambda: (import_slake(path, images), {}),
        "mimic-diff-vqa": lambda: (lambda qs, n: (qs, {"difference": n}))(*import_mimic_diff_vqa(path, studies)),
        "mimic-ext-vqa": lambda: (import_mimic_ext_vqa(path, studies), {}),
    }
    if fmt not in readers:
        raise DataError(f"--format {fmt}: not a VQA format; use one of derived, {', '.join(FORMATS)}")
    return readers[fmt]()


def prepare_vqa(out_dir: str | Path, *, data: str | Path | None = None, fmt: str = "derived",
                import_path: str | Path | None = None, images: str | Path | None = None, seed: int = 0,
                uncertain: str = "skip", force: bool = False) -> dict[str, Any]:
    """``mrg prepare vqa``: derive questions from a prepared dataset (``fmt="derived"``) or import a public file.

    Idempotent: a second run with the same inputs finds the finished folder and returns its stamp (with
    ``skipped_run``); ``force`` writes it again.

    Raises:
        DataError: missing inputs, a schema error, questions about studies outside the source or its splits.
        OutputDirError: ``out_dir`` holds something else.
    """
    from mrg.data.prepared import load_prepared_dataset
    from mrg.data.vqa import check_splits, claim_vqa_dir, derive_questions, write_questions

    out_dir = Path(out_dir)
    prepared = load_prepared_dataset(data) if data is not None else None
    source: dict[str, Any] = {"kind": fmt, "data": str(Path(data).resolve()) if data else None, "seed": seed,
                              "uncertain": uncertain}
    if fmt != "derived":
        if import_path is None:
            raise DataError(f"--format {fmt}: give the file (or folder) to import with --import")
        source |= {"import": str(Path(import_path).resolve()), "images": str(Path(images).resolve()) if images else None}
    elif prepared is None:
        raise DataError("--from DATA is needed to derive questions (a folder written by 'mrg prepare')")
    if claim_vqa_dir(out_dir, source, force=force):
        from mrg.data.vqa import VQA_STAMP_NAME
        from mrg.files import read_json

        return read_json(out_dir / VQA_STAMP_NAME) | {"skipped_run": True}
    skipped: dict[str, int] = {}
    if fmt == "derived":
        questions = derive_questions(prepared.studies, seed=seed, uncertain=uncertain)  # type: ignore[union-attr]
    else:
        questions, skipped = import_questions(fmt, Path(import_path), studies=prepared.studies if prepared else None,  # type: ignore[arg-type]
                                              images=Path(images) if images else None)
    on_mimic = fmt in ("derived", "mimic-diff-vqa", "mimic-ext-vqa")
    check_splits(questions, prepared.studies if prepared is not None and on_mimic else None,
                 where=str(import_path or data))
    if not questions:
        raise DataError(f"{import_path or data}: no questions to write")
    root = prepared.root if on_mimic and prepared is not None else Path(images)  # type: ignore[arg-type]
    return write_questions(out_dir, questions, source=source, images_root=root, skipped=skipped)
