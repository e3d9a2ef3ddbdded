"""Checkpoints of a training run: atomic saving, finding, resolving, loading and checking.

The file names are ``mrg.runs``'s (the run-folder layout). A step folder holds::

    step-000400/
      trainable.safetensors   the trainable weights only (never the frozen LLM)
      optimizer.pt            optimizer, learning-rate scheduler and gradient-scaler state
      rng.pt                  random-number-generator states of every process
      config.yaml             the resolved configuration (the model is rebuilt from it)
      meta.json               written last: step, epoch, data position, seed, metrics, provenance

A step folder is written under a temporary name and renamed into place, so a folder named
``step-NNNNNN`` with a ``meta.json`` is always complete; an interrupted save leaves only a
``.tmp-step-*`` folder that the next run removes. Everything is read with ``weights_only=True`` or
safetensors: a checkpoint never executes code when it is loaded.

This module is also the one place that finds checkpoints: ``resolve_checkpoint`` (a step folder, a
``best``/``last`` pointer, a stage folder or a multi-stage run folder) and ``resolve_init_weights``
(what ``model.init_from`` and a stage's ``starts_from`` point at).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

from mrg.config import RunConfig, build_config, config_from_dict, diff_configs, save_config
from mrg.console import warn
from mrg.errors import CheckpointError, ConfigError, MrgError, OutputDirError
from mrg.files import read_json, write_json_atomic, write_text_atomic
from mrg.provenance import provenance, utc_now
from mrg.runs import (
    CONFIG_NAME,
    META_NAME,
    OPTIMIZER_NAME,
    POINTER_NAMES,
    REQUIRED_CHECKPOINT_FILES,
    RNG_NAME,
    STAGING_PREFIX,
    WEIGHTS_NAME,
    optimizer_shard_name,
    parse_step,
    read_run_record,
    step_dir_name,
)

# The layout's names live in mrg.runs; re-exported here for the code that reads checkpoints.
REQUIRED_FILES = REQUIRED_CHECKPOINT_FILES

# Model fields that may differ between a checkpoint and the run that loads it: they change how the
# frozen LLM runs or how text is framed, not which weights exist or their shapes. Every other model
# field (present or added later) is architecture and must match.
NON_ARCHITECTURE_MODEL_FIELDS = frozenset(
    {
        "model.llm.dtype",
        "model.llm.attn_implementation",
        "model.llm.gradient_checkpointing",
        "model.llm.instruction",
        "model.llm.chat_template",
        "model.llm.lora_dropout",
        "model.encoder.lora_dropout",
        "model.max_report_tokens",
        "model.init_from",
    }
)
# Train fields whose change means a resumed run no longer reproduces the uninterrupted one.
REPRODUCIBILITY_TRAIN_FIELDS = frozenset(
    {"train.seed", "train.micro_batch_size", "train.grad_accum_steps", "train.lr", "train.min_lr", "train.warmup_steps"}
)


# ---------------------------------------------------------------------------------------------- listing


def is_complete(step_dir: Path) -> bool:
    """A step folder is complete once its ``meta.json`` exists (it is written last)."""
    return (step_dir / META_NAME).is_file()


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The complete step folders of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and parse_step(p) is not None]
    return sorted((p for p in found if is_complete(p)), key=lambda p: parse_step(p) or 0)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The complete step folder with the highest step, or None when the run has none."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


# ---------------------------------------------------------------------------------------------- pointers


def write_pointer(run_dir: Path, name: str, step_dir: Path) -> None:
    """Point ``RUN_DIR/<name>`` (best or last) at ``step_dir``, replacing any previous pointer atomically.

    A relative symlink is used so the run folder can be moved; where symlinks cannot be created
    (some Windows and network filesystems) a one-line text file holding the folder name is written.
    """
    if name not in POINTER_NAMES:
        raise ValueError(f"pointer name must be one of {POINTER_NAMES}, got {name!r}")
    link = run_dir / name
    tmp = run_dir / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(step_dir.name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):
        write_text_atomic(link, step_dir.name + "\n")
        return
    if link.is_dir() and not link.is_symlink():  # never replace a real folder someone put there
        tmp.unlink()
        raise CheckpointError(f"{link} is a folder, not a checkpoint pointer; move it away so mrg can point '{name}' at a step")
    os.replace(tmp, link)


def read_pointer(run_dir: str | os.PathLike[str], name: str) -> Path | None:
    """The step folder that ``RUN_DIR/<name>`` points at, or None when there is no such pointer."""
    link = Path(run_dir) / name
    if link.is_symlink():
        return Path(run_dir) / os.readlink(link)
    if link.is_file():
        target = link.read_text(encoding="utf-8").strip()
        return Path(run_dir) / target if target else None
    return None


# ------------------------------------------------------------------------------------------- resolving


def _looks_like_run_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and not (path / META_NAME).exists()


def resolve_checkpoint(path: str | os.PathLike[str], *, prefer: str = "best") -> Path:
    """The complete step folder meant by ``path``.

    ``path`` may be a step folder, a ``best``/``last`` pointer, or a run folder (then the ``prefer``
    pointer is used, falling back to ``last`` and then to the newest step).

    Raises:
        CheckpointError: nothing usable at ``path``, with what exists and what to pass instead.
    """
    path = Path(path)
    record = read_run_record(path) if path.is_dir() else None
    if record is not None:  # a multi-stage run: its newest stage that holds a checkpoint
        return resolve_checkpoint(_newest_stage(path, record), prefer=prefer)
    if path.name in POINTER_NAMES and (path.is_symlink() or path.is_file()):
        target = read_pointer(path.parent, path.name)
        if target is None or not target.is_dir():
            raise CheckpointError(
                f"{path} points at {target}, which does not exist (deleted by hand?); "
                f"pass a step folder from {path.parent} instead"
            )
        return _checked_step_dir(target)
    if path.is_dir() and parse_step(path) is not None:
        return _checked_step_dir(path)
    if path.is_dir() and (path / META_NAME).is_file():  # a checkpoint folder renamed by the user
        return path
    if path.is_dir() and (_looks_like_run_dir(path) or list_checkpoints(path)):
        for name in (prefer, "last"):
            target = read_pointer(path, name)
            if target is not None and target.is_dir() and is_complete(target):
                return target
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{path}: the run has no complete checkpoint yet; train it first with 'mrg train --out {path}'")
        return latest
    if not path.exists() and path.name in POINTER_NAMES and path.parent.is_dir():
        available = ", ".join(p.name for p in list_checkpoints(path.parent)) or "none"
        why = "no validation has run yet" if path.name == "best" else "no checkpoint was saved yet"
        raise CheckpointError(f"{path}: no '{path.name}' checkpoint in this run ({why}); complete checkpoints: {available}")
    if path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint or run folder (no {META_NAME} or {CONFIG_NAME}); pass RUN_DIR, RUN_DIR/best, RUN_DIR/last or RUN_DIR/step-NNNNNN")
    raise CheckpointError(f"{path}: checkpoint not found; pass RUN_DIR, RUN_DIR/best, RUN_DIR/last or RUN_DIR/step-NNNNNN")


def _newest_stage(run_dir: Path, record: dict[str, Any]) -> Path:
    """The last stage (in the method's order) of a multi-stage run that has a complete checkpoint."""
    stages = [str(s) for s in record.get("stages", [])]
    for stage in reversed(stages):
        if list_checkpoints(run_dir / stage):
            return run_dir / stage
    raise CheckpointError(
        f"{run_dir}: no stage of this {record.get('method', '')} run has a complete checkpoint yet "
        f"(stages {', '.join(stages) or '-'}); train it first with 'mrg train --out {run_dir}'"
    )


def resolve_init_weights(path: str | os.PathLike[str], *, option: str = "model.init_from") -> Path:
    """The ``trainable.safetensors`` that initialises a run: the file itself, or the one of the checkpoint
    ``resolve_checkpoint(path, prefer="best")`` finds.

    Raises:
        CheckpointError: nothing usable at ``path`` (the message names ``option``).
    """
    root = Path(path).expanduser()
    if root.is_file():
        return root
    if not root.exists():
        raise CheckpointError(f"{option} {root}: no such file or directory; give a finished run or checkpoint folder")
    try:
        step_dir = resolve_checkpoint(root, prefer="best")
    except CheckpointError as err:
        raise CheckpointError(f"{option}: {err}") from None
    weights = step_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{option} {root}: {step_dir} has no {WEIGHTS_NAME}; point it at a finished run")
    return weights


def is_finished(stage_folder: str | os.PathLike[str]) -> bool:
    """True when the stage's ``last`` checkpoint is its final step (``meta.json`` says ``finished``)."""
    target = read_pointer(stage_folder, "last")
    if target is None or not is_complete(target):
        return False
    try:
        return bool(load_meta(target).get("finished"))
    except CheckpointError:
        return False


def _checked_step_dir(step_dir: Path) -> Path:
    if not is_complete(step_dir):
        raise CheckpointError(
            f"{step_dir}: incomplete checkpoint (no {META_NAME}; the save was interrupted); "
            f"use an earlier step or '--resume auto', which picks the newest complete one"
        )
    return step_dir


def check_checkpoint_files(step_dir: Path, *, needed: tuple[str, ...] = REQUIRED_FILES) -> None:
    """Raise a CheckpointError naming every file of ``needed`` that is missing from ``step_dir``."""
    missing = [name for name in needed if not (step_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{step_dir}: checkpoint is missing {', '.join(missing)} (deleted or copied partially?); "
            f"copy the whole step folder again or use another checkpoint of the run"
        )


# --------------------------------------------------------------------------------------------- reading


def load_meta(step_dir: Path) -> dict[str, Any]:
    """The ``meta.json`` record of a checkpoint."""
    try:
        meta = read_json(step_dir / META_NAME)
    except MrgError as err:
        raise CheckpointError(f"{err}; the checkpoint is damaged, use another step of the run") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"{step_dir / META_NAME}: not an mrg checkpoint record (no 'step'); use another checkpoint")
    return meta


def load_checkpoint_config(step_dir: Path) -> RunConfig:
    """The run configuration saved with a checkpoint."""
    import yaml

    path = step_dir / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint needs its config.yaml to rebuild the model")
    try:
        data = migrate_config(yaml.safe_load(path.read_text(encoding="utf-8")))
        if isinstance(data, dict) and not data.get("stages"):
            # one stage's resolved config (``stage_config``): its train.select suits its own stage only, so the
            # method's other stages (which may validate another task) are not re-resolved from it
            return build_config(RunConfig, data, resolve_stages=False)
        return config_from_dict(RunConfig, data)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}); restore it from the run folder's config.yaml") from None
    except ConfigError as err:
        raise CheckpointError(f"{path}: does not match this version of mrg ({err})") from None


