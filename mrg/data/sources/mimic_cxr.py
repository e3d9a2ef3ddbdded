"""MIMIC-CXR / MIMIC-CXR-JPG: credentialed download from PhysioNet, or a local copy, into a prepared dataset.

Three ways in, one output (``mrg.data.prepared``):

* **PhysioNet** (default): the files the chosen protocol needs are downloaded into a cache that mirrors the
  releases (``<cache>/physionet/<project>/<version>/...``), several at once and resumable, each verified
  against the release's ``SHA256SUMS.txt`` (downloaded first; a file it does not list is an error).
  Reports come from MIMIC-CXR (``mimic-cxr-reports.zip``); the official split, metadata, labels and JPEG
  images from MIMIC-CXR-JPG.
* **A local tree** (``source``): the same files, found by name in a folder and its subfolders (CSV files
  plain or gzipped; reports as the zip or as an extracted ``files/pXX/pSUBJECT/sSTUDY.txt`` tree).
* **An R2Gen annotation** (``annotation``): an existing R2Gen-format MIMIC ``annotation.json`` plus its
  ``images/`` folder, imported as it is.

The R2Gen protocol (default): one entry per *image* of the official split (``validate`` -> ``val``), the
report is the study's findings section (``mrg.data.sections``), images of studies without findings or
without a report are dropped, ``id`` = dicom_id, images at ``images/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg``.
Published size on the full release: 270,790 / 2,130 / 3,858 (``data_manifests/mimic_cxr``).

``limit_studies=N`` keeps, in every split, the N studies with the smallest study ids among those the
protocol keeps, so a subset is the same on every machine and only its images are downloaded.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import shutil
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from mrg.console import info, track
from mrg.data.chexpert import OBSERVATIONS
from mrg.data.credentials import Credentials, auth_failure_message, resolve_credentials
from mrg.data.download import DownloadJob, download_many
from mrg.data.prepared import SPLITS, Study, prepare_output_dir, write_prepared_dataset
from mrg.data.sections import extract_sections, select_report
from mrg.data.sources import cache_root, manifest_path
from mrg.errors import AuthError, DataError
from mrg.files import atomic_write, read_json, sha256_file

NORMALIZE = "r2gen-mimic"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
LABEL_FILES = {"chexpert": "chexpert", "negbio": "negbio"}

Unit = Literal["image", "study"]
SectionChoice = Literal["findings", "impression", "findings+impression"]
LabelChoice = Literal["chexpert", "negbio", "none"]


# ----------------------------------------------------------------------------------------------- manifests


def _manifest(name: str) -> dict[str, Any]:
    return read_json(manifest_path("mimic_cxr", name))


def release_manifest() -> dict[str, Any]:
    """File names, URLs and versions of the two PhysioNet projects (``data_manifests/mimic_cxr/releases.json``)."""
    return _manifest("releases.json")


def expected_counts() -> dict[str, Any]:
    """Published entry counts per protocol (``data_manifests/mimic_cxr/expected_counts.json``)."""
    return _manifest("expected_counts.json")


@dataclass(frozen=True)
class Project:
    """One PhysioNet project release: where its files are online and in the cache."""

    name: str
    version: str
    base_url: str
    page: str
    files: dict[str, str]
    checksums: str

    @property
    def url(self) -> str:
        """The release's root URL (ends with ``/``)."""
        return f"{self.base_url.rstrip('/')}/{self.name}/{self.version}/"

    def file_url(self, rel: str) -> str:
        """The URL of a file of the release (``rel`` relative to its root)."""
        return self.url + urllib.parse.quote(rel)

    def cache_dir(self, cache_root: Path) -> Path:
        """Where this release is mirrored locally."""
        return cache_root / "physionet" / self.name / self.version


def physionet_projects(version: str, base_url: str) -> tuple[Project, Project]:
    """The MIMIC-CXR (reports) and MIMIC-CXR-JPG (split, labels, images) projects of one release version."""
    manifest = release_manifest()
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        known = ", ".join(manifest["projects"]["mimic-cxr-jpg"]["versions"])
        raise DataError(f"--version {version!r}: expected a PhysioNet release number such as {known}")
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DataError(f"--base-url {base_url!r}: expected an http(s) URL such as {manifest['default_base_url']}")
    if "@" in parts.netloc:
        raise DataError(
            "--base-url: must not contain a user name or password; set PHYSIONET_USERNAME/PHYSIONET_PASSWORD "
            "or use ~/.netrc instead"
        )
    projects = []
    for name in ("mimic-cxr", "mimic-cxr-jpg"):
        spec = manifest["projects"][name]
        projects.append(Project(name, version, base_url, spec["page"].format(version=version), dict(spec["files"]),
                                spec["checksums"]))
    return projects[0], projects[1]


# ----------------------------------------------------------------------------------------- SHA256SUMS files

_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *]?(.+)")


def parse_sha256sums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum``-style file into {relative path: hex digest}.

    Raises:
        DataError: a line is not ``<64 hex digits>  <path>``.
    """
    sums: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                match = _SUMS_LINE.fullmatch(line)
                if match is None:
                    raise DataError(
                        f"{path}:{lineno}: not a SHA256SUMS line ('<sha256>  <path>'); delete the file so it is downloaded again"
                    )
                rel = match.group(2).strip()
                sums[rel[2:] if rel.startswith("./") else rel] = match.group(1).lower()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; delete it so it is downloaded again") from None
    return sums


# ------------------------------------------------------------------------------------------------- CSVs


@dataclass(frozen=True)
class ImageRow:
    """One line of the official split file."""

    dicom_id: str
    study_id: str
    subject_id: str
    split: str
    """``train``, ``val`` or ``test`` (the file's ``validate`` renamed)."""


_SAFE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]*")
"""What an id may look like: it becomes part of a file path, so no separators or dots."""


