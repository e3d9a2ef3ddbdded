"""The training loop: ``fit`` runs optimizer steps over explicit objects and builds nothing itself.

Everything ``fit`` touches is handed to it: the accelerator, the (prepared) model, the batches, the
optimizer and schedule, where the loop starts, and hooks that validate, save and log. The recipe
(``mrg.recipes.train``) builds those from a config; a test passes a tiny model directly::

    result = fit(accelerator, model, batches, optimizer, scheduler, plan=plan, start=LoopStart(), hooks=hooks)

Mechanics:
    - gradient accumulation through ``accelerator.accumulate`` and clipping (``plan.max_grad_norm``);
    - one device-to-host sync per optimizer step (loss and gradient norm together);
    - a non-finite loss or gradient norm stops the run through ``hooks.non_finite`` (the last good
      checkpoint is kept);
    - logging every ``plan.log_every`` steps, validation every ``plan.val_every`` steps (0: at the end of
      each epoch, -1: never) and at the end, checkpoints at each validation, every ``plan.save_every``
      steps and at the end;
    - ``EpochBatches``: a shuffled order that is a pure function of (seed, epoch), so every process and a
      resumed run see the same one; each epoch is cut to whole optimizer steps (R2GenGPT drops the last
      incomplete batch too), so every step averages the same number of items.

Counters: ``step`` is always an optimizer step; ``batch_in_epoch`` counts micro-batches of this process;
``epoch`` counts passes over the training split from 0.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mrg.console import info
from mrg.seeds import mix_seed

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.progress import Progress


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
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
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
            seed = mix_seed(worker.seed - worker.id, index)  # worker.seed = the loader's base seed + worker id
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return self.dataset[index]


class EpochBatches:
    """The training batches of each epoch: a DataLoader over ``EpochSampler`` with reproducible worker seeds.

    Args:
        dataset: the training items.
        collate_fn: makes a batch of items.
        micro_batch_size: items per forward pass on one process.
        items_per_step: items per optimizer step over all processes (micro batch x accumulation x processes).
        seed: the run's seed (the order of every epoch derives from it).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any], *, micro_batch_size: int,
                 items_per_step: int, seed: int, num_workers: int = 0) -> None:
        self.steps_per_epoch = len(dataset) // items_per_step  # type: ignore[arg-type]
        self.seed = seed
        self.generator = torch.Generator()  # worker seeds come from here, never from the global generator
        sampler = EpochSampler(len(dataset), self.steps_per_epoch * items_per_step, seed)  # type: ignore[arg-type]
        self.loader: Any = DataLoader(PerItemSeed(dataset), batch_size=micro_batch_size, sampler=sampler,
                                      collate_fn=collate_fn, num_workers=num_workers,
                                      pin_memory=torch.cuda.is_available(), generator=self.generator)

    def prepare(self, accelerator: Accelerator) -> None:
        """Let accelerate shard the loader across processes (call once, with the model's ``prepare``)."""
        self.loader = accelerator.prepare(self.loader)
        self.accelerator = accelerator

    def epoch(self, epoch: int, *, skip: int = 0) -> Any:
        """The batches of ``epoch``, after the first ``skip`` micro-batches of this process."""
        self.loader.set_epoch(epoch)
        self.generator.manual_seed(mix_seed(self.seed, epoch, 1))
        return self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader


# ------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class LoopPlan:
    """How long the loop runs and when it logs, validates and saves."""

    total_steps: int
    batches_per_epoch: int
    """Micro-batches per process in one epoch."""
    items_per_micro_batch: int
    """Items of one micro-batch over all processes (for the samples/s figure)."""
    max_grad_norm: float = 1.0
    """Clipping threshold (0: no clipping)."""
    check_grad_norm: bool = True
    """Stop on a non-finite gradient norm (off under fp16, whose scaler skips such steps itself)."""
    log_every: int = 10
    val_every: int = 0
    """-1 never, 0 at the end of each epoch, else every so many steps (and always at the last step)."""
    save_every: int = 0


@dataclass(frozen=True)
class LoopStart:
    """Where the loop starts: step 0, or the position a checkpoint recorded."""

    step: int = 0
    epoch: int = 0
    skip: int = 0
    """Micro-batches of the current epoch this process has already trained on."""


@dataclass
class Hooks:
    """What the loop calls; the recipe supplies them."""

    validate: Callable[[int, int], dict[str, Any]]
    """``validate(step, epoch) -> record`` (with ``score``); only called when ``plan.val_every != -1``."""
    save: Callable[[int, int, int, dict[str, Any] | None, float], Path]
    """``save(step, epoch, batch_in_epoch, validation_record, train_loss) -> checkpoint folder``."""
    non_finite: Callable[[float, float, int, int], Exception]
    """``non_finite(loss, grad_norm, step, epoch) -> the error to raise``."""
    log: Callable[[dict[str, float], int], None] = lambda values, step: None
    """``log(values, step)``: step metrics to the trackers."""


@dataclass
class LoopResult:
    """What a call of ``fit`` did."""

    step: int
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    """One record per optimizer step: step, loss, lr, grad_norm, seconds (the step's wall time, data loading
    included, validation and checkpointing excluded)."""
    validations: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None


@dataclass
class _Window:
    """Losses and throughput between two log lines."""

    started: float
    losses: list[float] = field(default_factory=list)
    samples: int = 0


@dataclass
class _Running:
    """What the loop accumulates between optimizer steps and log lines."""

    loss_sum: torch.Tensor
    tokens: torch.Tensor
    window: _Window
    step_started: float
    micro_count: int = 0

    def restart_window(self) -> None:
        self.window = _Window(time.perf_counter())
        self.step_started = self.window.started


