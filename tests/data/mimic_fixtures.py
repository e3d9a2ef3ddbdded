"""Synthetic MIMIC-CXR / MIMIC-CXR-JPG releases in the real formats, and a PhysioNet-like loopback server.

Nothing here comes from MIMIC: ids are random in the real formats (8-digit subject ids starting with 1,
8-digit study ids starting with 5, dicom ids of five dash-separated groups of 8 hex digits), report texts
are invented sentences laid out in MIMIC's line format (a leading space on every line, ``___`` for
de-identified spans, a ``FINAL REPORT`` line first), images are tiny random JPEGs.

``build_release(root)`` writes both projects as PhysioNet serves them::

    root/files/mimic-cxr/2.1.0/{mimic-cxr-reports.zip, cxr-record-list.csv.gz, cxr-study-list.csv.gz, SHA256SUMS.txt}
    root/files/mimic-cxr-jpg/2.1.0/{mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv.gz, IMAGE_FILENAMES,
                                     SHA256SUMS.txt, files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg}

``PhysioNetServer(root)`` serves that folder on 127.0.0.1 and requires HTTP basic auth on every file.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import random
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

VERSION = "2.1.0"
OBSERVATIONS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)

# Invented sentences (not MIMIC text).
_FINDING_SENTENCES = (
    "The cardiomediastinal silhouette is within normal limits.",
    "There is no focal airspace consolidation.",
    "No pleural effusion or pneumothorax is seen.",
    "Mild bibasilar atelectasis is present.",
    "A left-sided catheter terminates in the mid superior vena cava.",
    "The heart is mildly enlarged, unchanged from ___.",
    "Small right pleural effusion with adjacent opacity.",
    "Osseous structures show degenerative change of the spine.",
    "Lungs are hyperinflated, suggesting chronic obstructive disease.",
    "1. Patchy opacity in the right lower lobe. 2. No edema.",
)
_IMPRESSION_SENTENCES = (
    "No acute cardiopulmonary process.",
    "Small right effusion, new since ___.",
    "Mild cardiomegaly without edema.",
    "Findings suggest early pneumonia in the appropriate clinical setting.",
)

# How each study's report is laid out; the R2Gen protocol keeps only the kinds with a findings section.
KINDS = (
    "standard", "standard", "impression_only", "standard", "empty_findings", "misspelled", "standard", "no_headers",
    "two_findings", "standard",
)
KINDS_WITH_FINDINGS = {"standard", "misspelled", "two_findings"}


def _wrap(text: str, width: int = 70) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def _block(text: str) -> tuple[str, str]:
    """A paragraph in MIMIC's layout and what a section extractor should return for it."""
    lines = _wrap(text)
    return "\n".join(f" {line}" for line in lines), "\n ".join(lines)


@dataclass
class SyntheticStudy:
    """One invented study and what a correct prepare must make of it."""

    subject_id: str
    study_id: str
    split: str
    """Official split value (``train``, ``validate`` or ``test``)."""
    dicom_ids: list[str]
    views: list[str]
    kind: str
    report: str | None
    """The report file's text (``None``: the release has no report for this study)."""
    findings: str = ""
    impression: str = ""
    chexpert: dict[str, str] = field(default_factory=dict)
    negbio: dict[str, str] = field(default_factory=dict)

    @property
    def prepared_split(self) -> str:
        return "val" if self.split == "validate" else self.split

    def image_rel(self, dicom_id: str) -> str:
        return f"p{self.subject_id[:2]}/p{self.subject_id}/s{self.study_id}/{dicom_id}.jpg"


