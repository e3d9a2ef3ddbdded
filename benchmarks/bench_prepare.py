"""Benchmark of ``mrg prepare iu-xray``'s two costly steps: XML parsing and image pre-resizing.

1. XML parsing: all 3,955 Open-i reports, from the official ``NLMCXR_reports.tgz`` (read from
   ``../shared/data/openi/`` or ``--reports``; skipped with a message when absent): the whole
   ``read_reports`` (gunzip + tar stream + parse) and the parsing alone.
2. Pre-resize throughput: ``--images`` generated 2048x2048-ish 8-bit grayscale PNGs with radiograph-like
   smooth structure and noise, resized to ``--size`` (shorter side) through the real ``place_images`` path,
   with 1 worker and with ``--workers`` processes; prints images/s and images/s per core.

Usage: python benchmarks/bench_prepare.py [--images 48] [--size 512] [--workers N] [--reports PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REPORTS = REPO.parent / "shared" / "data" / "openi" / "NLMCXR_reports.tgz"


def bench_xml(path: Path, repeats: int) -> None:
    from mrg.data.archive import iter_archive_members
    from mrg.data.sources.iu_xray import parse_report_xml, read_reports

    if not path.is_file():
        print(f"xml parsing: skipped ({path} is absent; pass --reports PATH to NLMCXR_reports.tgz)")
        return
    whole, parse_only = [], []
    members = list(iter_archive_members(path, members=lambda n: n.endswith(".xml")))
    for _ in range(repeats):
        start = time.perf_counter()
        reports = read_reports(path)
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        for name, data in members:
            parse_report_xml(data, name)
        parse_only.append(time.perf_counter() - start)
    n = len(reports)
    print(f"xml parsing: {n} reports from {path.name}")
    print(f"  read_reports (gunzip + tar + parse): median {statistics.median(whole) * 1000:.0f} ms, "
          f"best {min(whole) * 1000:.0f} ms over {repeats} runs ({n / min(whole):,.0f} reports/s)")
    print(f"  parse only: median {statistics.median(parse_only) * 1000:.0f} ms, best {min(parse_only) * 1000:.0f} ms "
          f"({min(parse_only) / n * 1e6:.0f} us per report)")


def synthetic_radiograph(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth 8-bit grayscale image with mild noise (compresses like a radiograph, unlike pure noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    base = 90 + 60 * np.sin(x / (40 + seed % 7)) * np.cos(y / 50)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 128, size=3) * (1, 1, 0.25) + (0, 0, 8)
        base += 50 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    smooth = np.asarray(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC))
    noise = rng.integers(-4, 5, size=smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8), mode="L")


def bench_resize(count: int, size: int, workers: int) -> None:
    from mrg.data.sources.iu_xray import IUStudy, place_images

    with tempfile.TemporaryDirectory(prefix="mrg-bench-") as tmp:
        src = Path(tmp) / "png"
        src.mkdir()
        studies = []
        start = time.perf_counter()
        total_bytes = 0
        for i in range(count // 2):
            ids = []
            for k in range(2):
                image_id = f"CXR{i}_IM-{i:04d}-{k + 1}001"
                dims = (2048, 2048) if (i + k) % 3 else (2048, 2500)  # some portrait images, as in Open-i
                synthetic_radiograph(i * 2 + k, dims).save(src / f"{image_id}.png", compress_level=1)
                total_bytes += (src / f"{image_id}.png").stat().st_size
                ids.append(image_id)
            study_id = ids[0].rsplit("-", 1)[0]
            studies.append(IUStudy(id=study_id, split="train", report="x",
                                   image_paths=[f"images/{study_id}/{k}.png" for k in range(2)],
                                   extra={"image_ids": ids}))
        n = 2 * len(studies)
        print(f"image pre-resize: {n} generated PNGs ({total_bytes / n / 1e6:.2f} MB each on average, made in "
              f"{time.perf_counter() - start:.1f} s), shorter side -> {size}px")
        for w in sorted({1, workers}):
            out = Path(tmp) / f"out{w}"
            start = time.perf_counter()
            place_images(out, studies, kind="folder", path=src, size=size, workers=w, redo=True)
            elapsed = time.perf_counter() - start
            rate = n / elapsed
            print(f"  workers={w}: {elapsed:.2f} s, {rate:.1f} images/s, {rate / w:.1f} images/s per core"
                  + (" (includes process start-up)" if w > 1 else ""))
        with Image.open(next((Path(tmp) / "out1").rglob("*.png"))) as img:
            print(f"  output example size: {img.size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_xml(args.reports, args.repeats)
    bench_resize(args.images, args.size, args.workers)


if __name__ == "__main__":
    main()
