"""``mrg prepare iu-xray`` end to end: loopback Open-i downloads, local sources, protocols, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import shared_path
from tests.data import conftest as data_fixtures
from tests.data.conftest import FakeReport, build_openi_archives, default_reports, make_tgz, openi_xml

# the loopback Open-i fixtures live with the data tests; these names make them usable here
file_server = data_fixtures.file_server
openi_archives = data_fixtures.openi_archives
iu_env = data_fixtures.iu_env

PNG_PATH = "imgs/collections/NLMCXR_png.tgz"
REPORTS_PATH = "imgs/collections/NLMCXR_reports.tgz"


def _read(out: Path, name: str):
    return json.loads((out / name).read_text(encoding="utf-8"))


def _studies(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "studies.jsonl").read_text(encoding="utf-8").splitlines()]


def _assert_failed(result, *needles: str) -> None:
    """Exit 1 with exactly one ``error:`` line on stderr that names what is wrong."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors and errors[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error:") for line in errors) == 1
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in errors[-1], errors[-1]


def _assert_no_output(out: Path) -> None:
    assert not (out / "prepare.json").exists()
    assert not (out / "annotation.json").exists()


def test_download_and_prepare_with_r2gen_protocol(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out))
    assert result.exit_code == 0, result.output
    annotation = _read(out, "annotation.json")
    assert {k: [e["id"] for e in v] for k, v in annotation.items()} == {
        "train": ["CXR1_1_IM-0001", "CXR2_IM-0002", "CXR5_IM-0005-1001", "CXR9_IM-0009"],
        "val": ["CXR6_IM-0006"],
        "test": ["CXR8_IM-0008", "CXR10_IM-0010"],
    }
    first = annotation["train"][0]
    assert first == {"id": "CXR1_1_IM-0001", "report": "Heart size XXXX. Lungs clear.",
                     "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"], "split": "train"}
    three = next(s for s in _studies(out) if s["id"] == "CXR5_IM-0005-1001")
    assert three["image_paths"] == [f"images/CXR5_IM-0005-1001/{k}.png" for k in range(3)]
    assert annotation["train"][2]["image_path"] == ["CXR5_IM-0005-1001/0.png", "CXR5_IM-0005-1001/1.png"]
    for k, image_id in enumerate(three["extra"]["image_ids"]):  # XML order
        assert (out / f"images/CXR5_IM-0005-1001/{k}.png").read_bytes() == iu_env.archives.png_bytes[f"{image_id}.png"]
    assert three["report_clean"].endswith(" .")
    record = _read(out, "prepare.json")
    assert record["counts"] == {"train": 4, "val": 1, "test": 2}
    assert record["protocol"]["name"] == "r2gen" and record["normalize"] == "r2gen-iu"
    assert record["protocol"]["excluded"] == {"empty_section": 1, "fewer_images": 2, "not_in_split": 0}
    png_sha = hashlib.sha256(iu_env.archives.png_tgz.read_bytes()).hexdigest()
    assert record["checksums"]["source"]["NLMCXR_png.tgz"] == png_sha
    assert png_sha in result.stdout and "--images-sha256" in result.stdout  # how to pin the unknown checksum
    assert (iu_env.cache / "NLMCXR_png.tgz").is_file()

    requests = len(iu_env.server.requests)
    again = run_cli(*iu_env.args(out))
    assert again.exit_code == 0 and "already prepared" in " ".join(again.stdout.split())
    assert len(iu_env.server.requests) == requests  # a finished folder needs no network at all


def test_interrupted_image_download_resumes(iu_env, run_cli, tmp_path: Path) -> None:
    iu_env.server.drop_once.add("/" + PNG_PATH)
    result = run_cli(*iu_env.args(tmp_path / "iu"))
    assert result.exit_code == 0, result.output
    ranges = [r["range"] for r in iu_env.server.requests_for(PNG_PATH)]
    assert ranges[0] is None and ranges[1] is not None  # resumed, not restarted


