"""IU X-ray (Open-i "NLMCXR"): download or import, parse the XML reports, apply the R2Gen protocol.

The official release is two archives on Open-i: ``NLMCXR_reports.tgz`` (3,955 ``ecgen-radiology/<n>.xml``
reports) and ``NLMCXR_png.tgz`` (7,470 ``<image id>.png`` files). The R2Gen protocol that the field's IU X-ray
numbers use (R2Gen, R2GenGPT, PromptMRG, ...), reproduced exactly:

* a study is a report with a non-empty FINDINGS section and at least 2 images (2,955 of 3,955);
* its ``id`` is the first ``parentImage`` id without its last ``-NNNN`` part (``CXR1_1_IM-0001-3001`` ->
  ``CXR1_1_IM-0001``, ``CXR1032_IM-0026-1001-0001`` -> ``CXR1032_IM-0026-1001``);
* ``report`` is the FINDINGS text unchanged (cleaning happens in ``normalize_report(.., "r2gen-iu")``);
* its images are ``images/<id>/<k>.png`` in XML order (all of them, as PromptMRG lays them out), and
  ``annotation.json`` lists the first two, as R2Gen's file does;
* the train/val/test assignment (2,069 / 296 / 590) comes from ``data_manifests/iu_xray/r2gen_split.json``,
  derived from R2Gen's annotation (ids only).

Other protocols (IMPRESSION, FINDINGS + IMPRESSION, a seeded random split, a split file, another minimum
number of images) are options, and ``prepare.json`` labels them as not R2Gen's.
"""

from __future__ import annotations

import io
import os
import random
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrg.console import info, make_progress, warn
from mrg.data.archive import archive_kind, iter_archive_members
from mrg.data.download import download_file, redact_url, verify_file
from mrg.data.prepared import (
    MARKER_NAME,
    SPLITS,
    STAMP_NAME,
    Study,
    prepare_output_dir,
    write_prepared_dataset,
)
from mrg.data.sources import cache_root, manifest_path
from mrg.errors import ConfigError, DataError
from mrg.files import read_json, sha256_file

__all__ = [
    "BASE_URL",
    "IMAGES_ARCHIVE",
    "REPORTS_ARCHIVE",
    "SECTION_CHOICES",
    "SPLIT_CHOICES",
    "IUReport",
    "IUStudy",
    "IUXrayOptions",
    "IUXrayResult",
    "parse_ratios",
    "parse_report_xml",
    "prepare_iu_xray",
    "read_reports",
    "select_studies",
    "study_id_from_image",
]

BASE_URL = "https://openi.nlm.nih.gov/imgs/collections"
BASE_URL_ENV = "MRG_IU_XRAY_BASE_URL"
REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
IMAGES_ARCHIVE = "NLMCXR_png.tgz"
SECTIONS: tuple[str, ...] = ("comparison", "indication", "findings", "impression")
SECTION_CHOICES: tuple[str, ...] = ("findings", "impression", "findings+impression")
SPLIT_CHOICES: tuple[str, ...] = ("r2gen", "random", "file")
R2GEN_ANNOTATION_IMAGES = 2
"""R2Gen's annotation.json lists the first two images of every IU study."""

_NUMBER = re.compile(r"(\d+)")
_XML_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


# ------------------------------------------------------------------------------------------- XML reports


@dataclass
class IUReport:
    """One Open-i report as parsed from its XML file."""

    name: str
    """The file or archive member, e.g. ``ecgen-radiology/1.xml``."""
    uid: str
    """The ``uId`` (``CXR1``)."""
    number: int
    """The report number (the file's ``<n>``), for a stable order."""
    sections: dict[str, str]
    """comparison, indication, findings, impression; ``""`` for a self-closing (empty) section."""
    image_ids: list[str]
    """The ``parentImage`` ids in XML order (the PNG file names without ``.png``)."""
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)


