"""Distributed concerns in one place: the accelerator factory, shard ranges and the distributed ``predict``.

``mrg train``, ``mrg generate`` and every later command that runs a model over a split (answer,
perceive, analyze) share these, so a run on one CPU, one GPU or several processes behaves the same:
every item is processed exactly once and outputs come back in dataset order.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mrg.errors import ConfigError
from mrg.seeds import mix_seed

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.progress import Progress

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
"""mrg's ``train.precision`` / ``generate.precision`` values -> accelerate's ``mixed_precision``."""

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]
BatchFn = Callable[[torch.nn.Module, dict[str, Any], int], list[Any]]
"""``fn(model, batch, batch_seed) -> one output per item`` (e.g. generated reports)."""


def _has_accelerator() -> bool:
    return torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()


def check_sharding_supported() -> None:
    """Refuse an FSDP or DeepSpeed accelerate config on a machine without GPUs, instead of ignoring it.

    accelerate sets up FSDP and DeepSpeed only on accelerator devices; on CPU processes it would run plain
    data parallel under the sharded config's name (and DeepSpeed needs CUDA anyway).

    Raises:
        ConfigError: naming the config in use and the one that works on CPU.
    """
    if _has_accelerator():
        return
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(variable, "false").lower() == "true":
            raise ConfigError(
                f"the accelerate config asks for {name}, which accelerate runs on GPUs only (on CPU processes it would "
                "silently fall back to plain data parallel); on CPU launch with --config_file "
                "mrg/configs/accelerate/ddp.yaml (gloo), or run on GPUs"
            )


def force_cpu_processes() -> bool:
    """True for several processes on a machine without an accelerator: accelerate then joins them over gloo.

    (accelerate treats a torchrun launch as distributed only on a GPU unless told the processes are CPU ones.)
    """
    return not _has_accelerator() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(
    precision: str,
    *,
    option: str = "train.precision",
    grad_accum_steps: int = 1,
    log_with: list[Any] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    find_unused_parameters: bool = False,
) -> Accelerator:
    """A fresh ``Accelerator`` for one run (accelerate's process-wide settings are reset first).

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        option: the config key that chose ``precision`` (named in the error).
        grad_accum_steps: micro-batches per optimizer step.
        log_with: trackers (accelerate ``GeneralTracker`` objects or names).
        project_dir: where trackers write (the run's stage folder).
        find_unused_parameters: DDP's flag (only for models that need it).

    Raises:
        ConfigError: the precision cannot run on this machine (e.g. fp16 without a GPU).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # accelerate keeps its settings in process-wide singletons; start from a clean slate so a second run
    # in the same process (a notebook, a test, generate after train) may use another precision.
    check_sharding_supported()
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    kwargs: dict[str, Any] = {}
    if project_dir is not None:
        kwargs["project_config"] = ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir))
    try:
        return Accelerator(
            cpu=force_cpu_processes(),
            mixed_precision=PRECISION_TO_ACCELERATE[precision],
            gradient_accumulation_steps=grad_accum_steps,
            log_with=log_with or None,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
            step_scheduler_with_optimizer=False,
            **kwargs,
        )
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"{option}={precision} cannot run here ({err}); use {option}=bf16 or fp32") from None


