"""``mrg evaluate`` on the command line: a summary table, and one error line with exit code 1 for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

PREDS = ["the heart size is normal . the lungs are clear .", "mild cardiomegaly . no effusion .",
         "no pleural effusion or pneumothorax .", "small left pleural effusion .", "the lungs are clear ."]
REFS = ["the heart is normal . lungs are clear .", "there is mild cardiomegaly .", "no pneumothorax .",
        "small left pleural effusion . no pneumothorax .", "clear lungs ."]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _pairs(tmp_path: Path, name: str = "preds.jsonl") -> Path:
    return _write(tmp_path / name, [{"id": f"s{i}", "prediction": p, "reference": r}
                                    for i, (p, r) in enumerate(zip(PREDS, REFS, strict=True))])


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_evaluate_prints_a_table_and_writes_three_files(run_cli, tmp_path: Path) -> None:
    result = run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "--no-meteor", "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    assert "bleu_4" in result.stdout and "ce_f1" in result.stdout and "95% CI" in result.stdout
    assert "differs from R2Gen" in result.stdout
    for name in ("metrics.json", "per_sample.csv", "metrics.md"):
        assert (tmp_path / "out" / name).is_file()
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["protocol"]["config"]["bootstrap"] == 50 and not record["protocol"]["config"]["meteor"]


def test_options_and_overrides_reach_the_config(run_cli, tmp_path: Path) -> None:
    result = run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "--no-meteor", "--no-clinical",
                     "--protocol", "raw", "--ref-max-tokens", "3", "eval.seed=9")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "metrics.json").read_text())["protocol"]["config"]
    assert config["protocol"] == "raw" and config["ref_max_tokens"] == 3 and config["seed"] == 9
    assert not config["clinical"]


def test_compare_prints_the_baseline_and_p_values(run_cli, tmp_path: Path) -> None:
    base = _write(tmp_path / "base.jsonl", [{"id": f"s{i}", "prediction": "no acute findings ."} for i in range(5)])
    result = run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "--no-meteor", "--compare", base)
    assert result.exit_code == 0, result.output
    assert "baseline" in result.stdout and "Δ" in result.stdout


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([{"id": "s0", "prediction": "a", "reference": "b"}, {"prediction": "a", "reference": "b"}],
         r"preds\.jsonl:2: missing or empty 'id'"),
        ([{"id": "s0", "prediction": "a", "reference": "b"}, {"id": "s0", "prediction": "a", "reference": "b"}],
         r"preds\.jsonl:2: duplicate id 's0'"),
        ([{"id": "s0", "prediction": "a"}], r"no references; give --references FILE"),
    ],
)
def test_bad_input_is_one_line(run_cli, tmp_path: Path, rows: list[dict], pattern: str) -> None:
    import re

    path = _write(tmp_path / "preds.jsonl", rows)
    line = _one_error_line(run_cli("evaluate", "-p", path, "-o", tmp_path / "out", "--no-meteor"))
    assert re.search(pattern, line), line
    assert not (tmp_path / "out").exists()


def test_ids_on_one_side_only_are_counted_and_shown(run_cli, tmp_path: Path) -> None:
    refs = _write(tmp_path / "refs.jsonl", [{"id": f"s{i}", "reference": r} for i, r in enumerate(REFS)])
    preds = _write(tmp_path / "p.jsonl", [{"id": f"s{i}", "prediction": p} for i, p in enumerate(PREDS[:3])]
                   + [{"id": "zz", "prediction": "x"}])
    line = _one_error_line(run_cli("evaluate", "-p", preds, "-r", refs, "-o", tmp_path / "out", "--no-meteor"))
    assert "1 of 4 predictions have no reference" in line and "'zz'" in line
    assert "2 references have no prediction" in line and "'s3', 's4'" in line


def test_non_utf8_is_one_line_naming_file_and_line(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_bytes(b'{"id": "s0", "prediction": "a", "reference": "b"}\n{"id": "s1", "prediction": "\xff"}\n')
    line = _one_error_line(run_cli("evaluate", "-p", path, "-o", tmp_path / "out", "--no-meteor"))
    assert "preds.jsonl:2: not UTF-8" in line


def test_unknown_protocol_and_override(run_cli, tmp_path: Path) -> None:
    line = _one_error_line(run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "--protocol", "bleu"))
    assert "--protocol 'bleu' is not one of r2gen, coco, raw" in line
    line = _one_error_line(run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "eval.metoer=false"))
    assert "eval.metoer" in line and "meteor" in line


def test_missing_predictions_file(run_cli, tmp_path: Path) -> None:
    line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "nope.jsonl", "-o", tmp_path / "out", "--no-meteor"))
    assert "nope.jsonl: file not found" in line


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b'{"id": "s0", "prediction": "a", "reference": "b"}\n{"id": "s1", "prediction": "a"\n',
         r"preds\.jsonl:2: invalid JSON \(Expecting ',' delimiter\); each line must be one JSON object"),
        (b"", r"--predictions .*preds\.jsonl: the file is empty"),
        (b"\n  \n\n", r"--predictions .*preds\.jsonl: the file is empty"),
        (b'{"id": "s0", "prediction": 3, "reference": "b"}\n', r"preds\.jsonl:1: 'prediction' must be a string"),
    ],
)
def test_malformed_and_empty_prediction_files(run_cli, tmp_path: Path, content: bytes, pattern: str) -> None:
    import re

    path = tmp_path / "preds.jsonl"
    path.write_bytes(content)
    line = _one_error_line(run_cli("evaluate", "-p", path, "-o", tmp_path / "out", "--no-meteor"))
    assert re.search(pattern, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("res_rows", "gts_rows"), [(5, 4), (4, 5)])
def test_r2gen_csvs_of_different_lengths(run_cli, tmp_path: Path, res_rows: int, gts_rows: int) -> None:
    (tmp_path / "res.csv").write_text("".join(f"{p}\n" for p in PREDS[:res_rows]), encoding="utf-8")
    (tmp_path / "gts.csv").write_text("".join(f"{r}\n" for r in REFS[:gts_rows]), encoding="utf-8")
    line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "res.csv", "-o", tmp_path / "out", "--no-meteor"))
    assert f"res.csv has {res_rows} rows but --references {tmp_path / 'gts.csv'} has {gts_rows}" in line
    assert "pair row by row" in line
    assert not (tmp_path / "out").exists()


def test_empty_predictions_are_counted_not_an_error(run_cli, tmp_path: Path) -> None:
    rows = [{"id": f"s{i}", "prediction": "" if i < 2 else p, "reference": r}
            for i, (p, r) in enumerate(zip(PREDS, REFS, strict=True))]
    rows[1]["prediction"] = "  \n "
    result = run_cli("evaluate", "-p", _write(tmp_path / "p.jsonl", rows), "-o", tmp_path / "out", "--no-meteor")
    assert result.exit_code == 0, result.output
    assert "2 of 5 predictions are empty" in " ".join(result.stderr.split())
    with open(tmp_path / "out" / "per_sample.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["prediction"], r["empty_prediction"]) for r in rows[:3]] == [("s0", "", "1"), ("s1", "", "1"),
                                                                                    ("s2", PREDS[2], "0")]
    assert float(rows[1]["rouge_l"]) == 0.0 and float(rows[1]["cider"]) == 0.0


def test_java_missing_is_one_line(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mrg.metrics.meteor as meteor_module

    monkeypatch.setattr(meteor_module, "_SINGLETON", None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", env={"PATH": str(tmp_path)})
    line = _one_error_line(result)
    assert "METEOR needs Java" in line and "apt-get install default-jre-headless" in line and "--no-meteor" in line
    assert not (tmp_path / "out").exists()


def test_a_jvm_killed_on_every_try_is_one_line_and_writes_nothing(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   python_executable: str) -> None:
    import mrg.metrics.meteor as meteor_module

    # a stand-in for the jar that loads (answers the start-up probe) and then dies on the first real segment
    fake = tmp_path / "fake_meteor.py"
    fake.write_text("import os, signal, sys\n"
                    "for number, line in enumerate(sys.stdin):\n"
                    "    if number == 0:\n"
                    "        print(' '.join(['1.0'] * 23), flush=True)\n"
                    "    else:\n"
                    "        os.kill(os.getpid(), signal.SIGKILL)\n")
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text(f"#!/bin/sh\nexec {python_executable} {fake} \"$@\"\n")
    java.chmod(0o755)
    monkeypatch.setattr(meteor_module, "_SINGLETON", None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = run_cli("evaluate", "-p", _pairs(tmp_path), "-o", tmp_path / "out", "--no-clinical",
                     env={"PATH": str(java.parent)})
    line = _one_error_line(result)
    assert "METEOR's Java process failed 2 times: was killed (SIGKILL); was killed (SIGKILL)" in line and "--no-meteor" in line
    assert not (tmp_path / "out").exists()