def parse_report_xml(data: bytes, name: str) -> IUReport:
    """Parse one Open-i ``ecgen-radiology`` XML report.

    Args:
        data: the file's bytes.
        name: the file or member name, used in messages and as ``IUReport.name``.

    Raises:
        DataError: the XML is malformed, declares a DTD/entities, or is not an Open-i report.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # Open-i reports have none; refuse entity tricks
        raise DataError(f"{name}: XML with a DOCTYPE/ENTITY declaration is not an Open-i report; use the official archive")
    declared = _XML_ENCODING.match(data)
    if declared is None or declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:  # expat would only say "not well-formed (invalid token)"
            line = data.count(b"\n", 0, err.start) + 1
            column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
            raise DataError(
                f"{name}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}, column {column}), although an "
                "Open-i report is UTF-8; the file is damaged or was re-encoded: use the official archive's copy"
            ) from None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise DataError(f"{name}: malformed XML ({err}); the file is damaged: delete it (or its archive) and download again") from None
    if root.tag != "eCitation":
        raise DataError(f"{name}: root element is <{root.tag}>, not <eCitation>; not an Open-i IU X-ray report")
    uid_el = root.find("uId")
    stem = Path(name.rsplit(":", 1)[-1]).stem
    uid = (uid_el.get("id", "") if uid_el is not None else "") or f"CXR{stem}"
    match = _NUMBER.search(stem) or _NUMBER.search(uid)
    number = int(match.group(1)) if match else 0
    sections = dict.fromkeys(SECTIONS, "")
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().lower()
        if label in sections:
            sections[label] = "".join(element.itertext())  # a self-closing element gives ""
    image_ids = [el.get("id", "") for el in root.findall("parentImage")]
    if any(not image_id for image_id in image_ids):
        raise DataError(f"{name}: a <parentImage> element has no id; the file is damaged: download it again")
    mesh = root.find("MeSH")
    major = [("".join(el.itertext())).strip() for el in mesh.findall("major")] if mesh is not None else []
    automatic = [("".join(el.itertext())).strip() for el in mesh.findall("automatic")] if mesh is not None else []
    return IUReport(name=name, uid=uid, number=number, sections=sections, image_ids=image_ids,
                    mesh_major=major, mesh_automatic=automatic)


def _xml_folder(path: Path) -> Path | None:
    """The folder holding the XML reports inside ``path`` (itself or its ``ecgen-radiology``), if any."""
    for candidate in (path / "ecgen-radiology", path):
        if candidate.is_dir() and any(p.suffix.lower() == ".xml" for p in candidate.iterdir()):
            return candidate
    return None


def read_reports(path: Path) -> list[IUReport]:
    """Parse every XML report of an Open-i reports archive (.tgz) or folder, ordered by report number.

    Raises:
        DataError: no reports found, a malformed file (named), or a damaged archive.
    """
    path = Path(path)
    reports: list[IUReport] = []
    if path.is_file():
        for name, data in iter_archive_members(path, members=lambda n: n.lower().endswith(".xml")):
            reports.append(parse_report_xml(data, f"{path}:{name}"))
    else:
        folder = _xml_folder(path)
        if folder is None:
            raise DataError(f"{path}: no XML reports found; pass the NLMCXR_reports.tgz archive or its ecgen-radiology folder")
        for xml_path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml"):
            try:
                data = xml_path.read_bytes()
            except OSError as err:
                raise DataError(f"{xml_path}: cannot read ({err.strerror}); check the file's permissions") from None
            reports.append(parse_report_xml(data, str(xml_path)))
    if not reports:
        raise DataError(f"{path}: holds no XML reports; pass the official NLMCXR_reports.tgz or its ecgen-radiology folder")
    reports.sort(key=lambda r: (r.number, r.name))
    return reports


# -------------------------------------------------------------------------------------- protocol


def study_id_from_image(image_id: str) -> str:
    """R2Gen's study id: the first image id without its last ``-NNNN`` part."""
    return image_id.rsplit("-", 1)[0]


def report_text(report: IUReport, section: str) -> str:
    """The selected section's text, unchanged; ``findings+impression`` joins the non-empty ones with a space."""
    if section == "findings+impression":
        return " ".join(t.strip() for t in (report.sections["findings"], report.sections["impression"]) if t.strip())
    return report.sections[section]


