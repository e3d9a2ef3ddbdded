"""Benchmark ``mrg prepare synthetic``: seconds for the whole dataset and images per second, with a breakdown.

Measures, for N studies (default 2,000, two views at 128 px, the demo's and CI's default):

1. the whole ``prepare_synthetic`` call with one process (``--workers 1``), wall and CPU seconds, images/s:
   the target is well under a minute on one core (aim: under 20 s);
2. the same with ``--workers`` processes (default 2), wall seconds and speed-up;
3. a breakdown on one core: sampling and report writing, frontal rendering, lateral rendering, PNG encoding.

``--difficulty easy hard`` measures both sets one after the other and ends with the hard set's CPU time per
image relative to the easy set's (the target: within 1.5x).

    python benchmarks/bench_synthetic.py [--n 2000] [--image-size 128] [--views 2] [--workers 2]
                                         [--difficulty easy [hard]]

Other agents' load changes the numbers: load averages are printed at start and end, and CPU seconds
(``time.process_time``) are less sensitive to load than wall seconds.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from mrg.data.sources.synthetic import (  # noqa: E402
    CHUNK,
    generate_studies,
    png_bytes,
    prepare_synthetic,
    render_frontal,
    render_lateral,
    sample_cases,
)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def _timed(fn, *args, **kwargs) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", nargs="+", default=["easy"], choices=["easy", "hard"])
    args = parser.parse_args()
    per_image = {difficulty: measure(args, difficulty) for difficulty in args.difficulty}
    if len(per_image) == 2:
        print(f"hard / easy CPU time per image: whole run x{per_image['hard'][0] / per_image['easy'][0]:.2f}, "
              f"rendering only x{per_image['hard'][1] / per_image['easy'][1]:.2f}")
    print(f"load at end: {_load()}")


def measure(args: argparse.Namespace, difficulty: str) -> tuple[float, float]:
    """Print the figures for one difficulty; returns (CPU s per image of the whole run, of rendering alone)."""
    images = args.n * args.views
    print(f"mrg prepare synthetic --difficulty {difficulty}: n={args.n} views={args.views} "
          f"image_size={args.image_size}  cpus={os.cpu_count()}  load at start: {_load()}")

    with tempfile.TemporaryDirectory() as tmp:
        options = {"n": args.n, "seed": args.seed, "image_size": args.image_size, "views": args.views,
                   "difficulty": difficulty}
        wall, cpu = _timed(prepare_synthetic, Path(tmp) / "one", workers=1, **options)
        print(f"1 process : {wall:6.2f} s wall, {cpu:6.2f} s CPU, {images / wall:7.0f} images/s "
              f"({images / cpu:.0f} images per CPU-second)")
        if args.workers > 1:
            wall_n, _ = _timed(prepare_synthetic, Path(tmp) / "many", workers=args.workers, **options)
            print(f"{args.workers} processes: {wall_n:6.2f} s wall, {images / wall_n:7.0f} images/s, "
                  f"speed-up x{wall / wall_n:.2f}")

    # breakdown on one core
    _, text_cpu = _timed(generate_studies, args.n, args.seed, views=args.views, difficulty=difficulty)
    cases = sample_cases(min(args.n, 512), args.seed, difficulty=difficulty)
    frontal = lateral = 0.0
    films = []
    for start in range(0, len(cases), CHUNK):
        chunk = cases[start : start + CHUNK]
        t = time.process_time()
        films.extend(render_frontal(chunk, args.image_size, args.seed))
        frontal += time.process_time() - t
        t = time.process_time()
        render_lateral(chunk, args.image_size, args.seed)
        lateral += time.process_time() - t
    t = time.process_time()
    for pixels in films:
        png_bytes(pixels)
    png = time.process_time() - t
    t = time.process_time()
    for pixels in films:
        Image.fromarray(pixels).save(io.BytesIO(), format="PNG")
    pil = time.process_time() - t
    per = 1000 / len(cases)
    print(f"breakdown (CPU ms per study): sampling + reports {text_cpu * 1000 / args.n:.2f}, frontal {frontal * per:.2f}, "
          f"lateral {lateral * per:.2f}, PNG per image {png * per:.2f} (PIL's encoder: {pil * per:.2f})")
    return cpu / images, (frontal + lateral) / len(cases) / 2


if __name__ == "__main__":
    main()