def test_pinned_images_checksum(iu_env, run_cli, tmp_path: Path) -> None:
    good = hashlib.sha256(iu_env.archives.png_tgz.read_bytes()).hexdigest()
    result = run_cli(*iu_env.args(tmp_path / "ok", "--images-sha256", good))
    assert result.exit_code == 0, result.output
    assert "no published checksum" not in result.stdout
    bad = run_cli(*iu_env.args(tmp_path / "bad", "--cache-dir", str(tmp_path / "c2"), "--images-sha256", "0" * 64))
    _assert_failed(bad, "NLMCXR_png.tgz", "sha256", "expected " + "0" * 64)
    _assert_no_output(tmp_path / "bad")


def test_skip_images_then_add_them(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out, "--skip-images"))
    assert result.exit_code == 0, result.output
    assert not (out / "images").exists()
    assert iu_env.server.requests_for(PNG_PATH) == []  # the big archive is not fetched
    record = _read(out, "prepare.json")
    assert record["images"]["placed"] is False and "--skip-images" in record["images"]["note"]
    assert record["num_images"] == 15  # paths are listed all the same
    skipped_annotation = _read(out, "annotation.json")
    result = run_cli(*iu_env.args(out))
    assert result.exit_code == 0, result.output
    assert _read(out, "annotation.json") == skipped_annotation
    assert _read(out, "prepare.json")["images"]["placed"] is True
    assert len(list((out / "images").rglob("*.png"))) == 15


def test_local_archives_and_folders_give_the_same_dataset(iu_env, run_cli, tmp_path: Path) -> None:
    archives = iu_env.archives
    from_archives = tmp_path / "a"
    result = run_cli("prepare", "iu-xray", "--out", from_archives, "--source", archives.reports_tgz,
                     "--source", archives.png_tgz)
    assert result.exit_code == 0, result.output
    assert iu_env.server.requests == []  # offline
    folder = tmp_path / "extracted"
    with tarfile.open(archives.reports_tgz) as tar:
        tar.extractall(folder / "reports", filter="data")
    with tarfile.open(archives.png_tgz) as tar:
        tar.extractall(folder / "png" / "sub", filter="data")
    from_folders = tmp_path / "f"
    result = run_cli("prepare", "iu-xray", "--out", from_folders, "--source", folder / "reports" / "ecgen-radiology",
                     "--source", folder / "png")
    assert result.exit_code == 0, result.output
    assert _read(from_archives, "annotation.json") == _read(from_folders, "annotation.json")
    for path in (from_archives / "images").rglob("*.png"):
        assert (from_folders / path.relative_to(from_archives)).read_bytes() == path.read_bytes()
    both = tmp_path / "both"  # one folder holding the two downloaded archives
    result = run_cli("prepare", "iu-xray", "--out", both, "--source", archives.reports_tgz.parent)
    assert result.exit_code == 0, result.output
    assert _read(both, "annotation.json") == _read(from_archives, "annotation.json")


def test_image_size_writes_resized_copies(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out, "--image-size", "16", "--workers", "2"))
    assert result.exit_code == 0, result.output
    sizes = set()
    for path in (out / "images").rglob("*.png"):
        with Image.open(path) as img:
            sizes.add(img.size)
    assert sizes == {(20, 16)}  # 40x32 sources, shorter side 16, aspect kept
    assert _read(out, "prepare.json")["images"]["resized_to"] == 16


def test_random_split_and_other_sections_are_labelled(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "rand"
    result = run_cli(*iu_env.args(out, "--skip-images", "--split", "random", "--seed", "5",
                                  "--section", "findings+impression", "--ratios", "0.6,0.2,0.2"))
    assert result.exit_code == 0, result.output
    record = _read(out, "prepare.json")
    assert record["protocol"]["name"] == "custom" and "not R2Gen" in record["protocol"]["label"]
    assert record["protocol"]["seed"] == 5 and record["protocol"]["ratios"] == [0.6, 0.2, 0.2]
    assert sum(record["counts"].values()) == 8  # every report with text and >= 2 images
    assert "not R2Gen" in result.stdout
    again = tmp_path / "rand2"
    run_cli(*iu_env.args(again, "--skip-images", "--split", "random", "--seed", "5",
                         "--section", "findings+impression", "--ratios", "0.6,0.2,0.2"))
    assert _read(out, "annotation.json") == _read(again, "annotation.json")


def test_split_file_option(iu_env, run_cli, tmp_path: Path) -> None:
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["CXR2_IM-0002"], "val": ["CXR6_IM-0006"], "test": ["CXR8_IM-0008"]}))
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out, "--skip-images", "--split", "file", "--split-file", split))
    assert result.exit_code == 0, result.output
    assert _read(out, "prepare.json")["counts"] == {"train": 1, "val": 1, "test": 1}
    _assert_failed(run_cli(*iu_env.args(tmp_path / "x", "--split", "file")), "--split-file")


