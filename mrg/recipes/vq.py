"""``mrg train-vq``: train the image tokenizer on the images of a prepared dataset, validating and checkpointing.

The run folder follows ``mrg.runs``'s layout (``config.yaml``, ``metrics.csv``, ``val_metrics.jsonl``,
``step-NNNNNN/`` with ``trainable.safetensors``, ``optimizer.pt``, ``rng.pt``, ``config.yaml``, ``meta.json``
written last, and ``best`` / ``last`` pointers), plus ``vq.json``: which dataset trained it. ``best`` is the
validation with the highest PSNR. ``--resume`` continues from ``last``; a checkpoint whose architecture
(``model.*``: codebook size, code width, downsampling, ...) differs from the config is refused with the
fields named, because its weights or its token ids would mean something else.

Each step draws ``train.batch_size`` images of the train split without replacement, from a generator seeded
by the seed and the step, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mrg.checkpoint import (
    capture_rng_state,
    commit_checkpoint,
    latest_checkpoint,
    load_meta,
    load_torch_state,
    load_trainable_weights,
    prune_checkpoints,
    read_pointer,
    remove_staging_dirs,
    resolve_checkpoint,
    restore_rng_state,
    staging_dir,
    write_checkpoint_files,
    write_pointer,
)
from mrg.config import VQConfig, build_config, config_to_dict, diff_configs, save_config
from mrg.console import info, make_progress
from mrg.data.image_set import image_entries, load_pixels, to_float
from mrg.data.prepared import load_prepared_dataset
from mrg.errors import CheckpointError, DataError, OutputDirError, TrainingError
from mrg.files import read_json, write_json_atomic
from mrg.metrics.image import codebook_stats, gradient_magnitude_error, psnr, ssim
from mrg.model.vq import VQAutoencoder
from mrg.model.vq_loss import ReconstructionLoss, discriminator_loss
from mrg.optim import adamw, warmup_cosine
from mrg.provenance import provenance
from mrg.runs import CONFIG_NAME, METRICS_CSV_NAME, VAL_METRICS_NAME, VQ_RECORD_NAME
from mrg.trackers import CSVTracker

SELECT_METRIC = "psnr"
"""The validation metric that picks ``best`` (higher is better)."""
LOG_EVERY = 10


@dataclass
class VQRunResult:
    """What ``train_vq`` did."""

    out_dir: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    """The last validation's metrics."""
    best_step: int | None = None
    seconds: float = 0.0
    skipped: bool = False
    """The run was already finished with this config: nothing trained."""


# ------------------------------------------------------------------------------------------- loading