def _open_csv_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if gzipped:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_csv(path: Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file (plain or gzipped) as (line number, row); checks the header first."""
    try:
        with _open_csv_text(path) as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [name for name in required if name not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(header) or 'no header'}); "
                    "is this the right MIMIC-CXR-JPG file?"
                )
            for row in reader:
                yield reader.line_num, row
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err}); delete it and download it again") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a valid CSV file ({err}); delete it and download it again") from None


def read_split(path: Path) -> list[ImageRow]:
    """The official split (``mimic-cxr-2.0.0-split.csv[.gz]``), with ``validate`` renamed ``val``."""
    rows = []
    for lineno, row in _read_csv(path, ("dicom_id", "study_id", "subject_id", "split")):
        split = SPLIT_NAMES.get(row["split"].strip())
        if split is None:
            raise DataError(f"{path}:{lineno}: split {row['split']!r} is not train, validate or test")
        ids = [row[key].strip() for key in ("dicom_id", "study_id", "subject_id")]
        if not all(ids) or not all(_SAFE_ID.fullmatch(i) for i in ids):
            raise DataError(f"{path}:{lineno}: dicom_id/study_id/subject_id must be non-empty ids, got {ids}")
        rows.append(ImageRow(ids[0], ids[1], ids[2], split))
    if not rows:
        raise DataError(f"{path}: no rows; delete it and download it again")
    return rows


def read_view_positions(path: Path) -> dict[str, str]:
    """dicom_id -> ViewPosition (``PA``, ``AP``, ``LATERAL``, ...; ``""`` when unknown) from the metadata file."""
    return {row["dicom_id"].strip(): row["ViewPosition"].strip() for _, row in _read_csv(path, ("dicom_id", "ViewPosition"))}


def read_labels(path: Path) -> dict[str, dict[str, float]]:
    """study_id -> {observation: 1.0 / 0.0 / -1.0} from a CheXpert or NegBio label file (blank = not mentioned)."""
    labels: dict[str, dict[str, float]] = {}
    for lineno, row in _read_csv(path, ("subject_id", "study_id", *OBSERVATIONS)):
        values: dict[str, float] = {}
        for name in OBSERVATIONS:
            cell = (row[name] or "").strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                value = float("nan")
            if value not in (1.0, 0.0, -1.0):
                raise DataError(f"{path}:{lineno}: {name} = {cell!r}; labels must be 1.0, 0.0, -1.0 or blank")
            values[name] = value
        labels[row["study_id"].strip()] = values
    return labels


# ---------------------------------------------------------------------------------------------- reports


def _decode_report(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: report is not UTF-8 text (byte {err.start}); re-extract or download it again") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # what reading in text mode does


class ReportStore:
    """Free-text reports by study, from ``mimic-cxr-reports.zip`` or an extracted ``files/`` tree."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{self.path}: not a readable zip archive ({err}); delete it and download it again") from None
            for name in self._zip.namelist():
                stem = PurePosixPath(name)
                if stem.suffix == ".txt" and stem.name.startswith("s"):
                    self._members[stem.stem[1:]] = name
            if not self._members:
                raise DataError(f"{self.path}: holds no sSTUDY.txt reports; is this mimic-cxr-reports.zip?")
        elif self.path.is_dir():
            self.root = self.path / "files" if (self.path / "files").is_dir() else self.path
        else:
            raise DataError(f"{self.path}: reports not found; pass mimic-cxr-reports.zip or its extracted folder")

    def __len__(self) -> int:
        return len(self._members)

    def get(self, subject_id: str, study_id: str) -> str | None:
        """The report text of a study (``None`` when the release has none)."""
        if self._zip is not None:
            name = self._members.get(study_id)
            if name is None:
                return None
            try:
                data = self._zip.read(name)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise DataError(f"{self.path}: member {name} is corrupt ({err}); delete the zip and download it again") from None
            return _decode_report(data, f"{self.path}:{name}")
        path = self.root / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"
        try:
            return _decode_report(path.read_bytes(), str(path))
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Release the zip file handle."""
        if self._zip is not None:
            self._zip.close()


# ----------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class MimicOptions:
    """How entries are selected and written (the protocol); the R2Gen protocol by default."""

    unit: Unit = "image"
    """``image``: one entry per image (R2Gen); ``study``: one entry per study with all its images, frontal first."""
    section: SectionChoice = "findings"
    """The report section(s) used as the report; entries whose choice is empty are dropped."""
    labels: LabelChoice = "chexpert"
    """Which official label file goes into ``labels`` (``none`` skips it)."""
    limit_studies: int | None = None
    """Keep the N studies with the smallest ids of every split (after the protocol's filtering)."""
    image_size: int | None = None
    """Write images resized so the shorter side is N pixels (aspect kept), re-encoded as JPEG."""
    skip_images: bool = False
    """Build the manifests only; no image is downloaded or placed."""

    def is_r2gen(self) -> bool:
        """Whether these options are R2Gen's protocol."""
        return self.unit == "image" and self.section == "findings"

    def protocol_name(self) -> str:
        """``r2gen`` or a descriptive name of the deviation."""
        return "r2gen" if self.is_r2gen() else f"mimic-{self.unit}-{self.section}"

    def claim(self) -> dict[str, Any]:
        """The options that define the output, for the output folder's claim."""
        return {"unit": self.unit, "section": self.section, "labels": self.labels, "limit_studies": self.limit_studies,
                "image_size": self.image_size, "skip_images": self.skip_images}


# ------------------------------------------------------------------------------------------- entries


@dataclass
class _StudyGroup:
    subject_id: str
    study_id: str
    split: str
    dicom_ids: list[str] = field(default_factory=list)


def image_relpath(subject_id: str, study_id: str, dicom_id: str) -> str:
    """An image's path in R2Gen's ``images/`` layout (MIMIC-CXR-JPG's ``files/`` layout without ``files/``)."""
    return f"p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def _as_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _study_key(study_id: str) -> tuple[int, int | str]:
    return (0, int(study_id)) if study_id.isdigit() else (1, study_id)


_FRONTAL_RANK = {"PA": 0, "AP": 1}


def _view_rank(view: str) -> int:
    view = view.upper()
    if view in _FRONTAL_RANK:
        return _FRONTAL_RANK[view]
    if view.startswith(("PA", "AP")):
        return 2  # AP AXIAL, PA LLD, ...
    return 3 if view else 4  # lateral and other views, then unknown


def group_studies(rows: Iterable[ImageRow], split_file: Path) -> list[_StudyGroup]:
    """Images grouped by study, in the split file's order.

    Raises:
        DataError: a study's images are in different splits.
    """
    groups: dict[str, _StudyGroup] = {}
    for row in rows:
        group = groups.get(row.study_id)
        if group is None:
            group = groups[row.study_id] = _StudyGroup(row.subject_id, row.study_id, row.split)
        elif group.split != row.split:
            raise DataError(f"{split_file}: study {row.study_id} has images in both {group.split} and {row.split}")
        group.dicom_ids.append(row.dicom_id)
    return list(groups.values())


@dataclass
class BuildResult:
    """The entries of a run and what was left out, for the protocol record."""

    studies: list[Study]
    dropped_no_report: Counter[str] = field(default_factory=Counter)
    """Images (per split) whose study has no report in the release."""
    dropped_empty_section: Counter[str] = field(default_factory=Counter)
    """Images (per split) whose study's chosen section is missing or empty."""
    studies_kept: Counter[str] = field(default_factory=Counter)


_Sectioned = tuple[_StudyGroup, dict[str, str], str]
"""A study group with its report's sections and the chosen section's text."""


def _sectioned_groups(
    groups: list[_StudyGroup], reports: ReportStore, options: MimicOptions, result: BuildResult
) -> list[_Sectioned]:
    """The groups whose report has a non-empty chosen section; counts the images left out in ``result``."""
    kept: list[_Sectioned] = []
    for group in track(groups, "sectioning reports"):
        text = reports.get(group.subject_id, group.study_id)
        if text is None:
            result.dropped_no_report[group.split] += len(group.dicom_ids)
            continue
        sections = extract_sections(text)
        report = select_report(sections, options.section)
        if not report:
            result.dropped_empty_section[group.split] += len(group.dicom_ids)
            continue
        kept.append((group, sections, report))
    return kept


def _smallest_studies_per_split(kept: list[_Sectioned], limit: int) -> list[_Sectioned]:
    """The ``limit`` studies with the smallest ids of each split, in their original order."""
    chosen: set[str] = set()
    for split in SPLITS:
        ids = sorted((g.study_id for g, _, _ in kept if g.split == split), key=_study_key)
        chosen.update(ids[:limit])
    return [item for item in kept if item[0].study_id in chosen]


def build_entries(
    rows: list[ImageRow],
    reports: ReportStore,
    options: MimicOptions,
    *,
    split_file: Path,
    labels: dict[str, dict[str, float]] | None = None,
    labels_source: str | None = None,
    views: dict[str, str] | None = None,
) -> BuildResult:
    """Section every report and turn the split's images into prepared entries under ``options``."""
    result = BuildResult(studies=[])
    kept = _sectioned_groups(group_studies(rows, split_file), reports, options, result)
    if options.limit_studies is not None:
        kept = _smallest_studies_per_split(kept, options.limit_studies)

    views = views or {}
    for group, sections, report in kept:
        result.studies_kept[group.split] += 1
        study_labels = labels.get(group.study_id) if labels is not None else None
        common = {"study_id": _as_id(group.study_id), "subject_id": _as_id(group.subject_id)}
        source = labels_source if study_labels is not None else None
        if options.unit == "image":
            for dicom_id in group.dicom_ids:
                extra = dict(common)
                if dicom_id in views:
                    extra["view_position"] = views[dicom_id]
                result.studies.append(Study(
                    id=dicom_id, split=group.split, report=report,
                    image_paths=[f"images/{image_relpath(group.subject_id, group.study_id, dicom_id)}"],
                    sections=dict(sections), labels=dict(study_labels) if study_labels is not None else None,
                    labels_source=source, extra=extra,
                ))
        else:
            order = sorted(group.dicom_ids, key=lambda d: _view_rank(views.get(d, "")))
            extra = dict(common, dicom_ids=order)
            if views:
                extra["view_positions"] = [views.get(d, "") for d in order]
            result.studies.append(Study(
                id=group.study_id, split=group.split, report=report,
                image_paths=[f"images/{image_relpath(group.subject_id, group.study_id, d)}" for d in order],
                sections=sections, labels=study_labels, labels_source=source, extra=extra,
            ))
    return result


# -------------------------------------------------------------------------------------------- images


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _resize_one(job: tuple[str, str, int]) -> str | None:
    """Resize one image into place; returns an error message instead of raising (runs in worker processes)."""
    from mrg.data.images import load_image, resize_keep_aspect
    from mrg.errors import MrgError

    src, dst, size = job
    try:
        img = resize_keep_aspect(load_image(src), size)
        with atomic_write(dst, "wb") as handle:
            img.save(handle, format="JPEG", quality=95)
    except MrgError as err:
        return str(err)
    except OSError as err:
        return f"{dst}: cannot write the resized image ({err}); check free space and permissions"
    return None


def place_images(
    pairs: list[tuple[Path, Path]],
    *,
    image_size: int | None,
    workers: int,
    missing_hint: str,
) -> int:
    """Put each source image at its destination: a hard link (or copy), or a resized JPEG.

    A destination that already exists is kept (files appear only complete, by rename), so an interrupted
    run continues where it stopped. Returns the number of images written by this call.

    Raises:
        DataError: a source image is missing or unreadable.
    """
    todo = [(src, dst) for src, dst in pairs if not dst.is_file()]
    for src, _dst in todo:
        if not src.is_file():
            raise DataError(f"{src}: image file not found; {missing_hint}")
    for parent in {dst.parent for _, dst in todo}:
        parent.mkdir(parents=True, exist_ok=True)
    if image_size is None:
        for src, dst in track(todo, "placing images"):
            _link_or_copy(src, dst)
        return len(todo)
    jobs = [(str(src), str(dst), image_size) for src, dst in todo]
    if workers <= 1 or len(jobs) < 64:
        results: Iterable[str | None] = map(_resize_one, jobs)
        for problem in track(results, "resizing images", total=len(jobs)):
            if problem:
                raise DataError(problem)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for problem in track(pool.map(_resize_one, jobs, chunksize=32), "resizing images", total=len(jobs)):
                if problem:
                    raise DataError(problem)
    return len(todo)


# ----------------------------------------------------------------------------------------- downloads


class VerifiedLedger:
    """Which cached files were already verified against SHA256SUMS (path, size, mtime, digest), so a re-run
    does not re-hash hundreds of gigabytes. An entry counts only while the file's size and mtime are unchanged;
    a torn last line (an interruption while appending) is ignored."""

    NAME = ".mrg-verified.tsv"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / self.NAME
        self._entries: dict[str, tuple[int, int, str]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit() and len(parts[3]) == 64:
                    self._entries[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])

    def verified(self, rel: str, sha256: str) -> bool:
        """Whether ``rel`` is known to match ``sha256`` and has not changed since."""
        entry = self._entries.get(rel)
        if entry is None or entry[2] != sha256:
            return False
        try:
            stat = (self.root / rel).stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == entry[:2]

    def add(self, items: Iterable[tuple[str, str]]) -> None:
        """Record files (rel, sha256) that were just verified."""
        lines = []
        for rel, digest in items:
            stat = (self.root / rel).stat()
            self._entries[rel] = (stat.st_size, stat.st_mtime_ns, digest)
            lines.append(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\t{digest}\n")
        if lines:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.writelines(lines)


@dataclass
class Downloader:
    """Fetches files of the two PhysioNet releases into the cache, verified against their SHA256SUMS."""

    cache_root: Path
    workers: int = 4
    credentials_provider: Callable[[], Credentials] | None = None
    download_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for ``download_many`` (tests pass ``retries``, ``backoff`` and ``sleep``)."""
    _credentials: Credentials | None = None
    _sums: dict[str, dict[str, str]] = field(default_factory=dict)
    fetched: int = 0
    """Files transferred (or verified after a resume) by this run."""

    def credentials(self, project: Project) -> Credentials:
        """The credentials, looked up on first use (for the host of ``project``'s base URL)."""
        if self._credentials is None:
            host = urllib.parse.urlsplit(project.base_url).hostname or "physionet.org"
            provider = self.credentials_provider or (lambda: resolve_credentials(host))
            self._credentials = provider()
        return self._credentials

    def _download(self, project: Project, jobs: list[DownloadJob], what: str) -> None:
        if not jobs:
            return
        credentials = self.credentials(project)
        try:
            download_many(jobs, max_workers=self.workers, auth=credentials.as_tuple(), description=what,
                          **self.download_kwargs)
        except AuthError:
            raise AuthError(auth_failure_message(project.name, project.version, project.page, credentials)) from None
        self.fetched += len(jobs)

    def sums(self, project: Project) -> dict[str, str]:
        """The release's SHA256SUMS.txt (downloaded once into the cache), parsed."""
        if project.name not in self._sums:
            path = project.cache_dir(self.cache_root) / project.checksums
            if not path.is_file():
                self._download(project, [DownloadJob(project.file_url(project.checksums), path,
                                                     description=f"{project.name} {project.checksums}")],
                               f"{project.name} checksums")
            try:
                sums = parse_sha256sums(path)
            except DataError as err:
                # a login page served with 200, or a damaged cache: drop it so the next run fetches it again
                head = path.read_bytes()[:512].lstrip().lower()
                path.unlink(missing_ok=True)
                if head.startswith((b"<!doctype", b"<html", b"<")):
                    raise DataError(
                        f"{project.file_url(project.checksums)}: the server sent a web page (a login page?) instead "
                        f"of the checksum list; check the credentials and that the data use agreement is signed at "
                        f"{project.page}, then run again"
                    ) from None
                raise DataError(f"{err} (the file was removed; run again to download it afresh)") from None
            if not sums:
                path.unlink(missing_ok=True)
                raise DataError(f"{project.file_url(project.checksums)}: the checksum list is empty; run again, "
                                "and check --base-url if it stays empty")
            self._sums[project.name] = sums
        return self._sums[project.name]

    def digest(self, project: Project, rel: str) -> str:
        """The recorded SHA-256 of a release file.

        Raises:
            DataError: the release's SHA256SUMS.txt does not list the file.
        """
        digest = self.sums(project).get(rel)
        if digest is None:
            raise DataError(
                f"{project.name} {project.version}: {rel} is not listed in "
                f"{project.cache_dir(self.cache_root) / project.checksums}, so it cannot be verified; check --version "
                "(or delete that SHA256SUMS.txt if it is stale)"
            )
        return digest

    def fetch(self, project: Project, rels: list[str], what: str) -> list[Path]:
        """Download (or reuse from the cache) release files, each verified against SHA256SUMS.txt.

        Files verified by an earlier run and unchanged since (``VerifiedLedger``) are neither hashed nor
        requested again, so credentials are needed only when something is actually missing.
        """
        root = project.cache_dir(self.cache_root)
        digests = {rel: self.digest(project, rel) for rel in rels}
        book = VerifiedLedger(root)
        jobs = [
            DownloadJob(project.file_url(rel), root / rel, sha256=digest, description=PurePosixPath(rel).name)
            for rel, digest in digests.items()
            if not book.verified(rel, digest)
        ]
        chunk = max(1, self.workers) * 256  # record progress in the ledger every few hundred files
        for start in range(0, len(jobs), chunk):
            batch = jobs[start : start + chunk]
            self._download(project, batch, what)
            book.add((job.dest.relative_to(root).as_posix(), str(job.sha256)) for job in batch)
        return [root / rel for rel in rels]


# ------------------------------------------------------------------------------------ local file lookup

_GROUP_DIR = re.compile(r"p\d\d")


def _is_data_tree(folder: Path) -> bool:
    """Whether ``folder`` is a release's ``files/`` tree (``p10/``, ``p11/``, ...): never worth walking into."""
    if _GROUP_DIR.fullmatch(folder.name):
        return True
    if folder.name != "files" or not folder.is_dir():
        return False
    try:
        return any(_GROUP_DIR.fullmatch(entry.name) for entry in os.scandir(folder))
    except OSError:
        return True


def _candidate_dirs(root: Path, depth: int = 4) -> list[Path]:
    """``root`` and its subfolders (breadth first, to ``depth`` levels), skipping image/report ``files/`` trees."""
    found, level = [root], [root]
    for _ in range(depth):
        nxt = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            nxt.extend(p for p in children if not _is_data_tree(p))
        found.extend(nxt)
        level = nxt
    return found


def _find_file(dirs: list[Path], name: str) -> Path | None:
    for folder in dirs:
        for candidate in (folder / f"{name}.gz", folder / name) if not name.endswith((".gz", ".zip")) else (folder / name,):
            if candidate.is_file():
                return candidate
    return None


@dataclass
class LocalRelease:
    """The files of a run, wherever they came from."""

    split: Path
    reports: Path
    labels: Path | None
    metadata: Path | None
    images_root: Path | None
    """The folder holding ``pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg`` (the release's ``files/``)."""


def locate_local(source: Path, options: MimicOptions, reports: Path | None, version: str) -> LocalRelease:
    """Find the files a run needs in a local MIMIC-CXR(-JPG) tree.

    Raises:
        DataError: naming the file that was looked for and the folder.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"--source {source}: not a folder; pass the folder holding the MIMIC-CXR-JPG files")
    _, jpg = physionet_projects(version, release_manifest()["default_base_url"])
    dirs = _candidate_dirs(source)

    def need(key: str) -> Path:
        name = jpg.files[key].removesuffix(".gz")
        found = _find_file(dirs, name)
        if found is None:
            raise DataError(f"--source {source}: {name}[.gz] not found in it or its subfolders; "
                            "download it from the MIMIC-CXR-JPG project or pass the folder that holds it")
        return found

    split = need("split")
    labels = need(LABEL_FILES[options.labels]) if options.labels != "none" else None
    metadata = _find_file(dirs, jpg.files["metadata"].removesuffix(".gz"))
    if options.unit == "study" and metadata is None:
        raise DataError(f"--source {source}: --unit study needs mimic-cxr-2.0.0-metadata.csv[.gz] (view positions, "
                        "to put frontal images first); none found")
    if reports is None:
        reports = _find_file(dirs, "mimic-cxr-reports.zip")
    if reports is None:
        trees = [d / "files" for d in (split.parent, *dirs) if _is_data_tree(d / "files")]
        sample = read_split(split)[:50]
        for tree in trees:
            if any((tree / f"p{r.subject_id[:2]}" / f"p{r.subject_id}" / f"s{r.study_id}.txt").is_file() for r in sample):
                reports = tree
                break
    if reports is None:
        raise DataError(f"--source {source}: no MIMIC-CXR reports found (mimic-cxr-reports.zip, or a files/ tree of "
                        "pXX/pSUBJECT/sSTUDY.txt); pass --reports PATH")
    images_root = None
    if not options.skip_images:
        for folder in (split.parent, *dirs):
            if _is_data_tree(folder / "files"):
                images_root = folder / "files"
                break
        if images_root is None:
            raise DataError(f"--source {source}: no files/ folder of JPEG images found; pass the MIMIC-CXR-JPG folder "
                            "or use --skip-images")
    return LocalRelease(split, Path(reports), labels, metadata, images_root)


# ----------------------------------------------------------------------------------------- annotation


def studies_from_annotation(path: Path) -> list[Study]:
    """Entries of an R2Gen-format annotation.json (``{"train": [...], "val": [...], "test": [...]}``).

    Raises:
        DataError: the file is not in R2Gen's format (naming the split and entry).
    """
    data = read_json(path)
    if not isinstance(data, dict) or not data or set(data) - set(SPLITS):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected R2Gen's {{\"train\": [...], \"val\": [...], \"test\": [...]}}, found {keys}")
    studies: list[Study] = []
    seen: set[str] = set()
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise DataError(f"{path}: '{split}' must be a list of entries")
        for index, entry in enumerate(entries):
            where = f"{path}: {split}[{index}]"
            if not isinstance(entry, dict) or not {"id", "report", "image_path"} <= set(entry):
                raise DataError(f"{where}: an entry needs 'id', 'report' and 'image_path'")
            entry_id, report, images = str(entry["id"]), entry["report"], entry["image_path"]
            if isinstance(images, str):
                images = [images]
            if not isinstance(report, str) or not report.strip():
                raise DataError(f"{where} (id {entry_id}): the report is empty; remove the entry or fix the file")
            if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
                raise DataError(f"{where} (id {entry_id}): 'image_path' must be a non-empty list of paths")
            for rel in images:
                parts = PurePosixPath(rel).parts
                if PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
                    raise DataError(f"{where} (id {entry_id}): image path {rel!r} must be relative to images/ without '..'")
            if entry_id in seen:
                raise DataError(f"{where}: id {entry_id} appears twice; ids must be unique")
            seen.add(entry_id)
            extra = {key: entry[key] for key in ("study_id", "subject_id") if key in entry}
            studies.append(Study(id=entry_id, split=split, report=report, image_paths=[f"images/{p}" for p in images],
                                 extra=extra))
    if not studies:
        raise DataError(f"{path}: holds no entries")
    return studies


# ----------------------------------------------------------------------------------------------- main


@dataclass
class PrepareResult:
    """What ``prepare_mimic_cxr`` did."""

    record: dict[str, Any]
    """The prepare.json record."""
    skipped: bool = False
    """The folder was already complete; nothing was redone."""
    notes: list[str] = field(default_factory=list)
    """Lines for the summary (counts versus the published ones, deviations from R2Gen's protocol)."""


def _count_notes(record: dict[str, Any], options: MimicOptions, full: bool) -> list[str]:
    notes = []
    if not options.is_r2gen():
        notes.append(f"protocol {options.protocol_name()} is not R2Gen's (one entry per image, findings only); "
                     "numbers are not comparable with papers that use R2Gen's annotation")
    if full and options.is_r2gen():
        published = expected_counts()["protocols"]["r2gen"]["counts"]
        if record["counts"] != published:
            got = " / ".join(f"{record['counts'][s]:,}" for s in SPLITS)
            want = " / ".join(f"{published[s]:,}" for s in SPLITS)
            notes.append(f"note: this release gives {got} train/val/test entries; R2Gen's published annotation has "
                         f"{want} (see docs/prepare-mimic-cxr.md)")
        else:
            notes.append("counts match R2Gen's published annotation (270,790 / 2,130 / 3,858)")
    return notes


def _check_prepare_options(
    options: MimicOptions, *, source: Path | None, reports: Path | None, annotation: Path | None,
    images_dir: Path | None,
) -> None:
    """Refuse option values and combinations ``prepare_mimic_cxr`` cannot use, naming the option."""
    if options.limit_studies is not None and options.limit_studies < 1:
        raise DataError(f"--limit-studies {options.limit_studies}: must be at least 1")
    if options.image_size is not None and options.image_size < 8:
        raise DataError(f"--image-size {options.image_size}: must be at least 8 pixels")
    if source is not None and annotation is not None:
        raise DataError("--source and --from-annotation: choose one")
    if reports is not None and source is None:
        raise DataError("--reports: only used with --source (a download takes the reports zip from PhysioNet)")
    if images_dir is not None and annotation is None:
        raise DataError("--images: only used with --from-annotation")


def _local_checksums(files: LocalRelease) -> dict[str, str]:
    """sha256 of the tables and the reports archive of a local release, by file name (reports folders are skipped)."""
    checksums: dict[str, str] = {}
    for path in (files.split, files.labels, files.metadata, files.reports):
        if path is not None and path.is_file():
            checksums[path.name] = sha256_file(path)
    return checksums


def _fetch_release_tables(
    downloader: Downloader, cxr: Project, jpg: Project, options: MimicOptions, version: str
) -> tuple[LocalRelease, dict[str, str]]:
    """Download (or verify in the cache) the tables ``options`` needs and the reports zip; their paths and digests."""
    needed = [jpg.files["split"]]
    if options.labels != "none":
        needed.append(jpg.files[LABEL_FILES[options.labels]])
    if options.unit == "study":
        needed.append(jpg.files["metadata"])
    info(f"MIMIC-CXR {version}: fetching {', '.join(needed)} and {cxr.files['reports']} into {downloader.cache_root}")
    jpg_paths = dict(zip(needed, downloader.fetch(jpg, needed, "MIMIC-CXR-JPG tables"), strict=True))
    (reports_zip,) = downloader.fetch(cxr, [cxr.files["reports"]], "MIMIC-CXR reports")
    checksums = {f"{jpg.name}/{rel}": downloader.digest(jpg, rel) for rel in needed}
    checksums[f"{cxr.name}/{cxr.files['reports']}"] = downloader.digest(cxr, cxr.files["reports"])
    files = LocalRelease(
        split=jpg_paths[jpg.files["split"]], reports=reports_zip,
        labels=jpg_paths[jpg.files[LABEL_FILES[options.labels]]] if options.labels != "none" else None,
        metadata=jpg_paths.get(jpg.files["metadata"]),
        images_root=jpg.cache_dir(downloader.cache_root) / "files",
    )
    return files, checksums


def _read_entries(files: LocalRelease, options: MimicOptions) -> BuildResult:
    """Read the split, labels, views and reports of a release and build its entries; refuses a run with none."""
    rows = read_split(files.split)
    labels = read_labels(files.labels) if files.labels is not None else None
    labels_source = files.labels.name.split(".csv")[0] if files.labels is not None else None
    views = read_view_positions(files.metadata) if files.metadata is not None else None
    store = ReportStore(files.reports)
    try:
        built = build_entries(rows, store, options, split_file=files.split, labels=labels,
                              labels_source=labels_source, views=views)
    finally:
        store.close()
    if not built.studies:
        raise DataError(f"{files.split}: no entry has a non-empty {options.section} section in "
                        f"{files.reports}; check that the reports belong to this release")
    return built


def prepare_mimic_cxr(
    out_dir: Path,
    *,
    options: MimicOptions | None = None,
    source: Path | None = None,
    reports: Path | None = None,
    annotation: Path | None = None,
    images_dir: Path | None = None,
    version: str | None = None,
    base_url: str | None = None,
    cache_dir: Path | None = None,
    workers: int = 4,
    force: bool = False,
    credentials_provider: Callable[[], Credentials] | None = None,
    download_kwargs: dict[str, Any] | None = None,
) -> PrepareResult:
    """Prepare MIMIC-CXR into ``out_dir``: from PhysioNet (default), a local tree (``source``) or an R2Gen
    annotation (``annotation`` + ``images_dir``).

    Args:
        out_dir: the prepared-dataset folder.
        options: the protocol (R2Gen's by default).
        source: a local MIMIC-CXR(-JPG) folder instead of downloading.
        reports: with ``source``: the reports zip or folder, when it is not inside ``source``.
        annotation: an R2Gen-format annotation.json to import instead.
        images_dir: with ``annotation``: the folder its ``image_path`` entries are relative to
            (default: ``images/`` beside the file).
        version: the PhysioNet release (default from ``data_manifests/mimic_cxr/releases.json``).
        base_url: where PhysioNet's ``files/`` are (default ``https://physionet.org/files/``).
        cache_dir: the download cache (default ``mrg.data.sources.cache_root()``).
        workers: parallel downloads, and processes for resizing.
        force: redo a finished folder.
        credentials_provider: returns the PhysioNet credentials; called only when something must be downloaded.
        download_kwargs: extra arguments for ``download_many`` (retries, backoff, sleep).

    Raises:
        DataError, AuthError, DownloadError, ChecksumError, OutputDirError: with a message naming the file or option.
    """
    options = options or MimicOptions()
    _check_prepare_options(options, source=source, reports=reports, annotation=annotation, images_dir=images_dir)
    manifest = release_manifest()
    version = version or manifest["default_version"]
    base_url = base_url or manifest["default_base_url"]
    out_dir = Path(out_dir)

    if annotation is not None:
        return _prepare_from_annotation(out_dir, Path(annotation), images_dir, options, workers, force)

    return _prepare_release(
        out_dir, options, source=Path(source) if source is not None else None,
        reports=Path(reports) if reports else None, version=version, base_url=base_url,
        cache_dir=cache_dir, workers=workers, force=force,
        credentials_provider=credentials_provider, download_kwargs=dict(download_kwargs or {}),
    )


def _prepare_release(
    out_dir: Path, options: MimicOptions, *, source: Path | None, reports: Path | None, version: str, base_url: str,
    cache_dir: Path | None, workers: int, force: bool, credentials_provider: Callable[[], Credentials] | None,
    download_kwargs: dict[str, Any],
) -> PrepareResult:
    """``prepare_mimic_cxr`` from a local release tree (``source``) or from PhysioNet (``source`` None)."""
    if source is not None:
        claim = {"kind": "mimic-cxr", "mode": "local", "path": str(source.resolve()),
                 "reports": str(reports.resolve()) if reports else None, "version": version, **options.claim()}
    else:
        cxr, jpg = physionet_projects(version, base_url)
        claim = {"kind": "mimic-cxr", "mode": "physionet", "version": version, "base_url": base_url, **options.claim()}
    state = prepare_output_dir(out_dir, claim, force=force)
    if state == "complete":
        record = read_json(out_dir / "prepare.json")
        return PrepareResult(record, skipped=True, notes=_count_notes(record, options, options.limit_studies is None))

    downloader: Downloader | None = None
    if source is not None:
        files = locate_local(source, options, reports, version)
        checksums = _local_checksums(files)
    else:
        downloader = Downloader(Path(cache_dir) if cache_dir else cache_root(), workers, credentials_provider,
                                download_kwargs)
        files, checksums = _fetch_release_tables(downloader, cxr, jpg, options, version)

    built = _read_entries(files, options)
    if not options.skip_images:
        rels = sorted({p.removeprefix("images/") for s in built.studies for p in s.image_paths})
        if downloader is not None:
            downloader.fetch(jpg, [f"files/{rel}" for rel in rels], "MIMIC-CXR-JPG images")
            hint = "delete it from the cache and run the command again"
        else:
            hint = "the local MIMIC-CXR-JPG copy is incomplete: download the image or use --skip-images"
        assert files.images_root is not None
        place_images([(files.images_root / rel, out_dir / "images" / rel) for rel in rels],
                     image_size=options.image_size, workers=workers, missing_hint=hint)
    return _write_release(out_dir, built, claim, checksums, options, downloader)


def _write_release(
    out_dir: Path, built: BuildResult, claim: dict[str, Any], checksums: dict[str, str], options: MimicOptions,
    downloader: Downloader | None,
) -> PrepareResult:
    """Write the prepared dataset of a release run and the summary notes."""
    protocol = _protocol_record(options, built)
    images = {"placed": not options.skip_images, "resized_to": options.image_size,
              "layout": "images/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg"}
    record = write_prepared_dataset(out_dir, built.studies, source=claim, protocol=protocol, normalize=NORMALIZE,
                                    images=images, checksums=checksums, check_images=not options.skip_images)
    notes = _count_notes(record, options, options.limit_studies is None)
    notes.append(
        f"left out: {protocol['dropped_images_empty_section']:,} image(s) of studies without a {options.section} "
        f"section, {protocol['dropped_images_no_report']:,} of studies without a report"
    )
    if downloader is not None:
        notes.append(f"downloaded or verified {downloader.fetched:,} file(s) into {downloader.cache_root}")
    return PrepareResult(record, notes=notes)


def _protocol_record(options: MimicOptions, built: BuildResult) -> dict[str, Any]:
    return {
        "name": options.protocol_name(),
        "unit": options.unit,
        "section": options.section,
        "split": "official MIMIC-CXR-JPG split (validate -> val)",
        "sectioning": "MIT-LCP section parser semantics (mrg.data.sections)",
        "limit_studies": options.limit_studies,
        "subset_rule": "smallest study ids per split" if options.limit_studies else None,
        "labels": options.labels,
        "studies": {s: built.studies_kept.get(s, 0) for s in SPLITS},
        "dropped_images_no_report": sum(built.dropped_no_report.values()),
        "dropped_images_empty_section": sum(built.dropped_empty_section.values()),
    }


def _prepare_from_annotation(
    out_dir: Path, annotation: Path, images_dir: Path | None, options: MimicOptions, workers: int, force: bool
) -> PrepareResult:
    if options.unit != "image" or options.section != "findings" or options.limit_studies is not None:
        raise DataError("--from-annotation imports the file as it is: --unit, --section and --limit-studies do not apply")
    if not annotation.is_file():
        raise DataError(f"--from-annotation {annotation}: file not found")
    images_dir = Path(images_dir) if images_dir is not None else annotation.parent / "images"
    claim = {"kind": "mimic-cxr", "mode": "r2gen-annotation", "path": str(annotation.resolve()),
             "images": None if options.skip_images else str(images_dir.resolve()),
             "image_size": options.image_size, "skip_images": options.skip_images}
    state = prepare_output_dir(out_dir, claim, force=force)
    if state == "complete":
        return PrepareResult(read_json(out_dir / "prepare.json"), skipped=True)
    studies = studies_from_annotation(annotation)
    if not options.skip_images:
        if not images_dir.is_dir():
            raise DataError(f"--images {images_dir}: not a folder; pass the images/ folder the annotation's "
                            "image_path entries are relative to, or use --skip-images")
        rels = sorted({p.removeprefix("images/") for s in studies for p in s.image_paths})
        place_images([(images_dir / rel, out_dir / "images" / rel) for rel in rels], image_size=options.image_size,
                      workers=workers, missing_hint=f"the annotation lists it; check --images {images_dir}")
    protocol = {"name": "r2gen-annotation", "unit": "as in the file", "section": "as in the file (R2Gen: findings)",
                "split": "as in the file"}
    images = {"placed": not options.skip_images, "resized_to": options.image_size}
    record = write_prepared_dataset(out_dir, studies, source=claim, protocol=protocol, normalize=NORMALIZE,
                                    images=images, checksums={annotation.name: sha256_file(annotation)},
                                    check_images=not options.skip_images)
    return PrepareResult(record, notes=[f"imported {annotation} as it is (R2Gen's MIMIC-CXR annotation format)"])