class IUStudy(Study):
    """A ``Study`` whose ``annotation.json`` entry lists only the first two images, as R2Gen's file does."""

    def annotation_entry(self) -> dict[str, Any]:
        entry = super().annotation_entry()
        entry["image_path"] = entry["image_path"][:R2GEN_ANNOTATION_IMAGES]
        return entry


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``--ratios`` ("0.7,0.1,0.2"): three non-negative fractions for train,val,test that sum to 1.

    Raises:
        ConfigError: naming the option and the expected form.
    """
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6 or values[0] == 0:
        raise ConfigError(
            f"--ratios {text!r}: give three comma-separated fractions for train,val,test that sum to 1, e.g. 0.7,0.1,0.2"
        )
    return values  # type: ignore[return-value]


def _load_split_file(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
        raise DataError(f"{path}: a split file needs lists of study ids under \"train\", \"val\" and \"test\"")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for study_id in data[split]:
            if not isinstance(study_id, str):
                raise DataError(f"{path}: {split} holds a non-string id {study_id!r}")
            if study_id in seen:
                raise DataError(f"{path}: id {study_id} is listed under both {seen[study_id]} and {split}")
            seen[study_id] = split
    return {split: list(data[split]) for split in SPLITS}


@dataclass
class Selection:
    """The outcome of applying a protocol to the parsed reports."""

    studies: list[IUStudy]
    excluded: dict[str, int]
    """Why reports were left out: ``empty_section``, ``fewer_images``, ``not_in_split``."""
    missing_from_source: list[str]
    """Ids that the split file lists but the source does not provide as eligible studies."""


def _eligible_reports(
    reports: list[IUReport], section: str, min_images: int, excluded: dict[str, int]
) -> list[tuple[IUReport, str]]:
    """The reports with a non-empty ``section`` and at least ``min_images`` images; counts the others in ``excluded``."""
    eligible: list[tuple[IUReport, str]] = []
    for report in reports:
        text = report_text(report, section)
        if not text.strip():
            excluded["empty_section"] += 1
        elif len(report.image_ids) < min_images:
            excluded["fewer_images"] += 1
        else:
            eligible.append((report, text))
    return eligible


def _iu_study(report: IUReport, text: str, split_name: str) -> IUStudy:
    """The prepared entry of one report, its images numbered 0, 1, ... under ``images/<study id>/``."""
    study_id = study_id_from_image(report.image_ids[0])
    return IUStudy(
        id=study_id,
        split=split_name,
        report=text,
        image_paths=[f"images/{study_id}/{k}.png" for k in range(len(report.image_ids))],
        sections=dict(report.sections),
        extra={
            "uid": report.uid,
            "xml": Path(report.name.rsplit(":", 1)[-1]).name,
            "image_ids": list(report.image_ids),
            "mesh_major": list(report.mesh_major),
            "mesh_automatic": list(report.mesh_automatic),
        },
    )


def _split_by_ids(
    eligible: list[tuple[IUReport, str]], split_ids: dict[str, list[str]], excluded: dict[str, int]
) -> tuple[list[IUStudy], list[str]]:
    """The studies in the order of ``split_ids``, and the listed ids no eligible report gives (missing)."""
    position = {sid: (SPLITS.index(s), i) for s in SPLITS for i, sid in enumerate(split_ids[s])}
    by_id = {}
    for report, text in eligible:
        study_id = study_id_from_image(report.image_ids[0])
        if study_id in position:
            by_id[study_id] = (report, text)
        else:
            excluded["not_in_split"] += 1
    studies: list[IUStudy] = []
    missing: list[str] = []
    for split_name in SPLITS:
        for study_id in split_ids[split_name]:
            if study_id in by_id:
                studies.append(_iu_study(*by_id[study_id], split_name))
            else:
                missing.append(study_id)
    return studies, missing


def _split_randomly(
    eligible: list[tuple[IUReport, str]], seed: int, ratios: tuple[float, float, float]
) -> list[IUStudy]:
    """A seeded shuffle assigned to train/val/test by ``ratios``; within a split, report order."""
    order = list(range(len(eligible)))
    random.Random(seed).shuffle(order)
    n_train = round(len(order) * ratios[0])
    n_val = round(len(order) * ratios[1])
    assigned = {}
    for rank, index in enumerate(order):
        assigned[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    studies: list[IUStudy] = []
    for split_name in SPLITS:  # within a split, report order
        studies += [_iu_study(*eligible[i], split_name) for i in range(len(eligible)) if assigned[i] == split_name]
    return studies


def select_studies(
    reports: list[IUReport],
    *,
    section: str = "findings",
    min_images: int = 2,
    split: str = "r2gen",
    split_ids: dict[str, list[str]] | None = None,
    seed: int = 42,
    ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Selection:
    """Choose the studies and their splits.

    Reports whose selected section is empty (after stripping) or that have fewer than ``min_images`` images
    are skipped and counted (R2Gen drops them the same way); an empty report is never written.

    Args:
        reports: parsed reports.
        section: ``findings`` (R2Gen), ``impression`` or ``findings+impression``.
        min_images: the minimum number of images (R2Gen: 2).
        split: ``r2gen`` / ``file`` (assignment from ``split_ids``, in its order) or ``random``.
        split_ids: ids per split for ``r2gen``/``file``.
        seed: the seed of the ``random`` split.
        ratios: train/val/test fractions of the ``random`` split.
    """
    if section not in SECTION_CHOICES:
        raise ConfigError(f"--section {section!r}: choose one of {', '.join(SECTION_CHOICES)}")
    excluded = {"empty_section": 0, "fewer_images": 0, "not_in_split": 0}
    eligible = _eligible_reports(reports, section, min_images, excluded)
    missing: list[str] = []
    if split in ("r2gen", "file"):
        if split_ids is None:
            raise ConfigError(f"--split {split}: no split ids given")
        studies, missing = _split_by_ids(eligible, split_ids, excluded)
    elif split == "random":
        studies = _split_randomly(eligible, seed, ratios)
    else:
        raise ConfigError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    ids = [s.id for s in studies]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"two reports give the same study id {dup}; the source holds duplicate reports")
    return Selection(studies=studies, excluded=excluded, missing_from_source=missing)


# ------------------------------------------------------------------------------------------ images


def _verify_png_bytes(data: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except UnidentifiedImageError:
        return "unrecognised content"  # Pillow's own message names an in-memory buffer
    except (OSError, SyntaxError, ValueError) as err:
        return str(err) or type(err).__name__
    return None


def _write_atomic_bytes(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a dataset is meant to be readable like any other file
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place_image(source: bytes | str, dests: list[str], size: int | None, label: str) -> str | None:
    """Write one source image to each of ``dests`` (as is, or resized so its shorter side is ``size``).

    Runs in worker processes, so it returns an error message instead of raising; files are written
    atomically (a half-written image never exists under its final name).
    """
    from mrg.data.images import UNREADABLE_FIX, load_image, resize_keep_aspect

    if size is None:
        try:
            data = Path(source).read_bytes() if isinstance(source, str) else source
        except OSError as err:
            return f"{label}: cannot read ({err.strerror}); check the file's permissions"
        problem = _verify_png_bytes(data)
        if problem:
            return f"{label}: not a readable PNG image ({problem})"
        for dest in dests:
            _write_atomic_bytes(Path(dest), data)
        return None
    first = Path(dests[0])
    first.parent.mkdir(parents=True, exist_ok=True)
    tmp_src: str | None = None
    try:
        if isinstance(source, str):
            image_file = source
        else:  # archive bytes: load_image reads files, so the member goes to a temporary file first
            fd, tmp_src = tempfile.mkstemp(prefix=f".{first.stem}.", suffix=".src.tmp", dir=first.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(source)
            image_file = tmp_src
        try:
            img = resize_keep_aspect(load_image(image_file), size)
        except DataError as err:
            reason = str(err).split(": ", 1)[-1].removesuffix(UNREADABLE_FIX)  # the caller adds the right fix
            return f"{label}: {reason}"
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        for dest in dests:
            _write_atomic_bytes(Path(dest), buffer.getvalue())
    finally:
        if tmp_src is not None:
            Path(tmp_src).unlink(missing_ok=True)
    return None


def _png_folder_index(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            if filename.lower().endswith(".png"):
                index.setdefault(filename[:-4], Path(dirpath) / filename)
    return index


def _image_jobs(out_dir: Path, studies: list[IUStudy], redo: bool) -> dict[str, list[str]]:
    """image id -> destination files still to write (all of them when ``redo``)."""
    jobs: dict[str, list[str]] = {}
    for study in studies:
        for image_id, rel in zip(study.extra["image_ids"], study.image_paths, strict=True):
            dest = out_dir / rel
            if redo or not dest.is_file():
                jobs.setdefault(image_id, []).append(str(dest))
    return jobs


def _image_sources(kind: str, path: Path, wanted: set[str]) -> Iterator[tuple[str, bytes | str, str]]:
    """``(image id, bytes or file path, label)`` for the wanted images found in an archive or folder."""
    if kind == "archive":
        def keep(name: str) -> bool:
            base = name.rsplit("/", 1)[-1]
            return base.lower().endswith(".png") and base[:-4] in wanted

        for name, data in iter_archive_members(path, members=keep):
            yield name.rsplit("/", 1)[-1][:-4], data, f"{path}:{name}"
    else:
        index = _png_folder_index(path)
        for image_id in sorted(wanted):
            if image_id in index:
                yield image_id, str(index[image_id]), str(index[image_id])


def place_images(
    out_dir: Path,
    studies: list[IUStudy],
    *,
    kind: str,
    path: Path,
    size: int | None,
    workers: int,
    redo: bool,
) -> int:
    """Write every study's images to ``images/<id>/<k>.png``; returns how many files were written.

    Images already in place from an interrupted run are kept unless ``redo``. With ``size`` the images
    are resized in ``workers`` processes (the slow part); without it they are checked and copied.

    Raises:
        DataError: an image is missing from the source or unreadable (named), or the archive is damaged.
    """
    jobs = _image_jobs(out_dir, studies, redo)
    if not jobs:
        return 0
    remaining = set(jobs)
    written = _place_from_source(jobs, remaining, kind=kind, path=path, size=size, workers=workers)
    if remaining:
        raise _missing_images_error(sorted(remaining), studies, path)
    return written


def _place_from_source(
    jobs: dict[str, list[str]], remaining: set[str], *, kind: str, path: Path, size: int | None, workers: int
) -> int:
    """Place the images of ``jobs`` found in the source (removing them from ``remaining``); the files written.

    With ``size`` and more than one worker, resizing runs in a bounded queue of spawned processes.
    """
    written = 0
    pool = None
    if size is not None and workers > 1:
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: set[Future[str | None]] = set()

    def collect(futures: set[Future[str | None]]) -> None:
        for future in futures:
            problem = future.result()
            if problem:
                raise DataError(_image_fix(problem, kind))

    action = f"resizing images to {size}px" if size else "placing images"
    try:
        with make_progress() as progress:
            task = progress.add_task(action, total=len(jobs))
            for image_id, source, label in _image_sources(kind, path, remaining):
                if image_id not in remaining:
                    continue  # the same file name twice in the source: the first one wins
                remaining.discard(image_id)
                if pool is None:
                    problem = place_image(source, jobs[image_id], size, label)
                    if problem:
                        raise DataError(_image_fix(problem, kind))
                    progress.advance(task)
                else:
                    pending.add(pool.submit(place_image, source, jobs[image_id], size, label))
                    if len(pending) >= 4 * workers:  # bounded: archive bytes wait in memory
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        collect(done)
                        progress.advance(task, len(done))
                written += len(jobs[image_id])
            done, pending = wait(pending)
            collect(done)
            progress.advance(task, len(done))
    finally:
        if pool is not None:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
    return written


def _missing_images_error(missing: list[str], studies: list[IUStudy], path: Path) -> DataError:
    owner = next(s for s in studies if missing[0] in s.extra["image_ids"])
    return DataError(
        f"{path}: image {missing[0]}.png (study {owner.id}, report {owner.extra['xml']}) is missing"
        + (f", and {len(missing) - 1} more" if len(missing) > 1 else "")
        + "; the image source is incomplete: pass the full NLMCXR_png.tgz (or download it again), or use --skip-images"
    )


def _image_fix(problem: str, kind: str) -> str:
    if kind == "archive":
        return f"{problem}; the image archive is damaged: delete it and download again"
    return f"{problem}; replace the file with a good copy from NLMCXR_png.tgz"


# ------------------------------------------------------------------------------------------ sources


@dataclass
class _Inputs:
    reports: Path
    images: Path | None = None
    images_kind: str | None = None  # "archive" | "folder"
    checksums: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)


def _first_member_suffix(archive: Path) -> str | None:
    """The suffix of the archive's first file (``""`` for none), or None when the archive holds no file."""
    for name, _data in iter_archive_members(archive):
        return Path(name).suffix.lower()
    return None