def migrate_config(data: Any) -> Any:
    """A checkpoint config of mrg 0.1.0 in today's terms: ``model.stage`` became the ``two-stage`` method.

    A 0.1.0 stage-1 run is ``mrg-llm``; a stage-2 run (LoRA on the LLM, encoder, projector and promptbook
    trained too) is ``two-stage``'s ``finetune`` with every part still training.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "stage" not in model:
        return data
    data = {**data, "model": {k: v for k, v in model.items() if k != "stage"}}
    if model["stage"] == 2:
        data["model"]["method"] = "two-stage"
        data["method"] = {"finetune_also": ["encoder", "projector", "promptbook"]}
    return data


def checkpoint_stage(meta: dict[str, Any], cfg: RunConfig) -> str | None:
    """The stage a checkpoint belongs to (recorded in meta.json; 0.1.0 checkpoints: from the migrated config)."""
    if meta.get("stage"):
        return str(meta["stage"])
    return "finetune" if cfg.model.method == "two-stage" else None


def load_trainable_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """The trainable tensors of a checkpoint (safetensors; loaded on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = step_dir / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint has no weights, use another step of the run")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt or truncated ({err}); "
            "use another step of the run, or move this step folder away and --resume auto takes the one before it"
        ) from None


def load_torch_state(path: Path) -> Any:
    """A ``torch.save`` file read with ``weights_only=True`` (tensors and plain containers only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; copy the whole step folder or use another checkpoint of the run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise CheckpointError(
            f"{path}: corrupt or not an mrg state file ({type(err).__name__}); use another step of the run"
        ) from None


# ----------------------------------------------------------------------------------------- compatibility


def _method_architecture_keys(cfg: RunConfig) -> set[str]:
    """``method.<key>`` of the options the method declares as deciding which weights exist (``architecture_options``)."""
    from mrg.methods.registry import get_method

    try:
        return {f"method.{key}" for key in get_method(cfg.model.method).architecture_options}
    except MrgError:
        return set()


def check_config_compatible(checkpoint_cfg: RunConfig, cfg: RunConfig, step_dir: Path) -> list[str]:
    """Compare the checkpoint's configuration with the current one.

    Returns:
        Warnings for fields that may differ (training schedule, data, decoding, the LLM's dtype).

    Raises:
        CheckpointError: architecture fields differ; the message lists each with both values.
    """
    differences = diff_configs(checkpoint_cfg, cfg)
    method_keys = _method_architecture_keys(cfg)
    architecture = [
        (key, old, new) for key, old, new in differences
        if (key.startswith("model.") and key not in NON_ARCHITECTURE_MODEL_FIELDS) or key in method_keys
    ]
    if architecture:
        listed = "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, old, new in architecture)
        raise CheckpointError(
            f"{step_dir} was made with another model configuration ({listed}); "
            f"use the run's own config.yaml, or start a new run with another --out"
        )
    warnings = []
    for key, old, new in differences:
        note = " (a resumed run will not reproduce the uninterrupted one)" if key in REPRODUCIBILITY_TRAIN_FIELDS else ""
        warnings.append(f"{key} differs from the checkpoint: {old!r} there, {new!r} now{note}")
    return warnings


# ------------------------------------------------------------------------------------------ RNG states


def capture_rng_state() -> dict[str, Any]:
    """The state of every random-number generator of this process, in a ``weights_only``-loadable form."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by ``capture_rng_state``."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------- writing


def staging_name(step: int) -> str:
    """The temporary folder name a checkpoint is written under before it is renamed into place."""
    return f"{STAGING_PREFIX}{step:06d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """Create an empty staging folder for ``step`` (removing a stale one); every file goes here first.

    The name is fixed per step so that every process of a multi-process run can write into it.
    """
    stage = run_dir / staging_name(step)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def write_checkpoint_files(
    stage_dir: Path,
    *,
    weights: dict[str, torch.Tensor] | None,
    training_state: dict[str, Any] | None,
    rng_states: list[dict[str, Any]] | None,
    cfg: RunConfig | None,
) -> None:
    """Write the weight, state and config files of a checkpoint into its staging folder (not meta.json).

    Args:
        stage_dir: folder from ``staging_dir``.
        weights: trainable tensors (moved to CPU and made contiguous here).
        training_state: ``{"optimizer": ..., "scheduler": ..., "scaler": ...}`` state dicts.
        rng_states: one ``capture_rng_state()`` per process, in rank order.
        cfg: the run configuration.
    """
    from safetensors.torch import save_file

    if weights is not None:
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in weights.items()}
        save_file(tensors, str(stage_dir / WEIGHTS_NAME), metadata={"format": "pt", "written_by": "mrg"})
    if training_state is not None:
        torch.save(training_state, stage_dir / OPTIMIZER_NAME)
    if rng_states is not None:
        torch.save({"ranks": rng_states}, stage_dir / RNG_NAME)
    if cfg is not None:
        save_config(cfg, stage_dir / CONFIG_NAME)


def commit_checkpoint(stage_dir: Path, run_dir: Path, step: int, meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` last, flush, and rename the staging folder to ``step-NNNNNN``.

    An existing folder of the same step (left by a run that was resumed from an earlier step) is
    replaced.
    """
    write_json_atomic(stage_dir / META_NAME, meta)
    _fsync_dir(stage_dir)
    final = run_dir / step_dir_name(step)
    if final.exists():
        doomed = run_dir / f"{STAGING_PREFIX}replaced-{final.name}-{os.getpid()}"
        os.replace(final, doomed)
        os.replace(stage_dir, final)
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        os.replace(stage_dir, final)
    _fsync_dir(run_dir)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def remove_staging_dirs(run_dir: Path) -> list[Path]:
    """Delete the ``.tmp-step-*`` folders that interrupted saves left behind; returns what was removed."""
    removed = []
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete step folders, never the ``best`` or ``last`` target.

    ``keep_last`` 0 keeps everything. Returns the folders removed.
    """
    if keep_last <= 0:
        return []
    checkpoints = list_checkpoints(run_dir)
    protected = {p.resolve() for name in POINTER_NAMES if (p := read_pointer(run_dir, name)) is not None}
    removed = []
    for step_dir in checkpoints[:-keep_last]:
        if step_dir.resolve() in protected:
            continue
        shutil.rmtree(step_dir)
        removed.append(step_dir)
    return removed


# ------------------------------------------------------------------------------------------- resuming


@dataclass
class ResumePoint:
    """Where a stage starts: from scratch (``step_dir`` None) or from a checkpoint."""

    step_dir: Path | None = None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def find_resume_point(stage_dir: Path, resume: str | os.PathLike[str] | None, cfg: RunConfig) -> ResumePoint:
    """Decide where a stage starts and check that a resume checkpoint suits ``cfg``.

    Args:
        resume: None for a new stage (refused when ``stage_dir`` already holds checkpoints); ``"auto"`` for
            the newest complete checkpoint in ``stage_dir`` (a new stage when there is none); or a checkpoint path.

    Raises:
        OutputDirError: checkpoints exist and no resume was asked for.
        CheckpointError: the checkpoint is missing, damaged or from another model configuration.
    """
    if resume is None:
        existing = list_checkpoints(stage_dir)
        if existing:
            raise OutputDirError(
                f"{stage_dir} already holds checkpoints (newest {existing[-1].name}); "
                f"pass --resume auto to continue that run, or choose another --out"
            )
        return ResumePoint()
    if str(resume) == "auto":
        step_dir = latest_checkpoint(stage_dir)
        if step_dir is None:
            return ResumePoint()
    else:
        step_dir = resolve_checkpoint(resume, prefer="last")
    check_checkpoint_files(step_dir)
    meta = load_meta(step_dir)
    for message in check_config_compatible(load_checkpoint_config(step_dir), cfg, step_dir):
        warn(message)
    return ResumePoint(step_dir, int(meta["step"]), int(meta.get("epoch", 0)), int(meta.get("batch_in_epoch", 0)), meta)


def load_training_state(accelerator: Accelerator, optimizer: Any, scheduler: Any, step_dir: Path) -> None:
    """Restore the optimizer, schedule and gradient scaler of a checkpoint (this process's shard when sharded)."""
    meta = load_meta(step_dir)
    if meta.get("sharded_optimizer"):
        if meta.get("num_processes") != accelerator.num_processes:
            raise CheckpointError(
                f"{step_dir} holds optimizer shards of {meta.get('num_processes')} processes; resume it with that many processes"
            )
        state = load_torch_state(step_dir / optimizer_shard_name(accelerator.process_index))
    else:
        state = load_torch_state(step_dir / OPTIMIZER_NAME)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])


