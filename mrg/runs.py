"""The run-folder layout: every file name a run writes, and the run-level records.

One place names them all, so the trainer, the checkpoint code, ``mrg generate``, the HTML viewer and the
benchmarks agree on the layout. A run of a single-stage method (``mrg-llm``) is one *stage folder*; a
run of a multi-stage method (``two-stage``, ``trrg``) holds ``run.json`` and one stage folder per stage::

    RUN_DIR/                       single-stage run = its only stage folder
      config.yaml                  the resolved configuration of the stage
      provenance.json              versions, git state, command line; one entry per resume
      metrics.csv                  step metrics (long format: step, name, value, time)
      tensorboard/                 TensorBoard events (when the tracker is on)
      val_metrics.jsonl            one line per validation
      val/step-000400.jsonl        validation predictions {"id", "prediction", "reference"}
      step-000400/                 a checkpoint (see ``mrg.checkpoint``)
        trainable.safetensors  optimizer.pt  rng.pt  config.yaml  meta.json (written last)
      best -> step-000400          pointers: symlinks, or one-line files naming the step folder
      last -> step-000600

    RUN_DIR/                       multi-stage run
      run.json                     method, stage order, when each stage started and finished
      align/ ...                   one stage folder per stage, laid out as above
      finetune/ ...

A stage is *finished* when its ``last`` checkpoint records ``"finished": true`` (its final step).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mrg.files import read_json, write_json_atomic

# ------------------------------------------------------------------------------------------ stage folder

CONFIG_NAME = "config.yaml"
PROVENANCE_NAME = "provenance.json"
METRICS_CSV_NAME = "metrics.csv"
VAL_METRICS_NAME = "val_metrics.jsonl"
VAL_DIR_NAME = "val"
TENSORBOARD_DIR_NAME = "tensorboard"
RUN_RECORD_NAME = "run.json"
VQ_RECORD_NAME = "vq.json"
"""An image-tokenizer run (``mrg train-vq``): the dataset that trained it, its config and provenance."""

# ---------------------------------------------------------------------------------------- analysis folder

ANALYSIS_NAME = "analysis.json"
"""``mrg analyze``'s record (its ``format`` is ``ANALYSIS_FORMAT``); the PNG figures it lists sit beside it."""
ANALYSIS_FORMAT = "mrg-analysis"

# ---------------------------------------------------------------------------------------- checkpoint folder

WEIGHTS_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
RNG_NAME = "rng.pt"
META_NAME = "meta.json"
REQUIRED_CHECKPOINT_FILES = (WEIGHTS_NAME, OPTIMIZER_NAME, RNG_NAME, CONFIG_NAME, META_NAME)
POINTER_NAMES = ("best", "last")
STAGING_PREFIX = ".tmp-step-"

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def step_dir_name(step: int) -> str:
    """The folder name of the checkpoint after ``step`` optimizer steps, e.g. ``step-000400``."""
    return f"step-{step:06d}"


def parse_step(path: str | os.PathLike[str]) -> int | None:
    """The step number of a ``step-NNNNNN`` folder name, or None for any other name."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def optimizer_shard_name(rank: int) -> str:
    """Optimizer state of one process when the optimizer is sharded (FSDP, DeepSpeed)."""
    return f"optimizer-rank{rank}.pt"


def val_predictions_name(step: int) -> str:
    """The validation predictions of ``step``, relative to the stage folder."""
    return f"{VAL_DIR_NAME}/{step_dir_name(step)}.jsonl"


# -------------------------------------------------------------------------------------------- run record


def stage_dir(run_dir: str | os.PathLike[str], stage: str, *, multi_stage: bool) -> Path:
    """Where ``stage`` of a run lives: the run folder itself for single-stage methods, else a sub-folder."""
    return Path(run_dir) / stage if multi_stage else Path(run_dir)


def read_run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``run.json`` of a multi-stage run, or None when the folder is not one."""
    path = Path(run_dir) / RUN_RECORD_NAME
    return read_json(path) if path.is_file() else None


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically."""
    write_json_atomic(run_dir / RUN_RECORD_NAME, record)


def is_run_folder(path: Path) -> bool:
    """A stage folder written by ``mrg train`` (its metrics, config or a checkpoint are there)."""
    if not path.is_dir():
        return False
    if (path / METRICS_CSV_NAME).is_file() or (path / VAL_METRICS_NAME).is_file():
        return True
    return (path / CONFIG_NAME).is_file() and any(parse_step(p) is not None for p in path.iterdir() if p.is_dir())
