"""Synthesis metrics on the synthetic set (issue 12 part 5): the real test images as the "synthesized" ones.

1. Prepares a synthetic set (2,000 studies at 128 px, frontal view only, as ``mrg demo``'s set but one view).
2. Writes the real test images as a synthesized folder, each with its own report as the prompt (the upper bound of
   every metric; what a perfect report -> image model would reach), and scores it through ``mrg evaluate --images``
   with the default settings: consistency classifier at 128 px, 600 steps, FID on its features.
3. Scores it a second time (the cached classifier is reused) and a copy whose sidecars have no ``study_id`` (prompt
   labels from the labeler instead of the gold labels).

    MRG_NO_PROGRESS=1 python benchmarks/bench_synthesis.py --out /tmp/bench_synthesis

Prints Markdown tables (benchmarks/RESULTS.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrg.data.sources.synthetic import prepare_synthetic  # noqa: E402
from mrg.metrics.synthesis import COLUMNS, write_real_as_synthesized  # noqa: E402

METRICS = ("consistency_f1", "consistency_macro_f1", "fid", "ms_ssim")


def _evaluate(images: Path, data: Path, out: Path, *extra: str) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mrg", "evaluate", "--images", str(images), "--data", str(data),
                    "--out", str(out), *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def _table(record: dict) -> str:
    real = record["real"]
    ref = {"consistency_f1": real["classifier_f1"], "consistency_macro_f1": real["classifier_macro_f1"],
           "fid": float("nan"), "ms_ssim": real["ms_ssim"]}
    lines = ["| metric | real test as synthesized | mean image | nearest real (train) | real (ceiling / own) |",
             "|---|---:|---:|---:|---:|"]
    for name in METRICS:
        cells = [record["columns"][c][name] for c in COLUMNS] + [ref[name]]
        lines.append(f"| {name} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_synthesis"))
    parser.add_argument("--studies", type=int, default=2000)
    args = parser.parse_args()
    start = time.perf_counter()
    data = args.out / "data"
    prepare_synthetic(data, n=args.studies, seed=0, image_size=128, views=1)
    prepared = time.perf_counter() - start
    real = args.out / "real-test"
    count = write_real_as_synthesized(data, "test", real)
    first, first_s = _evaluate(real, data, args.out / "eval-real")
    again, again_s = _evaluate(real, data, args.out / "eval-real-again")
    unlabelled = args.out / "real-test-no-study-id"
    write_real_as_synthesized(data, "test", unlabelled, with_study_id=False)
    labeler, labeler_s = _evaluate(unlabelled, data, args.out / "eval-real-labeler")
    cls = first["classifier"]
    print(f"{args.studies} studies at 128 px (prepared in {prepared:.0f} s); {count} test images as synthesized; "
          f"classifier trained on {cls['train_images']} train images in {cls['train_seconds']:.0f} s")
    print(f"\n### gold prompt labels (first run {first_s:.0f} s, second run with the cached classifier {again_s:.0f} s)\n")
    print(_table(first))
    assert again["columns"] == first["columns"], "a second evaluation must give the same numbers"
    print(f"\n### prompt labels from the labeler (study_id null; {labeler_s:.0f} s)\n")
    print(_table(labeler))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