def test_r2gen_manifest_against_a_partial_source_warns(run_cli, tmp_path: Path) -> None:
    # real R2Gen ids (the shipped manifest), synthetic text: two of the 2,955 studies are present
    reports = [FakeReport(2384, image_ids=["CXR2384_IM-0942-1001", "CXR2384_IM-0942-3001"]),
               FakeReport(3030, image_ids=["CXR3030_IM-1405-1001", "CXR3030_IM-1405-2001"]),
               FakeReport(4000, image_ids=["CXR4000_IM-9999-1001", "CXR4000_IM-9999-2001"])]
    archives = build_openi_archives(tmp_path / "src", reports)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", archives.reports_tgz, "--skip-images")
    assert result.exit_code == 0, result.output
    assert _read(out, "prepare.json")["counts"] == {"train": 1, "val": 0, "test": 1}
    assert "2,953 studies of the split file are not in this source" in result.stderr
    assert "differs from the official NLMCXR_reports.tgz" in result.stderr


# ----------------------------------------------------------------------------------------------- bad input


def test_checksum_mismatch_of_reports_archive(iu_env, run_cli, tmp_path: Path) -> None:
    good = iu_env.archives.reports_tgz.read_bytes()
    iu_env.server.wrong_bytes["/" + REPORTS_PATH] = good[:100] + bytes(b ^ 1 for b in good[100:110]) + good[110:]
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out))
    _assert_failed(result, "NLMCXR_reports.tgz", "expected " + hashlib.sha256(good).hexdigest(), "again")
    _assert_no_output(out)
    assert not (iu_env.cache / "NLMCXR_reports.tgz").exists()
    assert not (iu_env.cache / "NLMCXR_reports.tgz.part").exists()
    iu_env.server.wrong_bytes["/" + REPORTS_PATH] = good[:-10]  # another size than recorded
    _assert_failed(run_cli(*iu_env.args(out)), "NLMCXR_reports.tgz", f"but {len(good):,} are expected", "--base-url")
    _assert_no_output(out)


def test_truncated_image_archive(iu_env, run_cli, tmp_path: Path) -> None:
    data = iu_env.archives.png_tgz.read_bytes()
    cut = tmp_path / "NLMCXR_png.tgz"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", cut)
    _assert_failed(result, str(cut), "truncated or corrupt", "download again")
    _assert_no_output(out)


def test_corrupt_reports_archive(iu_env, run_cli, tmp_path: Path) -> None:
    junk = tmp_path / "NLMCXR_reports.tgz"
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 200)
    result = run_cli("prepare", "iu-xray", "--out", tmp_path / "iu", "--source", junk, "--skip-images")
    _assert_failed(result, str(junk), "truncated or corrupt")
    _assert_no_output(tmp_path / "iu")


def test_path_traversal_member(iu_env, run_cli, tmp_path: Path) -> None:
    files = {f"{k}": v for k, v in iu_env.archives.png_bytes.items()}
    files["../../evil.png"] = b"x"
    evil = make_tgz(tmp_path / "png" / "NLMCXR_png.tgz", files)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", evil)
    _assert_failed(result, str(evil), "../../evil.png", "outside the target folder")
    _assert_no_output(out)
    assert not (tmp_path / "evil.png").exists()