def load_vq_checkpoint(path: str | Path) -> tuple[VQAutoencoder, VQConfig, Path]:
    """The tokenizer of a ``mrg train-vq`` run (its ``best``), a pointer or a step folder, in eval mode.

    Raises:
        CheckpointError: no checkpoint there, it is not a tokenizer's, or its weights do not fit its config.
    """
    step_dir = resolve_checkpoint(path, prefer="best")
    cfg = _checkpoint_vq_config(step_dir)
    model = VQAutoencoder(cfg.model, cfg.quantizer)
    weights = {k: v for k, v in load_trainable_weights(step_dir).items() if not k.startswith("discriminator.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{step_dir}: weights do not fit its config.yaml ({str(err).splitlines()[0]})") from None
    return model.eval(), cfg, step_dir


def _checkpoint_vq_config(step_dir: Path) -> VQConfig:
    import yaml

    path = step_dir / CONFIG_NAME
    meta = load_meta(step_dir)
    if meta.get("kind") != "vq":
        raise CheckpointError(f"{step_dir}: not an image-tokenizer checkpoint (written by 'mrg train', not 'mrg train-vq')")
    try:
        return build_config(VQConfig, yaml.safe_load(path.read_text(encoding="utf-8")))
    except Exception as err:  # YAML or config errors: the file is damaged or from another mrg version
        raise CheckpointError(f"{path}: unreadable tokenizer config ({err})") from None


def check_vq_compatible(checkpoint_cfg: VQConfig, cfg: VQConfig, step_dir: Path) -> None:
    """Refuse a checkpoint whose architecture differs from ``cfg``, naming every differing ``model.*`` field.

    Raises:
        CheckpointError: e.g. ``model.codebook_size: checkpoint 512, config 256``.
    """
    diffs = diff_configs(checkpoint_cfg.model, cfg.model, "model")
    if diffs:
        fields = "; ".join(f"{key}: checkpoint {a}, config {b}" for key, a, b in diffs)
        raise CheckpointError(
            f"{step_dir}: the tokenizer checkpoint has another architecture ({fields}); "
            "use the checkpoint's settings or train a new tokenizer into another --out"
        )


# ------------------------------------------------------------------------------------------- run folder


def _vq_source(data_root: Path) -> dict[str, Any]:
    info_ = read_json(data_root / "prepare.json")
    return {"data": str(data_root.resolve()), "data_checksum": info_.get("checksums", {}).get("studies.jsonl")}


def _claim_output(out_dir: Path, cfg: VQConfig, source: dict[str, Any], resume: bool) -> tuple[Path | None, bool]:
    """(the checkpoint to continue from or None to start fresh, whether that run is already finished).

    Refuses folders that hold something else, and an unfinished run without ``resume``.
    """
    record_path = out_dir / VQ_RECORD_NAME
    if out_dir.exists() and any(out_dir.iterdir()) and not record_path.is_file():
        raise OutputDirError(f"--out {out_dir}: directory is not empty and holds no {VQ_RECORD_NAME}; choose a new folder")
    if not record_path.is_file():
        return None, False
    if read_json(record_path).get("source") != source:
        raise OutputDirError(f"--out {out_dir}: holds a tokenizer trained on another dataset; choose another --out")
    last = read_pointer(out_dir, "last") or latest_checkpoint(out_dir)
    if last is None:
        return None, False  # the earlier run stopped before its first checkpoint
    check_vq_compatible(_checkpoint_vq_config(last), cfg, last)
    meta = load_meta(last)
    if meta.get("finished") and meta["step"] >= cfg.train.steps:
        return last, True
    if not resume:
        raise OutputDirError(
            f"--out {out_dir}: holds an unfinished tokenizer run (last checkpoint {last.name}); "
            "pass --resume to continue it, or choose another --out"
        )
    return last, False


# ------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate_vq(model: VQAutoencoder, pixels: torch.Tensor, batch_size: int = 32) -> dict[str, float]:
    """PSNR, SSIM, gradient-magnitude error (means over images), codebook usage and perplexity on ``pixels``.

    Args:
        pixels: (N, 1, S, S) uint8 validation images.
    """
    was_training = model.training
    model.eval()
    sums = {"psnr": 0.0, "ssim": 0.0, "grad_mag_error": 0.0}
    counts = torch.zeros(model.cfg.codebook_size)
    for start in range(0, len(pixels), batch_size):
        x = to_float(pixels[start : start + batch_size])
        out = model(x)
        x_hat = out.reconstruction.clamp(0, 1)
        sums["psnr"] += float(psnr(x, x_hat).sum())
        sums["ssim"] += float(ssim(x, x_hat).sum())
        sums["grad_mag_error"] += float(gradient_magnitude_error(x, x_hat).sum())
        counts += out.counts
    model.train(was_training)
    metrics = {k: v / len(pixels) for k, v in sums.items()}
    return metrics | codebook_stats(counts)


# ------------------------------------------------------------------------------------------- training


@dataclass
class _Training:
    """Everything one ``train_vq`` run holds."""

    cfg: VQConfig
    out_dir: Path
    model: VQAutoencoder
    loss: ReconstructionLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    disc_optimizer: torch.optim.Optimizer | None
    train_pixels: torch.Tensor
    val_pixels: torch.Tensor
    step: int = 0
    best: tuple[int, float] | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)


