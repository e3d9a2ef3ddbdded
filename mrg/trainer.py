"""Training under accelerate: ``fit`` runs one readable loop from set-up to the final checkpoint.

Features:
    - CPU, one GPU, several GPUs and several nodes through accelerate (DDP; FSDP and DeepSpeed ZeRO-2
      configs are shipped in ``mrg/configs/accelerate/``); fp32, bf16 or fp16 (``train.precision``).
    - AdamW without weight decay on biases, norms and prompt tokens; linear warm-up, then cosine decay
      to ``train.min_lr``; gradient accumulation and clipping.
    - Shuffled sampling that is a pure function of (seed, epoch): every process, and a resumed run,
      sees the same order. Each epoch is cut to whole optimizer steps (R2GenGPT drops the last
      incomplete batch too), so every step averages the same number of studies.
    - Validation by generation on the validation split (optionally a fixed seeded subset), scored by
      an injected scorer; the best checkpoint is chosen by ``train.select`` weights. The test split
      is never read here.
    - Checkpoints with trainable weights, optimizer, scheduler, RNG and data position (see
      ``mrg.checkpoint``); ``resume="auto"`` continues an interrupted run and reproduces the
      uninterrupted one.

Counters: ``step`` is always an optimizer step; ``batch_in_epoch`` counts micro-batches of this
process; ``epoch`` counts passes over the training split from 0.

Raises (from ``fit``):
    ConfigError: inconsistent settings (e.g. fewer training studies than one effective batch).
    CheckpointError: a resume checkpoint is missing, damaged or from another model configuration.
    OutputDirError: ``run_dir`` holds checkpoints and no ``resume`` was asked for.
    TrainingError: the loss became NaN or infinite (the last good checkpoint is kept).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext as _nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.tracking import GeneralTracker
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from mrg.checkpoint import (
    OPTIMIZER_NAME,
    RNG_NAME,
    capture_rng_state,
    check_checkpoint_files,
    check_config_compatible,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_config,
    load_meta,
    load_torch_state,
    load_trainable_weights,
    prune_checkpoints,
    read_pointer,
    remove_staging_dirs,
    resolve_checkpoint,
    restore_rng_state,
    staging_dir,
    staging_name,
    step_dir_name,
    write_checkpoint_files,
    write_pointer,
)
from mrg.config import GenerateConfig, RunConfig, save_config
from mrg.console import console, info, make_progress, warn
from mrg.errors import ConfigError, MrgError, OutputDirError, TrainingError
from mrg.files import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from mrg.provenance import provenance, utc_now

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.progress import Progress

Scorer = Callable[[list[str], list[str]], dict[str, float]]
"""``scorer(predictions, references) -> {metric: value}``, e.g. ``mrg.evaluate.make_scorer(...)``."""

TRAIN_SPLITS = ("train", "val")
"""The only splits training reads; the test split is for ``mrg generate`` + ``mrg evaluate`` alone."""

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainResult:
    """What a call of ``fit`` did."""

    run_dir: Path
    step: int
    """Optimizer steps done in total (including those before a resume)."""
    epoch: int
    """Completed passes over the training split."""
    total_steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_score: float | None
    best_metrics: dict[str, float] | None
    resumed_from: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    """One record per optimizer step run by this call: step, loss, lr, grad_norm, seconds (the step's wall time,
    data loading included, validation and checkpointing excluded)."""
    validations: list[dict[str, Any]] = field(default_factory=list)
    """The validation records written by this call (also in ``val_metrics.jsonl``)."""


# ----------------------------------------------------------------------------------------------- data


class EpochSampler(Sampler[int]):
    """A seeded permutation of the dataset per epoch, cut to ``num_used`` items (whole optimizer steps).

    The order depends only on (seed, epoch), never on global random state, so every process and every
    resumed run draws the same one; accelerate then deals consecutive micro-batches to processes.
    """

    def __init__(self, num_items: int, num_used: int, seed: int) -> None:
        self.num_items = num_items
        self.num_used = num_used
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_items, generator=generator)[: self.num_used].tolist())

    def __len__(self) -> int:
        return self.num_used


class PerItemSeed(Dataset):
    """Seeds a DataLoader worker's generators before each item from (the epoch's base seed, item index).

    Random augmentation then depends only on the epoch and the item, not on which worker loads it, so
    a run resumed mid-epoch (whose workers start afresh) augments exactly as the uninterrupted one.
    In the main process (``num_workers`` 0) nothing is reseeded: the restored RNG state covers it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            seed = _mix_seed(worker.seed - worker.id, index)  # worker.seed = the loader's base seed + worker id
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return self.dataset[index]