def test_symlink_member(iu_env, run_cli, tmp_path: Path) -> None:
    link = tarfile.TarInfo("CXR2_IM-0002-1001.png")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    evil = make_tgz(tmp_path / "NLMCXR_png.tgz", {"a.png": b"x"}, extra=[link])
    result = run_cli("prepare", "iu-xray", "--out", tmp_path / "iu", "--source", iu_env.archives.reports_tgz,
                     "--source", evil)
    _assert_failed(result, "is a link")


def _special_member(kind: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo("CXR2_IM-0002-1001.png" if kind == "hard link" else f"{kind.replace(' ', '_')}.png")
    if kind == "hard link":
        info.type, info.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    else:
        info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("absolute", "has an absolute path; refusing to extract this archive"),
        ("hard link", "member 'CXR2_IM-0002-1001.png' is a link (to '../../etc/passwd'); refusing to extract"),
        ("device", "member 'device.png' is a device or special file; refusing to extract this archive"),
        ("fifo", "member 'fifo.png' is a device or special file; refusing to extract this archive"),
    ],
)
def test_absolute_hard_link_and_device_members(iu_env, run_cli, tmp_path: Path, kind: str, needle: str) -> None:
    pngs = dict(iu_env.archives.png_bytes)
    extra = []
    outside = tmp_path / "evil.png"
    if kind == "absolute":
        pngs[str(outside)] = b"x"
    else:
        extra.append(_special_member(kind))
    evil = make_tgz(tmp_path / "png" / "NLMCXR_png.tgz", pngs, extra=extra)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", evil)
    _assert_failed(result, str(evil), needle)
    _assert_no_output(out)
    assert not outside.exists()
    # images placed before the bad member stay (each written atomically); the folder is marked unfinished
    assert (out / ".mrg-prepare.json").is_file()
    assert not any(p.is_symlink() or (p.is_file() and p.stat().st_nlink > 1) for p in out.rglob("*"))


def test_empty_archives(run_cli, tmp_path: Path) -> None:
    import zipfile

    zero = tmp_path / "zero" / "NLMCXR_reports.tgz"
    zero.parent.mkdir()
    zero.write_bytes(b"")
    empty_tgz = make_tgz(tmp_path / "tgz" / "NLMCXR_reports.tgz", {})
    empty_zip = tmp_path / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    expected = {zero: f"{zero}: the file is empty (0 bytes), not an archive; delete it and download again",
                empty_tgz: f"--source {empty_tgz}: the archive holds no files",
                empty_zip: f"--source {empty_zip}: the archive holds no files"}
    for path, needle in expected.items():
        out = tmp_path / f"out-{path.parent.name}-{path.suffix}"
        _assert_failed(run_cli("prepare", "iu-xray", "--out", out, "--source", path, "--skip-images"), needle)
        _assert_no_output(out)