def _report(kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(report text, expected findings, expected impression) for one layout kind."""
    findings_raw = " ".join(rng.sample(_FINDING_SENTENCES, 3))
    impression_raw = rng.choice(_IMPRESSION_SENTENCES)
    f_block, f_expected = _block(findings_raw)
    i_block, i_expected = _block(impression_raw)
    head = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        f" INDICATION:  ___ year old {rng.choice(['man', 'woman'])} with {rng.choice(['cough', 'fever', 'dyspnea'])}"
        "  // eval for infiltrate\n \n"
        " TECHNIQUE:  Chest PA and lateral\n \n"
        " COMPARISON:  ___\n \n"
    )
    if kind == "standard":
        return head + f" FINDINGS: \n \n{f_block}\n \n IMPRESSION: \n \n{i_block}\n", f_expected, i_expected
    if kind == "impression_only":
        return head + f" IMPRESSION: \n \n{i_block}\n", "", i_expected
    if kind == "empty_findings":
        return head + f" FINDINGS: \n \n IMPRESSION: \n \n{i_block}\n", "", i_expected
    if kind == "misspelled":  # a misspelled findings header and a conclusion instead of an impression
        return head + f" FINIDNGS:  {f_block.lstrip()}\n \n CONCLUSION: \n \n{i_block}\n", f_expected, i_expected
    if kind == "no_headers":  # neither section: the last-paragraph fallback applies
        return f"                                 FINAL REPORT\n{f_block}\n \n{i_block}\n", "", ""
    if kind == "two_findings":  # the last findings section wins
        early_block, _ = _block("Preliminary read, see below.")
        text = head + f" FINDINGS: \n \n{early_block}\n \n FINDINGS: \n \n{f_block}\n \n IMPRESSION: \n \n{i_block}\n"
        return text, f_expected, i_expected
    raise ValueError(kind)


def _label_row(rng: random.Random) -> dict[str, str]:
    return {name: rng.choice(["1.0", "0.0", "-1.0", "", ""]) for name in OBSERVATIONS}


def _jpeg(rng: random.Random, size: tuple[int, int] = (40, 32)) -> bytes:
    img = Image.frombytes("L", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1])))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _write_csv_gz(path: Path, header: tuple[str, ...] | list[str], rows: list[dict[str, str]], gz: bool = True) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    if gz:
        path = path.with_name(path.name + ".gz") if not path.name.endswith(".gz") else path
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path = path.with_name(path.name.removesuffix(".gz"))
        path.write_bytes(data)
    return path


def _sha256sums(project_dir: Path) -> None:
    lines = []
    for path in sorted(p for p in project_dir.rglob("*") if p.is_file() and p.name != "SHA256SUMS.txt"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(project_dir).as_posix()}\n")
    (project_dir / "SHA256SUMS.txt").write_text("".join(lines))


@dataclass
class SyntheticRelease:
    """A synthetic MIMIC-CXR + MIMIC-CXR-JPG release on disk."""

    root: Path
    studies: list[SyntheticStudy]

    @property
    def jpg_dir(self) -> Path:
        return self.root / "files" / "mimic-cxr-jpg" / VERSION

    @property
    def cxr_dir(self) -> Path:
        return self.root / "files" / "mimic-cxr" / VERSION

    def kept(self, section: str = "findings") -> list[SyntheticStudy]:
        def text(s: SyntheticStudy) -> str:
            if section == "findings":
                return s.findings
            if section == "impression":
                return s.impression
            return " ".join(t for t in (s.findings, s.impression) if t)

        return [s for s in self.studies if s.report is not None and text(s)]

    def r2gen_entries(self) -> dict[str, list[tuple[str, str, str]]]:
        """Expected (id, report, image_path) per split under R2Gen's protocol, in split-file order."""
        out: dict[str, list[tuple[str, str, str]]] = {"train": [], "val": [], "test": []}
        for study in self.kept():
            for dicom_id in study.dicom_ids:
                out[study.prepared_split].append((dicom_id, study.findings, study.image_rel(dicom_id)))
        return out

    def study(self, study_id: str) -> SyntheticStudy:
        return next(s for s in self.studies if s.study_id == study_id)


def random_ids(rng: random.Random) -> tuple[str, str, str]:
    """(subject_id, study_id, dicom_id) in MIMIC's formats."""
    subject = "1" + "".join(rng.choice("0123456789") for _ in range(7))
    study = "5" + "".join(rng.choice("0123456789") for _ in range(7))
    dicom = "-".join("".join(rng.choice("0123456789abcdef") for _ in range(8)) for _ in range(5))
    return subject, study, dicom


def build_release(root: Path, *, seed: int = 0, subjects: tuple[int, int, int] = (6, 2, 2),
                  studies_per_subject: int = 2, missing_report: bool = True) -> SyntheticRelease:
    """Write a synthetic release under ``root`` (see the module docstring for the layout)."""
    rng = random.Random(seed)
    studies: list[SyntheticStudy] = []
    used: set[str] = set()

    def fresh(index: int) -> str:
        while True:
            value = random_ids(rng)[index]
            if value not in used:
                used.add(value)
                return value

    counter = 0
    for split, n_subjects in zip(("train", "validate", "test"), subjects, strict=True):
        for _ in range(n_subjects):
            subject = fresh(0)
            for _ in range(studies_per_subject):
                kind = KINDS[counter % len(KINDS)]
                counter += 1
                n_images = 1 + counter % 3
                views = ["LATERAL", "PA", "AP"][:n_images] if counter % 2 else ["PA", "LATERAL", "LL"][:n_images]
                dicoms = [fresh(2) for _ in range(n_images)]
                text, findings, impression = _report(kind, rng)
                studies.append(SyntheticStudy(subject, fresh(1), split, dicoms, views, kind, text, findings, impression,
                                              _label_row(rng), _label_row(rng)))
    if missing_report:  # a train study whose report the release lacks (R2Gen drops its images)
        victim = next(s for s in studies if s.split == "train" and s.kind == "standard")
        victim.report, victim.findings, victim.impression = None, "", ""

    release = SyntheticRelease(root, studies)
    jpg, cxr = release.jpg_dir, release.cxr_dir
    jpg.mkdir(parents=True)
    cxr.mkdir(parents=True)
    split_rows, meta_rows, image_lines, chex_rows, neg_rows = [], [], [], [], []
    for study in studies:
        for dicom_id, view in zip(study.dicom_ids, study.views, strict=True):
            split_rows.append({"dicom_id": dicom_id, "study_id": study.study_id, "subject_id": study.subject_id,
                               "split": study.split})
            meta_rows.append({"dicom_id": dicom_id, "subject_id": study.subject_id, "study_id": study.study_id,
                              "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                              "Rows": "32", "Columns": "40", "StudyDate": "21800101", "StudyTime": "120000.000",
                              "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                              "ViewCodeSequence_CodeMeaning": view.lower(),
                              "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
            rel = f"files/{study.image_rel(dicom_id)}"
            image_lines.append(rel + "\n")
            (jpg / rel).parent.mkdir(parents=True, exist_ok=True)
            (jpg / rel).write_bytes(_jpeg(rng))
        ids = {"subject_id": study.subject_id, "study_id": study.study_id}
        chex_rows.append(ids | study.chexpert)
        neg_rows.append(ids | study.negbio)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv", ("dicom_id", "study_id", "subject_id", "split"), split_rows)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv", METADATA_COLUMNS, meta_rows)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-chexpert.csv", ("subject_id", "study_id", *OBSERVATIONS), chex_rows)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-negbio.csv", ("subject_id", "study_id", *OBSERVATIONS), neg_rows)
    (jpg / "IMAGE_FILENAMES").write_text("".join(image_lines))
    _sha256sums(jpg)

    with zipfile.ZipFile(cxr / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for study in studies:
            if study.report is not None:
                archive.writestr(f"files/p{study.subject_id[:2]}/p{study.subject_id}/s{study.study_id}.txt", study.report)
    record_rows = [{"subject_id": s.subject_id, "study_id": s.study_id, "dicom_id": d,
                    "path": f"files/p{s.subject_id[:2]}/p{s.subject_id}/s{s.study_id}/{d}.dcm"}
                   for s in studies for d in s.dicom_ids]
    _write_csv_gz(cxr / "cxr-record-list.csv", ("subject_id", "study_id", "dicom_id", "path"), record_rows)
    study_rows = [{"subject_id": s.subject_id, "study_id": s.study_id,
                   "path": f"files/p{s.subject_id[:2]}/p{s.subject_id}/s{s.study_id}.txt"} for s in studies]
    _write_csv_gz(cxr / "cxr-study-list.csv", ("subject_id", "study_id", "path"), study_rows)
    _sha256sums(cxr)
    return release


def extract_local_copy(release: SyntheticRelease, dest: Path) -> Path:
    """A local copy as users often keep it: plain (un-gzipped) CSVs, reports extracted to a files/ tree of .txt."""
    dest.mkdir(parents=True)
    for path in release.jpg_dir.glob("*.csv.gz"):
        (dest / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    for path in (release.jpg_dir / "files").rglob("*.jpg"):
        target = dest / path.relative_to(release.jpg_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    with zipfile.ZipFile(release.cxr_dir / "mimic-cxr-reports.zip") as archive:
        archive.extractall(dest)  # our own synthetic zip: members are plain files/pXX/... paths
    return dest


# ------------------------------------------------------------------------------------------- the server


@dataclass
class PhysioNetServer:
    """Serves ``root`` on 127.0.0.1 like physionet.org/files/: basic auth required, Range supported."""

    root: Path
    username: str
    password: str
    replace: dict[str, bytes] = field(default_factory=dict)
    """URL paths (``/files/...``) served with these bytes instead of the file's."""
    requests: list[tuple[str, bool]] = field(default_factory=list)
    """(URL path, authorised) of every request, in order."""
    base_url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/files/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def served(self, suffix: str) -> int:
        """How many authorised requests asked for a path ending in ``suffix``."""
        return sum(1 for path, ok in self.requests if ok and path.endswith(suffix))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output clean
                pass

            def _empty(self, code: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's dispatch name
                path = self.path.split("?", 1)[0]
                authorised = self.headers.get("Authorization") == expected
                with state._lock:
                    state.requests.append((path, authorised))
                if not authorised:
                    self._empty(401, {"WWW-Authenticate": 'Basic realm="PhysioNet"'})
                    return
                local = (state.root / path.lstrip("/")).resolve()
                if path in state.replace:
                    data = state.replace[path]
                elif local.is_file() and state.root.resolve() in local.parents:
                    data = local.read_bytes()
                else:
                    self._empty(404)
                    return
                start = 0
                spec = self.headers.get("Range")
                if spec and spec.startswith("bytes="):
                    start = int(spec[len("bytes="):].split("-", 1)[0] or 0)
                    if start >= len(data):
                        self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                self.wfile.write(data[start:])

        return Handler


def assert_no_secret(secrets: tuple[str, ...], *, texts: tuple[str, ...] = (), folders: tuple[Path, ...] = ()) -> None:
    """Fail if any secret appears in the given texts or in any file under the folders."""
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a credential appeared in the output"
        for folder in folders:
            for path in (p for p in folder.rglob("*") if p.is_file()):
                assert secret.encode() not in path.read_bytes(), f"a credential was written to {path}"
