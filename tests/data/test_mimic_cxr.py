"""MIMIC-CXR preparation on synthetic releases in the real formats: local trees, protocols, downloads, imports."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from mrg.data.prepared import load_prepared_dataset
from mrg.data.sources.mimic_cxr import (
    MimicOptions,
    ReportStore,
    parse_sha256sums,
    prepare_mimic_cxr,
    read_labels,
    read_split,
    studies_from_annotation,
)
from mrg.errors import ChecksumError, DataError, DownloadError
from tests.data.mimic_fixtures import (
    OBSERVATIONS,
    PhysioNetServer,
    SyntheticRelease,
    build_release,
    extract_local_copy,
)

USER, PASSWORD = "lib-test-user", "lib-test-pass-9"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRelease:
    return build_release(tmp_path_factory.mktemp("mimic") / "release", seed=7)


@pytest.fixture
def server(release: SyntheticRelease, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = PhysioNetServer(release.root, USER, PASSWORD)
    yield srv
    srv.close()


def _annotation(out: Path) -> dict[str, list[tuple[str, str, str]]]:
    data = json.loads((out / "annotation.json").read_text())
    return {split: [(e["id"], e["report"], e["image_path"][0]) for e in entries] for split, entries in data.items()}


def _creds():
    from mrg.data.credentials import Credentials

    return Credentials(USER, PASSWORD, "test")


def test_local_release_gives_r2gen_entries(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_mimic_cxr(out, source=release.root, workers=1)
    expected = release.r2gen_entries()
    assert _annotation(out) == expected
    assert result.record["counts"] == {split: len(rows) for split, rows in expected.items()}
    assert result.record["protocol"]["name"] == "r2gen"
    assert result.record["protocol"]["dropped_images_no_report"] == sum(
        len(s.dicom_ids) for s in release.studies if s.report is None)

    entry = json.loads((out / "annotation.json").read_text())["train"][0]
    study = release.study(str(entry["study_id"]))
    assert entry["subject_id"] == int(study.subject_id) and entry["split"] == "train"

    ds = load_prepared_dataset(out)
    first = ds.studies[0]
    assert first.labels_source == "mimic-cxr-2.0.0-chexpert"
    source = release.study(str(first.extra["study_id"]))
    assert first.labels == {k: float(v) for k, v in source.chexpert.items() if v}
    assert first.sections["findings"] == first.report and "impression" in first.sections
    assert first.report_clean and first.report_clean.endswith(" .")
    for study in ds.studies:  # images are the release's bytes, at R2Gen's layout
        rel = study.image_paths[0]
        assert (out / rel).read_bytes() == (release.jpg_dir / "files" / rel.removeprefix("images/")).read_bytes()


def test_extracted_copy_with_plain_csv_and_txt_reports(release: SyntheticRelease, tmp_path: Path) -> None:
    local = extract_local_copy(release, tmp_path / "local")
    assert not list(local.glob("*.gz")) and list((local / "files").rglob("s*.txt"))
    out = tmp_path / "out"
    prepare_mimic_cxr(out, source=local, options=MimicOptions(labels="negbio"), workers=1)
    assert _annotation(out) == release.r2gen_entries()
    ds = load_prepared_dataset(out)
    assert {s.labels_source for s in ds.studies} == {"mimic-cxr-2.0.0-negbio"}
    study = ds.studies[-1]
    assert study.labels == {k: float(v) for k, v in release.study(str(study.extra["study_id"])).negbio.items() if v}


def test_reports_option_points_elsewhere(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_mimic_cxr(out, source=release.jpg_dir, reports=release.cxr_dir / "mimic-cxr-reports.zip",
                      options=MimicOptions(skip_images=True))
    assert _annotation(out) == release.r2gen_entries()
    assert not (out / "images").exists()


def test_study_unit_puts_frontal_images_first(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_mimic_cxr(out, source=release.root, options=MimicOptions(unit="study", section="findings+impression",
                                                                             labels="none", skip_images=True))
    ds = load_prepared_dataset(out)
    kept = release.kept("findings+impression")
    assert sorted(s.id for s in ds.studies) == sorted(s.study_id for s in kept)
    assert result.record["protocol"]["name"] == "mimic-study-findings+impression"
    assert any("not R2Gen's" in note for note in result.notes)
    reordered = 0
    for entry in ds.studies:
        source = release.study(entry.id)
        assert entry.report == " ".join(t for t in (source.findings, source.impression) if t)
        views = entry.extra["view_positions"]
        assert sorted(views, key=lambda v: v not in ("PA", "AP")) == views  # frontal views first
        assert views == sorted(source.views, key=lambda v: {"PA": 0, "AP": 1}.get(v, 3))
        assert [p.rsplit("/", 1)[1][:-4] for p in entry.image_paths] == entry.extra["dicom_ids"]
        assert entry.labels is None and len(entry.image_paths) == len(source.dicom_ids)
        reordered += views != source.views
    assert reordered  # the fixture has studies whose split file lists a lateral view first


def test_impression_section_keeps_other_studies(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_mimic_cxr(out, source=release.root, options=MimicOptions(section="impression", skip_images=True))
    ids = {e[0] for rows in _annotation(out).values() for e in rows}
    assert ids == {d for s in release.kept("impression") for d in s.dicom_ids}
    assert any(s.kind == "impression_only" for s in release.kept("impression"))


def test_limit_studies_takes_smallest_ids_per_split(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_mimic_cxr(out, source=release.root, options=MimicOptions(limit_studies=2), workers=1)
    ds = load_prepared_dataset(out)
    for split in ("train", "val", "test"):
        kept = sorted((s for s in release.kept() if s.prepared_split == split), key=lambda s: int(s.study_id))[:2]
        assert {str(s.extra["study_id"]) for s in ds.split(split)} == {s.study_id for s in kept}
    assert result.record["protocol"]["studies"] == {"train": 2, "val": 2, "test": 2}
    placed = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.jpg"))
    assert placed == sorted(p.removeprefix("images/") for s in ds.studies for p in s.image_paths)
    assert not any("R2Gen's published" in n for n in result.notes)  # a subset is never compared with the full counts


def test_image_size_resizes_keeping_aspect(release: SyntheticRelease, tmp_path: Path) -> None:
    out = tmp_path / "out"
    record = prepare_mimic_cxr(out, source=release.root, options=MimicOptions(limit_studies=1, image_size=16),
                               workers=1).record
    assert record["images"]["resized_to"] == 16
    for path in (out / "images").rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.size == (20, 16) and img.format == "JPEG"  # 40x32 source, shorter side 16


def test_missing_local_image_names_the_file(release: SyntheticRelease, tmp_path: Path) -> None:
    local = extract_local_copy(release, tmp_path / "local")
    study = release.kept()[0]
    victim = local / "files" / study.image_rel(study.dicom_ids[0])
    victim.unlink()
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"{victim.name}: image file not found.*--skip-images"):
        prepare_mimic_cxr(out, source=local, workers=1)
    assert not (out / "prepare.json").exists()


def test_missing_files_in_source_tree(tmp_path: Path, release: SyntheticRelease) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv"):
        prepare_mimic_cxr(tmp_path / "out", source=empty)
    with pytest.raises(DataError, match="no MIMIC-CXR reports found.*--reports"):
        prepare_mimic_cxr(tmp_path / "out2", source=release.jpg_dir)


def test_csv_problems_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "mimic-cxr-2.0.0-split.csv.gz"
    bad.write_bytes(gzip.compress(b"dicom_id,study_id,subject_id,split\na-b,50000001,10000001,holdout\n"))
    with pytest.raises(DataError, match=rf"{bad}:2: split 'holdout'"):
        read_split(bad)
    bad.write_bytes(gzip.compress(b"dicom_id,study_id,split\n"))
    with pytest.raises(DataError, match="missing column.*subject_id"):
        read_split(bad)
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DataError, match="cannot be read"):
        read_split(bad)
    labels = tmp_path / "labels.csv"
    labels.write_text("subject_id,study_id," + ",".join(OBSERVATIONS) + "\n1,5," + ",".join(["2.0"] * 14) + "\n")
    with pytest.raises(DataError, match=r"labels.csv:2: [A-Za-z ]+ = '2.0'; labels must be"):
        read_labels(labels)
    traversal = tmp_path / "split.csv"
    traversal.write_text("dicom_id,study_id,subject_id,split\n../../x,50000001,10000001,train\n")
    with pytest.raises(DataError, match="must be non-empty ids"):
        read_split(traversal)


def test_sha256sums_parsing(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS.txt"
    sums.write_text(f"{'a' * 64}  files/p10/x.jpg\n{'B' * 64} *./IMAGE_FILENAMES\n\n")
    assert parse_sha256sums(sums) == {"files/p10/x.jpg": "a" * 64, "IMAGE_FILENAMES": "b" * 64}
    sums.write_text("<html>login</html>\n")
    with pytest.raises(DataError, match="SHA256SUMS.txt:1: not a SHA256SUMS line"):
        parse_sha256sums(sums)


def test_report_store_zip_and_tree_normalise_newlines(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "r.zip", "w") as archive:
        archive.writestr("files/p10/p10000001/s50000001.txt", b" FINAL REPORT\r\n FINDINGS:  Clear.\r\n")
    store = ReportStore(tmp_path / "r.zip")
    assert store.get("10000001", "50000001") == " FINAL REPORT\n FINDINGS:  Clear.\n"
    assert store.get("10000001", "59999999") is None
    store.close()
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip: not a readable zip"):
        ReportStore(tmp_path / "bad.zip")


# ------------------------------------------------------------------------------------------- downloads


def test_download_then_rerun_uses_the_cache(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = prepare_mimic_cxr(tmp_path / "out", base_url=server.base_url, cache_dir=cache, credentials_provider=_creds,
                               options=MimicOptions(limit_studies=1), workers=2)
    assert result.record["source"]["mode"] == "physionet"
    assert set(result.record["checksums"]["source"]) == {
        "mimic-cxr-jpg/mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-jpg/mimic-cxr-2.0.0-chexpert.csv.gz",
        "mimic-cxr/mimic-cxr-reports.zip"}
    images = result.record["num_images"]
    assert server.served(".jpg") == images  # only the subset's images
    assert not server.served("metadata.csv.gz") and not server.served("negbio.csv.gz")
    assert not server.served("IMAGE_FILENAMES") and not server.served("cxr-record-list.csv.gz")
    assert (cache / "physionet" / "mimic-cxr-jpg" / "2.1.0" / ".mrg-verified.tsv").is_file()

    before = len(server.requests)
    calls = []
    prepare_mimic_cxr(tmp_path / "out2", base_url=server.base_url, cache_dir=cache,
                      credentials_provider=lambda: calls.append(1) or _creds(), options=MimicOptions(limit_studies=1))
    assert len(server.requests) == before and calls == []  # all cached: no request, no credentials needed


def test_failed_image_download_resumes(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kept = sorted(release.kept(), key=lambda s: int(s.study_id))
    victim = f"/files/mimic-cxr-jpg/2.1.0/files/{kept[0].image_rel(kept[0].dicom_ids[0])}"
    server.replace[victim] = b""  # the server sends an empty body with a 200: the checksum fails
    kwargs = {"retries": 0, "sleep": lambda _s: None}
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=kept[0].dicom_ids[0]):
        prepare_mimic_cxr(out, base_url=server.base_url, cache_dir=tmp_path / "cache", credentials_provider=_creds,
                          download_kwargs=kwargs, workers=1)
    assert not (out / "prepare.json").exists()
    del server.replace[victim]
    zip_requests = server.served("mimic-cxr-reports.zip")
    prepare_mimic_cxr(out, base_url=server.base_url, cache_dir=tmp_path / "cache", credentials_provider=_creds,
                      download_kwargs=kwargs, workers=1)
    assert (out / "prepare.json").is_file()
    assert server.served("mimic-cxr-reports.zip") == zip_requests  # verified in the cache, not fetched again
    assert server.served(victim) == 2


def test_server_errors_are_download_errors(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not found.*--base-url"):
        prepare_mimic_cxr(tmp_path / "out", base_url=server.base_url, version="9.9.9", cache_dir=tmp_path / "c",
                          credentials_provider=_creds)
    with pytest.raises(DataError, match="--base-url: must not contain"):
        prepare_mimic_cxr(tmp_path / "out", base_url="http://u:p@127.0.0.1:1/files/", credentials_provider=_creds)


# ------------------------------------------------------------------------------------ R2Gen annotation


def test_from_annotation_round_trip(release: SyntheticRelease, tmp_path: Path) -> None:
    first = tmp_path / "first"
    prepare_mimic_cxr(first, source=release.root, options=MimicOptions(labels="none"), workers=1)
    r2gen = tmp_path / "r2gen"
    r2gen.mkdir()
    (r2gen / "annotation.json").write_bytes((first / "annotation.json").read_bytes())
    (first / "images").rename(r2gen / "images")  # R2Gen's layout: annotation.json beside images/

    out = tmp_path / "imported"
    result = prepare_mimic_cxr(out, annotation=r2gen / "annotation.json", workers=1)
    assert json.loads((out / "annotation.json").read_text()) == json.loads((r2gen / "annotation.json").read_text())
    assert result.record["protocol"]["name"] == "r2gen-annotation"
    assert result.record["normalize"] == "r2gen-mimic"
    assert all((out / p).is_file() for s in load_prepared_dataset(out).studies for p in s.image_paths)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "x", "report": "  ", "image_path": ["p10/a.jpg"]}, "report is empty"),
        ({"id": "x", "report": "ok", "image_path": ["../../etc/passwd"]}, "without '..'"),
        ({"id": "x", "report": "ok", "image_path": ["/abs.jpg"]}, "relative to images/"),
        ({"id": "x", "report": "ok"}, "needs 'id', 'report' and 'image_path'"),
    ],
)
def test_bad_annotation_entries(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps({"train": [entry], "val": [], "test": []}))
    with pytest.raises(DataError, match=message):
        studies_from_annotation(path)
    path.write_text(json.dumps({"training": []}))
    with pytest.raises(DataError, match="expected R2Gen's"):
        studies_from_annotation(path)