def test_a_web_page_saved_under_the_archive_name(run_cli, tmp_path: Path) -> None:
    page = tmp_path / "NLMCXR_reports.tgz"
    page.write_bytes(b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head></html>\n")
    out = tmp_path / "iu"
    _assert_failed(run_cli("prepare", "iu-xray", "--out", out, "--source", page, "--skip-images"),
                   f"{page}: is a web page or XML document, not an archive", "delete it and download again")
    _assert_no_output(out)


def test_zip_where_a_tgz_is_expected(run_cli, tmp_path: Path) -> None:
    import zipfile

    # the format is read from the content, not the name: a zip of the same reports gives the same dataset
    reports = default_reports()
    tgz = make_tgz(tmp_path / "tgz" / "NLMCXR_reports.tgz",
                   {f"ecgen-radiology/{r.uid}.xml": openi_xml(r).encode() for r in reports})
    disguised = tmp_path / "zip" / "NLMCXR_reports.tgz"
    disguised.parent.mkdir()
    with zipfile.ZipFile(disguised, "w") as zf:
        for r in reports:
            zf.writestr(f"ecgen-radiology/{r.uid}.xml", openi_xml(r))
    for name, source in (("a", tgz), ("b", disguised)):
        result = run_cli("prepare", "iu-xray", "--out", tmp_path / name, "--source", source, "--skip-images")
        assert result.exit_code == 0, result.output
    assert _read(tmp_path / "a", "annotation.json") == _read(tmp_path / "b", "annotation.json")
    # a zip of something else (here MIMIC-CXR-style reports) under the Open-i name is refused by its content
    other = tmp_path / "other" / "NLMCXR_reports.tgz"
    other.parent.mkdir()
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("files/p10/p10000032/s50414267.txt", "FINDINGS: none.")
    out = tmp_path / "o"
    _assert_failed(run_cli("prepare", "iu-xray", "--out", out, "--source", other, "--skip-images"),
                   f"--source {other}: this archive holds neither Open-i XML reports nor PNG images")
    _assert_no_output(out)


def test_non_utf8_xml(run_cli, tmp_path: Path) -> None:
    files = {f"ecgen-radiology/{r.uid}.xml": openi_xml(r).encode() for r in default_reports()}
    files["ecgen-radiology/2.xml"] = files["ecgen-radiology/2.xml"].replace(
        b"The heart is normal", "The heart is normal caf\u00e9".encode("latin-1"))  # declares utf-8, holds latin-1
    tgz = make_tgz(tmp_path / "NLMCXR_reports.tgz", files)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", tgz, "--skip-images")
    _assert_failed(result, f"{tgz}:ecgen-radiology/2.xml: not UTF-8 text (byte 0xe9 at line 19,", "re-encoded")
    _assert_no_output(out)


def test_xml_without_findings_or_impression_is_skipped_and_counted(run_cli, tmp_path: Path) -> None:
    import re

    files = {f"ecgen-radiology/{r.uid}.xml": openi_xml(r) for r in default_reports()}
    files["ecgen-radiology/2.xml"] = re.sub(r"<Abstract>.*</Abstract>", "<Abstract/>", files["ecgen-radiology/2.xml"])
    tgz = make_tgz(tmp_path / "NLMCXR_reports.tgz", {k: v.encode() for k, v in files.items()})
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", tgz, "--skip-images")
    assert result.exit_code == 0, result.output
    assert "CXR2_IM-0002" not in {s["id"] for s in _studies(out)}  # R2Gen drops a report without findings too
    assert _read(out, "prepare.json")["protocol"]["excluded"]["empty_section"] == 2
    assert "2 with an empty findings section" in " ".join(result.stdout.split())
    for section in ("findings", "impression"):
        none = make_tgz(tmp_path / section / "NLMCXR_reports.tgz",
                        {"ecgen-radiology/1.xml": re.sub(r"<Abstract>.*</Abstract>", "", files["ecgen-radiology/1.xml"]).encode()})
        result = run_cli("prepare", "iu-xray", "--out", tmp_path / f"none-{section}", "--source", none, "--skip-images",
                         "--split", "random", "--section", section)
        _assert_failed(result, f"no report has a non-empty {section} section")
        _assert_no_output(tmp_path / f"none-{section}")


def test_malformed_xml(run_cli, tmp_path: Path) -> None:
    files = {f"ecgen-radiology/{r.uid}.xml": openi_xml(r).encode() for r in default_reports()}
    files["ecgen-radiology/3.xml"] = files["ecgen-radiology/3.xml"][:-40]
    tgz = make_tgz(tmp_path / "NLMCXR_reports.tgz", files)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", tgz, "--skip-images")
    _assert_failed(result, "ecgen-radiology/3.xml", "malformed XML")
    _assert_no_output(out)


def test_missing_image(iu_env, run_cli, tmp_path: Path) -> None:
    pngs = dict(iu_env.archives.png_bytes)
    del pngs["CXR9_IM-0009-2001.png"]
    partial = make_tgz(tmp_path / "p" / "NLMCXR_png.tgz", pngs)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", partial)
    _assert_failed(result, "CXR9_IM-0009-2001.png", "is missing", "--skip-images")
    _assert_no_output(out)


def test_unreadable_image(iu_env, run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "png"
    folder.mkdir()
    for name, data in iu_env.archives.png_bytes.items():
        (folder / name).write_bytes(data[:30] if name == "CXR6_IM-0006-1001.png" else data)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", folder)
    _assert_failed(result, str(folder / "CXR6_IM-0006-1001.png"), "not a readable PNG")
    _assert_no_output(out)


def _noise_png(mode: str, seed: int = 0) -> bytes:
    import io

    import numpy as np

    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (32, 40), dtype=np.uint8)
    if mode == "RGBA":
        img = Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 90)]), "RGBA")
    elif mode == "P":
        img = Image.fromarray(gray).convert("P")
    elif mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(gray)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("resize", [False, True])
