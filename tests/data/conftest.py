"""Fixtures for the data tests: a loopback HTTP file server and builders of Open-i-format archives.

``file_server`` serves byte strings on 127.0.0.1 (a random port) with HTTP Range support and can
misbehave on purpose: drop the connection half-way once, answer 500 a few times, serve wrong bytes,
ignore Range, or require HTTP basic auth. Every request is logged so tests can see what was asked.

``openi_xml`` / ``build_openi_archives`` write small *synthetic* reports in the real Open-i XML
format (never IU text: the real texts are CC BY-NC-ND) and tiny PNGs, packed as the two Open-i .tgz.
"""

from __future__ import annotations

import base64
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from PIL import Image

# ----------------------------------------------------------------------------------------- HTTP server


@dataclass
class FileServer:
    """State of the loopback server; tests change it between requests."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    drop_once: set[str] = field(default_factory=set)
    """Paths whose next full or ranged answer is cut off half-way (then served normally)."""
    fail_times: dict[str, int] = field(default_factory=dict)
    """Paths answered with HTTP 500 this many more times."""
    wrong_bytes: dict[str, bytes] = field(default_factory=dict)
    """Paths served with these bytes instead of the real ones."""
    ignore_range: bool = False
    auth: tuple[str, str] | None = None
    forbidden: set[str] = field(default_factory=set)
    """Paths answered with 403 even with good credentials (e.g. an unsigned data use agreement)."""
    send_length: bool = True
    requests: list[dict[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        self.files["/" + path.lstrip("/")] = data
        return self.url(path)

    def requests_for(self, path: str) -> list[dict[str, str | None]]:
        return [r for r in self.requests if r["path"] == "/" + path.lstrip("/")]


def _make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
            pass

        def _send_status(self, code: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            path = self.path.split("?", 1)[0]
            header = self.headers.get("Range")
            auth_header = self.headers.get("Authorization")
            with state.lock:
                state.requests.append({"path": path, "range": header, "authorization": auth_header})
            if state.auth is not None:
                expected = "Basic " + base64.b64encode(f"{state.auth[0]}:{state.auth[1]}".encode()).decode()
                if auth_header != expected:
                    self._send_status(401, {"WWW-Authenticate": 'Basic realm="test"'})
                    return
            if path in state.forbidden:
                self._send_status(403)
                return
            if path not in state.files:
                self._send_status(404)
                return
            with state.lock:
                if state.fail_times.get(path, 0) > 0:
                    state.fail_times[path] -= 1
                    fail = True
                else:
                    fail = False
            if fail:
                self._send_status(500)
                return
            data = state.wrong_bytes.get(path, state.files[path])
            start = 0
            if header and not state.ignore_range:
                spec = header.removeprefix("bytes=")
                start = int(spec.split("-", 1)[0])
                if start >= len(data):
                    self._send_status(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if state.send_length:
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            with state.lock:
                drop = path in state.drop_once
                state.drop_once.discard(path)
            if drop:
                self.wfile.write(body[: max(1, len(body) // 2)])
                self.wfile.flush()
                return  # the promised length is not sent: the client sees a cut connection
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # a client that stops reading (a refused checksum, a cancelled batch) is expected here
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def file_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A loopback HTTP server (127.0.0.1, random port) serving ``FileServer.files``."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = FileServer()
    server = _QuietServer(("127.0.0.1", 0), _make_handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------ Open-i format fixtures


@dataclass
class FakeReport:
    """One synthetic Open-i report: sections (None = self-closing empty element), images, MeSH terms."""

    uid: int
    findings: str | None = "The heart is normal in size. The lungs are clear."
    impression: str | None = "No acute disease."
    comparison: str | None = None
    indication: str | None = "Cough."
    image_ids: list[str] | None = None
    major: list[str] = field(default_factory=lambda: ["normal"])
    automatic: list[str] = field(default_factory=list)

    def images(self) -> list[str]:
        if self.image_ids is not None:
            return self.image_ids
        return [f"CXR{self.uid}_IM-{self.uid:04d}-1001", f"CXR{self.uid}_IM-{self.uid:04d}-2001"]


def _section(label: str, text: str | None) -> str:
    if text is None or text == "":
        return f'<AbstractText Label="{label}"/>'
    return f'<AbstractText Label="{label}">{escape(text)}</AbstractText>'


def openi_xml(report: FakeReport) -> str:
    """The XML of a synthetic report, laid out like an Open-i ``ecgen-radiology/<n>.xml`` file."""
    mesh = "".join(f"<major>{escape(t)}</major>" for t in report.major)
    mesh += "".join(f"<automatic>{escape(t)}</automatic>" for t in report.automatic)
    images = "".join(
        f'<parentImage id="{image_id}"><figureId>F{k + 1}</figureId><caption>Xray Chest PA and Lateral</caption>'
        f'<panel type="single"><url>/hadoop/storage/radiology/extract/{image_id}.jpg</url>'
        "<imgModality>7</imgModality><region><globalImageFeatures><CEDD>f1</CEDD></globalImageFeatures></region>"
        "</panel></parentImage>"
        for k, image_id in enumerate(report.images())
    )
    uid = report.uid
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<eCitation>\n<meta type="rr"/>\n<uId id="CXR{uid}"/>\n<pmcId id="{uid}"/>\n<docSource>CXR</docSource>\n'
        f'<IUXRId id="{uid}"/>\n<licenseType>open-access</licenseType>\n'
        "<licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>\n<ccLicense>byncnd</ccLicense>\n"
        "<articleURL/>\n<articleDate>2013-08-01</articleDate>\n<articleType>XR</articleType>\n"
        "<publisher>Indiana University</publisher>\n<title>Synthetic chest x-ray report</title>\n<note/>\n"
        "<specialty>Radiology</specialty>\n<subset>CXR</subset>\n"
        f'<MedlineCitation Owner="Indiana University" Status="supplied"><Article PubModel="Electronic">'
        f"<Journal/><ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle><Abstract>"
        f"{_section('COMPARISON', report.comparison)}{_section('INDICATION', report.indication)}"
        f"{_section('FINDINGS', report.findings)}{_section('IMPRESSION', report.impression)}"
        f"</Abstract></Article></MedlineCitation>\n<MeSH>{mesh}</MeSH>\n{images}\n</eCitation>\n"
    )


def tiny_png(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    """A small grayscale PNG whose pixels depend on ``seed``."""
    img = Image.new("L", size, color=seed % 256)
    img.putpixel((seed % size[0], seed % size[1]), 255 - seed % 256)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def make_tgz(path: Path, files: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """Write a .tgz holding ``files`` (name -> bytes) and optional raw extra members (links, devices...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_455_000_000
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def default_reports() -> list[FakeReport]:
    """A small set covering the Open-i quirks that the R2Gen protocol depends on."""
    return [
        FakeReport(1, findings="Heart size XXXX. Lungs clear.", impression="1. No acute disease. 2. Stable.",
                   image_ids=["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], major=["Cardiomegaly/borderline"],
                   automatic=["calcified granuloma"]),
        FakeReport(2),
        FakeReport(3, findings=None),  # empty findings: R2Gen drops it
        FakeReport(4, image_ids=["CXR4_IM-0004-1001"]),  # one image: R2Gen drops it
        FakeReport(5, image_ids=["CXR5_IM-0005-1001-0001", "CXR5_IM-0005-1001-0002", "CXR5_IM-0005-3001"]),
        FakeReport(6, impression=None, comparison="Prior exam."),
        FakeReport(7, image_ids=[]),  # no images
        FakeReport(8, findings="No focal consolidation. Normal heart.", impression=None),
        FakeReport(9),
        FakeReport(10, findings="Mild scarring at the left base."),
    ]


@dataclass
class OpeniArchives:
    """Paths of a synthetic Open-i download: the two archives and what went into them."""

    reports_tgz: Path
    png_tgz: Path
    reports: list[FakeReport]
    png_bytes: dict[str, bytes]


def build_openi_archives(root: Path, reports: list[FakeReport] | None = None) -> OpeniArchives:
    """Write ``NLMCXR_reports.tgz`` (``ecgen-radiology/<uid>.xml``) and ``NLMCXR_png.tgz`` (``<image id>.png``)."""
    reports = reports if reports is not None else default_reports()
    xml = {f"ecgen-radiology/{r.uid}.xml": openi_xml(r).encode("utf-8") for r in reports}
    pngs = {}
    for r in reports:
        for image_id in r.images():
            pngs[f"{image_id}.png"] = tiny_png(len(pngs) * 37 + r.uid)
    return OpeniArchives(
        reports_tgz=make_tgz(root / "NLMCXR_reports.tgz", xml),
        png_tgz=make_tgz(root / "NLMCXR_png.tgz", pngs),
        reports=reports,
        png_bytes=pngs,
    )


@pytest.fixture
def openi_archives(tmp_path: Path) -> OpeniArchives:
    """The default synthetic Open-i archives in a temporary folder."""
    return build_openi_archives(tmp_path / "openi-src")


def default_split() -> dict[str, list[str]]:
    """An R2Gen-style split file for the eligible studies of ``default_reports()``."""
    return {
        "train": ["CXR1_1_IM-0001", "CXR2_IM-0002", "CXR5_IM-0005-1001", "CXR9_IM-0009"],
        "val": ["CXR6_IM-0006"],
        "test": ["CXR8_IM-0008", "CXR10_IM-0010"],
    }


def write_iu_manifests(root: Path, archives: OpeniArchives, split: dict[str, list[str]] | None = None) -> Path:
    """A ``data_manifests`` folder whose IU X-ray records describe the synthetic archives (for MRG_DATA_MANIFESTS)."""
    import hashlib
    import json

    folder = root / "iu_xray"
    folder.mkdir(parents=True, exist_ok=True)
    reports = archives.reports_tgz.read_bytes()
    record = {
        "base_url": "http://127.0.0.1:1/unused",
        "archives": {
            "NLMCXR_reports.tgz": {"size": len(reports), "md5": hashlib.md5(reports).hexdigest(),
                                   "sha256": hashlib.sha256(reports).hexdigest()},
            "NLMCXR_png.tgz": {"size": None, "md5": None, "sha256": None},
        },
    }
    (folder / "archives.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "r2gen_split.json").write_text(json.dumps(split or default_split()), encoding="utf-8")
    return root


@dataclass
class IUEnv:
    """A loopback Open-i: the server, the synthetic archives it serves, and the manifest folder describing them."""

    server: FileServer
    archives: OpeniArchives
    manifests: Path
    cache: Path

    def args(self, out: Path, *extra: str) -> list[str]:
        return ["prepare", "iu-xray", "--out", str(out), "--cache-dir", str(self.cache),
                "--base-url", self.server.url("imgs/collections"), *extra]


@pytest.fixture
def iu_env(file_server: FileServer, openi_archives: OpeniArchives, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> IUEnv:
    """Serve the synthetic archives at ``<server>/imgs/collections/`` and point mrg's manifests at them."""
    file_server.add("imgs/collections/NLMCXR_reports.tgz", openi_archives.reports_tgz.read_bytes())
    file_server.add("imgs/collections/NLMCXR_png.tgz", openi_archives.png_tgz.read_bytes())
    manifests = write_iu_manifests(tmp_path / "manifests", openi_archives)
    monkeypatch.setenv("MRG_DATA_MANIFESTS", str(manifests))
    monkeypatch.delenv("MRG_IU_XRAY_BASE_URL", raising=False)
    return IUEnv(file_server, openi_archives, manifests, tmp_path / "cache")


# ------------------------------------------------------------------------------- tokenize fixtures

TOKENIZE_REPORTS = {
    "train": ["The heart is normal. The lungs are clear.", "The heart is enlarged. No effusion.",
              "The lungs are clear. No pneumothorax.", "Heart normal. 2. Lungs clear."],
    "val": ["The heart is normal. Small effusion."],
    "test": ["Lungs are hyperinflated. The heart is normal.", "Cardiomegaly."],
}


def make_dataset(root: Path, reports: dict[str, list[str]] | None = None) -> Path:
    """A prepared dataset (no images) in R2Gen IU cleaning, written with the real writer."""
    from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset

    reports = TOKENIZE_REPORTS if reports is None else reports
    source = {"kind": "test-tokenize"}
    prepare_output_dir(root, source, force=False)
    studies = [Study(id=f"{split}{i}", split=split, report=text, image_paths=[])
               for split, texts in reports.items() for i, text in enumerate(texts)]
    write_prepared_dataset(root, studies, source=source, protocol={"name": "unit"}, normalize="r2gen-iu",
                           check_images=False)
    return root


def make_tokenizer(folder: Path) -> Path:
    """A tiny word-level HF tokenizer that adds <s> ... </s>, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(["the heart is normal .", "lungs are clear . no effusion"],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(folder)
    return folder
