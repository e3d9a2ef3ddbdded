"""Training benchmark: mrg's step against a bare PyTorch loop, data-loader throughput, peak memory.

    python benchmarks/bench_train.py                       # tiny preset on the CPU (what CI machines can run)
    python benchmarks/bench_train.py --config iu_xray --data data/iu_xray --steps 50   # a real preset on a GPU

1. Step overhead. ``mrg.trainer.fit`` (the loop ``mrg train`` runs) trains the model for ``--steps`` optimizer steps on one fixed
   batch (the same studies every step, served through its DataLoader from memory); a bare loop
   (a plain DataLoader with the same collate step, forward, backward, clip, AdamW step, zero_grad; autocast
   when the preset uses bf16/fp16) trains an identical copy on the identical batch. Per-step wall times after ``--warmup`` steps; the two
   alternate ``--repeats`` times so machine load hits both alike. Reported: median step of each and
   their ratio (target <= 1.05).
2. Data loading: ``ReportDataset`` over a prepared dataset (``--data``, or a synthetic one made here
   with 512-pixel images, about the size of IU X-ray's PNGs), decoded and resized to the preset's
   ``data.image_size``, per DataLoader worker count: images/s and images/s per worker.
3. Peak memory: the process's peak RSS; on a GPU also CUDA's peak allocation during training.

Prints its figures (and ``--json FILE`` writes them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("MRG_NO_PROGRESS", "1")


def _config(args: argparse.Namespace, data_root: Path, extra: list[str]) -> Any:
    from mrg.config import load_config

    return load_config(args.config, [
        f"data.root={data_root}",
        f"train.micro_batch_size={args.micro_batch}",
        "train.grad_accum_steps=1",
        f"train.max_steps={args.steps}",
        "train.val_every=-1",
        "train.save_every=0",
        "train.keep_last=1",
        "train.trackers=[]",
        "train.log_every=1000000",
        "data.num_workers=0",
        *args.overrides,
        *extra,
    ])


class _SameBatch(torch.utils.data.Dataset):
    """``size`` items that are the first ``len(items)`` studies over and over (already decoded, in memory)."""

    def __init__(self, items: list[dict[str, Any]], size: int) -> None:
        self.items, self.size = items, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index % len(self.items)]


def _first_items(cfg: Any, model: Any, count: int) -> list[dict[str, Any]]:
    from mrg.data.dataset import dataset_from_config

    train = dataset_from_config(cfg, "train", image_settings=model.image_settings, augment=False)
    return [train[i] for i in range(count)]


def time_mrg_steps(cfg: Any, items: list[dict[str, Any]], run_dir: Path) -> list[float]:
    """Per-step wall times of mrg's loop (``mrg.trainer.fit``) over a DataLoader whose every batch is ``items``.

    The objects are the ones the train recipe builds (accelerator, model of the method's stage, optimizer,
    schedule, ``EpochBatches`` with the method's collate step); ``fit`` gets them explicitly.
    """
    from mrg.console import make_progress
    from mrg.distributed import make_accelerator
    from mrg.methods import get_method
    from mrg.model.trainable import stage_model
    from mrg.optim import build_optimizer, build_scheduler
    from mrg.trainer import EpochBatches, Hooks, LoopPlan, LoopStart, fit

    t = cfg.train
    accelerator = make_accelerator(t.precision)
    method = get_method(cfg.model.method)
    stage = method.stages[0]
    model = stage_model(method, cfg, stage)
    batches = EpochBatches(_SameBatch(items, t.micro_batch_size * (t.max_steps + 1)), method.collate(cfg, stage, model),
                           micro_batch_size=t.micro_batch_size, items_per_step=t.micro_batch_size, seed=t.seed)
    optimizer = build_optimizer(model, t)
    model, optimizer = accelerator.prepare(model, optimizer)
    batches.prepare(accelerator)
    scheduler = build_scheduler(optimizer, t, t.max_steps)
    plan = LoopPlan(total_steps=t.max_steps, batches_per_epoch=batches.steps_per_epoch, items_per_micro_batch=t.micro_batch_size,
                    max_grad_norm=t.max_grad_norm, log_every=t.log_every, val_every=-1)
    hooks = Hooks(validate=lambda step, epoch: {}, save=lambda *args: run_dir,
                  non_finite=lambda *args: RuntimeError("non-finite loss"))
    with contextlib.redirect_stdout(io.StringIO()), make_progress() as progress:
        result = fit(accelerator, model, batches, optimizer, scheduler, plan=plan, start=LoopStart(), hooks=hooks,
                     progress=progress)
    return [h["seconds"] for h in result.history]


def time_bare_steps(cfg: Any, items: list[dict[str, Any]], steps: int) -> list[float]:
    """Per-step wall times of a plain PyTorch loop over the same model, batch and optimizer settings."""
    from mrg.methods import get_method
    from mrg.model.trainable import stage_model
    from mrg.optim import build_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method = get_method(cfg.model.method)
    model = stage_model(method, cfg, method.stages[0]).to(device)
    model.train()
    optimizer = build_optimizer(model, cfg.train)
    params = [p for p in model.parameters() if p.requires_grad]
    # the same data work as mrg's loop: a plain DataLoader over the same items with the method's collate step
    # (reports are tokenized when a batch is collated), so the ratio measures the loop, not the tokenizer
    collate = method.collate(cfg, method.stages[0], model)
    loader = iter(torch.utils.data.DataLoader(_SameBatch(items, len(items) * steps), batch_size=len(items),
                                              collate_fn=collate))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in next(loader).items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def loader_throughput(cfg: Any, data_root: Path, workers: list[int], max_items: int) -> list[dict[str, float]]:
    """Images per second through ReportDataset + DataLoader (decode, resize, normalise, collate)."""
    from mrg.data.dataset import collate_studies, dataset_from_config

    dataset = dataset_from_config(cfg, "train", augment=False)
    subset = torch.utils.data.Subset(dataset, range(min(max_items, len(dataset))))
    rows = []
    for num_workers in workers:
        loader = torch.utils.data.DataLoader(subset, batch_size=cfg.train.micro_batch_size, collate_fn=collate_studies,
                                             num_workers=num_workers, persistent_workers=False)
        started = time.perf_counter()
        images = sum(int(batch["view_mask"].sum()) for batch in loader)
        seconds = time.perf_counter() - started
        rows.append({"workers": num_workers, "images": images, "images_per_s": images / seconds,
                     "images_per_s_per_worker": images / seconds / max(1, num_workers)})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", help="Preset or YAML (default: tiny).")
    parser.add_argument("--data", type=Path, help="Prepared dataset (default: a synthetic one made in a temp folder).")
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per timed run (default: 40).")
    parser.add_argument("--warmup", type=int, default=5, help="Steps left out of the timing (default: 5).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating bare/mrg runs (default: 3).")
    parser.add_argument("--micro-batch", type=int, default=8, help="Studies per step (default: 8).")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time (default: 0,1,2).")
    parser.add_argument("--loader-items", type=int, default=64, help="Studies read per loader timing (default: 64).")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("overrides", nargs="*", help="Config overrides key=value.")
    args = parser.parse_args(argv)

    from mrg.methods import get_method
    from mrg.model.trainable import stage_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        os.environ.setdefault("MRG_CACHE_DIR", str(tmp_dir / "cache"))
        data_root = args.data
        if data_root is None:
            from mrg.data.sources.synthetic import prepare_synthetic

            data_root = tmp_dir / "synthetic"
            prepare_synthetic(data_root, n=max(80, args.loader_items + 16), seed=0, image_size=512)
        cfg = _config(args, data_root, [])
        method = get_method(cfg.model.method)
        items = _first_items(cfg, stage_model(method, cfg, method.stages[0]), args.micro_batch)

        bare: list[float] = []
        ours: list[float] = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        for repeat in range(args.repeats):
            bare += time_bare_steps(cfg, items, args.steps)[args.warmup:]
            ours += time_mrg_steps(cfg, items, tmp_dir / f"run{repeat}")[args.warmup:]
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        loader = loader_throughput(cfg, data_root, [int(w) for w in args.workers.split(",")], args.loader_items)

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    figures = {
        "config": args.config,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "precision": cfg.train.precision,
        "micro_batch": args.micro_batch,
        "timed_steps": len(ours),
        "bare_step_ms_median": 1000 * statistics.median(bare),
        "mrg_step_ms_median": 1000 * statistics.median(ours),
        "step_ratio": statistics.median(ours) / statistics.median(bare),
        "loader": loader,
        "loader_image_size": cfg.data.image_size,
        "peak_rss_mib": rss_kib / 1024 if platform.system() == "Linux" else rss_kib / 2**20,
        "cuda_peak_mib": cuda_peak,
        "torch": torch.__version__,
    }
    print(f"config {figures['config']} on {figures['device']}, precision {figures['precision']}, "
          f"micro batch {args.micro_batch}, {len(ours)} timed steps per loop ({args.repeats} x {args.steps} - warm-up)")
    print(f"bare PyTorch step   {figures['bare_step_ms_median']:8.2f} ms (median)")
    print(f"mrg fit() step      {figures['mrg_step_ms_median']:8.2f} ms (median)")
    print(f"ratio mrg / bare    {figures['step_ratio']:8.3f}   (target <= 1.05)")
    for row in loader:
        print(f"data loader, {row['workers']} workers: {row['images_per_s']:8.1f} images/s "
              f"({row['images_per_s_per_worker']:.1f} per worker; {cfg.data.image_size} px)")
    print(f"peak RSS            {figures['peak_rss_mib']:8.0f} MiB")
    if cuda_peak is not None:
        print(f"peak CUDA memory    {cuda_peak:8.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
