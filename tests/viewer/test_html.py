"""The HTML report, checked by parsing the page with the standard library's ``html.parser``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mrg.data.chexpert import OBSERVATIONS
from mrg.errors import DataError
from mrg.viewer import Series, build_report, discover, line_chart
from mrg.viewer.charts import nice_ticks
from mrg.viewer.inputs import read_metrics_csv
from tests.viewer.conftest import (
    BEST_STEP,
    METRICS,
    PAIRS,
    TRAIN_STEPS,
    VAL_STEPS,
    Node,
    make_eval,
    make_run,
    parse_html,
)

RESOURCE_ATTRS = ("src", "href", "srcset", "poster", "data", "action", "formaction", "xlink:href")


def _path_points(d: str) -> int:
    return len(re.findall(r"[ML]-?\d", d))


def _study_rows(page: Node) -> list[Node]:
    return page.find("table", cls="studies").find("tbody").find_all("tr")


@pytest.fixture
def full_report(tmp_path: Path, run_dir: Path, eval_dir: Path, dataset_dir: Path) -> tuple[Node, Path]:
    (dataset_dir / "images" / "CXR0003" / "1.png").unlink()  # one view missing -> a placeholder
    out = tmp_path / "out" / "report.html"
    result = build_report([run_dir, eval_dir], out)
    assert result.path == out and result.runs == 1 and result.evaluations == 1
    assert result.studies == len(PAIRS)
    assert result.thumbnails == 2 * len(PAIRS) - 1 and result.missing_images == 1
    page, builder = parse_html(out)
    assert not builder.unbalanced, f"unbalanced end tags: {builder.unbalanced[:5]}"
    return page, out


# ------------------------------------------------------------------------------------- self-contained


def test_page_is_self_contained(full_report: tuple[Node, Path]) -> None:
    page, out = full_report
    html = page.find("html")
    assert html.attrs["lang"] == "en"
    csp = page.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp and "img-src data:" in csp
    for node in page.iter():
        for attr in RESOURCE_ATTRS:
            value = node.attrs.get(attr)
            if value is None:
                continue
            assert not re.match(r"\s*(https?:)?//", value, re.I), f"<{node.tag} {attr}={value[:60]}> reaches the network"
            if node.tag == "img":
                assert value.startswith("data:image/jpeg;base64,"), value[:40]
            if node.tag == "a":
                assert value.startswith("#"), value
    assert not page.find_all("link"), "stylesheets must be inline"
    assert all("src" not in s.attrs for s in page.find_all("script")), "scripts must be inline"
    assert page.find_all("style") and page.find("style").text().strip()
    text = out.read_text(encoding="utf-8")
    assert "@import" not in text and "url(http" not in text and "@font-face" not in text
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as any file the user makes, not 0600


def test_thumbnails_are_data_uris_of_small_jpegs(full_report: tuple[Node, Path]) -> None:
    import base64
    import io

    page, _ = full_report
    images = page.find("table", cls="studies").find_all("img")
    assert len(images) == 2 * len(PAIRS) - 1
    for img in images:
        data = base64.b64decode(img.attrs["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 96
        assert img.attrs["alt"].startswith("study CXR")
    placeholders = page.find_all("span", cls="noimg")
    assert len(placeholders) == 1 and "missing" in placeholders[0].attrs["aria-label"]


# ----------------------------------------------------------------------------------------- metrics


def test_metric_tables_show_values_and_intervals(full_report: tuple[Node, Path]) -> None:
    page, _ = full_report
    nlg = page.find("table", cls="nlg")
    cells = {td.attrs["data-key"]: td for td in nlg.find_all("td") if "data-key" in td.attrs}
    assert set(cells) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    assert cells["bleu_4"].text() == f"{METRICS['bleu_4']:.4f}"
    ci_cells = [td.text() for td in nlg.find_all("td", cls="ci")]
    assert f"{METRICS['cider'] * 0.9:.4f}\u2013{METRICS['cider'] * 1.1:.4f}" in ci_cells
    assert "95% CI" in nlg.find("thead").text()

    ce = page.find("table", cls="ce")
    assert "mrg-chexpert-rules 1.0" in ce.find("caption").text()
    headline = ce.find("td", data_key="ce_f1")
    assert headline.text().startswith(f"{METRICS['ce_f1']:.4f}")
    assert headline.find("span", cls="ci").text() == f"{METRICS['ce_f1'] * 0.9:.4f}\u2013{METRICS['ce_f1'] * 1.1:.4f}"
    # families absent from metrics.json are left out, not shown empty
    rows = [tr.find("th").text() for tr in ce.find("tbody").find_all("tr")]
    assert len(rows) == 4 and rows[0].startswith("14 observations, micro")
    cards = page.find("div", cls="cards").find_all("div", cls="card")
    assert [c.find("span", cls="k").text() for c in cards][:4] == ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


def test_protocol_and_provenance(full_report: tuple[Node, Path]) -> None:
    page, _ = full_report
    summary = page.find("section", cls="evaluation").find("dl", cls="summary")
    pairs = {div.find("dt").text(): div.find("dd").text() for div in summary.find_all("div")}
    assert pairs["Labeler"].startswith("mrg-chexpert-rules 1.0")
    assert pairs["Items"].startswith(str(len(PAIRS)))
    assert "r2gen-iu" in pairs["Protocol"]
    assert pairs["Checkpoint"] == f"/runs/tiny/step-000030 (step {BEST_STEP})"
    assert pairs["Intervals"].startswith("95% percentile bootstrap, 200 resamples")
    assert "Predictions" in pairs and "Reference truncation" in pairs
    deviations = page.find("div", cls="deviations")
    assert "R2Gen's protocol <exactly> & fully" in deviations.text()


def test_per_observation_counts_come_from_the_labels(full_report: tuple[Node, Path]) -> None:
    from mrg.metrics.clinical import per_observation_table
    from mrg.metrics.labeler import label_reports

    page, _ = full_report
    table = page.find("table", cls="perobs")
    rows = {tr.find("th").text(): [td.text() for td in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")}
    assert list(rows) == list(OBSERVATIONS)
    expected = per_observation_table(label_reports([p for _, p in PAIRS]), label_reports([r for r, _ in PAIRS]))
    cardiomegaly = next(r for r in expected if r["observation"] == "Cardiomegaly")
    assert rows["Cardiomegaly"][:5] == [str(cardiomegaly[k]) for k in ("support", "predicted", "tp", "fp", "fn")]


# ------------------------------------------------------------------------------------------ charts


def test_training_and_validation_charts(full_report: tuple[Node, Path]) -> None:
    page, _ = full_report
    run = page.find("section", cls="run")
    charts = {fig.find("figcaption").text(): fig for fig in run.find_all("figure", cls="chart")}
    loss = charts["Training loss"].find("path", cls="line")
    assert loss.attrs["data-points"] == str(TRAIN_STEPS) and _path_points(loss.attrs["d"]) == TRAIN_STEPS
    assert len(charts["Training loss"].find_all("circle", cls="dot")) == TRAIN_STEPS
    assert "Learning rate" in charts
    score = next(fig for title, fig in charts.items() if title.startswith("Validation score"))
    assert "0.5\u00b7bleu_4 + 0.5\u00b7cider" in score.find("figcaption").text()
    assert _path_points(score.find("path", cls="line").attrs["d"]) == len(VAL_STEPS)
    assert score.find("line", cls="marker").attrs["data-x"] == str(BEST_STEP)
    highlight = score.find("circle", cls="highlight")
    assert f"at step {BEST_STEP}" in highlight.find("title").text()
    for metric in ("bleu_4", "cider", "rouge_l"):
        path = charts[f"Validation {metric}"].find("path", cls="line")
        assert path.attrs["data-points"] == str(len(VAL_STEPS))
    svg = charts["Training loss"].find("svg")
    assert svg.attrs["role"] == "img" and svg.find("title").text() == "Training loss"
    assert "40 points" in svg.find("desc").text()
    best_row = run.find("table", cls="validations").find("tr", cls="best")
    assert best_row.find("th").text().startswith(str(BEST_STEP))


def test_long_series_are_thinned_but_keep_their_extremes() -> None:
    points = [(float(i), 1.0 / (1 + i) + (5.0 if i == 7777 else 0.0)) for i in range(1, 20001)]
    figure = line_chart([Series("loss", points)], title="loss", chart_id="c", max_points=1000)
    page = _parse_fragment(figure)
    path = page.find("path", cls="line")
    drawn = _path_points(path.attrs["d"])
    assert path.attrs["data-points"] == "20000" and int(path.attrs["data-drawn"]) == drawn <= 1002
    assert not page.find_all("circle", cls="dot")  # no dot per point on a long series
    ys = [float(m) for m in re.findall(r",(-?[\d.]+)", path.attrs["d"])]
    assert min(ys) < 30  # the one spike (at step 7777) is kept: it reaches the top of the plot, every other point is low


def test_chart_edge_cases() -> None:
    assert "no data" in line_chart([Series("x", [])], title="empty")
    flat = _parse_fragment(line_chart([Series("x", [(1, 2.0), (2, 2.0)]), Series("y", [(1, float("nan"))])], title="flat"))
    assert flat.find("path", cls="line").attrs["data-points"] == "2"
    assert len(flat.find_all("path", cls="line")) == 1  # the all-NaN series is left out
    assert nice_ticks(0, 1, 5) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.00031, 0.00098, 4) == pytest.approx([0.0004, 0.0006, 0.0008])
    assert nice_ticks(3, 3) == [3]
    escaped = line_chart([Series("<s>", [(0, 1), (1, 2)]), Series("b", [(0, 2)])], title="a<b & \"c\"", chart_id="x")
    assert "<s>" not in escaped and "&lt;s&gt;" in escaped and "a&lt;b &amp; &quot;c&quot;" in escaped


def _parse_fragment(fragment: str) -> Node:
    from tests.viewer.conftest import TreeBuilder

    builder = TreeBuilder()
    builder.feed(fragment)
    return builder.root


# ---------------------------------------------------------------------------------- per-study table


def test_study_table_rows_texts_labels_and_scores(full_report: tuple[Node, Path]) -> None:
    page, out = full_report
    rows = _study_rows(page)
    assert len(rows) == len(PAIRS)
    header = [th.text() for th in page.find("table", cls="studies").find("thead").find_all("th")]
    assert header[:6] == ["#", "id", "image", "generated", "reference", "labels gen | ref"]
    assert header[6:] == ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CE F1"]
    by_id = {row.find("td", cls="id").text(): row for row in rows}
    # escaped text: the page shows the characters, the markup never becomes elements
    html_row = by_id["CXR0006"]
    assert html_row.find("td", cls="gen").text() == PAIRS[5][1]
    assert html_row.find("td", cls="ref").text() == PAIRS[5][0]
    raw = out.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<b>normal</b>" not in raw
    assert len(page.find_all("script")) == 3  # the page's own: the "js" class, metadata JSON, the table script

    # CXR0002: reference says the heart is enlarged, the prediction says normal -> a flagged disagreement
    disagreeing = by_id["CXR0002"]
    assert disagreeing.attrs["data-dis"] == "Cardiomegaly" and "has-dis" in disagreeing.classes
    flagged = disagreeing.find("li", cls="dis")
    assert flagged.find("span", cls="obs").attrs["title"] == "Cardiomegaly"
    marks = [s.attrs["title"] for s in flagged.find_all("span", cls="lv")]
    assert marks == ["gen: negative", "ref: positive"]
    assert by_id["CXR0001"].attrs["data-dis"] == "" and not by_id["CXR0001"].find_all("li", cls="dis")
    assert by_id["CXR0004"].attrs["data-dis"] == "No Finding|Pneumothorax"
    assert by_id["CXR0004"].find("td", cls="lab").attrs["data-v"] == "2"
    # per-study scores, sortable by their data-v
    scores = by_id["CXR0001"].find_all("td", cls="num")[1:]
    assert [td.attrs["data-v"] for td in scores] == ["0.2", "0.25", "0.4", "1.2", "1.0"]
    assert "1 with" not in page.find("section", cls="studies-section").find("p", cls="sub").text()


def test_page_degrades_to_a_static_table_without_javascript(full_report: tuple[Node, Path]) -> None:
    page, _ = full_report
    controls = page.find("div", cls="controls")
    assert "hidden" in controls.attrs  # the script reveals the controls; without it they are not shown
    assert controls.find("input", cls="only-dis") is not None and controls.find("input", type="search") is not None
    assert all("hidden-row" not in row.classes for row in _study_rows(page))  # every row visible
    sortable = [th for th in page.find("table", cls="studies").find("thead").find_all("th") if "data-type" in th.attrs]
    assert len(sortable) == 10 and not page.find("table", cls="studies").find_all("button")
    nav = [a.attrs["href"] for a in page.find("nav").find_all("a")]
    assert nav == ["#eval-1", "#run-1", "#studies-section-1"]
    meta = json.loads(page.find("script", id="report-meta").text())
    assert meta["generator"].startswith("mrg ") and len(meta["sources"]) == 2


# ---------------------------------------------------------------------------------- other sources


def test_run_only_report_shows_the_best_validation_predictions(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "run.html"
    result = build_report([run_dir], out)
    assert (result.runs, result.evaluations, result.studies) == (1, 0, len(PAIRS))
    page, _ = parse_html(out)
    section = page.find("section", cls="studies-section")
    assert f"best step ({BEST_STEP})" in section.find("h2").text()
    assert "mrg-chexpert-rules" in section.find("p", cls="sub").text()  # labelled here
    assert "validation split" in section.text()
    assert len(section.find_all("img")) == 2 * len(PAIRS)  # images through config.yaml's data.root
    assert len(_study_rows(page)) == len(PAIRS)


def test_labels_are_computed_when_per_sample_has_none(tmp_path: Path, dataset_dir: Path) -> None:
    from mrg.data.text import normalize_report
    from mrg.metrics.labeler import label_report

    eval_dir = make_eval(tmp_path / "ev", dataset_dir, labels=False, texts_in_per_sample=False, bootstrap=False)
    out = tmp_path / "r.html"
    build_report([eval_dir], out, images=False)
    page, _ = parse_html(out)
    section = page.find("section", cls="studies-section")
    assert "labelled for this report" in section.find("p", cls="sub").text()
    assert not page.find_all("img") and "image" not in page.find("table", cls="studies").find("thead").text()
    row = _study_rows(page)[1]
    # texts from the predictions file, labelled after the evaluation's cleaner as mrg evaluate labels them
    expected = label_report(normalize_report(PAIRS[1][0], "r2gen-iu"))
    shown = {li.find("span", cls="obs").attrs["title"] for li in row.find_all("li")}
    assert set(expected) <= shown
    assert "95% CI" not in page.find("table", cls="nlg").text()  # no bootstrap, no interval column


def test_explicit_data_and_predictions_and_missing_recorded_files(tmp_path: Path, dataset_dir: Path) -> None:
    eval_dir = make_eval(tmp_path / "ev", dataset_dir, record_predictions=False, sidecar=False, texts_in_per_sample=False)
    result = build_report([eval_dir], tmp_path / "a.html")
    assert result.studies == 0 and any("--predictions" in n for n in result.notes)
    predictions = tmp_path / "ev-predictions.jsonl"
    result = build_report([eval_dir], tmp_path / "b.html", predictions=predictions, data=dataset_dir, max_views=1)
    assert result.studies == len(PAIRS) and result.thumbnails == len(PAIRS)
    page, _ = parse_html(tmp_path / "b.html")
    assert len(page.find_all("img")) == len(PAIRS)


def test_folder_holding_run_and_evaluation_is_searched_one_level_down(tmp_path: Path, dataset_dir: Path) -> None:
    demo = tmp_path / "demo"
    make_run(demo / "train", dataset_dir, symlinks=False)  # pointer files instead of symlinks
    make_eval(demo / "eval", dataset_dir)
    found = discover([demo])
    assert len(found.runs) == 1 and len(found.evaluations) == 1
    assert found.runs[0].best_step == BEST_STEP and found.runs[0].last_step == 40
    assert found.evaluations[0].intervals["bleu_4"] == pytest.approx((METRICS["bleu_4"] * 0.9, METRICS["bleu_4"] * 1.1))
    result = build_report([demo], tmp_path / "demo.html")
    assert (result.runs, result.evaluations, result.studies) == (1, 1, len(PAIRS))
    # an evaluation written inside the run folder is found from the run folder, and named twice it counts once
    make_eval(demo / "train" / "eval", dataset_dir)
    found = discover([demo / "train", demo / "train" / "eval"])
    assert len(found.runs) == 1 and [e.root.name for e in found.evaluations] == ["eval"]


def test_paired_comparison_block(tmp_path: Path, dataset_dir: Path) -> None:
    out = tmp_path / "c.html"
    build_report([make_eval(tmp_path / "ev", dataset_dir, compare=True)], out)
    page, _ = parse_html(out)
    first, folded = page.find_all("table", cls="compare")
    assert "base <1>.jsonl (B)" in first.find("caption").text() and "500 resamples" in first.find("caption").text()
    rows = {tr.find("th").text(): tr for tr in first.find("tbody").find_all("tr")}
    assert list(rows) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CE precision", "CE recall", "CE F1"]
    cider = [td.text() for td in rows["CIDEr"].find_all("td")]
    v = METRICS["cider"]
    assert cider == [f"{v:.4f}", f"{v / 2:.4f}", f"{v / 2:.4f}", f"[{v / 4 - 0.2:.4f}, {v * 0.75:.4f}]", "0.400"]
    assert "sig" in rows["BLEU-4"].classes and "sig" not in rows["CIDEr"].classes
    assert folded.parent.tag == "details" and len(folded.find("tbody").find_all("tr")) == len(METRICS) - 10


def test_two_evaluations_get_a_comparison_table(tmp_path: Path, dataset_dir: Path) -> None:
    first = make_eval(tmp_path / "a", dataset_dir)
    second = make_eval(tmp_path / "b", dataset_dir, bootstrap=False)
    out = tmp_path / "two.html"
    build_report([first, second], out)
    page, _ = parse_html(out)
    comparison = page.find("table", cls="comparison")
    assert len(comparison.find("thead").find_all("th")) == 3
    assert len(page.find_all("table", cls="studies")) == 2
    ids = {t.attrs["id"] for t in page.find_all("table", cls="studies")}
    assert ids == {"studies-1", "studies-2"}


def test_best_step_without_pointers_falls_back_to_meta_then_scores(tmp_path: Path, dataset_dir: Path) -> None:
    run = make_run(tmp_path / "r", dataset_dir)
    (run / "best").unlink()
    assert discover([run]).runs[0].best_step == BEST_STEP  # from the last meta.json's "best"
    shutil.rmtree(run / "step-000030")
    shutil.rmtree(run / "step-000040")
    assert discover([run]).runs[0].best_step == BEST_STEP  # the highest validation score


# -------------------------------------------------------------------------------------- bad input


def test_folder_without_recognised_files_is_one_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty: no training run \(metrics.csv, val_metrics.jsonl\), evaluation .*, analysis \(analysis.json\) or answers"):
        build_report([empty], tmp_path / "r.html")
    with pytest.raises(DataError, match="folder not found"):
        build_report([tmp_path / "nope"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_damaged_files_name_the_file(tmp_path: Path, dataset_dir: Path) -> None:
    eval_dir = make_eval(tmp_path / "ev", dataset_dir)
    (eval_dir / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.json: invalid JSON at line 1"):
        build_report([eval_dir], tmp_path / "r.html")
    (eval_dir / "metrics.json").write_bytes(b'{"bleu_4": 0.1, "x": "\xff"}')
    with pytest.raises(DataError, match=r"metrics.json: not UTF-8"):
        build_report([eval_dir], tmp_path / "r.html")
    (eval_dir / "metrics.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.json: expected a JSON object"):
        build_report([eval_dir], tmp_path / "r.html")

    run = make_run(tmp_path / "run", dataset_dir)
    with open(run / "metrics.csv", "a", encoding="utf-8") as handle:
        handle.write("41,train/loss,oops,1\n")
    with pytest.raises(DataError, match=r"metrics.csv:\d+: step '41' or value 'oops' is not a number"):
        build_report([run], tmp_path / "r.html")
    (run / "metrics.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"metrics.csv: header a,b lacks name, step, value"):
        build_report([run], tmp_path / "r.html")
    (run / "metrics.csv").unlink()
    (run / "val_metrics.jsonl").write_text('{"step": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"val_metrics.jsonl:2: invalid JSON"):
        build_report([run], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_wide_metrics_csv_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,lr\n1,2.0,0.1\n2,1.5,\n", encoding="utf-8")
    assert read_metrics_csv(path) == {"loss": [(1.0, 2.0), (2.0, 1.5)], "lr": [(1.0, 0.1)]}


def test_bad_options(tmp_path: Path, eval_dir: Path, dataset_dir: Path) -> None:
    with pytest.raises(DataError, match="--thumbnail-size 4"):
        build_report([eval_dir], tmp_path / "r.html", thumbnail_size=4)
    with pytest.raises(DataError, match="--out .*is a folder"):
        build_report([eval_dir], tmp_path)
    with pytest.raises(DataError, match="--predictions .*file not found"):
        build_report([eval_dir], tmp_path / "r.html", predictions=tmp_path / "none.jsonl")
    with pytest.raises(DataError, match=r"--data .*no prepare.json"):
        build_report([eval_dir], tmp_path / "r.html", data=tmp_path)


def test_unreadable_image_is_a_placeholder(tmp_path: Path, eval_dir: Path, dataset_dir: Path) -> None:
    (dataset_dir / "images" / "CXR0001" / "0.png").write_bytes(b"not a png")
    result = build_report([eval_dir], tmp_path / "r.html")
    assert result.missing_images == 1 and result.thumbnails == 2 * len(PAIRS) - 1


def test_jpeg_thumbnails_and_damaged_jpeg(tmp_path: Path) -> None:
    import base64
    import io

    from mrg.viewer.studies import thumbnail_data_uri

    film = tmp_path / "film.jpg"
    Image.new("L", (1200, 1500), 128).save(film, quality=90)
    data = base64.b64decode(thumbnail_data_uri(film, 96).split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (77, 96) and thumb.mode == "L"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        thumbnail_data_uri(broken, 96)


def test_the_write_is_atomic(tmp_path: Path, eval_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    out.write_text("previous report", encoding="utf-8")

    def broken(*args: object, **kwargs: object) -> str:
        raise DataError("rendering failed")

    monkeypatch.setattr("mrg.viewer.build.render_page", broken)
    with pytest.raises(DataError, match="rendering failed"):
        build_report([eval_dir], out)
    assert out.read_text(encoding="utf-8") == "previous report"

    def fail_midway(path: object, text: str) -> None:
        from mrg.files import atomic_write

        with atomic_write(path) as handle:
            handle.write(text[: len(text) // 2])
            raise OSError("disk full")

    monkeypatch.undo()
    monkeypatch.setattr("mrg.viewer.build.write_text_atomic", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        build_report([eval_dir], out)
    assert out.read_text(encoding="utf-8") == "previous report"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temporary file left


# ------------------------------------------------------------------------------------- scale


def test_many_studies_stay_usable(tmp_path: Path) -> None:
    """1,000 studies with texts, labels and scores (no images): the page grows linearly and stays parseable."""
    pairs = [PAIRS[i % len(PAIRS)] for i in range(1000)]
    eval_dir = make_eval(tmp_path / "big", None, pairs, bootstrap=False)
    out = tmp_path / "big.html"
    result = build_report([eval_dir], out)
    page, _ = parse_html(out)
    assert len(_study_rows(page)) == 1000 == result.studies
    assert result.size_bytes / 1000 < 3000  # bytes per study without images


def test_rows_after_the_first_page_are_hidden_only_with_javascript(full_report: tuple[Node, Path]) -> None:
    from mrg.viewer.html import PAGE_ROWS

    page, _ = full_report
    head = page.find("head")
    assert 'document.documentElement.classList.add("js")' in head.find("script").text()
    css = head.find("style").text()
    assert f"html.js table.studies:not(.ready) > tbody > tr:nth-child(n+{PAGE_ROWS + 1}) {{ display: none; }}" in css
    assert "js" not in (page.find("html").attrs.get("class") or "")  # the static page itself shows every row
    options = page.find("select", cls="page-size").find_all("option")
    assert [o.text() for o in options if "selected" in o.attrs] == [str(PAGE_ROWS)]


# -------------------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _headless(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _probe(browser: str, tmp_path: Path, page: Path, body: str) -> dict:
    """Run ``body`` (JavaScript; it ends by calling ``report(obj)``) after the page loads; returns ``obj``."""
    import html as html_module

    script = (
        "<script>function shownIds(table) { return Array.from(table.tBodies[0].rows)"
        ".filter(function (r) { return !r.classList.contains('hidden-row'); })"
        ".map(function (r) { return r.querySelector('td.id').textContent; }); }"
        "function report(obj) { var pre = document.createElement('pre'); pre.id = 'probe'; "
        "pre.textContent = JSON.stringify(obj); document.body.appendChild(pre); }"
        f"addEventListener('load', function () {{ {body} }});</script>"
    )
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    done = _headless(browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    return json.loads(html_module.unescape(match.group(1)))


@pytest.mark.slow
def test_browser_renders_and_scripts_sort_and_filter(tmp_path: Path, full_report: tuple[Node, Path]) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    _, out = full_report
    screenshot = tmp_path / "page.png"
    done = _headless(browser, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", out.resolve().as_uri())
    assert screenshot.is_file(), done.stderr[-2000:]
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 2000)
        gray = shot.convert("L")
        low, high = gray.getextrema()
        assert high - low > 100, "the screenshot is blank"
        histogram = gray.histogram()
        assert max(histogram) < 0.97 * sum(histogram), "the screenshot is nearly one colour"

    # Drive the page's own script: sort by BLEU-4 (ascending), then show only disagreements, then search.
    result = _probe(browser, tmp_path, out, """
      var table = document.querySelector('table.studies'), out = {};
      out.controls = !document.querySelector('.controls').hidden;
      var bleu = Array.from(table.tHead.rows[0].cells).find(function (th) { return th.textContent === 'BLEU-4'; });
      bleu.querySelector('button').click(); out.ascending = shownIds(table); out.sort = bleu.getAttribute('aria-sort');
      document.querySelector('.only-dis').click(); out.disagreements = shownIds(table);
      document.querySelector('.only-dis').click();
      var box = document.querySelector('input[type=search]'); box.value = 'SCRIPT';
      box.dispatchEvent(new Event('input'));
      setTimeout(function () { out.search = shownIds(table); out.count = document.querySelector('.count').textContent; report(out); }, 400);
    """)
    assert result["controls"] is True
    assert result["ascending"] == [f"CXR{i:04d}" for i in range(6, 0, -1)] and result["sort"] == "ascending"
    assert result["disagreements"] == ["CXR0004", "CXR0002"]
    assert result["search"] == ["CXR0006"] and "1 matching" in result["count"]


@pytest.mark.slow
def test_browser_pages_through_a_long_table(tmp_path: Path) -> None:
    from mrg.viewer.html import PAGE_ROWS
    from tests.viewer.conftest import make_dataset

    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    pairs = [PAIRS[i % len(PAIRS)] for i in range(PAGE_ROWS + 30)]
    dataset = make_dataset(tmp_path / "data", pairs, views=1)
    out = tmp_path / "r.html"
    build_report([make_eval(tmp_path / "ev", dataset, pairs)], out)
    result = _probe(browser, tmp_path, out, """
      var table = document.querySelector('table.studies'), out = {};
      out.ready = table.classList.contains('ready');
      out.first = shownIds(table).length; out.page = document.querySelector('.page').textContent;
      document.querySelector('.next').click();
      out.second = shownIds(table);
      var imgs = Array.from(table.tBodies[0].rows).filter(function (r) { return !r.classList.contains('hidden-row'); })
        .map(function (r) { return r.querySelector('img'); });
      setTimeout(function () { out.decoded = imgs.filter(function (i) { return i && i.naturalWidth > 0; }).length; report(out); }, 500);
    """)
    assert result["ready"] is True and result["first"] == PAGE_ROWS and result["page"] == "page 1 / 2"
    assert len(result["second"]) == 30 and result["second"][0] == f"CXR{PAGE_ROWS + 1:04d}"
    assert result["decoded"] == 30


def test_report_shows_each_studys_perceived_classes_from_a_perception_csv(run_cli, tmp_path: Path, run_dir: Path,
                                                                         eval_dir: Path) -> None:
    """``mrg report --perceptions F.csv`` (what ``mrg demo --method trrg`` passes): a "perceived" column per study."""
    from mrg.perceive import write_perception_csv

    ids = [f"CXR{i:04d}" for i in range(1, len(PAIRS) + 1)]
    rows = [{"id": i, "probabilities": {"Cardiomegaly": 0.9 - 0.1 * n, "Pleural Effusion": 0.2 + 0.1 * n}}
            for n, i in enumerate(ids[:-1])]  # the last study has no row
    write_perception_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "report.html"
    result = run_cli("report", run_dir, eval_dir, "--out", out, "--perceptions", tmp_path / "p.csv",
                     "--perceive-threshold", "0.55", "--no-images")
    assert result.exit_code == 0, result.output
    assert "1 of 6 studies have no row" in result.stderr
    page, builder = parse_html(out)
    assert not builder.unbalanced
    header = [th.text() for th in page.find("table", cls="studies").find("thead").find_all("th")]
    assert "perceived (P \u2265 0.55)" in header
    cells = {row.find("td", cls="id").text(): row.find("td", cls="perceived") for row in _study_rows(page)}
    # CXR0001: Cardiomegaly 0.9 only; CXR0004: 0.6 and 0.5 -> Cardiomegaly only; CXR0005: 0.5 / 0.6 -> effusion
    listed = {i: [li.find("span", cls="obs").attrs["title"] for li in c.find_all("li")] for i, c in cells.items()}
    assert listed["CXR0001"] == ["Cardiomegaly"] and listed["CXR0004"] == ["Cardiomegaly"]
    assert listed["CXR0005"] == ["Pleural Effusion"] and listed["CXR0006"] == []
    assert cells["CXR0001"].attrs["data-v"] == "1" and "Pleural Effusion 0.20" in cells["CXR0001"].attrs["title"]
    # without --perceptions there is no such column; a file that is not a perception CSV is one line
    plain = run_cli("report", run_dir, eval_dir, "--out", tmp_path / "plain.html", "--no-images")
    assert plain.exit_code == 0 and 'class="lab perceived"' not in (tmp_path / "plain.html").read_text()
    (tmp_path / "bad.csv").write_text("id,x\n1,2\n")
    bad = run_cli("report", run_dir, eval_dir, "--out", tmp_path / "b.html", "--perceptions", tmp_path / "bad.csv")
    assert bad.exit_code == 1 and "--perceptions" in bad.stderr and "Traceback" not in bad.output
