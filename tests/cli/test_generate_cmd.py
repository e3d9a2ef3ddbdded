"""``mrg generate``: the command on a tiny-preset run, image inputs, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests import training_fixtures

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache
tiny_run = training_fixtures.tiny_run

FAST = ["generate.max_new_tokens=5", "generate.min_new_tokens=1", "generate.num_beams=2"]


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_generate_a_split(run_cli, tmp_path: Path, tiny_run) -> None:
    out = tmp_path / "test.jsonl"
    result = run_cli("generate", "--checkpoint", tiny_run / "last", "--split", "test", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "5 reports from" in result.stdout and "reports/s" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all({"id", "prediction", "reference"} == set(r) for r in rows)
    assert json.loads((tmp_path / "test.jsonl.meta.json").read_text())["generate"]["max_new_tokens"] == 5


def test_generate_image_files(run_cli, tmp_path: Path, tiny_run) -> None:
    files = []
    for name in ("p1_frontal.png", "p1_lateral.png", "p2_frontal.png", "p2_lateral.png"):
        Image.fromarray(np.full((64, 64), 100, dtype=np.uint8), mode="L").save(tmp_path / name)
        files.append(tmp_path / name)
    out = tmp_path / "images.jsonl"
    result = run_cli("generate", "--checkpoint", tiny_run, "--images", *files, "--images-per-study", "2", "--out", out,
                     "generate.strategy=greedy", *FAST)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p1_frontal", "p2_frontal"]


def test_generate_bad_input_is_one_line(run_cli, tmp_path: Path, tiny_run) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(image)
    assert "image files need --images" in _error_line(
        run_cli("generate", "--checkpoint", tiny_run, "--out", tmp_path / "o.jsonl", image))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM? no")
    line = _error_line(run_cli("generate", "--checkpoint", tiny_run, "--images", broken, "--out", tmp_path / "o.jsonl"))
    assert "broken.dcm" in line
    assert not (tmp_path / "o.jsonl").exists()
    line = _error_line(run_cli("generate", "--checkpoint", tmp_path / "no-run", "--split", "test", "--out", tmp_path / "o.jsonl"))
    assert "checkpoint not found" in line
    line = _error_line(run_cli("generate", "--checkpoint", tiny_run, "--split", "test", "--out", tmp_path / "o.jsonl",
                               "model.llm.dtype=float16"))
    assert "'model.llm.dtype' cannot change at generation" in line
    line = _error_line(run_cli("generate", "--checkpoint", tiny_run, "--split", "tset", "--out", tmp_path / "o.jsonl"))
    assert line == "error: --split tset: not a split; use test, val or train"


def test_prepare_train_generate_evaluate_end_to_end(run_cli, tmp_path: Path, model_cache) -> None:
    """mrg prepare synthetic -> mrg train (validated by mrg evaluate's scorer) -> mrg generate -> mrg evaluate."""
    data, run, preds = tmp_path / "data", tmp_path / "run", tmp_path / "test.jsonl"
    assert run_cli("prepare", "synthetic", "--n", "40", "--image-size", "64", "--out", data).exit_code == 0
    fast = ["generate.max_new_tokens=8", "generate.min_new_tokens=1", "generate.num_beams=2"]
    result = run_cli("train", "--config", "tiny", "--out", run, f"data.root={data}", "train.max_steps=2",
                     "train.micro_batch_size=4", "train.val_every=1", "train.sanity_val_batches=1", "eval.meteor=false", *fast)
    assert result.exit_code == 0, result.output
    assert "validation at step 2: score" in result.stdout and "bleu_4" in result.stdout
    records = [json.loads(line) for line in (run / "val_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and {"bleu_4", "cider", "rouge_l"} <= set(records[0]["metrics"])
    assert (run / "best").exists()

    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", preds, *fast)
    assert result.exit_code == 0, result.output
    result = run_cli("evaluate", "-p", preds, "--data", data, "-o", tmp_path / "eval", "--no-meteor")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"bleu_4", "rouge_l", "cider", "ce_f1"} <= set(metrics) and 0.0 <= metrics["bleu_4"] <= 1.0
    assert metrics["inputs"]["predictions"] == str(preds) and metrics["inputs"]["references_format"] == "prepared-dataset"
    num_test = len(preds.read_text().splitlines())
    assert num_test > 0 and f"{num_test} items" in result.stdout