@pytest.mark.parametrize(
    ("damage", "as_copied", "as_resized"),
    [
        ("text", "not a readable PNG image (unrecognised content)",
         "not a PNG, JPEG or DICOM image (unrecognised content)"),
        ("truncated", "not a readable PNG image (", "not a readable image (image file is truncated)"),
    ],
)
def test_bad_image_in_the_archive(iu_env, run_cli, tmp_path: Path, damage: str, as_copied: str, as_resized: str,
                                  resize: bool) -> None:
    pngs = dict(iu_env.archives.png_bytes)
    name = "CXR6_IM-0006-1001.png"
    pngs[name] = b"this is a text file, not a PNG\n" if damage == "text" else _noise_png("L")[:600]
    archive = make_tgz(tmp_path / "png" / "NLMCXR_png.tgz", pngs)
    out = tmp_path / "iu"
    args = ["prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", archive]
    result = run_cli(*args, *(["--image-size", "16", "--workers", "1"] if resize else []))
    _assert_failed(result, f"{archive}:{name}: " + (as_resized if resize else as_copied),
                   "the image archive is damaged: delete it and download again")
    _assert_no_output(out)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".src." in p.name]  # no temporary left


def test_rgba_palette_and_16_bit_pngs_are_read_as_grayscale(iu_env, run_cli, tmp_path: Path) -> None:
    pngs = dict(iu_env.archives.png_bytes)
    odd = {"CXR2_IM-0002-1001.png": "RGBA", "CXR2_IM-0002-2001.png": "P", "CXR6_IM-0006-1001.png": "I;16"}
    for name, mode in odd.items():
        pngs[name] = _noise_png(mode)
    archive = make_tgz(tmp_path / "png" / "NLMCXR_png.tgz", pngs)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--source", archive,
                     "--image-size", "16", "--workers", "1")
    assert result.exit_code == 0, result.output
    placed = {"CXR2_IM-0002-1001.png": out / "images/CXR2_IM-0002/0.png",
              "CXR2_IM-0002-2001.png": out / "images/CXR2_IM-0002/1.png",
              "CXR6_IM-0006-1001.png": out / "images/CXR6_IM-0006/0.png"}
    for name, path in placed.items():
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (20, 16), name


