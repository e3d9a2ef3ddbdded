"""``mrg label``: the CheXpert labeler's file formats in and out, a summary, and one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mrg.data.chexpert import OBSERVATIONS
from mrg.metrics.labeler import label_reports

REPORTS = [
    "No pleural effusion, no pneumothorax. Mild cardiomegaly.",
    'The "heart" is normal in size.\nThe lungs are clear.',
    "Possible left lower lobe pneumonia.",
]


def _write_reports(path: Path, reports: list[str]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        for report in reports:
            writer.writerow([report])
    return path


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_label_writes_chexpert_format(run_cli, tmp_path: Path) -> None:
    source = _write_reports(tmp_path / "reports.csv", REPORTS)
    out = tmp_path / "new" / "labeled_reports.csv"
    result = run_cli("label", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "3 reports labelled by mrg-chexpert-rules" in result.stdout
    assert "Cardiomegaly" in result.stdout and "uncertain" in result.stdout

    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Reports", *OBSERVATIONS]
    assert [row[0] for row in rows[1:]] == REPORTS  # the original text, quotes and newlines intact
    expected = label_reports(REPORTS)
    for row, labels in zip(rows[1:], expected, strict=True):
        cells = dict(zip(OBSERVATIONS, row[1:], strict=True))
        assert set(cells.values()) <= {"1.0", "0.0", "-1.0", ""}
        assert cells == {obs: "" if obs not in labels else str(labels[obs]) for obs in OBSERVATIONS}
    first = dict(zip(OBSERVATIONS, rows[1][1:], strict=True))
    assert first["Cardiomegaly"] == "1.0" and first["Pleural Effusion"] == "0.0" and first["No Finding"] == ""
    assert dict(zip(OBSERVATIONS, rows[3][1:], strict=True))["Pneumonia"] == "-1.0"


def test_blank_lines_are_skipped_and_bom_ignored(run_cli, tmp_path: Path) -> None:
    source = tmp_path / "reports.csv"
    source.write_bytes("\ufeffNo effusion.\n\n\nMild cardiomegaly.\n".encode())
    out = tmp_path / "out.csv"
    assert run_cli("label", str(source), "--out", str(out)).exit_code == 0
    rows = list(csv.reader(open(out, encoding="utf-8", newline="")))
    assert [row[0] for row in rows[1:]] == ["No effusion.", "Mild cardiomegaly."]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"No effusion, no pneumothorax.\n", "reports.csv:1: found 2 columns, expected one report per row; quote reports"),
        (b"fine report\n\xff\xfe bad bytes\n", "reports.csv: not UTF-8 text"),
        (b"", "reports.csv: no reports found; expected a headerless one-column CSV"),
        (b"\n\n", "reports.csv: no reports found"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "reports.csv"
    source.write_bytes(content)
    out = tmp_path / "out" / "labels.csv"
    result = run_cli("label", str(source), "-o", str(out))
    assert result.exit_code == 1
    assert message in _one_error_line(result)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no half-written or temp file


def test_missing_input_file(run_cli, tmp_path: Path) -> None:
    result = run_cli("label", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "out.csv"))
    assert result.exit_code == 1
    assert "nope.csv: file not found" in _one_error_line(result)
    assert not (tmp_path / "out.csv").exists()


def test_missing_output_option(run_cli, tmp_path: Path) -> None:
    source = _write_reports(tmp_path / "reports.csv", REPORTS)
    result = run_cli("label", str(source))
    assert result.exit_code == 1
    assert "--out" in _one_error_line(result)


def test_existing_output_is_replaced_whole(run_cli, tmp_path: Path) -> None:
    source = _write_reports(tmp_path / "reports.csv", ["Small effusion."])
    out = tmp_path / "out.csv"
    out.write_text("old content that is longer than the new file " * 20, encoding="utf-8")
    assert run_cli("label", str(source), "-o", str(out)).exit_code == 0
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith("Small effusion.,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "reports.csv"]  # no temp files left


def test_help_names_the_labeler_honestly(run_cli) -> None:
    result = run_cli("label", "--help")
    assert result.exit_code == 0
    assert "not CheXbert" in result.stdout
