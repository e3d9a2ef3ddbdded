"""IU X-ray: XML parsing, the R2Gen protocol rules, other protocols, image placement."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from PIL import Image

from mrg.data.sources.iu_xray import (
    IUReport,
    IUStudy,
    parse_ratios,
    parse_report_xml,
    place_images,
    read_reports,
    select_studies,
    study_id_from_image,
)
from mrg.errors import ArchiveError, ConfigError, DataError
from tests.conftest import REPO_ROOT, shared_path
from tests.data.conftest import FakeReport, default_reports, default_split, make_tgz, openi_xml, tiny_png


def _parse(report: FakeReport) -> IUReport:
    return parse_report_xml(openi_xml(report).encode(), f"ecgen-radiology/{report.uid}.xml")


def test_parse_sections_images_mesh() -> None:
    report = _parse(FakeReport(1, findings="Heart size XXXX. 1. Lungs & pleura clear.", impression=None,
                               comparison="", image_ids=["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
                               major=["Cardiomegaly/borderline", "Opacity/lung/apex/left"],
                               automatic=["calcified granuloma"]))
    assert report.uid == "CXR1" and report.number == 1
    assert report.sections == {"comparison": "", "indication": "Cough.",
                               "findings": "Heart size XXXX. 1. Lungs & pleura clear.", "impression": ""}
    assert report.image_ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert report.mesh_major == ["Cardiomegaly/borderline", "Opacity/lung/apex/left"]
    assert report.mesh_automatic == ["calcified granuloma"]


@pytest.mark.parametrize(
    ("image_id", "study_id"),
    [
        ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001"),
        ("CXR2384_IM-0942-1001", "CXR2384_IM-0942"),
        ("CXR1032_IM-0026-1001-0001", "CXR1032_IM-0026-1001"),
    ],
)
def test_study_id_rule(image_id: str, study_id: str) -> None:
    assert study_id_from_image(image_id) == study_id


def test_malformed_and_foreign_xml_are_named() -> None:
    with pytest.raises(DataError, match=r"ecgen-radiology/7\.xml: malformed XML .*download again"):
        parse_report_xml(b"<eCitation><MeSH></eCitation>", "ecgen-radiology/7.xml")
    with pytest.raises(DataError, match="not an Open-i IU X-ray report"):
        parse_report_xml(b"<html/>", "x.xml")
    with pytest.raises(DataError, match="DOCTYPE"):
        parse_report_xml(b'<!DOCTYPE x [<!ENTITY a "b">]><eCitation/>', "x.xml")


def test_read_reports_from_archive_and_folder(tmp_path: Path) -> None:
    reports = default_reports()
    files = {f"ecgen-radiology/{r.uid}.xml": openi_xml(r).encode() for r in reversed(reports)}
    tgz = make_tgz(tmp_path / "r.tgz", files)
    from_archive = read_reports(tgz)
    assert [r.number for r in from_archive] == sorted(r.uid for r in reports)  # numeric, not text order
    folder = tmp_path / "x" / "ecgen-radiology"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / Path(name).name).write_bytes(data)
    from_folder = read_reports(tmp_path / "x")
    assert [(r.sections, r.image_ids) for r in from_folder] == [(r.sections, r.image_ids) for r in from_archive]
    with pytest.raises(DataError, match="no XML reports found"):
        read_reports(tmp_path)


def test_malformed_member_in_archive_is_named(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "r.tgz", {"ecgen-radiology/1.xml": openi_xml(FakeReport(1)).encode(),
                                        "ecgen-radiology/2.xml": b"<eCitation><uId id='CXR2'/>"})
    with pytest.raises(DataError, match=r"r\.tgz:ecgen-radiology/2\.xml: malformed XML"):
        read_reports(tgz)


def test_r2gen_selection_rules() -> None:
    reports = [_parse(r) for r in default_reports()]
    selection = select_studies(reports, split_ids=default_split())
    assert [s.id for s in selection.studies] == [i for split in ("train", "val", "test") for i in default_split()[split]]
    assert selection.excluded == {"empty_section": 1, "fewer_images": 2, "not_in_split": 0}
    assert selection.missing_from_source == []
    by_id = {s.id: s for s in selection.studies}
    three = by_id["CXR5_IM-0005-1001"]
    assert three.image_paths == [f"images/CXR5_IM-0005-1001/{k}.png" for k in range(3)]
    assert three.annotation_entry()["image_path"] == ["CXR5_IM-0005-1001/0.png", "CXR5_IM-0005-1001/1.png"]
    assert isinstance(three, IUStudy)
    first = by_id["CXR1_1_IM-0001"]
    assert first.report == "Heart size XXXX. Lungs clear."  # findings, unchanged
    assert first.sections["impression"] == "1. No acute disease. 2. Stable."
    assert first.extra["mesh_major"] == ["Cardiomegaly/borderline"] and first.extra["xml"] == "1.xml"


def test_split_file_subset_and_unknown_ids() -> None:
    reports = [_parse(r) for r in default_reports()]
    split = {"train": ["CXR2_IM-0002", "CXR404_IM-0404"], "val": [], "test": ["CXR9_IM-0009"]}
    selection = select_studies(reports, split="file", split_ids=split)
    assert [(s.id, s.split) for s in selection.studies] == [("CXR2_IM-0002", "train"), ("CXR9_IM-0009", "test")]
    assert selection.missing_from_source == ["CXR404_IM-0404"]
    assert selection.excluded["not_in_split"] == 5


def test_other_sections_skip_empty_reports() -> None:
    reports = [_parse(r) for r in default_reports()]
    impression = select_studies(reports, section="impression", split="random", seed=3)
    assert all(s.report.strip() for s in impression.studies)
    assert impression.excluded["empty_section"] == 2  # reports 6 and 8 have no impression
    both = select_studies(reports, section="findings+impression", split="random", seed=3, min_images=1)
    by_uid = {s.extra["uid"]: s for s in both.studies}
    assert by_uid["CXR3"].report == "No acute disease."  # empty findings: impression alone
    assert by_uid["CXR2"].report == "The heart is normal in size. The lungs are clear. No acute disease."
    assert "CXR4" in by_uid  # one image is enough with min_images=1


def test_random_split_is_seeded_and_covers_every_study() -> None:
    reports = [_parse(FakeReport(uid)) for uid in range(1, 101)]
    first = select_studies(reports, split="random", seed=7, ratios=(0.7, 0.1, 0.2))
    again = select_studies(reports, split="random", seed=7, ratios=(0.7, 0.1, 0.2))
    other = select_studies(reports, split="random", seed=8, ratios=(0.7, 0.1, 0.2))
    assignment = {s.id: s.split for s in first.studies}
    assert assignment == {s.id: s.split for s in again.studies}
    assert assignment != {s.id: s.split for s in other.studies}
    assert collections.Counter(assignment.values()) == {"train": 70, "val": 10, "test": 20}


def test_parse_ratios() -> None:
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "0.7,0.2,0.2", "a,b,c", "0,0.5,0.5", "-0.1,0.6,0.5"):
        with pytest.raises(ConfigError, match="--ratios"):
            parse_ratios(bad)


def test_duplicate_ids_are_refused() -> None:
    reports = [_parse(FakeReport(2)), _parse(FakeReport(2))]
    with pytest.raises(DataError, match="same study id CXR2_IM-0002"):
        select_studies(reports, split="random")


def _studies(tmp_path: Path) -> tuple[list[IUStudy], dict[str, bytes]]:
    reports = [_parse(r) for r in default_reports()]
    studies = select_studies(reports, split_ids=default_split()).studies
    pngs = {image_id: tiny_png(i, size=(60, 40)) for i, image_id in
            enumerate(i for s in studies for i in s.extra["image_ids"])}
    return studies, pngs


def test_place_images_from_folder_and_resume(tmp_path: Path) -> None:
    studies, pngs = _studies(tmp_path)
    src = tmp_path / "png"
    (src / "nested").mkdir(parents=True)
    for image_id, data in pngs.items():
        (src / "nested" / f"{image_id}.png").write_bytes(data)
    out = tmp_path / "out"
    written = place_images(out, studies, kind="folder", path=src, size=None, workers=1, redo=False)
    assert written == sum(len(s.image_paths) for s in studies)
    for study in studies:
        for image_id, rel in zip(study.extra["image_ids"], study.image_paths, strict=True):
            assert (out / rel).read_bytes() == pngs[image_id]
    assert place_images(out, studies, kind="folder", path=src, size=None, workers=1, redo=False) == 0
    assert place_images(out, studies, kind="folder", path=src, size=None, workers=1, redo=True) == written


@pytest.mark.parametrize("workers", [1, 2])
def test_place_images_resized_from_archive(tmp_path: Path, workers: int) -> None:
    studies, pngs = _studies(tmp_path)
    tgz = make_tgz(tmp_path / "png.tgz", {f"{k}.png": v for k, v in pngs.items()})
    out = tmp_path / "out"
    place_images(out, studies, kind="archive", path=tgz, size=20, workers=workers, redo=False)
    for study in studies:
        for rel in study.image_paths:
            with Image.open(out / rel) as img:
                assert img.size == (30, 20) and img.mode == "L"


def test_missing_and_unreadable_images_are_named(tmp_path: Path) -> None:
    studies, pngs = _studies(tmp_path)
    gone = "CXR5_IM-0005-1001-0002"
    tgz = make_tgz(tmp_path / "png.tgz", {f"{k}.png": v for k, v in pngs.items() if k != gone})
    with pytest.raises(DataError, match=rf"image {gone}\.png \(study CXR5_IM-0005-1001, report 5\.xml\) is missing"):
        place_images(tmp_path / "o1", studies, kind="archive", path=tgz, size=None, workers=1, redo=False)
    bad = make_tgz(tmp_path / "bad.tgz", {f"{k}.png": (b"garbage" if k == gone else v) for k, v in pngs.items()})
    with pytest.raises(DataError, match=rf"bad\.tgz:{gone}\.png: not a readable PNG.*delete it and download again"):
        place_images(tmp_path / "o2", studies, kind="archive", path=bad, size=None, workers=1, redo=False)
    with pytest.raises(DataError, match=rf"{gone}\.png: not a PNG, JPEG or DICOM image \(unrecognised content\); "
                                        "the image archive is damaged"):
        place_images(tmp_path / "o3", studies, kind="archive", path=bad, size=16, workers=2, redo=False)
    folder = tmp_path / "folder"
    folder.mkdir()
    for k, v in pngs.items():
        (folder / f"{k}.png").write_bytes(b"\x89PNG broken" if k == gone else v)
    with pytest.raises(DataError, match=rf"folder/{gone}\.png: not a readable PNG.*replace the file"):
        place_images(tmp_path / "o4", studies, kind="folder", path=folder, size=None, workers=1, redo=False)


def test_truncated_image_archive(tmp_path: Path) -> None:
    studies, pngs = _studies(tmp_path)
    tgz = make_tgz(tmp_path / "png.tgz", {f"{k}.png": v for k, v in pngs.items()})
    tgz.write_bytes(tgz.read_bytes()[:-200])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        place_images(tmp_path / "o", studies, kind="archive", path=tgz, size=None, workers=1, redo=False)


def test_shipped_split_manifest_has_ids_only() -> None:
    manifest = json.loads((REPO_ROOT / "data_manifests" / "iu_xray" / "r2gen_split.json").read_text())
    assert manifest["counts"] == {"train": 2069, "val": 296, "test": 590}
    assert {k: len(manifest[k]) for k in ("train", "val", "test")} == manifest["counts"]
    every = [i for k in ("train", "val", "test") for i in manifest[k]]
    assert len(set(every)) == 2955
    assert all(i.startswith("CXR") and " " not in i for i in every)
    archives = json.loads((REPO_ROOT / "data_manifests" / "iu_xray" / "archives.json").read_text())["archives"]
    assert archives["NLMCXR_reports.tgz"]["size"] == 1_112_632
    assert archives["NLMCXR_png.tgz"]["sha256"] is None  # no verified value exists: never invented


@pytest.mark.reference
def test_official_archive_facts() -> None:
    reports = read_reports(shared_path("data", "openi", "NLMCXR_reports.tgz"))
    assert len(reports) == 3955
    per_report = collections.Counter(len(r.image_ids) for r in reports)
    assert per_report == {0: 104, 1: 446, 2: 3208, 3: 181, 4: 15, 5: 1}
    empty = collections.Counter(k for r in reports for k, v in r.sections.items() if not v)
    assert empty == {"comparison": 622, "findings": 530, "indication": 90, "impression": 34}
    assert sum(len(r.mesh_major) for r in reports) == 8298
    assert sum(len(r.mesh_automatic) for r in reports) == 7047
    assert reports[0].image_ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert any("XXXX" in r.sections["findings"] for r in reports)
