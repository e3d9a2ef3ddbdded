"""Generation benchmark: batched against one-at-a-time report generation (reports per second).

    python benchmarks/bench_generate.py                           # tiny preset on the CPU
    python benchmarks/bench_generate.py --config iu_xray --studies 48 --batch 12   # a real preset on a GPU

The model of ``--config`` (random weights for the tiny preset; the preset's backbones otherwise) writes
reports for ``--studies`` studies through ``mrg.distributed.predict`` (the path ``mrg generate`` and
validation use), once with ``--batch`` studies per batch and once with one study per batch, for each
decoding strategy. ``min_new_tokens`` is set to ``max_new_tokens`` so that every report has the same
length whatever the weights (a random model rarely stops on its own), which makes the two runs do
the same work. Each configuration runs ``--repeats`` times; the median is reported.

Prints its figures (and ``--json FILE`` writes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("MRG_NO_PROGRESS", "1")


class _Studies(torch.utils.data.Dataset):
    """``count`` studies of random pixels (``views`` views each); generation cost does not depend on the content."""

    def __init__(self, count: int, views: int, image_size: int, channels: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(count, views, channels, image_size, image_size, generator=generator)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": f"study-{index}", "pixel_values": self.pixels[index]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", help="Preset or YAML (default: tiny).")
    parser.add_argument("--studies", type=int, default=16, help="Studies to write reports for (default: 16).")
    parser.add_argument("--batch", type=int, default=8, help="Studies per batch in the batched run (default: 8).")
    parser.add_argument("--tokens", type=int, default=32, help="Tokens generated per report (default: 32).")
    parser.add_argument("--strategies", default="beam,greedy", help="Decoding strategies (default: beam,greedy).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per configuration (default: 3).")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("overrides", nargs="*", help="Config overrides key=value.")
    args = parser.parse_args(argv)

    from accelerate import Accelerator

    from mrg.config import load_config
    from mrg.data.dataset import collate_studies
    from mrg.distributed import PRECISION_TO_ACCELERATE, predict
    from mrg.methods import get_method
    from mrg.model.trainable import stage_model

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MRG_CACHE_DIR", str(Path(tmp) / "cache"))
        cfg = load_config(args.config, list(args.overrides))
        accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[cfg.train.precision])
        method = get_method(cfg.model.method)
        model = stage_model(method, cfg, method.stages[0]).to(accelerator.device).eval()
        dataset = _Studies(args.studies, cfg.data.max_views, cfg.data.image_size, model.image_settings.num_channels)
        results = []
        for strategy in args.strategies.split(","):
            row: dict[str, Any] = {"strategy": strategy}
            for label, batch_size in (("batched", args.batch), ("single", 1)):
                gen = dataclasses.replace(cfg.generate, strategy=strategy, batch_size=batch_size,
                                          min_new_tokens=args.tokens, max_new_tokens=args.tokens)
                predict(accelerator, model, dataset, collate_studies, gen, indices=range(min(2, args.studies)))  # warm-up
                seconds = []
                for _ in range(args.repeats):
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    started = time.perf_counter()
                    rows = predict(accelerator, model, dataset, collate_studies, gen)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    seconds.append(time.perf_counter() - started)
                assert len(rows) == args.studies
                row[f"{label}_reports_per_s"] = args.studies / statistics.median(seconds)
            row["speedup"] = row["batched_reports_per_s"] / row["single_reports_per_s"]
            results.append(row)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"config {args.config} on {device}: {args.studies} studies, {args.tokens} new tokens each, "
          f"beam {cfg.generate.num_beams}, batch {args.batch} vs 1, median of {args.repeats}")
    for row in results:
        print(f"{row['strategy']:>7}: batched {row['batched_reports_per_s']:7.2f} reports/s, "
              f"one at a time {row['single_reports_per_s']:7.2f} reports/s, speed-up x{row['speedup']:.2f}")
    figures = {"config": args.config, "device": device, "studies": args.studies, "batch": args.batch,
               "tokens": args.tokens, "num_beams": cfg.generate.num_beams, "results": results, "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