def _mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (stable across runs and platforms)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + part + 1442695040888963407) % (1 << 63)
    return value


def _build_model(cfg: RunConfig, *, load_init: bool = True) -> torch.nn.Module:
    from mrg.model.build import build_model

    return build_model(cfg, load_init=load_init)


def _build_datasets(cfg: RunConfig, model: Any, splits: Sequence[str] = TRAIN_SPLITS) -> dict[str, Dataset]:
    """The datasets of ``splits`` from the prepared folder ``cfg.data.root``, normalised for ``model``'s encoder."""
    from mrg.data.dataset import dataset_from_config
    from mrg.data.prepared import load_prepared_dataset

    # Fidelity to the protocol: model selection must never see the test split.
    assert "test" not in splits, "training and validation never read the test split"
    prepared = load_prepared_dataset(cfg.data.root)
    return {split: dataset_from_config(cfg, split, image_settings=model.image_settings, prepared=prepared) for split in splits}


def _build_collate(model: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    from mrg.data.dataset import collate_studies

    return collate_studies


# ------------------------------------------------------------------------------------------- trackers


class CSVTracker(GeneralTracker):
    """An accelerate tracker that appends step metrics to a CSV file in long format.

    Columns ``step,name,value,time`` (time in seconds since the epoch). Long format keeps the file
    appendable when new metrics appear; ``pandas.read_csv(path).pivot_table(index="step",
    columns="name", values="value")`` gives one column per metric. On resume, rows logged after the
    resumed step (by the interrupted run) are dropped, so the file matches an uninterrupted run's.
    """

    name = "csv"
    requires_logging_directory = False
    main_process_only = True
    FIELDS = ("step", "name", "value", "time")

    def __init__(self, path: Path, *, keep_until_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.keep_until_step = keep_until_step
        self._handle: Any = None
        self._writer: Any = None

    @property
    def tracker(self) -> Any:
        return self._writer

    def start(self) -> None:
        kept: list[dict[str, str]] = []
        if self.keep_until_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                kept = [row for row in csv.DictReader(handle) if _int_or(row.get("step"), 1 << 62) <= self.keep_until_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)
        self._handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        self._writer = csv.writer(self._handle)

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """The configuration is in ``RUN_DIR/config.yaml``; the CSV holds numbers only."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        now = f"{time.time():.3f}"
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.writerow([step if step is not None else "", name, repr(float(value)), now])
        self._handle.flush()

    def finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


# ------------------------------------------------------------------------------------ optimisation


def build_optimizer(model: Any, train_cfg: Any) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms and prompt tokens get no weight decay."""
    no_decay = set(model.no_decay_parameter_names())
    decay, plain = [], []
    for name, param in model.trainable_named_parameters():
        (plain if name in no_decay else decay).append(param)
    if not decay and not plain:
        raise ConfigError("the model has no trainable parameters; check model.encoder.trainable and model.promptbook.mode")
    groups = [
        {"params": decay, "weight_decay": train_cfg.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=train_cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): linear warm-up, cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Any, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up + cosine schedule of ``lr_factor`` as a LambdaLR stepped once per optimizer step."""
    warmup, ratio = train_cfg.warmup_steps, train_cfg.min_lr / train_cfg.lr

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup, total_steps=total_steps, min_ratio=ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -------------------------------------------------------------------------------------- generation


def shard_range(num_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(num_items)`` that process ``rank`` handles (sizes differ by at most 1)."""
    return range(num_items * rank // world_size, num_items * (rank + 1) // world_size)


def predict(
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]],
    gen_cfg: GenerateConfig,
    *,
    indices: Sequence[int] | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
    description: str = "generating",
) -> list[dict[str, Any]]:
    """Generate a report for every study of ``dataset`` (or of ``indices``), spread over the processes.

    Each process takes a contiguous block of the items, so every item is generated exactly once
    (no sampler padding duplicates), and the outputs are gathered to every process in dataset order.
    Each batch is seeded from ``gen_cfg.seed`` and its first item's index (sampling is reproducible
    for a given batch size and number of processes); the global random state is left untouched.

    Args:
        progress: a running rich Progress to add a task to (a new one is shown when None).

    Returns:
        ``{"index", "id", "prediction", "reference"}`` per item (reference None for image files), in
        the order of ``indices``.
    """
    from accelerate.utils import DistributedType, gather_object, send_to_device

    order = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
    mine = [order[i] for i in shard_range(len(order), accelerator.process_index, accelerator.num_processes)]
    loader = DataLoader(Subset(dataset, mine), batch_size=gen_cfg.batch_size, collate_fn=collate_fn, num_workers=num_workers)
    num_batches = len(loader)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        # FSDP gathers parameters collectively in every forward: all processes must run as many batches,
        # and transformers must keep every process decoding until all are done (synced_gpus), which it
        # does for modules it sees as FSDP-managed; accelerate's fully_shard does not mark the LLM so.
        num_runs = math.ceil(math.ceil(len(order) / accelerator.num_processes) / gen_cfg.batch_size)
        llm = getattr(getattr(unwrapped, "llm", None), "model", None)
        if llm is not None:
            llm._is_fsdp_managed_module = True
    else:
        num_runs = num_batches
    was_training = unwrapped.training
    unwrapped.eval()
    rows: list[dict[str, Any]] = []
    own_progress = make_progress() if progress is None else None
    progress = progress or own_progress
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), own_progress or _nullcontext():
        task = progress.add_task(description, total=len(order))  # type: ignore[union-attr]
        batches = iter(loader)
        batch: dict[str, Any] | None = None
        for run in range(num_runs):
            real = run < num_batches
            if real:
                batch = next(batches)
            elif batch is None:  # no items here, but FSDP needs this process in every collective
                batch = collate_fn([dataset[order[0]]])
            first = mine[run * gen_cfg.batch_size] if real else 0
            batch_cfg = replace(gen_cfg, seed=_mix_seed(gen_cfg.seed, first))
            with accelerator.autocast():
                predictions = unwrapped.generate(send_to_device(batch, accelerator.device), batch_cfg)  # type: ignore[arg-type]
            if not real:
                continue
            for offset, prediction in enumerate(predictions):
                rows.append(
                    {
                        "index": mine[run * gen_cfg.batch_size + offset],
                        "id": str(batch["ids"][offset]),  # type: ignore[index]
                        "prediction": prediction,
                        "reference": (batch.get("reports") or [None] * len(predictions))[offset],  # type: ignore[union-attr]
                    }
                )
            progress.advance(task, len(predictions) * accelerator.num_processes)  # type: ignore[union-attr]
        progress.remove_task(task)  # type: ignore[union-attr]
    unwrapped.train(was_training)
    gathered = gather_object(rows) if accelerator.num_processes > 1 else rows
    position = {index: rank for rank, index in enumerate(order)}
    return sorted(gathered, key=lambda row: position[row["index"]])


# ---------------------------------------------------------------------------------------------- start


@dataclass
class _Start:
    """Where a run starts: from scratch (``step_dir`` None) or from a checkpoint."""

    step_dir: Path | None = None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def _find_start(run_dir: Path, resume: str | None, cfg: RunConfig) -> _Start:
    """Decide where to start from and check that a resume checkpoint suits ``cfg``."""
    if resume is None:
        existing = list_checkpoints(run_dir)
        if existing:
            raise OutputDirError(
                f"{run_dir} already holds checkpoints (newest {existing[-1].name}); "
                f"pass --resume auto to continue that run, or choose another --out"
            )
        return _Start()
    if resume == "auto":
        step_dir = latest_checkpoint(run_dir)
        if step_dir is None:
            return _Start()
    else:
        step_dir = resolve_checkpoint(resume, prefer="last")
    check_checkpoint_files(step_dir)
    meta = load_meta(step_dir)
    for message in check_config_compatible(load_checkpoint_config(step_dir), cfg, step_dir):
        warn(message)
    return _Start(step_dir, int(meta["step"]), int(meta.get("epoch", 0)), int(meta.get("batch_in_epoch", 0)), meta)


def force_cpu_processes() -> bool:
    """True for several processes on a machine without an accelerator: accelerate then joins them over gloo.

    (accelerate treats a torchrun launch as distributed only on a GPU unless told the processes are CPU ones.)
    """
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return not has_accelerator and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _make_accelerator(cfg: RunConfig, run_dir: Path, keep_until_step: int | None) -> Accelerator:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # accelerate keeps its settings in process-wide singletons; start from a clean slate so a second run
    # in the same process (a notebook, a test, generate after train) may use another precision.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    log_with: list[Any] = []
    if "csv" in cfg.train.trackers:
        log_with.append(CSVTracker(run_dir / "metrics.csv", keep_until_step=keep_until_step))
    if "tensorboard" in cfg.train.trackers:
        log_with.append("tensorboard")
    try:
        return Accelerator(
            cpu=force_cpu_processes(),
            mixed_precision=PRECISION_TO_ACCELERATE[cfg.train.precision],
            gradient_accumulation_steps=cfg.train.grad_accum_steps,
            log_with=log_with or None,
            project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir)),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.train.find_unused_parameters)],
            step_scheduler_with_optimizer=False,
        )
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"train.precision={cfg.train.precision} cannot run here ({err}); use train.precision=bf16 or fp32") from None


