"""``mrg evaluate --images DIR --data DATA``: the synthesis table, metrics.json, and one error line for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FAST = ("--image-size", "64", "--classifier-steps", "150")  # as tests/metrics/test_synthesis.py: one cached classifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from mrg.data.sources.synthetic import prepare_synthetic
    from mrg.metrics.synthesis import write_real_as_synthesized

    root = tmp_path_factory.mktemp("synth-cli")
    prepare_synthetic(root / "data", n=120, seed=1, image_size=64, views=1)
    write_real_as_synthesized(root / "data", "test", root / "images", limit=12)
    return root / "data", root / "images"


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_evaluate_images_prints_the_table_and_writes_metrics(run_cli, setup, tmp_path: Path) -> None:
    data, images = setup
    result = run_cli("evaluate", "--images", images, "--data", data, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    for text in ("Consistency F1", "FID", "MS-SSIM", "synthesized", "mean image", "nearest real", "trained",
                 "synthesized minus mean image, consistency F1"):
        assert text in result.stdout
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["kind"] == "image-synthesis" and record["num_images"] == 12
    assert set(record["columns"]) == {"synthesized", "mean_image", "nearest_real"}
    assert "| Consistency F1 |" in (tmp_path / "out" / "metrics.md").read_text()
    again = run_cli("evaluate", "--images", images, "--data", data, "-o", tmp_path / "again.json", *FAST)
    assert again.exit_code == 0 and "reused" in again.stdout  # the cached classifier, not retrained
    assert json.loads((tmp_path / "again.json").read_text())["columns"] == record["columns"]  # --out F.json: a file
    assert "| Consistency F1 |" in (tmp_path / "again.md").read_text()


def test_evaluate_images_errors_are_one_line(run_cli, setup, tmp_path: Path) -> None:
    data, images = setup
    out = tmp_path / "out"
    assert "needs --data" in _one_error_line(run_cli("evaluate", "--images", images, "-o", out))
    assert "folder not found" in _one_error_line(run_cli("evaluate", "--images", tmp_path / "no", "--data", data,
                                                         "-o", out))
    (tmp_path / "empty").mkdir()
    assert "no <id>.png images" in _one_error_line(run_cli("evaluate", "--images", tmp_path / "empty", "--data", data,
                                                           "-o", out))
    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    first = sorted(broken.glob("*.json"))[0]
    meta = json.loads(first.read_text())
    del meta["prompt"]
    first.write_text(json.dumps(meta))
    line = _one_error_line(run_cli("evaluate", "--images", broken, "--data", data, "-o", out))
    assert first.name in line and "'prompt'" in line
    meta["prompt"] = "No acute findings."
    first.write_text(json.dumps(meta))
    first.with_suffix(".png").write_bytes(b"garbage")
    line = _one_error_line(run_cli("evaluate", "--images", broken, "--data", data, "-o", out, *FAST))
    assert first.with_suffix(".png").name in line and "re-run mrg synthesize" in line
    line = _one_error_line(run_cli("evaluate", "--images", images, "--data", tmp_path, "-o", out))
    assert line.startswith(f"error: --data {tmp_path}") and "prepare.json" in line
    assert "give one" in _one_error_line(run_cli("evaluate", "--images", images, "-p", "x.jsonl", "--data", data,
                                                 "-o", out))
    assert "only for --images" in _one_error_line(run_cli("evaluate", "-p", "x.jsonl", "--encoder", "random:vit",
                                                          "-o", out))
    assert "--predictions FILE" in _one_error_line(run_cli("evaluate", "-o", out))
    (tmp_path / "taken.json").mkdir()
    assert "is a folder but ends in .json" in _one_error_line(run_cli("evaluate", "--images", images, "--data", data,
                                                                      "-o", tmp_path / "taken.json"))
    assert "at least 1" in _one_error_line(run_cli("evaluate", "--images", images, "--data", data, "-o", out,
                                                   "--classifier-steps", "0"))