def _optimizers(cfg: VQConfig, model: VQAutoencoder, loss: ReconstructionLoss) -> tuple[Any, Any, Any]:
    no_decay = {n for n, p in model.named_parameters() if p.ndim < 2}
    optimizer = adamw(model.named_parameters(), no_decay=no_decay, lr=cfg.train.lr,
                      weight_decay=cfg.train.weight_decay, what="the image tokenizer")
    scheduler = warmup_cosine(optimizer, warmup_steps=cfg.train.warmup_steps, total_steps=cfg.train.steps, min_ratio=0.1)
    disc = loss.discriminator
    disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=cfg.train.lr, betas=(0.5, 0.9)) if disc is not None else None
    return optimizer, scheduler, disc_optimizer


def _load_pixels(data_root: Path, cfg: VQConfig) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = load_prepared_dataset(data_root)
    train = image_entries(dataset, ("train",))
    try:
        val = image_entries(dataset, ("val",))
    except DataError:
        raise DataError(f"{data_root}: the val split holds no images; 'mrg train-vq' validates on it") from None
    if cfg.train.val_images:
        val = val[: cfg.train.val_images]
    size = cfg.model.image_size
    return load_pixels(dataset.root, train, size), load_pixels(dataset.root, val, size)


def _setup(data_root: Path, out_dir: Path, cfg: VQConfig, resume_from: Path | None) -> _Training:
    torch.manual_seed(cfg.train.seed)
    model = VQAutoencoder(cfg.model, cfg.quantizer)
    loss = ReconstructionLoss(cfg.loss)
    optimizer, scheduler, disc_optimizer = _optimizers(cfg, model, loss)
    train_pixels, val_pixels = _load_pixels(data_root, cfg)
    run = _Training(cfg, out_dir, model, loss, optimizer, scheduler, disc_optimizer, train_pixels, val_pixels)
    if resume_from is not None:
        _restore(run, resume_from)
    return run


def _restore(run: _Training, step_dir: Path) -> None:
    weights = load_trainable_weights(step_dir)
    model_weights = {k: v for k, v in weights.items() if not k.startswith("discriminator.")}
    run.model.load_state_dict(model_weights)
    if run.loss.discriminator is not None:
        disc = {k[len("discriminator."):]: v for k, v in weights.items() if k.startswith("discriminator.")}
        if disc:
            run.loss.discriminator.load_state_dict(disc)
    state = load_torch_state(step_dir / "optimizer.pt")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.disc_optimizer is not None and state.get("disc_optimizer"):
        run.disc_optimizer.load_state_dict(state["disc_optimizer"])
    restore_rng_state(load_torch_state(step_dir / "rng.pt")["ranks"][0])
    meta = load_meta(step_dir)
    run.step = int(meta["step"])
    best = read_pointer(run.out_dir, "best")
    if best is not None and best.is_dir():
        run.best = (int(load_meta(best)["step"]), float(load_meta(best)["metrics"][SELECT_METRIC]))
    info(f"resuming the tokenizer from {step_dir.name}")


def _batch(run: _Training, step: int) -> torch.Tensor:
    """The images of ``step``: a permutation seeded by (seed, step), so resuming replays the same batches."""
    generator = torch.Generator().manual_seed(run.cfg.train.seed * 1_000_003 + step)
    order = torch.randperm(len(run.train_pixels), generator=generator)[: run.cfg.train.batch_size]
    return to_float(run.train_pixels[order])


def _train_step(run: _Training, step: int) -> dict[str, float]:
    x = _batch(run, step)
    out = run.model(x)
    terms = run.loss(x, out.reconstruction, out.vq_loss, step)
    if not torch.isfinite(terms.total):
        raise TrainingError(f"step {step}: the tokenizer's loss is not finite ({terms.terms}); lower train.lr")
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.scheduler.step()
    disc = run.loss.discriminator
    if disc is not None and run.disc_optimizer is not None and step >= run.cfg.loss.gan_start:
        d_loss = discriminator_loss(disc(x), disc(out.reconstruction.detach()))
        run.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        run.disc_optimizer.step()
        terms.terms["disc"] = float(d_loss.detach())
    return terms.terms | {"loss": float(terms.total.detach()), "lr": run.scheduler.get_last_lr()[0]}