def _has_png(folder: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(folder):
        if any(f.lower().endswith(".png") for f in filenames):
            return True
    return False


def _classify_sources(paths: list[Path]) -> tuple[tuple[str, Path] | None, tuple[str, Path] | None]:
    """Find the reports source and the images source among ``--source`` paths: (kind, path) pairs."""
    reports: list[tuple[str, Path]] = []
    images: list[tuple[str, Path]] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"--source {path}: not found; give NLMCXR_reports.tgz / NLMCXR_png.tgz or their extracted folders")
        if path.is_file():
            archive_kind(path)
            suffix = _first_member_suffix(path)
            if suffix is None:
                raise DataError(f"--source {path}: the archive holds no files; pass the complete NLMCXR_reports.tgz "
                                "or NLMCXR_png.tgz (download it again if it came out empty)")
            if suffix == ".xml":
                reports.append(("archive", path))
            elif suffix == ".png":
                images.append(("archive", path))
            else:
                raise DataError(f"--source {path}: this archive holds neither Open-i XML reports nor PNG images")
            continue
        found = False
        if (path / REPORTS_ARCHIVE).is_file():
            reports.append(("archive", path / REPORTS_ARCHIVE))
            found = True
        elif _xml_folder(path) is not None:
            reports.append(("folder", path))
            found = True
        if (path / IMAGES_ARCHIVE).is_file():
            images.append(("archive", path / IMAGES_ARCHIVE))
            found = True
        elif _has_png(path):
            images.append(("folder", path))
            found = True
        if not found:
            raise DataError(f"--source {path}: holds no Open-i reports (XML) or images (PNG), nor the two archives")
    for what, found_list in (("report", reports), ("image", images)):
        if len(found_list) > 1:
            names = ", ".join(str(p) for _, p in found_list)
            raise DataError(f"--source: more than one {what} source given ({names}); pass only one")
    return (reports[0] if reports else None), (images[0] if images else None)


