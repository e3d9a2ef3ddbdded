"""The prepared-dataset format: claim/resume/refuse an output folder, write with the stamp last, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mrg.data.prepared import (
    MARKER_NAME,
    STAMP_NAME,
    Study,
    load_prepared_dataset,
    prepare_output_dir,
    write_prepared_dataset,
)
from mrg.errors import DataError, OutputDirError

SOURCE = {"kind": "test", "n": 3}


def _studies(root: Path) -> list[Study]:
    studies = []
    for i, split in enumerate(["train", "val", "test"]):
        rel = f"images/s{i}/0.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=i * 40).save(root / rel)
        studies.append(Study(id=f"s{i}", split=split, report=f"Heart normal. {i}. 2. Lungs clear.", image_paths=[rel],
                             labels={"No Finding": 1.0}, labels_source="test"))
    return studies


def test_write_then_read(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert prepare_output_dir(out, SOURCE, force=False) == "fresh"
    assert (out / MARKER_NAME).is_file()
    record = write_prepared_dataset(out, _studies(out), source=SOURCE, protocol={"name": "unit"}, normalize="r2gen-iu")
    assert record["counts"] == {"train": 1, "val": 1, "test": 1}
    assert not (out / MARKER_NAME).exists() and (out / STAMP_NAME).is_file()
    annotation = json.loads((out / "annotation.json").read_text())
    assert list(annotation) == ["train", "val", "test"]
    assert annotation["train"][0] == {"id": "s0", "report": "Heart normal. 0. 2. Lungs clear.",
                                      "image_path": ["s0/0.png"], "split": "train"}
    ds = load_prepared_dataset(out)
    assert [s.id for s in ds.split("test")] == ["s2"]
    assert ds.split("train")[0].report_clean == "heart normal . 0 . lungs clear ."
    assert ds.normalize == "r2gen-iu"
    assert prepare_output_dir(out, SOURCE, force=False) == "complete"


def test_refuses_other_source_and_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)
    write_prepared_dataset(out, _studies(out), source=SOURCE, protocol={}, normalize="none")
    with pytest.raises(OutputDirError, match="prepared from test with other options"):
        prepare_output_dir(out, {"kind": "test", "n": 4}, force=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="not made by 'mrg prepare'"):
        prepare_output_dir(foreign, SOURCE, force=True)
    assert (foreign / "notes.txt").exists()


def test_force_replaces_other_source(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)
    write_prepared_dataset(out, _studies(out), source=SOURCE, protocol={}, normalize="none")
    assert prepare_output_dir(out, {"kind": "other"}, force=True) == "fresh"
    assert not (out / STAMP_NAME).exists() and not (out / "images").exists()


def test_interrupted_run_resumes_and_is_not_loadable(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)
    (out / "images").mkdir()
    with pytest.raises(DataError, match="interrupted"):
        load_prepared_dataset(out)
    assert prepare_output_dir(out, SOURCE, force=False) == "resume"


def test_resume_sweeps_the_temporaries_of_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)
    (out / "images" / "s0").mkdir(parents=True)
    (out / "images" / "s0" / "0.png").write_bytes(b"kept")
    (out / "images" / "s0" / ".1.png.k3j2x9.tmp").write_bytes(b"half an image")
    (out / ".annotation.json.a8f0q1.tmp").write_bytes(b"{")
    assert prepare_output_dir(out, SOURCE, force=False) == "resume"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        MARKER_NAME, "images/s0/0.png"]


def test_a_claim_with_nothing_written_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)  # a run that failed on bad input right after claiming the folder
    assert prepare_output_dir(out, {"kind": "test", "n": 4}, force=False) == "fresh"
    assert json.loads((out / MARKER_NAME).read_text())["source"] == {"kind": "test", "n": 4}
    (out / "images").mkdir()  # once anything is written, another source needs --force
    with pytest.raises(OutputDirError, match="--force"):
        prepare_output_dir(out, SOURCE, force=False)


def test_writer_rejects_bad_entries(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_output_dir(out, SOURCE, force=False)
    studies = _studies(out)
    studies[1].id = "s0"
    with pytest.raises(DataError, match="appears twice"):
        write_prepared_dataset(out, studies, source=SOURCE, protocol={}, normalize="none")
    studies = _studies(out)
    studies[0].image_paths = ["images/missing.png"]
    with pytest.raises(DataError, match="missing.png is missing"):
        write_prepared_dataset(out, studies, source=SOURCE, protocol={}, normalize="none")
    studies = _studies(out)
    studies[2].report = "  "
    with pytest.raises(DataError, match="empty"):
        write_prepared_dataset(out, studies, source=SOURCE, protocol={}, normalize="none")
    assert not (out / STAMP_NAME).exists()
