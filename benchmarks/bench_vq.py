"""The image tokenizer on the synthetic set at 128 px (issue 12): val PSNR, and the gradient term against none.

1. ``mrg train-vq -c demo`` (through the CLI) on a synthetic set prepared here: val PSNR, SSIM, gradient-magnitude
   error, codebook usage and perplexity of the best checkpoint, and the wall time.
2. lambda_grad (the demo's 10) against lambda_grad = 0, at equal steps, for each seed: the same metrics after the
   last step, and mean ± standard deviation over seeds.

    MRG_NO_PROGRESS=1 python benchmarks/bench_vq.py --out /tmp/bench_vq

Prints Markdown tables (benchmarks/RESULTS.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("psnr", "ssim", "grad_mag_error", "codebook_usage", "codebook_perplexity")


def _mrg(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "mrg", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def _best_metrics(run: Path) -> dict[str, float]:
    meta = json.loads((run / "best" / "meta.json").read_text())
    return {"step": meta["step"], **meta["metrics"]}


def _row(label: str, values: list[dict[str, float]]) -> str:
    cells = []
    for name in METRICS:
        xs = [v[name] for v in values]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cells.append(f"{statistics.mean(xs):.4f} ± {sd:.4f}")
    return f"| {label} | {len(values)} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_vq"))
    parser.add_argument("--n", type=int, default=600, help="synthetic studies (two views each)")
    parser.add_argument("--compare-steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grad-weight", type=float, default=10.0)
    parser.add_argument("--demo-steps", type=int, default=None, help="override the demo preset's steps (smoke runs)")
    args = parser.parse_args()
    data = args.out / "synthetic"
    started = time.perf_counter()
    _mrg("prepare", "synthetic", "--out", str(data), "--n", str(args.n), "--image-size", "128")
    print(f"prepared {args.n} studies in {time.perf_counter() - started:.0f} s", flush=True)

    began = time.perf_counter()
    extra = [f"train.steps={args.demo_steps}", f"train.val_every={args.demo_steps}"] if args.demo_steps else []
    _mrg("train-vq", "--data", str(data), "--out", str(args.out / "demo"), "-c", "demo", *extra)
    demo_seconds = time.perf_counter() - began
    best = _best_metrics(args.out / "demo")
    print("\n| run | best step | PSNR (dB) | SSIM | grad-mag err | code usage | code perplexity | wall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| `mrg train-vq -c demo` | {best['step']} | {best['psnr']:.2f} | {best['ssim']:.4f} | "
          f"{best['grad_mag_error']:.4f} | {best['codebook_usage']:.3f} | {best['codebook_perplexity']:.1f} | "
          f"{demo_seconds:.0f} s |", flush=True)

    results: dict[float, list[dict[str, float]]] = {args.grad_weight: [], 0.0: []}
    for seed in args.seeds:
        for weight in results:
            # through the CLI like the demo run: it sets the OpenMP spin policy (mrg/cli/__init__.py), without which
            # torch is several times slower on shared cores
            run = args.out / f"grad{weight:g}-seed{seed}"
            began = time.perf_counter()
            _mrg("train-vq", "--data", str(data), "--out", str(run), "-c", "demo", f"loss.grad_weight={weight}",
                 f"train.seed={seed}", f"train.steps={args.compare_steps}", f"train.val_every={args.compare_steps}")
            metrics = json.loads((run / "last" / "meta.json").read_text())["metrics"]
            results[weight].append(metrics)
            print(f"seed {seed}, lambda_grad {weight:g} ({time.perf_counter() - began:.0f} s): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    print(f"\n{args.compare_steps} steps each, metrics after the last step on 64 val images, mean ± sd over seeds "
          f"{', '.join(map(str, args.seeds))}:\n")
    print("| lambda_grad | runs | PSNR (dB) | SSIM | grad-mag err | code usage | code perplexity |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for weight, values in results.items():
        print(_row(f"{weight:g}", values))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