def fit(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batches: EpochBatches,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    plan: LoopPlan,
    start: LoopStart,
    hooks: Hooks,
    progress: Progress,
) -> LoopResult:
    """Run optimizer steps from ``start`` to ``plan.total_steps``.

    The model's ``forward(batch)`` returns an object with ``loss`` (a scalar tensor) and ``num_target_tokens``.
    """
    result = LoopResult(start.step, start.epoch)
    step, epoch, skip = start.step, start.epoch, start.skip
    trainable = [p for p in model.parameters() if p.requires_grad]
    task = progress.add_task("training", total=plan.total_steps, completed=step)
    now = time.perf_counter()
    run = _Running(torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device, dtype=torch.long),
                   _Window(now), now)
    model.train()
    while step < plan.total_steps:
        batch_in_epoch, skip_now, skip = skip, skip, 0
        for batch in batches.epoch(epoch, skip=skip_now):
            with accelerator.accumulate(model):
                output = model(batch)
                accelerator.backward(output.loss)
            run.loss_sum += output.loss.detach().float()
            run.tokens += output.num_target_tokens
            run.micro_count += 1
            batch_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            loss, lr, norm = _optimizer_step(accelerator, trainable, optimizer, scheduler, run, plan, hooks, step, epoch)
            step += 1
            result.history.append({"step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                                   "seconds": time.perf_counter() - run.step_started})
            run.step_started = time.perf_counter()
            progress.update(task, completed=step, description=f"epoch {epoch + 1}  loss {loss:.4f}")
            _log_validate_save(accelerator, run, plan, hooks, result, step, epoch, batch_in_epoch, lr, norm, loss)
            if step >= plan.total_steps:
                break
        if batch_in_epoch >= plan.batches_per_epoch:
            epoch += 1
    result.step, result.epoch = step, epoch
    return result


def _optimizer_step(accelerator: Accelerator, trainable: list[torch.nn.Parameter], optimizer: Any, scheduler: Any,
                    run: _Running, plan: LoopPlan, hooks: Hooks, step: int, epoch: int) -> tuple[float, float, float]:
    """One optimizer step over the gradients of ``run.micro_count`` micro-batches per process: (loss, lr, grad norm)."""
    loss, norm = _clip_and_check(accelerator, trainable, run.loss_sum / run.micro_count, plan)
    if not math.isfinite(loss) or (plan.check_grad_norm and not math.isfinite(norm) and plan.max_grad_norm > 0):
        raise hooks.non_finite(loss, norm, step + 1, epoch)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    run.window.losses.append(loss)
    run.window.samples += run.micro_count * plan.items_per_micro_batch
    run.loss_sum.zero_()
    run.micro_count = 0
    return loss, lr, norm


def _log_validate_save(accelerator: Accelerator, run: _Running, plan: LoopPlan, hooks: Hooks, result: LoopResult,
                       step: int, epoch: int, batch_in_epoch: int, lr: float, norm: float, loss: float) -> None:
    """After step ``step``: a log line every ``plan.log_every`` steps, validation and checkpoints when they are due."""
    end_of_epoch = batch_in_epoch >= plan.batches_per_epoch
    last = step >= plan.total_steps
    if step % plan.log_every == 0 or last:
        global_tokens = int(accelerator.reduce(run.tokens, reduction="sum").item())
        run.tokens.zero_()
        _log_step(hooks, run.window, step, plan.total_steps, epoch, lr, norm, global_tokens)
        run.window = _Window(time.perf_counter())
    wants_val = plan.val_every != -1 and (
        (plan.val_every > 0 and step % plan.val_every == 0) or (plan.val_every == 0 and end_of_epoch) or last
    )
    if wants_val or (plan.save_every > 0 and step % plan.save_every == 0) or last:
        record = hooks.validate(step, epoch + int(end_of_epoch)) if wants_val else None
        if record is not None:
            result.validations.append(record)
        result.last_checkpoint = hooks.save(step, epoch, batch_in_epoch, record, loss)
        run.restart_window()  # time spent validating and saving is not throughput


def _clip_and_check(accelerator: Accelerator, trainable: list[torch.nn.Parameter], mean_loss: torch.Tensor,
                    plan: LoopPlan) -> tuple[float, float]:
    """(loss averaged over processes, gradient norm or NaN without clipping): the one device-to-host sync of a step."""
    step_loss = accelerator.reduce(mean_loss, reduction="mean")
    grad_norm = accelerator.clip_grad_norm_(trainable, plan.max_grad_norm) if plan.max_grad_norm > 0 else None
    checked = torch.stack([step_loss, step_loss if grad_norm is None else grad_norm.float().to(step_loss.device)])
    loss_value, norm_value = checked.tolist()
    return loss_value, (float("nan") if grad_norm is None else norm_value)


def _log_step(hooks: Hooks, window: _Window, step: int, total: int, epoch: int, lr: float, grad_norm: float,
              tokens: int) -> None:
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    loss = sum(window.losses) / max(1, len(window.losses))
    values = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm, "train/epoch": float(epoch),
              "train/samples_per_s": window.samples / elapsed, "train/tokens_per_s": tokens / elapsed}
    hooks.log(values, step)
    info(
        f"step {step}/{total}  epoch {epoch + 1}  loss {loss:.4f}  lr {lr:.2e}  grad {grad_norm:.3f}  "
        f"{window.samples / elapsed:.1f} samples/s  {tokens / elapsed:.0f} tokens/s"
    )