# ------------------------------------------------------------------------------------------- the run


def fit(cfg: RunConfig, run_dir: str | os.PathLike[str], *, resume: str | None = None, scorer: Scorer | None = None) -> TrainResult:
    """Train the report model described by ``cfg`` and write checkpoints into ``run_dir``.

    Args:
        cfg: the resolved run configuration.
        run_dir: output folder (created); see ``mrg.checkpoint`` for its layout.
        resume: None for a new run; ``"auto"`` to continue from the newest complete checkpoint in
            ``run_dir`` (a new run when there is none); or a checkpoint path (step folder,
            ``best``/``last`` pointer or run folder).
        scorer: ``scorer(predictions, references) -> metrics`` used for validation and checkpoint
            selection; required unless ``train.val_every`` is -1.

    Returns:
        A ``TrainResult`` with the step reached, the best and last checkpoints and the loss history.
    """
    from accelerate.utils import DistributedType, broadcast_object_list, gather_object, set_seed

    run_dir = Path(run_dir)
    t = cfg.train
    validation_on = t.val_every != -1
    if validation_on and scorer is None:
        raise ConfigError("validation needs a scorer (fit(..., scorer=make_scorer(...))); or set train.val_every=-1")

    start = _find_start(run_dir, resume, cfg)
    accelerator = _make_accelerator(cfg, run_dir, keep_until_step=start.step if start.step_dir else None)
    is_main = accelerator.is_main_process
    world = accelerator.num_processes

    # ---- model, data, optimizer (the same seed on every process gives the same initial weights)
    set_seed(t.seed)
    model = _build_model(cfg, load_init=start.step_dir is None)  # a stage-2 resume needs no stage-1 run
    if start.step_dir is not None:
        model.load_trainable_state_dict(load_trainable_weights(start.step_dir), strict=True)
    datasets = _build_datasets(cfg, model)
    train_set, val_set = datasets["train"], datasets["val"]
    collate_fn = _build_collate(model)

    micro_batches_per_step = t.grad_accum_steps * world
    global_batch = t.micro_batch_size * micro_batches_per_step
    steps_per_epoch = len(train_set) // global_batch  # type: ignore[arg-type]
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the train split of {cfg.data.root} has {len(train_set)} studies, fewer than one effective batch "  # type: ignore[arg-type]
            f"({t.micro_batch_size} x {t.grad_accum_steps} x {world} processes = {global_batch}); "
            f"lower train.micro_batch_size or train.grad_accum_steps"
        )
    total_steps = t.max_steps if t.max_steps is not None else t.epochs * steps_per_epoch
    if validation_on and len(val_set) == 0:  # type: ignore[arg-type]
        raise ConfigError(f"the val split of {cfg.data.root} is empty; set train.val_every=-1 to train without validation")
    val_indices = _val_subset(len(val_set), t.val_subset, t.seed)  # type: ignore[arg-type]

    sampler = EpochSampler(len(train_set), steps_per_epoch * global_batch, t.seed)  # type: ignore[arg-type]
    loader_generator = torch.Generator()
    train_loader = DataLoader(
        PerItemSeed(train_set),
        batch_size=t.micro_batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=loader_generator,  # worker seeds come from here, never from the global generator
    )
    optimizer = build_optimizer(model, t)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if accelerator.gradient_accumulation_steps != t.grad_accum_steps:  # a DeepSpeed config overrides ours
        raise ConfigError(
            f"the DeepSpeed config accumulates {accelerator.gradient_accumulation_steps} micro-batches per step but "
            f"train.grad_accum_steps is {t.grad_accum_steps}; set gradient_accumulation_steps in the accelerate config to match"
        )
    scheduler = build_scheduler(optimizer, t, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    batches_per_epoch = steps_per_epoch * t.grad_accum_steps  # micro-batches per process
    sharded_optimizer = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if start.step_dir is not None:
        _load_training_state(accelerator, optimizer, scheduler, start.step_dir)

    # ---- everything checked: only now does the run folder get written
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_staging_dirs(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        _write_run_provenance(run_dir, start)
        if start.step_dir is not None and start.step_dir.parent.resolve() == run_dir.resolve():
            _restore_pointers(run_dir, start)
        init_kwargs = {"tensorboard": {"purge_step": start.step + 1}} if start.step_dir else {}
        accelerator.init_trackers("tensorboard", init_kwargs=init_kwargs)
        _print_summary(accelerator, cfg, model, start, run_dir, len(train_set), len(val_indices) if validation_on else 0,  # type: ignore[arg-type]
                       steps_per_epoch, total_steps)

    accelerator.wait_for_everyone()

    best = dict(start.meta.get("best") or {})  # {"step", "score", "metrics", "dir"}
    result = TrainResult(run_dir, start.step, start.epoch, total_steps, start.step_dir, _pointer(run_dir, "best"),
                         best.get("score"), best.get("metrics"), start.step_dir)

    progress = make_progress()

    def validate(step: int, epoch: int, *, sanity: bool = False) -> dict[str, Any]:
        """Generate on the validation studies and score them; unless ``sanity``, record the result."""
        indices = val_indices[: t.sanity_val_batches * cfg.generate.batch_size * world] if sanity else val_indices
        rows = predict(accelerator, model, val_set, collate_fn, cfg.generate, indices=indices, num_workers=cfg.data.num_workers,
                       progress=progress, description="sanity validation" if sanity else f"validation at step {step}")
        metrics: Any = None
        if is_main:  # scored once (METEOR's JVM runs on one process), then shared
            try:
                metrics = scorer([r["prediction"] for r in rows], [r["reference"] for r in rows])  # type: ignore[misc]
            except MrgError as err:  # let every process raise it, rather than wait forever for the result
                metrics = err
        if world > 1:
            metrics = broadcast_object_list([metrics])[0]
        if isinstance(metrics, MrgError):
            raise metrics
        record = {"step": step, "epoch": epoch, "metrics": metrics, "score": _selection_score(metrics, t.select),
                  "num_studies": len(rows)}
        if not sanity and is_main:
            record["predictions"] = f"val/{step_dir_name(step)}.jsonl"
            record["time"] = utc_now()
            write_jsonl_atomic(run_dir / record["predictions"], ({k: r[k] for k in ("id", "prediction", "reference")} for r in rows))
            _rewrite_jsonl(run_dir / "val_metrics.jsonl", record, keep_until_step=step - 1)
            accelerator.log({f"val/{k}": v for k, v in metrics.items()} | {"val/score": record["score"]}, step=step)
        return record

    def save(step: int, epoch: int, batch_in_epoch: int, record: dict[str, Any] | None) -> Path:
        """Write the checkpoint of ``step`` (every process takes part), then move best/last and prune."""
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        if is_main:
            staging_dir(run_dir, step)
        accelerator.wait_for_everyone()
        stage = run_dir / staging_name(step)
        weights = _trainable_weights(accelerator, model)  # a collective call under FSDP
        rng_states = gather_object([capture_rng_state()]) if world > 1 else [capture_rng_state()]
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
        if sharded_optimizer:  # every process keeps its own shard (needs a filesystem all nodes share)
            torch.save(state, stage / f"optimizer-rank{accelerator.process_index}.pt")
        if is_main:
            write_checkpoint_files(stage, weights=weights, training_state=None if sharded_optimizer else state,
                                   rng_states=rng_states, cfg=cfg)
        accelerator.wait_for_everyone()
        final = run_dir / step_dir_name(step)
        if is_main:
            is_best = record is not None and (best.get("score") is None or record["score"] > best["score"])
            if is_best:
                best.update(step=step, score=record["score"], metrics=record["metrics"], dir=final.name)  # type: ignore[index]
            meta = {
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps, "num_processes": world, "micro_batch_size": t.micro_batch_size,
                "grad_accum_steps": t.grad_accum_steps, "seed": t.seed, "sharded_optimizer": sharded_optimizer,
                "train_loss": result.history[-1]["loss"] if result.history else None,
                "metrics": record["metrics"] if record else None, "score": record["score"] if record else None,
                "best": best or None, "trainable_parameters": sum(p.numel() for p in trainable),
                "llm": cfg.model.llm.name_or_path, "created": utc_now(), "provenance": provenance(),
            }
            commit_checkpoint(stage, run_dir, step, meta)
            write_pointer(run_dir, "last", final)
            if is_best:
                write_pointer(run_dir, "best", final)
            prune_checkpoints(run_dir, t.keep_last)
        accelerator.wait_for_everyone()
        return final

    step, epoch = start.step, start.epoch
    skip = _resume_skip(start, world, t)  # micro-batches of the current epoch already trained on
    try:
        with progress:
            if validation_on and start.step_dir is None and t.sanity_val_batches > 0:
                record = validate(0, 0, sanity=True)
                info(f"sanity validation: {record['num_studies']} studies generated and scored (score {record['score']:.4f})")
            if start.step_dir is not None:
                rng = load_torch_state(start.step_dir / RNG_NAME)["ranks"]
                restore_rng_state(rng[accelerator.process_index] if len(rng) == world else rng[0])

            task = progress.add_task("training", total=total_steps, completed=step)
            window = _Window(time.perf_counter())
            step_started = window.started
            loss_sum = torch.zeros((), device=accelerator.device)
            tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
            micro_count = 0
            model.train()
            while step < total_steps:
                train_loader.set_epoch(epoch)
                loader_generator.manual_seed(_mix_seed(t.seed, epoch, 1))
                loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
                batch_in_epoch, skip = skip, 0
                for batch in loader:
                    with accelerator.accumulate(model):
                        output = model(batch)
                        accelerator.backward(output.loss)
                    loss_sum += output.loss.detach().float()
                    tokens += output.num_target_tokens
                    micro_count += 1
                    batch_in_epoch += 1
                    if not accelerator.sync_gradients:
                        continue

                    # ---- one optimizer step over the gradients of `micro_count` micro-batches per process
                    step_loss = accelerator.reduce(loss_sum / micro_count, reduction="mean")
                    grad_norm = accelerator.clip_grad_norm_(trainable, t.max_grad_norm) if t.max_grad_norm > 0 else None
                    checked = torch.stack([step_loss, step_loss if grad_norm is None else grad_norm.float().to(step_loss.device)])
                    loss_value, norm_value = checked.tolist()  # the one device-to-host sync of a step
                    if grad_norm is None:
                        norm_value = float("nan")
                    if not math.isfinite(loss_value) or (grad_norm is not None and t.precision != "fp16" and not math.isfinite(norm_value)):
                        raise _non_finite_error(loss_value, norm_value, step + 1, epoch, run_dir, cfg)
                    lr = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    now = time.perf_counter()
                    result.history.append({"step": step, "loss": loss_value, "lr": lr, "grad_norm": norm_value,
                                           "seconds": now - step_started})
                    step_started = now
                    window.add(loss_value, micro_count * t.micro_batch_size * world)
                    loss_sum.zero_()
                    micro_count = 0
                    progress.update(task, completed=step, description=f"epoch {epoch + 1}  loss {loss_value:.4f}")

                    # ---- log, validate, save
                    end_of_epoch = batch_in_epoch >= batches_per_epoch
                    last = step >= total_steps
                    if step % t.log_every == 0 or last:
                        global_tokens = int(accelerator.reduce(tokens, reduction="sum").item())
                        tokens.zero_()
                        _log_step(accelerator, window, step, total_steps, epoch, lr, norm_value, global_tokens)
                        window = _Window(time.perf_counter())
                    wants_val = validation_on and (
                        (t.val_every > 0 and step % t.val_every == 0) or (t.val_every == 0 and end_of_epoch) or last
                    )
                    if wants_val or (t.save_every > 0 and step % t.save_every == 0) or last:
                        record = validate(step, epoch + int(end_of_epoch)) if wants_val else None
                        if record is not None:
                            result.validations.append(record)
                            info(_val_line(record, t.select))
                        result.last_checkpoint = save(step, epoch, batch_in_epoch, record)
                        window = _Window(time.perf_counter())  # time spent validating and saving is not throughput
                        step_started = window.started
                    if last:
                        break
                if batch_in_epoch >= batches_per_epoch:
                    epoch += 1
    finally:
        accelerator.end_training()

    result.step, result.epoch = step, epoch
    result.best_checkpoint = _pointer(run_dir, "best")
    result.best_score, result.best_metrics = best.get("score"), best.get("metrics")
    return result


# ------------------------------------------------------------------------------------------- helpers


@dataclass
class _Window:
    """Losses and throughput between two log lines."""

    started: float
    losses: list[float] = field(default_factory=list)
    samples: int = 0

    def add(self, loss: float, samples: int) -> None:
        self.losses.append(loss)
        self.samples += samples


def _log_step(accelerator: Accelerator, window: _Window, step: int, total: int, epoch: int, lr: float,
              grad_norm: float, tokens: int) -> None:
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    loss = sum(window.losses) / max(1, len(window.losses))
    values = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm, "train/epoch": float(epoch),
              "train/samples_per_s": window.samples / elapsed, "train/tokens_per_s": tokens / elapsed}
    accelerator.log(values, step=step)
    info(
        f"step {step}/{total}  epoch {epoch + 1}  loss {loss:.4f}  lr {lr:.2e}  grad {grad_norm:.3f}  "
        f"{window.samples / elapsed:.1f} samples/s  {tokens / elapsed:.0f} tokens/s"
    )


HEADLINE_METRICS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_f1")
"""The validation metrics the log lines show (all of them go to val_metrics.jsonl and the trackers)."""


def _val_line(record: dict[str, Any], select: dict[str, float]) -> str:
    metrics = record["metrics"]
    names = [n for n in HEADLINE_METRICS if n in metrics] + [n for n in select if n not in HEADLINE_METRICS]
    shown = ", ".join(f"{n} {metrics[n]:.4f}" for n in names)
    rule = " + ".join(f"{w:g}*{k}" for k, w in select.items())
    return f"validation at step {record['step']}: score {record['score']:.4f} ({rule}); {shown} (all in val_metrics.jsonl)"


def _selection_score(metrics: dict[str, float], select: dict[str, float]) -> float:
    missing = [name for name in select if name not in metrics]
    if missing:
        raise ConfigError(
            f"train.select uses {', '.join(missing)}, which the scorer does not return; "
            f"choose from {', '.join(sorted(metrics))}"
        )
    return float(sum(weight * float(metrics[name]) for name, weight in select.items()))


def _val_subset(num_val: int, subset: int | None, seed: int) -> list[int]:
    """All validation indices, or a fixed seeded sample of ``subset`` of them (kept in dataset order)."""
    if subset is None or subset >= num_val:
        return list(range(num_val))
    return sorted(random.Random(_mix_seed(seed, 2)).sample(range(num_val), subset))


def _same_layout(meta: dict[str, Any], world: int, t: Any) -> bool:
    return (meta.get("num_processes"), meta.get("micro_batch_size"), meta.get("grad_accum_steps")) == (
        world, t.micro_batch_size, t.grad_accum_steps)


def _resume_skip(start: _Start, world: int, t: Any) -> int:
    """Micro-batches this process skips at the start of the resumed epoch."""
    if start.step_dir is None or start.batch_in_epoch == 0:
        return 0
    if _same_layout(start.meta, world, t):
        return start.batch_in_epoch
    # Another number of processes or batch size: continue after the same number of studies (approximately).
    seen = start.batch_in_epoch * int(start.meta.get("micro_batch_size", t.micro_batch_size)) * int(start.meta.get("num_processes", 1))
    skip = seen // (t.micro_batch_size * world)
    warn(
        f"resuming with {world} processes x micro batch {t.micro_batch_size} x accumulation {t.grad_accum_steps} instead of "
        f"{start.meta.get('num_processes')} x {start.meta.get('micro_batch_size')} x {start.meta.get('grad_accum_steps')}: "
        f"the data position is approximate and the run will not reproduce an uninterrupted one"
    )
    return skip - skip % t.grad_accum_steps


def _trainable_weights(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from accelerate.utils import DistributedType

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        # Parameters are sharded: gather the full state (a collective call), then keep the trainable part.
        full = accelerator.get_state_dict(model)
        return {name: full[name] for name in unwrapped.trainable_state_dict()} if accelerator.is_main_process else {}
    return unwrapped.trainable_state_dict()


def _load_training_state(accelerator: Accelerator, optimizer: Any, scheduler: Any, step_dir: Path) -> None:
    meta = load_meta(step_dir)
    if meta.get("sharded_optimizer"):
        if meta.get("num_processes") != accelerator.num_processes:
            from mrg.errors import CheckpointError

            raise CheckpointError(
                f"{step_dir} holds optimizer shards of {meta.get('num_processes')} processes; resume it with that many processes"
            )
        state = load_torch_state(step_dir / f"optimizer-rank{accelerator.process_index}.pt")
    else:
        state = load_torch_state(step_dir / OPTIMIZER_NAME)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])