def _archive_record(name: str) -> dict[str, Any]:
    record = read_json(manifest_path("iu_xray", "archives.json"))
    return dict(record["archives"][name])


@dataclass(frozen=True)
class IUXrayOptions:
    """Everything ``mrg prepare iu-xray`` can be told."""

    out: Path
    sources: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    base_url: str | None = None
    skip_images: bool = False
    section: str = "findings"
    split: str = "r2gen"
    split_file: Path | None = None
    seed: int = 42
    ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    min_images: int = 2
    image_size: int | None = None
    workers: int | None = None
    images_sha256: str | None = None
    force: bool = False
    retries: int = 5


@dataclass
class IUXrayResult:
    """What ``prepare_iu_xray`` did: the prepare.json record, whether it was already done, notes to print."""

    record: dict[str, Any]
    skipped: bool
    notes: list[str] = field(default_factory=list)


def _is_r2gen(opts: IUXrayOptions) -> bool:
    return opts.section == "findings" and opts.split == "r2gen" and opts.min_images == 2


def _protocol_label(opts: IUXrayOptions) -> str:
    if _is_r2gen(opts):
        return "R2Gen IU X-ray protocol (findings, >= 2 images, R2Gen's split)"
    split = {
        "r2gen": "R2Gen's split",
        "random": f"random split {'/'.join(f'{r:g}' for r in opts.ratios)} seed {opts.seed}",
        "file": f"split from {opts.split_file}",
    }[opts.split]
    return f"custom, not R2Gen's: {opts.section}, >= {opts.min_images} images, {split}"