def _save(run: _Training, metrics: dict[str, float], finished: bool) -> None:
    weights = dict(run.model.state_dict())
    if run.loss.discriminator is not None:
        weights |= {f"discriminator.{k}": v for k, v in run.loss.discriminator.state_dict().items()}
    state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "disc_optimizer": run.disc_optimizer.state_dict() if run.disc_optimizer is not None else {}}
    stage = staging_dir(run.out_dir, run.step)
    write_checkpoint_files(stage, weights=weights, training_state=state, rng_states=[capture_rng_state()], cfg=None)
    save_config(run.cfg, stage / CONFIG_NAME)
    meta = {"kind": "vq", "step": run.step, "finished": finished, "metrics": metrics, "provenance": provenance()}
    final = commit_checkpoint(stage, run.out_dir, run.step, meta)
    write_pointer(run.out_dir, "last", final)
    if run.best is None or metrics[SELECT_METRIC] > run.best[1]:
        run.best = (run.step, metrics[SELECT_METRIC])
        write_pointer(run.out_dir, "best", final)
    prune_checkpoints(run.out_dir, run.cfg.train.keep_last)


def _validate_and_save(run: _Training, started: float) -> None:
    metrics = validate_vq(run.model, run.val_pixels)
    run.last_metrics = metrics
    line = {"step": run.step, "time": round(time.perf_counter() - started, 1), **metrics}
    with open(run.out_dir / VAL_METRICS_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    _save(run, metrics, finished=run.step >= run.cfg.train.steps)
    info(f"step {run.step}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, "
         f"grad-mag err {metrics['grad_mag_error']:.4f}, codes used {metrics['codebook_usage']:.0%}")


def _fit(run: _Training) -> None:
    tracker = CSVTracker(run.out_dir / METRICS_CSV_NAME, keep_until_step=run.step)
    tracker.start()
    started = time.perf_counter()
    run.model.train()
    try:
        with make_progress() as progress:
            task = progress.add_task("train-vq", total=run.cfg.train.steps, completed=run.step)
            while run.step < run.cfg.train.steps:
                terms = _train_step(run, run.step)
                run.step += 1
                if run.step % LOG_EVERY == 0:
                    tracker.log(terms, step=run.step)
                if run.step % run.cfg.train.val_every == 0 or run.step == run.cfg.train.steps:
                    _validate_and_save(run, started)
                progress.advance(task)
    finally:
        tracker.finish()


def train_vq(data_root: str | Path, out_dir: str | Path, cfg: VQConfig, *, resume: bool = False) -> VQRunResult:
    """Train the image tokenizer on the train split of a prepared dataset; validate on its val split.

    Args:
        data_root: a folder written by ``mrg prepare``.
        out_dir: the run folder (new, or one of this tokenizer to continue with ``resume``).
        cfg: the tokenizer config.
        resume: continue an unfinished run from its ``last`` checkpoint.

    Returns:
        The run folder, the last step, the last validation and the best step. A run already finished with
        this architecture and step count is not trained again (``skipped``).

    Raises:
        DataError: the dataset is missing or has no train / val images.
        OutputDirError: ``out_dir`` holds something else, or an unfinished run without ``resume``.
        CheckpointError: the checkpoint to continue has another architecture (fields named).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    load_prepared_dataset(data_root)  # a clear error for a missing dataset before the output folder is touched
    source = _vq_source(data_root)
    start_from, finished = _claim_output(out_dir, cfg, source, resume)
    if start_from is not None and finished:
        meta = load_meta(start_from)
        return VQRunResult(out_dir, int(meta["step"]), meta.get("metrics", {}), _best_step(out_dir), skipped=True)
    began = time.perf_counter()
    run = _setup(data_root, out_dir, cfg, start_from)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_staging_dirs(out_dir)
    save_config(cfg, out_dir / CONFIG_NAME)
    write_json_atomic(out_dir / VQ_RECORD_NAME, {"source": source, "config": config_to_dict(cfg), "provenance": provenance()})
    _fit(run)
    return VQRunResult(out_dir, run.step, run.last_metrics, run.best[0] if run.best else None,
                       round(time.perf_counter() - began, 1))


def _best_step(out_dir: Path) -> int | None:
    best = read_pointer(out_dir, "best")
    return int(load_meta(best)["step"]) if best is not None and best.is_dir() else None