def restore_pointers(stage_dir: Path, start: ResumePoint) -> None:
    """Point best/last as the resumed checkpoint says: a crash between a save and its pointer update may have left them behind."""
    write_pointer(stage_dir, "last", start.step_dir)  # type: ignore[arg-type]
    best_dir = (start.meta.get("best") or {}).get("dir")
    if best_dir and (stage_dir / best_dir).is_dir():
        write_pointer(stage_dir, "best", stage_dir / best_dir)


def pointer_target(stage_dir: Path, name: str) -> Path | None:
    """The existing folder a ``best``/``last`` pointer names, or None."""
    target = read_pointer(stage_dir, name)
    return target if target is not None and target.is_dir() else None


# -------------------------------------------------------------------------------------------- saving


class Checkpointer:
    """Saves a stage's checkpoints (every process takes part), moves ``best``/``last`` and prunes old ones.

    Args:
        best: the best validation so far (``{"step", "score", "metrics", "dir"}``; from a resumed checkpoint).
        record: fields every ``meta.json`` of the stage carries (method, stage, schedule, batch layout, ...).
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, scheduler: Any, stage_dir: Path,
                 cfg: RunConfig, *, batches_per_epoch: int, total_steps: int, best: dict[str, Any] | None,
                 record: dict[str, Any]) -> None:
        from mrg.distributed import is_sharded

        self.accelerator, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.stage_dir, self.cfg = stage_dir, cfg
        self.batches_per_epoch, self.total_steps = batches_per_epoch, total_steps
        self.best: dict[str, Any] = dict(best or {})
        self.record = record
        self.sharded = is_sharded(accelerator)

    def __call__(self, step: int, epoch: int, batch_in_epoch: int, validation: dict[str, Any] | None,
                 train_loss: float | None) -> Path:
        from accelerate.utils import gather_object

        from mrg.distributed import full_trainable_state

        accelerator, is_main, world = self.accelerator, self.accelerator.is_main_process, self.accelerator.num_processes
        if batch_in_epoch >= self.batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        if is_main:
            staging_dir(self.stage_dir, step)
        accelerator.wait_for_everyone()
        stage = self.stage_dir / staging_name(step)
        weights = full_trainable_state(accelerator, self.model)  # a collective call under FSDP
        rng_states = gather_object([capture_rng_state()]) if world > 1 else [capture_rng_state()]
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
        if self.sharded:  # every process keeps its own shard (needs a filesystem all nodes share)
            torch.save(state, stage / optimizer_shard_name(accelerator.process_index))
        if is_main:
            write_checkpoint_files(stage, weights=weights, training_state=None if self.sharded else state,
                                   rng_states=rng_states, cfg=self.cfg)
        accelerator.wait_for_everyone()
        final = self.stage_dir / step_dir_name(step)
        if is_main:
            self._commit(stage, final, step, epoch, batch_in_epoch, validation, train_loss, len(weights))
        accelerator.wait_for_everyone()
        return final

    def _commit(self, stage: Path, final: Path, step: int, epoch: int, batch_in_epoch: int,
                validation: dict[str, Any] | None, train_loss: float | None, num_tensors: int) -> None:
        is_best = validation is not None and (self.best.get("score") is None or validation["score"] > self.best["score"])
        if is_best:
            self.best.update(step=step, score=validation["score"], metrics=validation["metrics"], dir=final.name)  # type: ignore[index]
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        meta = {
            **self.record, "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "total_steps": self.total_steps, "finished": step >= self.total_steps,
            "num_processes": self.accelerator.num_processes, "sharded_optimizer": self.sharded,
            "train_loss": train_loss, "metrics": validation["metrics"] if validation else None,
            "score": validation["score"] if validation else None, "best": self.best or None,
            "trainable_parameters": trainable, "state_tensors": num_tensors, "created": utc_now(),
            "provenance": provenance(),
        }
        commit_checkpoint(stage, self.stage_dir, step, meta)
        write_pointer(self.stage_dir, "last", final)
        if is_best:
            write_pointer(self.stage_dir, "best", final)
        prune_checkpoints(self.stage_dir, self.cfg.train.keep_last)
