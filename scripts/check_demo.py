#!/usr/bin/env python3
"""Check what `mrg demo` left behind (CI): every output file, and that MRG-LLM beats the baseline.

Usage: python scripts/check_demo.py runs/ci-demo
Exits 1 with one line per problem; prints the headline comparison when everything holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPECTED = [
    "data/prepare.json",
    "data/studies.jsonl",
    "data/annotation.json",
    "lm/lm.json",
    "lm/config.json",
    "run/config.yaml",
    "run/metrics.csv",
    "run/val_metrics.jsonl",
    "run/last",
    "test_predictions.jsonl",
    "test_predictions.jsonl.meta.json",
    "eval/metrics.json",
    "eval/per_sample.csv",
    "eval/metrics.md",
    "baseline/metrics.json",
    "report.html",
    "demo.json",
]


def main(out_dir: Path) -> int:
    problems = [f"missing {out_dir / rel}" for rel in EXPECTED if not (out_dir / rel).exists()]
    if problems:
        print("\n".join(problems))
        return 1
    model = json.loads((out_dir / "eval/metrics.json").read_text())
    baseline = json.loads((out_dir / "baseline/metrics.json").read_text())
    summary = json.loads((out_dir / "demo.json").read_text())
    test_count = json.loads((out_dir / "data/prepare.json").read_text())["counts"]["test"]
    predictions = [line for line in (out_dir / "test_predictions.jsonl").read_text().splitlines() if line.strip()]
    if len(predictions) != test_count:
        problems.append(f"{len(predictions)} predictions for {test_count} test studies")
    if model["ce_f1"] <= baseline["ce_f1"]:
        problems.append(f"CE micro-F1 {model['ce_f1']:.3f} does not beat the most-frequent-report baseline {baseline['ce_f1']:.3f}")
    if summary["metrics"]["ce_f1"] != model["ce_f1"]:
        problems.append("demo.json disagrees with eval/metrics.json")
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    if "<table" not in html or "http://" in html.split("<body", 1)[0]:
        problems.append("report.html is not a self-contained page with tables")
    if problems:
        print("\n".join(problems))
        return 1
    print(
        f"demo ok: CE micro-F1 {model['ce_f1']:.3f} vs most-frequent-report {baseline['ce_f1']:.3f}; "
        f"BLEU-4 {model['bleu_4']:.3f} vs {baseline['bleu_4']:.3f}; {len(predictions)} test reports; "
        f"stages {summary['seconds']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")))