def _non_finite_error(loss: float, grad_norm: float, step: int, epoch: int, run_dir: Path, cfg: RunConfig) -> TrainingError:
    last_good = read_pointer(run_dir, "last")
    kept = f"the last good checkpoint {last_good} is kept (continue with --resume auto)" if last_good else "no checkpoint was saved yet"
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
    fp16_hint = "train.precision=bf16 or fp32 instead of fp16, " if cfg.train.precision == "fp16" else ""
    return TrainingError(
        f"{what} at step {step} (epoch {epoch + 1}); training stopped and {kept}. Try a lower train.lr (now {cfg.train.lr:g}), "
        f"{fp16_hint}train.max_grad_norm=1.0, or check the data for empty reports and blank images"
    )


def _restore_pointers(run_dir: Path, start: _Start) -> None:
    """Point best/last as the resumed checkpoint says: a crash between a save and its pointer update may have left them behind."""
    write_pointer(run_dir, "last", start.step_dir)  # type: ignore[arg-type]
    best_dir = (start.meta.get("best") or {}).get("dir")
    if best_dir and (run_dir / best_dir).is_dir():
        write_pointer(run_dir, "best", run_dir / best_dir)


def _pointer(run_dir: Path, name: str) -> Path | None:
    target = read_pointer(run_dir, name)
    return target if target is not None and target.is_dir() else None