def test_empty_sections_are_skipped_and_all_empty_is_an_error(run_cli, tmp_path: Path) -> None:
    reports = [FakeReport(1, impression=None), FakeReport(2, impression="   "), FakeReport(3, impression="Clear.")]
    archives = build_openi_archives(tmp_path / "src", reports)
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", archives.reports_tgz, "--skip-images",
                     "--section", "impression", "--split", "random")
    assert result.exit_code == 0, result.output
    assert [s["report"] for s in _studies(out)] == ["Clear."]  # an empty report is never written
    assert _read(out, "prepare.json")["protocol"]["excluded"]["empty_section"] == 2
    empty = build_openi_archives(tmp_path / "empty", [FakeReport(1, findings=None), FakeReport(2, findings="")])
    result = run_cli("prepare", "iu-xray", "--out", tmp_path / "e", "--source", empty.reports_tgz, "--skip-images",
                     "--split", "random")
    _assert_failed(result, "NLMCXR_reports.tgz", "no report has a non-empty findings section")
    _assert_no_output(tmp_path / "e")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--section", "summary"], "--section"),
        (["--split", "official"], "--split"),
        (["--ratios", "0.5,0.5"], "--ratios"),
        (["--image-size", "2"], "--image-size"),
        (["--images-sha256", "abc"], "--images-sha256"),
    ],
)
def test_unknown_option_values(iu_env, run_cli, tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "iu"
    result = run_cli(*iu_env.args(out, *args))
    _assert_failed(result, needle)
    assert not out.exists()
    assert iu_env.server.requests == []


def test_out_dir_from_another_source_or_protocol(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "iu"
    assert run_cli(*iu_env.args(out, "--skip-images")).exit_code == 0
    before = (out / "annotation.json").read_bytes()
    result = run_cli(*iu_env.args(out, "--skip-images", "--section", "impression", "--split", "random"))
    _assert_failed(result, str(out), "--force")
    assert (out / "annotation.json").read_bytes() == before and (out / "prepare.json").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _assert_failed(run_cli(*iu_env.args(foreign, "--skip-images")), str(foreign), "not empty")
    assert (foreign / "notes.txt").read_text() == "mine"
    forced = run_cli(*iu_env.args(out, "--skip-images", "--section", "impression", "--split", "random", "--force"))
    assert forced.exit_code == 0, forced.output
    assert _read(out, "prepare.json")["protocol"]["section"] == "impression"


def test_a_run_that_failed_on_bad_input_does_not_block_the_corrected_one(iu_env, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "iu"
    _assert_failed(run_cli("prepare", "iu-xray", "--out", out, "--source", tmp_path / "typo.tgz", "--skip-images"),
                   f"--source {tmp_path / 'typo.tgz'}: not found")
    _assert_no_output(out)
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", iu_env.archives.reports_tgz, "--skip-images")
    assert result.exit_code == 0, result.output  # no --force needed: the failed run had written nothing


# ------------------------------------------------------------------------------------- kill -9 and rerun

# Runs mrg in a child process that, at the point named by MRG_TEST_KILL_AT, says so (a file) and waits to be
# killed: the test then sends SIGKILL from outside, so no clean-up handler of mrg runs.
KILL_HOOK = """
import os, pathlib, sys, time

point = os.environ.get("MRG_TEST_KILL_AT", "")
ready = pathlib.Path(os.environ.get("MRG_TEST_READY", "/nonexistent"))


def wait_for_the_kill():
    ready.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


if point.startswith("download:"):  # after the first chunk of this .part file reached the disk
    import mrg.data.download as download

    part, advance = pathlib.Path(point.split(":", 1)[1]), download._Display.advance

    def advance_then_stop(self, count):
        advance(self, count)
        if part.is_file() and part.stat().st_size > 0:
            wait_for_the_kill()

    download._Display.advance = advance_then_stop
elif point.startswith("replace:"):  # a finished temporary file, before its N-th rename to a name under DIR
    _, n, folder = point.split(":", 2)
    real_replace, calls = os.replace, []

    def replace_then_stop(src, dst, *args, **kwargs):
        if str(dst).startswith(folder):
            calls.append(dst)
            if len(calls) == int(n):
                wait_for_the_kill()
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace_then_stop

from mrg.cli import main

main(sys.argv[1:])
"""


def _mrg_child(tmp_path: Path, args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess | int:
    """Run ``mrg ARGS`` in a child process; with ``kill_at``, SIGKILL it there and return its exit status."""
    import os
    import signal
    import sys
    import time

    hook = tmp_path / "kill_hook.py"
    hook.write_text(KILL_HOOK)
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    env = {**os.environ, "MRG_TEST_READY": str(ready)}
    env.pop("MRG_TEST_KILL_AT", None)
    if kill_at is None:
        return subprocess.run([sys.executable, str(hook), *args], env=env, capture_output=True, text=True, timeout=120)
    env["MRG_TEST_KILL_AT"] = kill_at
    child = subprocess.Popen([sys.executable, str(hook), *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never reached {kill_at}: {child.communicate()[0]}")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)
    return child.returncode


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``; prepare.json without what describes the run rather than the data."""
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "prepare.json":
            record = json.loads(data)
            record.pop("provenance")  # time and command line
            record["images"].pop("written", None)  # how many files this run wrote (a resumed run keeps some)
            data = json.dumps(record, sort_keys=True).encode()
        digests[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return digests


def _download_args(iu_env, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["prepare", "iu-xray", "--out", str(out), "--cache-dir", str(cache),
            "--base-url", iu_env.server.url("imgs/collections"), *extra]


@pytest.mark.slow
def test_kill_9_during_the_image_download_then_rerun(iu_env, tmp_path: Path) -> None:
    import random

    filler = random.Random(0).randbytes(3 << 20)  # > 1 MiB, so the kill lands after the first chunk, mid-transfer
    big = make_tgz(tmp_path / "big" / "NLMCXR_png.tgz", {**iu_env.archives.png_bytes, "zz/filler.bin": filler})
    iu_env.server.add(PNG_PATH, big.read_bytes())
    out, cache = tmp_path / "iu", tmp_path / "cache"
    part = cache / "NLMCXR_png.tgz.part"
    assert _mrg_child(tmp_path, _download_args(iu_env, out, cache), kill_at=f"download:{part}") == -9
    killed_at = part.stat().st_size
    assert 0 < killed_at < big.stat().st_size
    assert not (cache / "NLMCXR_png.tgz").exists()  # only a verified download gets the final name
    assert not (out / "prepare.json").exists()

    rerun = _mrg_child(tmp_path, _download_args(iu_env, out, cache))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert iu_env.server.requests_for(PNG_PATH)[-1]["range"] == f"bytes={killed_at}-"  # resumed, not restarted
    assert not part.exists() and (cache / "NLMCXR_png.tgz").read_bytes() == big.read_bytes()
    clean = _mrg_child(tmp_path, _download_args(iu_env, tmp_path / "clean", tmp_path / "clean-cache"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert _tree_digest(out) == _tree_digest(tmp_path / "clean")


@pytest.mark.slow
@pytest.mark.parametrize(("target", "nth"), [("images", 3), ("annotation.json", 1)])
def test_kill_9_during_prepare_then_rerun(iu_env, tmp_path: Path, target: str, nth: int) -> None:
    out, cache = tmp_path / "iu", tmp_path / "cache"
    args = _download_args(iu_env, out, cache, "--image-size", "16", "--workers", "1")
    assert _mrg_child(tmp_path, args, kill_at=f"replace:{nth}:{out / target}") == -9
    assert not (out / "prepare.json").exists()
    assert [p.name for p in out.rglob(".*.tmp")], "the kill should leave a temporary file behind"
    rerun = _mrg_child(tmp_path, args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not list(out.rglob("*.tmp"))  # the killed run's temporaries are swept on resume
    clean = _mrg_child(tmp_path, _download_args(iu_env, tmp_path / "clean", cache, "--image-size", "16",
                                                "--workers", "1"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert _tree_digest(out) == _tree_digest(tmp_path / "clean")


def test_help_lists_every_option(run_cli) -> None:
    result = run_cli("prepare", "iu-xray", "--help")
    assert result.exit_code == 0
    for option in ("--source", "--cache-dir", "--base-url", "--skip-images", "--images-sha256", "--section",
                   "--split", "--split-file", "--seed", "--ratios", "--min-images", "--image-size", "--workers",
                   "--force"):
        assert option in result.stdout


# ------------------------------------------------------------------------------------------ reference tier


@pytest.mark.reference
def test_reproduces_r2gen_annotation_exactly(run_cli, tmp_path: Path) -> None:
    archive = shared_path("data", "openi", "NLMCXR_reports.tgz")
    expected = json.loads(shared_path("data", "r2gen_iu", "annotation.json").read_text(encoding="utf-8"))
    out = tmp_path / "iu"
    result = run_cli("prepare", "iu-xray", "--out", out, "--source", archive, "--skip-images")
    assert result.exit_code == 0, result.output
    assert "differs from the official" not in result.stderr
    annotation = _read(out, "annotation.json")
    assert {k: len(v) for k, v in annotation.items()} == {"train": 2069, "val": 296, "test": 590}
    assert annotation == expected  # ids, splits, report texts, image_path lists and order
    record = _read(out, "prepare.json")
    assert record["protocol"]["reports_parsed"] == 3955 and record["protocol"]["missing_from_source"] == 0
    assert record["protocol"]["excluded"] == {"empty_section": 530, "fewer_images": 470, "not_in_split": 0}

