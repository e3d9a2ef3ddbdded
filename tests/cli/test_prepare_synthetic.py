"""``mrg prepare synthetic``: summary and prevalence table, skip on re-run, one-line errors for bad options."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrg.data.prepared import STAMP_NAME, load_prepared_dataset


def test_prepare_synthetic_prints_summary_and_prevalence(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = run_cli("prepare", "synthetic", "--out", out, "--n", "20", "--seed", "1", "--image-size", "64")
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.stdout and "train" in result.stdout and "14" in result.stdout
    assert "Finding prevalence" in result.stdout and "No Finding" in result.stdout
    ds = load_prepared_dataset(out)
    assert len(ds.studies) == 20 and ds.info["source"]["image_size"] == 64
    again = run_cli("prepare", "synthetic", "--out", out, "--n", "20", "--seed", "1", "--image-size", "64")
    assert again.exit_code == 0 and "already prepared" in again.stdout


def test_difficulty_hard_is_recorded_and_described_in_help(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "hard"
    result = run_cli("prepare", "synthetic", "--out", out, "--n", "16", "--image-size", "48", "--difficulty", "hard")
    assert result.exit_code == 0, result.output
    assert "Atelectasis" in result.stdout and "Fracture" in result.stdout  # findings only the hard set draws
    ds = load_prepared_dataset(out)
    assert ds.info["source"]["difficulty"] == "hard" and ds.info["protocol"]["difficulty"] == "hard"
    assert all(s.id.startswith("synth-hard-") for s in ds.studies)
    again = run_cli("prepare", "synthetic", "--out", out, "--n", "16", "--image-size", "48")
    assert again.exit_code == 1 and "difficulty: 'hard' here vs 'easy' now" in again.stderr
    text = run_cli("prepare", "synthetic", "--help", env={"COLUMNS": "200"}).stdout
    assert "--difficulty" in text and "distractors" in text


def test_split_views_and_force(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ("prepare", "synthetic", "--out", out, "--n", "10", "--views", "1", "--split", "0.6,0.2,0.2", "--image-size", "48")
    assert run_cli(*args).exit_code == 0
    ds = load_prepared_dataset(out)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [6, 2, 2]
    assert all(len(s.image_paths) == 1 for s in ds.studies)
    redo = run_cli(*args, "--force")
    assert redo.exit_code == 0 and "already prepared" not in redo.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--views", "3"), "--views 3"),
        (("--image-size", "8"), "--image-size 8"),
        (("--split", "0.5,0.5"), "--split 0.5,0.5"),
        (("--split", "a,b,c"), "--split a,b,c"),
        (("--n", "0"), "--n 0"),
        (("--seed", "-2"), "--seed -2"),
        (("--normal-fraction", "2"), "--normal-fraction 2"),
        (("--workers", "0"), "--workers 0"),
        (("--difficulty", "medium"), "--difficulty medium"),
        (("--n", "many"), "--n"),
    ],
)
def test_bad_option_is_one_line_exit_1(run_cli, tmp_path: Path, args: tuple[str, ...], names: str) -> None:
    out = tmp_path / "synth"
    result = run_cli("prepare", "synthetic", "--out", out, *args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


def test_other_options_into_a_finished_folder_is_refused(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert run_cli("prepare", "synthetic", "--out", out, "--n", "6", "--image-size", "48").exit_code == 0
    stamp = (out / STAMP_NAME).read_bytes()
    result = run_cli("prepare", "synthetic", "--out", out, "--n", "6", "--image-size", "48", "--seed", "5")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--out {out}" in lines[0] and "--force" in lines[0]
    assert (out / STAMP_NAME).read_bytes() == stamp
