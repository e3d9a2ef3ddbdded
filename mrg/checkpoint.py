"""Checkpoints of a training run: the on-disk layout, atomic saving, finding, resolving and checking.

A run directory holds the resolved configuration, its provenance and one folder per saved step::

    RUN_DIR/
      config.yaml               the run's resolved configuration
      provenance.json           versions, git state, command line of the run
      metrics.csv               step metrics (long format: step, name, value, time)
      val_metrics.jsonl         one line per validation
      val/step-000400.jsonl     validation predictions {"id", "prediction", "reference"}
      step-000400/
        trainable.safetensors   the trainable weights only (never the frozen LLM)
        optimizer.pt            optimizer, learning-rate scheduler and gradient-scaler state
        rng.pt                  random-number-generator states of every process
        config.yaml             the resolved configuration (the model is rebuilt from it)
        meta.json               written last: step, epoch, data position, seed, metrics, provenance
      best -> step-000400       symlink, or a one-line file naming the step folder where symlinks fail
      last -> step-000600

A step folder is written under a temporary name and renamed into place, so a folder named
``step-NNNNNN`` with a ``meta.json`` is always complete; an interrupted save leaves only a
``.tmp-step-*`` folder that the next run removes. Everything is read with ``weights_only=True`` or
safetensors: a checkpoint never executes code when it is loaded.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrg.config import RunConfig, config_from_dict, diff_configs, save_config
from mrg.errors import CheckpointError, ConfigError, MrgError
from mrg.files import read_json, write_json_atomic, write_text_atomic

WEIGHTS_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
RNG_NAME = "rng.pt"
CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"
REQUIRED_FILES = (WEIGHTS_NAME, OPTIMIZER_NAME, RNG_NAME, CONFIG_NAME, META_NAME)
POINTER_NAMES = ("best", "last")
STAGING_PREFIX = ".tmp-step-"

_STEP_DIR = re.compile(r"^step-(\d{6,})$")

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


# ------------------------------------------------------------------------------------------------ naming


def step_dir_name(step: int) -> str:
    """The folder name of the checkpoint after ``step`` optimizer steps, e.g. ``step-000400``."""
    return f"step-{step:06d}"


def parse_step(path: str | os.PathLike[str]) -> int | None:
    """The step number of a ``step-NNNNNN`` folder name, or None for any other name."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return config_from_dict(RunConfig, data)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}); restore it from the run folder's config.yaml") from None
    except ConfigError as err:
        raise CheckpointError(f"{path}: does not match this version of mrg ({err})") from None


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
            f"{path}: corrupt or truncated ({err}); use another step of the run (e.g. RUN_DIR/last or --resume auto)"
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


def check_config_compatible(checkpoint_cfg: RunConfig, cfg: RunConfig, step_dir: Path) -> list[str]:
    """Compare the checkpoint's configuration with the current one.

    Returns:
        Warnings for fields that may differ (training schedule, data, decoding, the LLM's dtype).

    Raises:
        CheckpointError: architecture fields differ; the message lists each with both values.
    """
    differences = diff_configs(checkpoint_cfg, cfg)
    architecture = [
        (key, old, new) for key, old, new in differences if key.startswith("model.") and key not in NON_ARCHITECTURE_MODEL_FIELDS
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