def _rewrite_jsonl(path: Path, record: dict[str, Any], *, keep_until_step: int) -> None:
    """Rewrite ``path`` atomically with its records up to ``keep_until_step`` plus ``record``."""
    rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= keep_until_step] if path.is_file() else []
    write_jsonl_atomic(path, [*rows, record])


def _write_run_provenance(run_dir: Path, start: _Start) -> None:
    path = run_dir / "provenance.json"
    record = read_json(path) if start.step_dir is not None and path.is_file() else {"created": provenance(), "resumes": []}
    if start.step_dir is not None:
        record.setdefault("resumes", []).append(provenance(resumed_from=str(start.step_dir), step=start.step))
    write_json_atomic(path, record)


def _format_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def _print_summary(accelerator: Accelerator, cfg: RunConfig, model: torch.nn.Module, start: _Start, run_dir: Path,
                   num_train: int, num_val: int, steps_per_epoch: int, total_steps: int) -> None:
    from rich.table import Table

    t = cfg.train
    params = list(accelerator.unwrap_model(model).named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    frozen = sum(p.numel() for _, p in params if not p.requires_grad)
    # AdamW keeps two moments per trainable parameter, in the parameter's dtype.
    optimizer_bytes = sum(2 * p.numel() * p.element_size() for _, p in params if p.requires_grad)
    effective = t.micro_batch_size * t.grad_accum_steps * accelerator.num_processes
    table = Table(title=f"mrg train -> {run_dir}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # paths are folded, never cut
    table.add_row("start", f"resumed from {start.step_dir} (step {start.step})" if start.step_dir else "new run")
    table.add_row("processes", f"{accelerator.num_processes} x {accelerator.device.type} ({accelerator.distributed_type.value}), "
                  f"precision {t.precision}")
    table.add_row("parameters", f"trainable {_format_count(trainable)} ({100 * trainable / max(1, trainable + frozen):.2f}%), "
                  f"frozen {_format_count(frozen)}")
    table.add_row("optimizer state", f"{optimizer_bytes / 2**20:.1f} MiB (AdamW, 2 moments per trainable parameter)")
    table.add_row("effective batch", f"{t.micro_batch_size} micro x {t.grad_accum_steps} accumulation x "
                  f"{accelerator.num_processes} processes = {effective}")
    table.add_row("data", f"train {num_train:,} studies ({steps_per_epoch * effective:,} used per epoch), "
                  + (f"val {num_val:,}{' (fixed subset)' if t.val_subset else ''}" if t.val_every != -1 else "no validation"))
    table.add_row("schedule", f"{total_steps:,} steps ({steps_per_epoch:,} per epoch), lr {t.lr:g} -> {t.min_lr:g}, "
                  f"warm-up {t.warmup_steps}")
    table.add_row("validation", "off" if t.val_every == -1 else ("each epoch" if t.val_every == 0 else f"every {t.val_every} steps"))
    console.print(table)