def shard_range(num_items: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(num_items)`` that process ``rank`` handles (sizes differ by at most 1)."""
    return range(num_items * rank // world_size, num_items * (rank + 1) // world_size)


def generate_batch(gen_cfg: Any) -> BatchFn:
    """The ``BatchFn`` of report generation: ``model.generate(batch, gen_cfg)`` seeded per batch."""

    def run(model: torch.nn.Module, batch: dict[str, Any], seed: int) -> list[Any]:
        return model.generate(batch, replace(gen_cfg, seed=seed))  # type: ignore[operator]

    return run


def predict(
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Collate,
    gen_cfg: Any,
    *,
    indices: Sequence[int] | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
    description: str = "generating",
    fn: BatchFn | None = None,
) -> list[dict[str, Any]]:
    """Run the model over every item of ``dataset`` (or of ``indices``), spread over the processes.

    Each process takes a contiguous block of the items, so every item is processed exactly once
    (no sampler padding duplicates), and the outputs are gathered to every process in dataset order.
    Each batch is seeded from ``gen_cfg.seed`` and its first item's index (sampling is reproducible
    for a given batch size and number of processes); the global random state is left untouched.

    Args:
        gen_cfg: a ``GenerateConfig`` (its ``batch_size`` and ``seed`` are used; ``fn`` may use the rest).
        progress: a running rich Progress to add a task to (a new one is shown when None).
        fn: what to run per batch; default: report generation (``generate_batch(gen_cfg)``).

    Returns:
        ``{"index", "id", "prediction", "reference"}`` per item (reference None when the batch has no
        ``reports``), in the order of ``indices``.
    """
    from accelerate.utils import gather_object

    from mrg.console import make_progress

    fn = fn or generate_batch(gen_cfg)
    order = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
    mine = [order[i] for i in shard_range(len(order), accelerator.process_index, accelerator.num_processes)]
    loader = DataLoader(Subset(dataset, mine), batch_size=gen_cfg.batch_size, collate_fn=collate_fn, num_workers=num_workers)
    num_batches = len(loader)
    unwrapped = accelerator.unwrap_model(model)
    num_runs = _batches_to_run(accelerator, unwrapped, len(order), gen_cfg.batch_size, num_batches)
    was_training = unwrapped.training
    unwrapped.eval()
    own_progress = make_progress() if progress is None else None
    progress = progress or own_progress
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), own_progress or nullcontext():
        task = progress.add_task(description, total=len(order))  # type: ignore[union-attr]
        rows = _run_shard(accelerator, unwrapped, loader, dataset, collate_fn, order, mine, gen_cfg, fn, num_runs,
                          progress, task)
        progress.remove_task(task)  # type: ignore[union-attr]
    unwrapped.train(was_training)
    gathered = gather_object(rows) if accelerator.num_processes > 1 else rows
    position = {index: rank for rank, index in enumerate(order)}
    return sorted(gathered, key=lambda row: position[row["index"]])


def _run_shard(
    accelerator: Accelerator, unwrapped: torch.nn.Module, loader: DataLoader, dataset: Dataset, collate_fn: Collate,
    order: list[int], mine: list[int], gen_cfg: Any, fn: BatchFn, num_runs: int, progress: Any, task: Any,
) -> list[dict[str, Any]]:
    """Run ``fn`` on this process's batches (and, under FSDP, dummy batches up to ``num_runs``); its rows."""
    from accelerate.utils import send_to_device

    num_batches = len(loader)
    rows: list[dict[str, Any]] = []
    batches = iter(loader)
    batch: dict[str, Any] | None = None
    for run in range(num_runs):
        real = run < num_batches
        if real:
            batch = next(batches)
        elif batch is None:  # no items here, but FSDP needs this process in every collective
            batch = collate_fn([dataset[order[0]]])
        first = mine[run * gen_cfg.batch_size] if real else 0
        with accelerator.autocast():
            outputs = fn(unwrapped, send_to_device(batch, accelerator.device), mix_seed(gen_cfg.seed, first))  # type: ignore[arg-type]
        if not real:
            continue
        references = batch.get("reports") or [None] * len(outputs)  # type: ignore[union-attr]
        for offset, output in enumerate(outputs):
            rows.append({"index": mine[run * gen_cfg.batch_size + offset], "id": str(batch["ids"][offset]),  # type: ignore[index]
                         "prediction": output, "reference": references[offset]})
        progress.advance(task, len(outputs) * accelerator.num_processes)  # type: ignore[union-attr]
    return rows


def _batches_to_run(accelerator: Accelerator, unwrapped: torch.nn.Module, num_items: int, batch_size: int,
                    num_batches: int) -> int:
    """Batches this process runs: its own, or under FSDP as many as the process with the most."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return num_batches
    # FSDP gathers parameters collectively in every forward: all processes must run as many batches,
    # and transformers must keep every process decoding until all are done (synced_gpus), which it
    # does for modules it sees as FSDP-managed; accelerate's fully_shard does not mark the LLM so.
    llm = getattr(getattr(unwrapped, "llm", None), "model", None)
    if llm is not None:
        llm._is_fsdp_managed_module = True
    return math.ceil(math.ceil(num_items / accelerator.num_processes) / batch_size)


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether parameters or optimizer state are sharded across processes (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def full_trainable_state(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable state, gathered on the main process under FSDP (a collective call there)."""
    from accelerate.utils import DistributedType

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        full = accelerator.get_state_dict(model)
        return {name: full[name] for name in unwrapped.trainable_state_dict()} if accelerator.is_main_process else {}
    return unwrapped.trainable_state_dict()



def release_processes() -> None:
    """Tear down this process's torch.distributed group, if one was joined (safe to call when none was)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def end_worker_process(code: int) -> None:
    """Leave torch.distributed, then, in a process of a multi-process launch (``WORLD_SIZE`` > 1), flush the
    standard streams and end the process with ``code`` at once (``os._exit``); return otherwise.

    A torchrun worker could abort in the C++ teardown at interpreter exit ("terminate called without an active
    exception") after writing everything, failing the launch; skipping that teardown avoids it. Call it only
    when every output is written and every tracker finished.
    """
    release_processes()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
