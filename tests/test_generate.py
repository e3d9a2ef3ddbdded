"""``mrg.generate``: reports from a checkpoint of the tiny preset, for a split or for image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrg.errors import CheckpointError, ConfigError, DataError
from mrg.generate import generate_reports, group_images, meta_path_for
from tests import training_fixtures
from tests.builders import write_dicom

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache
tiny_run = training_fixtures.tiny_run

FAST = ["generate.strategy=beam", "generate.max_new_tokens=6", "generate.min_new_tokens=1", "generate.num_beams=2", "generate.batch_size=2"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_split_predictions_in_dataset_order_with_references_and_sidecar(tmp_path: Path, tiny_run, synthetic_data) -> None:
    out = tmp_path / "preds" / "test.jsonl"
    result = generate_reports(tiny_run, out_path=out, split="test", overrides=FAST)
    rows = _rows(out)
    assert [r["id"] for r in rows] == [f"test-{i:03d}" for i in range(5)]  # every test study once, in order
    assert all(set(r) == {"id", "prediction", "reference"} and isinstance(r["prediction"], str) for r in rows)
    assert rows[0]["reference"] == "the heart is normal in size  ."  # cleaned as training targets are (r2gen-iu)
    assert result.num_reports == 5 and result.checkpoint == tiny_run / "step-000002" and result.step == 2
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["checkpoint"] == str((tiny_run / "step-000002").resolve())
    assert meta["generate"]["num_beams"] == 2 and meta["generate"]["strategy"] == "beam"
    assert meta["input"] == {"data": str(synthetic_data), "split": "test", "normalize": "r2gen-iu"}
    assert meta["provenance"]["mrg_version"]


def test_decoding_is_deterministic_for_every_strategy(tmp_path: Path, tiny_run) -> None:
    for strategy in ("beam", "greedy", "sample"):
        first, second = tmp_path / f"{strategy}-1.jsonl", tmp_path / f"{strategy}-2.jsonl"
        for out in (first, second):
            generate_reports(tiny_run, out_path=out, split="val", overrides=[*FAST, f"generate.strategy={strategy}"])
        assert first.read_text() == second.read_text()


def test_batched_generation_equals_one_at_a_time(tmp_path: Path, tiny_run) -> None:
    generate_reports(tiny_run, out_path=tmp_path / "b4.jsonl", split="val", overrides=[*FAST, "generate.batch_size=4",
                                                                                         "generate.strategy=greedy"])
    generate_reports(tiny_run, out_path=tmp_path / "b1.jsonl", split="val", overrides=[*FAST, "generate.batch_size=1",
                                                                                         "generate.strategy=greedy"])
    assert [r["prediction"] for r in _rows(tmp_path / "b4.jsonl")] == [r["prediction"] for r in _rows(tmp_path / "b1.jsonl")]


def _image_files(tmp_path: Path) -> list[Path]:
    """The same kind of pictures as PNG, JPEG and DICOM (MONOCHROME2, 16-bit)."""
    rng = np.random.default_rng(0)
    png, jpeg, dicom = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.dcm"
    Image.fromarray(rng.integers(0, 255, (80, 64), dtype=np.uint8), mode="L").save(png)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").convert("RGB").save(jpeg)
    write_dicom(dicom, rng.integers(0, 4095, (64, 64), dtype=np.uint16))
    return [png, jpeg, dicom]


def test_image_files_png_jpeg_dicom_one_study_each(tmp_path: Path, tiny_run) -> None:
    files = _image_files(tmp_path)
    out = tmp_path / "images.jsonl"
    result = generate_reports(tiny_run, out_path=out, images=files, overrides=FAST)
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"] and result.num_reports == 3
    assert all(set(r) == {"id", "prediction"} for r in rows)  # no references for image files
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["input"]["images"] == [[str(f)] for f in files]


def test_multi_view_studies_from_consecutive_files(tmp_path: Path, tiny_run) -> None:
    files = _image_files(tmp_path)[:2] * 2  # two studies of (frontal, lateral)
    studies, ids = group_images(files, 2)
    assert [len(s) for s in studies] == [2, 2] and ids == [str(files[0]), str(files[2])]  # same names: ids are paths
    generate_reports(tiny_run, out_path=tmp_path / "mv.jsonl", images=files, images_per_study=2, overrides=FAST)
    assert len(_rows(tmp_path / "mv.jsonl")) == 2
    with pytest.raises(ConfigError, match="do not divide into studies of 2"):
        group_images(files[:3], 2)


def test_an_unreadable_image_names_the_file_and_writes_nothing(tmp_path: Path, tiny_run) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "x.jsonl"
    with pytest.raises(DataError, match="broken.png"):
        generate_reports(tiny_run, out_path=out, images=[broken], overrides=FAST)
    assert not out.exists() and not meta_path_for(out).exists()
    with pytest.raises(DataError, match="image file not found: .*missing.png"):
        generate_reports(tiny_run, out_path=out, images=[tmp_path / "missing.png"], overrides=FAST)


def test_only_generate_settings_can_be_overridden(tmp_path: Path, tiny_run) -> None:
    with pytest.raises(ConfigError, match="'model.promptbook.num_tokens' cannot change at generation"):
        generate_reports(tiny_run, out_path=tmp_path / "x.jsonl", split="test", overrides=["model.promptbook.num_tokens=2"])
    with pytest.raises(ConfigError, match="unknown config key 'generate.beams'.*Did you mean 'num_beams'"):
        generate_reports(tiny_run, out_path=tmp_path / "x.jsonl", split="test", overrides=["generate.beams=2"])


def test_input_must_be_a_split_or_images(tmp_path: Path, tiny_run) -> None:
    with pytest.raises(ConfigError, match="either --split"):
        generate_reports(tiny_run, out_path=tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="either --split"):
        generate_reports(tiny_run, out_path=tmp_path / "x.jsonl", split="test", images=[tmp_path / "a.png"])


def test_checkpoint_problems_are_checkpoint_errors(tmp_path: Path, tiny_run) -> None:
    with pytest.raises(CheckpointError, match="no 'best' checkpoint in this run \\(no validation has run yet\\)"):
        generate_reports(tiny_run / "best", out_path=tmp_path / "x.jsonl", split="test")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        generate_reports(tmp_path / "nowhere", out_path=tmp_path / "x.jsonl", split="test")
