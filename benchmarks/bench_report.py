"""``mrg report`` at test-set scale: build time, file size and (when Chromium is installed) browser time.

Builds a prepared dataset of N studies (default 4,000, about MIMIC-CXR's 3,858 test images) whose images
are synthetic radiographs (``mrg.data.sources.synthetic`` renderers; ``--distinct`` different films hard-linked
across the studies, so the files are decoded one by one like real ones), predictions that disagree with the
reference on every third study, a real ``mrg evaluate`` folder (METEOR off, it does not change the page),
and then times ``build_report`` and parsing the page with ``html.parser``. With Chromium it also times
loading the page and one sort + filter driven through the page's own script.

    python benchmarks/bench_report.py                       # 4,000 studies, 2 views of 512 px PNG
    python benchmarks/bench_report.py --format jpeg --image-size 2500 --views 1   # MIMIC-like full-size JPEGs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image


def make_inputs(root: Path, n: int, image_size: int, views: int, distinct: int, fmt: str) -> tuple[Path, Path]:
    from mrg.config import EvalConfig
    from mrg.data.prepared import prepare_output_dir, write_prepared_dataset
    from mrg.data.sources.synthetic import generate_studies, render_frontal, render_lateral, sample_cases
    from mrg.evaluate import run_evaluation

    data = root / "data"
    prepare_output_dir(data, {"kind": "bench-report"}, force=False)
    cases = sample_cases(distinct, seed=0)
    render_size = min(image_size, 512)  # the renderer works on whole batches of grids; larger films are upscaled
    films = [render_frontal(cases, render_size, 0)] + ([render_lateral(cases, render_size, 0)] if views > 1 else [])
    suffix = ".jpg" if fmt == "jpeg" else ".png"
    pool = root / "pool"
    pool.mkdir()
    for v, batch in enumerate(films):
        for i, pixels in enumerate(batch):
            film = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L")
            if render_size != image_size:
                film = film.resize((image_size, image_size), Image.Resampling.BICUBIC)
            film.save(pool / f"{i}-{v}{suffix}", quality=92)
    studies = generate_studies(n, seed=0, views=views)
    for index, study in enumerate(studies):
        study.split = "test"
        study.image_paths = []
        for v in range(views):
            rel = f"images/{study.id}/{v}{suffix}"
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(pool / f"{index % distinct}-{v}{suffix}", data / rel)
            study.image_paths.append(rel)
    write_prepared_dataset(data, studies, source={"kind": "bench-report"}, protocol={"name": "bench"}, normalize="r2gen-iu")
    predictions = root / "test.jsonl"
    with open(predictions, "w", encoding="utf-8") as handle:
        for index, study in enumerate(studies):
            other = studies[(index + 1) % n] if index % 3 == 0 else study
            handle.write(json.dumps({"id": study.id, "prediction": other.report, "reference": study.report}) + "\n")
    run_evaluation(predictions, root / "eval", EvalConfig(meteor=False), data=data)
    return data, root / "eval"


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows += 1
        elif tag == "img":
            self.images += 1


def browser_times(page: Path, work: Path) -> dict[str, float] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    probe = page.with_name("probe.html")
    # interactive: DOMContentLoaded, which fires after the page's own script (the last element) has run
    early = "<script>document.addEventListener('DOMContentLoaded', function () { window.__dcl = performance.now(); });</script>"
    script = """<script>addEventListener('load', function () {
      var t_load = performance.now(), t0 = performance.now(), table = document.querySelector('table.studies');
      var th = Array.from(table.tHead.rows[0].cells).find(function (c) { return c.textContent === 'BLEU-4'; });
      th.querySelector('button').click(); var sorted = performance.now() - t0;
      t0 = performance.now(); document.querySelector('.only-dis').click(); var filtered = performance.now() - t0;
      var pre = document.createElement('pre'); pre.id = 'probe';
      pre.textContent = JSON.stringify({interactive_ms: window.__dcl, load_ms: t_load, sort_ms: sorted, filter_ms: filtered});
      document.body.appendChild(pre); });</script>"""
    text = page.read_text(encoding="utf-8").replace("</head>", early + "</head>", 1)
    probe.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={work / 'profile'}"]
    started = time.perf_counter()
    done = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - started
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    if not match:
        return {"chromium_wall_s": wall}
    import html

    figures = json.loads(html.unescape(match.group(1)))
    return {"chromium_wall_s": wall, **{k: float(v) for k, v in figures.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--distinct", type=int, default=40, help="different films rendered (then hard-linked)")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--keep", type=Path, default=None, help="keep the inputs and the page in this folder")
    args = parser.parse_args()

    from mrg.viewer import build_report

    work = Path(tempfile.mkdtemp(prefix="bench-report-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        data, evaluation = make_inputs(work, args.studies, args.image_size, args.views, args.distinct, args.format)
        print(f"inputs: {args.studies} studies x {args.views} views, {args.image_size} px {args.format}, "
              f"made in {time.perf_counter() - started:.1f} s (not part of the figures below)")
        for label, kwargs in (("with images", {}), ("--no-images", {"images": False})):
            out = work / f"report-{label.strip('-').replace(' ', '-')}.html"
            result = build_report([evaluation], out, **kwargs)
            t0 = time.perf_counter()
            counter = _Counter()
            counter.feed(out.read_text(encoding="utf-8"))
            parse_s = time.perf_counter() - t0
            print(f"{label}: build {result.seconds:.2f} s, {result.size_bytes / 1e6:.1f} MB "
                  f"({result.size_bytes / max(1, result.studies) / 1e3:.2f} kB per study), {result.thumbnails} thumbnails, "
                  f"{result.missing_images} missing; html.parser {parse_s:.2f} s, {counter.rows} table rows, {counter.images} images")
            browser = browser_times(out, work)
            if browser is None:
                print("  chromium: not installed (apt-get install chromium) - browser timings skipped")
            else:
                print("  chromium: " + ", ".join(f"{k} {v:.0f}" if k.endswith("_ms") else f"{k} {v:.1f}" for k, v in browser.items()))
        print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
