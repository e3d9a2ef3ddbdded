"""The pages in a real browser (headless Chromium, when installed): no console errors, images and charts render,
tables sort, and ``--screenshot`` writes a picture next to the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mrg.viewer.browser import console_errors, find_chromium, headless

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)")]

RECORD = {
    "title": "t", "created": "now", "reference": "A", "seeds": [0, 1], "columns": ["bleu_4", "ce_f1"],
    "column_names": {"bleu_4": "BLEU-4", "ce_f1": "CE F1"}, "method": {"paired_test": "randomisation"},
    "rows": [
        {"dataset": "d", "system": name, "kind": "method", "runs": 2,
         "metrics": {"bleu_4": {"mean": b, "sd": 0.01, "ci_low": b - 0.02, "ci_high": b + 0.02, "pooled": b,
                                "test_ci_low": b - 0.03, "test_ci_high": b + 0.03, "p_value": p, "delta": 0.0,
                                "values": [b, b]},
                     "ce_f1": None}}
        for name, b, p in (("A", 0.20, None), ("B", 0.30, 0.01), ("C", 0.10, 0.5))
    ],
}


def _blank(png: Path) -> bool:
    with Image.open(png) as shot:
        low, high = shot.convert("L").getextrema()
    return high - low < 50


def test_the_console_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<html><head></head><body><img src='data:image/png;base64,AAAA'><script>nope();</script></body></html>")
    errors = console_errors(page)
    assert any("nope is not defined" in e for e in errors) and any("resource failed" in e for e in errors)


def test_report_page_has_no_console_errors_and_its_screenshot_is_written(run_cli, tmp_path: Path, run_dir: Path,
                                                                          eval_dir: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cli("report", run_dir, eval_dir, "--out", out, "--screenshot")
    assert result.exit_code == 0, result.output
    assert console_errors(out) == []
    assert (tmp_path / "report.png").is_file() and not _blank(tmp_path / "report.png")
    # the charts are drawn (thumbnails decoding is checked in test_html.py)
    done = headless("--virtual-time-budget=3000", "--dump-dom", out.resolve().as_uri())
    assert "<svg" in done.stdout and "<path" in done.stdout


def test_leaderboard_page_sorts_and_has_no_console_errors(tmp_path: Path) -> None:
    import html
    import json
    import re

    from mrg.viewer.leaderboard import render_leaderboard_html

    page = tmp_path / "leaderboard.html"
    page.write_text(render_leaderboard_html(RECORD))
    assert console_errors(page) == []
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>addEventListener('load', function () { var th = document.querySelector('thead th[data-sort] button');"
        " th.click(); var down = Array.from(document.querySelectorAll('tbody tr')).map(function (r) {"
        " return r.cells[0].firstChild.textContent.trim(); }); th.click();"
        " var up = Array.from(document.querySelectorAll('tbody tr')).map(function (r) {"
        " return r.cells[0].firstChild.textContent.trim(); });"
        " var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify([down, up]);"
        " document.body.appendChild(pre); });</script></body>")))
    done = headless("--virtual-time-budget=3000", "--dump-dom", probe.resolve().as_uri())
    down, up = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S).group(1)))
    assert down == ["B", "A", "C"] and up == ["C", "A", "B"]
