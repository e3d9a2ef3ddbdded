"""``mrg report``: the command's summary, and one-line errors with nothing written for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import training_fixtures
from tests.training_fixtures import tiny_overrides
from tests.viewer.conftest import PAIRS, make_dataset, make_eval, make_run, parse_html

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_report_command_writes_the_page(run_cli, tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    run = make_run(tmp_path / "run", dataset)
    evaluation = make_eval(tmp_path / "eval", dataset)
    out = tmp_path / "report.html"
    result = run_cli("report", run, evaluation, "--out", out, "--title", "IU <test> run")
    assert result.exit_code == 0, result.output
    assert "1 training run, 1 evaluation, 6 studies" in result.stdout
    assert f"{2 * len(PAIRS)} thumbnails" in result.stdout and f"wrote {out}" in result.stdout
    text = out.read_text(encoding="utf-8")
    assert "<title>IU &lt;test&gt; run</title>" in text

    smaller = tmp_path / "small.html"
    result = run_cli("report", evaluation, "-o", smaller, "--no-images")
    assert result.exit_code == 0, result.output
    assert "thumbnails" not in result.stdout and smaller.stat().st_size < out.stat().st_size


def test_report_command_warns_about_parts_left_out(run_cli, tmp_path: Path) -> None:
    evaluation = make_eval(tmp_path / "eval", None, record_predictions=False, texts_in_per_sample=False)
    result = run_cli("report", evaluation, "--out", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "--predictions" in result.stderr
    assert "0 studies" in result.stdout


def test_folder_without_mrg_files_is_one_line(run_cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.html"
    result = run_cli("report", tmp_path / "empty", "--out", out)
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "empty") in lines[0]
    assert "Traceback" not in result.output and not out.exists()


def test_unreadable_metrics_json_is_one_line(run_cli, tmp_path: Path) -> None:
    evaluation = make_eval(tmp_path / "eval", None)
    (evaluation / "metrics.json").write_text('{"bleu_4": ', encoding="utf-8")
    out = tmp_path / "r.html"
    result = run_cli("report", evaluation, "--out", out)
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "metrics.json: invalid JSON" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".r.html.*"))


def test_bad_options_are_one_line(run_cli, tmp_path: Path) -> None:
    evaluation = make_eval(tmp_path / "eval", None)
    for args, expected in (
        (["--thumbnail-size", "2"], "--thumbnail-size 2"),
        (["--views", "0"], "--views 0"),
        (["--predictions", str(tmp_path / "none.jsonl")], "--predictions"),
        (["--data", str(tmp_path / "nodata")], "--data"),
    ):
        result = run_cli("report", evaluation, "--out", tmp_path / "r.html", *args)
        assert result.exit_code == 1, args
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
    result = run_cli("report", "--out", tmp_path / "r.html")
    assert result.exit_code == 1 and "Missing argument" in result.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_report_of_real_train_generate_evaluate_outputs(run_cli, tmp_path: Path, synthetic_data: Path, model_cache: Path) -> None:
    """The inputs made by the real commands: mrg train (validated) -> mrg generate -> mrg evaluate -> mrg report."""
    run, preds, evaluation, out = tmp_path / "run", tmp_path / "test.jsonl", tmp_path / "eval", tmp_path / "report.html"
    result = run_cli("train", "--config", "tiny", "--out", run, *tiny_overrides(synthetic_data, "train.max_steps=2",
                     "train.val_every=1", "eval.meteor=false"))
    assert result.exit_code == 0, result.output
    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", preds)
    assert result.exit_code == 0, result.output
    result = run_cli("evaluate", "-p", preds, "--data", synthetic_data, "-o", evaluation, "--no-meteor", "--bootstrap", "50")
    assert result.exit_code == 0, result.output

    result = run_cli("report", run, evaluation, "--out", out)
    assert result.exit_code == 0, result.output
    num_test = len(preds.read_text(encoding="utf-8").splitlines())
    assert f"1 training run, 1 evaluation, {num_test} studies, {2 * num_test} thumbnails" in result.stdout
    assert "warning" not in result.stderr, result.stderr
    page, builder = parse_html(out)
    assert not builder.unbalanced
    metrics = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    assert page.find("td", data_key="bleu_4").text() == f"{metrics['bleu_4']:.4f}"
    low = metrics["bootstrap"]["intervals"]["bleu_4"]["low"]
    assert f"{low:.4f}\u2013" in page.find("table", cls="nlg").text()
    # the checkpoint and the dataset are found through the predictions' sidecar and the evaluation's inputs
    summary = {d.find("dt").text(): d.find("dd").text() for d in page.find("section", cls="evaluation").find("dl", cls="summary").find_all("div")}
    best = (run / "best").resolve()
    assert summary["Checkpoint"].startswith(str(best)) and summary["Labeler"].startswith("mrg-chexpert-rules")
    charts = {fig.find("figcaption").text(): fig for fig in page.find_all("figure", cls="chart")}
    assert charts["Training loss"].find("path", cls="line").attrs["data-points"] == "2"
    score = next(fig for title, fig in charts.items() if title.startswith("Validation score"))
    assert score.find("path", cls="line").attrs["data-points"] == "2"
    assert score.find("line", cls="marker").attrs["data-x"] == best.name.split("-")[1].lstrip("0")
    rows = page.find("table", cls="studies").find("tbody").find_all("tr")
    assert len(rows) == num_test and len(page.find("table", cls="studies").find_all("img")) == 2 * num_test