def _validate(opts: IUXrayOptions) -> None:
    if opts.section not in SECTION_CHOICES:
        raise ConfigError(f"--section {opts.section!r}: choose one of {', '.join(SECTION_CHOICES)}")
    if opts.split not in SPLIT_CHOICES:
        raise ConfigError(f"--split {opts.split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    if opts.split == "file" and opts.split_file is None:
        raise ConfigError("--split file needs --split-file FILE (JSON with id lists under train, val and test)")
    if opts.split_file is not None and opts.split != "file":
        raise ConfigError("--split-file is used only with --split file; add --split file or drop --split-file")
    if opts.min_images < 1:
        raise ConfigError(f"--min-images {opts.min_images}: must be at least 1")
    if opts.image_size is not None and opts.image_size < 8:
        raise ConfigError(f"--image-size {opts.image_size}: must be at least 8 (pixels of the shorter side)")
    if opts.workers is not None and opts.workers < 1:
        raise ConfigError(f"--workers {opts.workers}: must be at least 1")
    if opts.images_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", opts.images_sha256):
        raise ConfigError(f"--images-sha256 {opts.images_sha256!r}: expected 64 hexadecimal digits (a SHA-256)")
    if opts.skip_images and opts.image_size is not None:
        raise ConfigError("--image-size has no effect with --skip-images; drop one of them")


def _source_record(opts: IUXrayOptions, split_file_sha: str | None) -> dict[str, Any]:
    """What identifies this dataset: a re-run with the same record resumes or skips, another one is refused."""
    source: dict[str, Any] = {"kind": "iu-xray"}
    if opts.sources:
        source["origin"] = "local"
        source["paths"] = [str(Path(p).expanduser().resolve()) for p in opts.sources]
    else:
        source["origin"] = "open-i download"
    source.update(section=opts.section, min_images=opts.min_images, split=opts.split)
    if opts.split == "random":
        source.update(seed=opts.seed, ratios=list(opts.ratios))
    if opts.split == "file":
        source["split_file_sha256"] = split_file_sha
    source.update(skip_images=opts.skip_images, image_size=opts.image_size)
    return source


def _acquire(opts: IUXrayOptions) -> _Inputs:
    """The reports source and (unless --skip-images) the images source: local paths, or verified downloads."""
    official = _archive_record(REPORTS_ARCHIVE)
    png_record = _archive_record(IMAGES_ARCHIVE)
    png_sha = opts.images_sha256 or png_record.get("sha256")
    if opts.sources:
        reports, images = _classify_sources(list(opts.sources))
        if reports is None:
            raise DataError("--source: no reports given; add --source PATH for NLMCXR_reports.tgz or its ecgen-radiology folder")
        if images is None and not opts.skip_images:
            raise DataError(
                "--source: no images given; add --source PATH for NLMCXR_png.tgz or a folder of its PNGs, or pass --skip-images"
            )
        inputs = _Inputs(reports=reports[1])
        if reports[0] == "archive":
            digest = sha256_file(reports[1])
            inputs.checksums[reports[1].name] = digest
            if digest != official["sha256"]:
                warn(f"{reports[1]}: differs from the official {REPORTS_ARCHIVE} (sha256 {digest}); "
                     "counts and texts may not match R2Gen's")
        if images is not None and not opts.skip_images:
            inputs.images_kind, inputs.images = images
            if images[0] == "archive":
                if png_sha:
                    verify_file(images[1], sha256=png_sha)
                inputs.checksums[images[1].name] = png_sha or sha256_file(images[1])
        return inputs

    cache = Path(opts.cache_dir).expanduser() if opts.cache_dir else cache_root() / "iu_xray"
    base = (opts.base_url or os.environ.get(BASE_URL_ENV) or BASE_URL).rstrip("/")
    reports_path = download_file(
        f"{base}/{REPORTS_ARCHIVE}", cache / REPORTS_ARCHIVE, expected_size=official["size"],
        sha256=official["sha256"], md5=official["md5"], retries=opts.retries, description=REPORTS_ARCHIVE,
    )
    inputs = _Inputs(reports=reports_path, checksums={REPORTS_ARCHIVE: official["sha256"]},
                     urls={REPORTS_ARCHIVE: f"{base}/{REPORTS_ARCHIVE}"})
    if not opts.skip_images:
        png_path = download_file(
            f"{base}/{IMAGES_ARCHIVE}", cache / IMAGES_ARCHIVE, expected_size=png_record.get("size"),
            sha256=png_sha, md5=png_record.get("md5"), retries=opts.retries, description=IMAGES_ARCHIVE,
        )
        inputs.images, inputs.images_kind = png_path, "archive"
        inputs.urls[IMAGES_ARCHIVE] = f"{base}/{IMAGES_ARCHIVE}"
        digest = png_sha or sha256_file(png_path)
        inputs.checksums[IMAGES_ARCHIVE] = digest
        if not png_sha:
            inputs.notes.append(
                f"{IMAGES_ARCHIVE} has no published checksum; this copy's sha256 is {digest} "
                "(pin it with --images-sha256, see docs/prepare-iu-xray.md)"
            )
    return inputs


def _claim(opts: IUXrayOptions, source: dict[str, Any]) -> str:
    """Claim the output folder; a finished --skip-images dataset of the same protocol is upgraded in place."""
    out = Path(opts.out)
    stamp = out / STAMP_NAME
    force = opts.force
    if not opts.skip_images and not force and (stamp.is_file() or (out / MARKER_NAME).is_file()):
        previous = read_json(stamp if stamp.is_file() else out / MARKER_NAME).get("source") or {}
        if previous.get("skip_images") and {**previous, "skip_images": False} == source:
            info(f"{out}: was prepared with --skip-images; adding the images now")
            force = True
    return prepare_output_dir(out, source, force=force)


def _split_manifest(opts: IUXrayOptions) -> Path | None:
    """The split file of ``--split r2gen`` (shipped) or ``--split file``; None for ``--split random``."""
    if opts.split == "r2gen":
        return manifest_path("iu_xray", "r2gen_split.json")
    if opts.split == "file":
        return Path(opts.split_file).expanduser()  # type: ignore[arg-type]
    return None


def _selection_notes(opts: IUXrayOptions, inputs: _Inputs, selection: Selection, with_split_file: bool) -> list[str]:
    """The run's notes; refuses a selection without studies and warns about split-file studies not in the source."""
    notes = list(inputs.notes)
    if not selection.studies:
        raise DataError(
            f"{inputs.reports}: no report has a non-empty {opts.section} section, >= {opts.min_images} images"
            + (" and an id in the split file" if with_split_file else "")
            + "; check --source, --section and --min-images"
        )
    if selection.missing_from_source:
        notes.append(
            f"{len(selection.missing_from_source):,} studies of the split file are not in this source "
            f"(e.g. {selection.missing_from_source[0]}); the dataset is a subset"
        )
        warn(notes[-1])
    return notes


def _place_or_list_images(opts: IUXrayOptions, inputs: _Inputs, selection: Selection, out: Path) -> dict[str, Any]:
    """Place the selected studies' images (unless ``--skip-images``); the images record of prepare.json."""
    workers = opts.workers or min(8, os.cpu_count() or 1)
    images: dict[str, Any] = {
        "placed": not opts.skip_images,
        "layout": "images/<id>/<k>.png, all images of the report in XML order; annotation.json lists the first two",
        "resized_to": opts.image_size,
    }
    if opts.skip_images:
        images["note"] = "--skip-images: image paths are listed but the files were not placed"
    else:
        assert inputs.images is not None and inputs.images_kind is not None
        written = place_images(out, selection.studies, kind=inputs.images_kind, path=inputs.images,
                               size=opts.image_size, workers=workers, redo=opts.force)
        images.update(written=written, workers=workers if opts.image_size else 1,
                      resize="shorter side, aspect kept, bicubic (mrg.data.images.resize_keep_aspect)"
                      if opts.image_size else None)
    return images


def _protocol_record(
    opts: IUXrayOptions, inputs: _Inputs, selection: Selection, manifest: Path | None, split_file_sha: str | None,
    *, num_reports: int,
) -> dict[str, Any]:
    """The protocol record of prepare.json: section, image and split rules, split file, what was excluded."""
    protocol: dict[str, Any] = {
        "name": "r2gen" if _is_r2gen(opts) else "custom",
        "label": _protocol_label(opts),
        "section": opts.section,
        "min_images": opts.min_images,
        "split": opts.split,
    }
    if opts.split == "random":
        protocol.update(seed=opts.seed, ratios=list(opts.ratios))
    if manifest is not None:
        protocol["split_file"] = str(manifest) if opts.split == "file" else "data_manifests/iu_xray/r2gen_split.json"
        protocol["split_file_sha256"] = split_file_sha
    protocol.update(
        id_rule="first parentImage id without its last -NNNN part",
        report="selected section text unchanged" + (" (findings and impression joined by a space)"
                                                    if opts.section == "findings+impression" else ""),
        reports_parsed=num_reports,
        excluded=selection.excluded,
        missing_from_source=len(selection.missing_from_source),
    )
    if inputs.urls:
        protocol["downloaded_from"] = {name: redact_url(url) for name, url in inputs.urls.items()}
    return protocol


def prepare_iu_xray(opts: IUXrayOptions) -> IUXrayResult:
    """Prepare IU X-ray into ``opts.out`` (download or local sources, protocol, images, stamp last).

    Returns:
        The prepare.json record; ``skipped`` when the folder was already complete for the same options.

    Raises:
        MrgError subclasses naming the file or option at fault (nothing is stamped on failure).
    """
    _validate(opts)
    manifest = _split_manifest(opts)
    split_ids = _load_split_file(manifest) if manifest is not None else None
    split_file_sha = sha256_file(manifest) if manifest is not None else None
    source = _source_record(opts, split_file_sha)
    out = Path(opts.out)
    state = _claim(opts, source)
    if state == "complete":
        return IUXrayResult(record=read_json(out / STAMP_NAME), skipped=True)

    inputs = _acquire(opts)
    reports = read_reports(inputs.reports)
    selection = select_studies(
        reports, section=opts.section, min_images=opts.min_images, split=opts.split, split_ids=split_ids,
        seed=opts.seed, ratios=opts.ratios,
    )
    notes = _selection_notes(opts, inputs, selection, split_ids is not None)
    images = _place_or_list_images(opts, inputs, selection, out)
    protocol = _protocol_record(opts, inputs, selection, manifest, split_file_sha, num_reports=len(reports))
    record = write_prepared_dataset(
        out, selection.studies, source=source, protocol=protocol, normalize="r2gen-iu", images=images,
        checksums=inputs.checksums, check_images=not opts.skip_images,
    )
    return IUXrayResult(record=record, skipped=False, notes=notes)

