"""Reports from a checkpoint: ``generate_reports`` for a split of a prepared dataset or for image files.

The model is rebuilt by the checkpoint's method and stage (``model.method`` of its ``config.yaml`` and the
``stage`` of its ``meta.json``; the frozen LLM and the vision backbone load from the hub ids or paths
recorded there) plus its ``trainable.safetensors``. Decoding follows
the ``generate`` section (R2GenGPT's beam search by default); ``generate.*`` overrides change it.

Output is JSON lines, one study per line in dataset order, which ``mrg evaluate`` reads::

    {"id": "CXR1234", "prediction": "the heart is normal ...", "reference": "the heart ..."}

``reference`` (the cleaned report, cleaned as training targets were) is present for dataset splits
only. A sidecar ``<out>.meta.json`` records the checkpoint, the decoding settings, the inputs and
the provenance. Under several processes (``accelerate launch`` / ``torchrun``) every study is
generated exactly once and the main process writes the file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrg.checkpoint import (
    check_checkpoint_files,
    checkpoint_stage,
    load_checkpoint_config,
    load_meta,
    load_trainable_weights,
    resolve_checkpoint,
)
from mrg.config import RunConfig, build_config, config_to_dict, parse_overrides
from mrg.data.prepared import SPLITS
from mrg.errors import ConfigError, DataError
from mrg.files import write_json_atomic, write_jsonl_atomic
from mrg.provenance import provenance, utc_now
from mrg.runs import CONFIG_NAME, META_NAME, WEIGHTS_NAME

OVERRIDABLE_PREFIXES = ("generate.", "data.num_workers")
"""What may change at generation time; everything else is fixed by the checkpoint."""


@dataclass
class GenerateResult:
    """What ``generate_reports`` wrote."""

    out_path: Path
    meta_path: Path
    num_reports: int
    checkpoint: Path
    step: int
    seconds: float

    @property
    def reports_per_second(self) -> float:
        return self.num_reports / self.seconds if self.seconds > 0 else float("nan")


def meta_path_for(out_path: str | os.PathLike[str]) -> Path:
    """The sidecar that records how ``out_path`` was generated: ``<out_path>.meta.json``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".meta.json")


def group_images(images: Sequence[str | os.PathLike[str]], images_per_study: int = 1) -> tuple[list[list[Path]], list[str]]:
    """Split image files into studies of ``images_per_study`` consecutive files, with an id per study.

    The id is the first file's name without its suffix, or its path when two studies would share a name.

    Raises:
        DataError: a file is missing, or the files do not divide into whole studies.
    """
    paths = [Path(p) for p in images]
    if not paths:
        raise ConfigError("--images needs at least one image file (PNG, JPEG or DICOM)")
    if images_per_study < 1:
        raise ConfigError(f"--images-per-study must be at least 1, got {images_per_study}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"image file not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if len(paths) % images_per_study:
        raise ConfigError(
            f"{len(paths)} image files do not divide into studies of {images_per_study} (--images-per-study); "
            f"give the views of each study next to each other, {images_per_study} per study"
        )
    studies = [paths[i : i + images_per_study] for i in range(0, len(paths), images_per_study)]
    stems = [study[0].stem for study in studies]
    ids = stems if len(set(stems)) == len(stems) else [str(study[0]) for study in studies]
    return studies, ids


def generation_config(checkpoint_cfg: RunConfig, overrides: Sequence[str] | None) -> RunConfig:
    """The checkpoint's configuration with ``generate.*`` overrides applied (anything else is refused)."""
    for key, _ in parse_overrides(list(overrides or ())):
        if not key.startswith(OVERRIDABLE_PREFIXES):
            raise ConfigError(
                f"'{key}' cannot change at generation: the checkpoint fixes it; only generate.* settings "
                f"(e.g. generate.num_beams=1) and data.num_workers can be given"
            )
    # a stage's config holds that stage's train.select only: the method's other stages are not re-resolved
    return build_config(RunConfig, config_to_dict(checkpoint_cfg), list(overrides or ()),
                        resolve_stages=bool(checkpoint_cfg.stages))


def generate_reports(
    checkpoint: str | os.PathLike[str],
    *,
    out_path: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
    images_per_study: int = 1,
    overrides: Sequence[str] | None = None,
) -> GenerateResult:
    """Generate a report per study and write them as JSON lines (plus the ``.meta.json`` sidecar).

    Args:
        checkpoint: a run folder (its ``best`` checkpoint, else ``last``), a ``best``/``last`` pointer
            or a ``step-NNNNNN`` folder.
        out_path: the JSONL file to write (atomically; its folder is created).
        data_root: a prepared dataset; default: the one the run trained on (``data.root``).
        split: ``train``, ``val`` or ``test`` of the dataset; give it or ``images``.
        images: image files (PNG, JPEG, DICOM) instead of a dataset split.
        images_per_study: consecutive files of ``images`` that form one study (e.g. 2 for frontal +
            lateral); the study id is its first file's name.
        overrides: ``generate.key=value`` strings (e.g. ``generate.strategy=greedy``).

    Returns:
        Where the predictions went, how many, from which checkpoint and step.

    Raises:
        CheckpointError: the checkpoint is missing, incomplete or damaged.
        ConfigError: no input or both inputs, an override of a non-generate key.
        DataError: a missing dataset, split or image file, or an unreadable image.
    """
    from mrg.distributed import make_accelerator, predict

    if (images is None) == (split is None):
        raise ConfigError("give either --split (with --data or the run's dataset) or --images FILE..., not both or neither")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split {split}: not a split; use test, val or train")
    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    check_checkpoint_files(step_dir, needed=(WEIGHTS_NAME, CONFIG_NAME, META_NAME))
    meta = load_meta(step_dir)
    cfg = generation_config(load_checkpoint_config(step_dir), overrides)
    if data_root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    gen = cfg.generate
    precision = cfg.train.precision if gen.precision == "auto" else gen.precision

    source: dict[str, Any]
    if images is not None:
        studies, ids = group_images(images, images_per_study)
        source = {"images": [[str(p) for p in study] for study in studies], "images_per_study": images_per_study}
    else:
        source = {"data": str(cfg.data.root), "split": split}

    accelerator = make_accelerator(precision, option="generate.precision")
    started = time.perf_counter()
    model, method, stage = checkpoint_model(step_dir, cfg, meta)
    model.to(accelerator.device)
    model.eval()
    if images is not None:
        dataset: Any = method.image_dataset(cfg, stage, model, studies, ids)
        num_workers = 0  # an unreadable image then fails with its own one-line error
    else:
        dataset = method.split_dataset(cfg, stage, model, split)  # type: ignore[arg-type]
        num_workers = cfg.data.num_workers
        if getattr(dataset, "normalize", None) is not None:
            source["normalize"] = dataset.normalize
    collate_fn = method.collate(cfg, stage, model, data_root=cfg.data.root if images is None else None)
    rows = predict(accelerator, model, dataset, collate_fn, gen, num_workers=num_workers, description="generating reports")
    seconds = time.perf_counter() - started

    out_path = Path(out_path)
    meta_path = meta_path_for(out_path)
    if accelerator.is_main_process:
        write_jsonl_atomic(out_path, (_output_row(row) for row in rows))
        write_json_atomic(
            meta_path,
            {
                "predictions": out_path.name,
                "num_reports": len(rows),
                "checkpoint": str(step_dir.resolve()),
                "step": meta.get("step"),
                "checkpoint_metrics": meta.get("metrics"),
                "generate": config_to_dict(gen) | {"precision": precision},
                "input": source,
                "model": {"method": method.name, "stage": stage.name, "encoder": cfg.model.encoder.name_or_path,
                          "llm": cfg.model.llm.name_or_path},
                "num_processes": accelerator.num_processes,
                "seconds": round(seconds, 3),
                "created": utc_now(),
                "provenance": provenance(),
            },
        )
    accelerator.wait_for_everyone()
    return GenerateResult(out_path, meta_path, len(rows), step_dir, int(meta.get("step", 0)), seconds)


def _output_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {"id": row["id"], "prediction": row["prediction"]}
    if row.get("reference") is not None:
        out["reference"] = row["reference"]
    return out


def checkpoint_model(step_dir: Path, cfg: RunConfig, meta: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The model of a checkpoint: built by its method for its stage, its trained weights loaded (strictly).

    Returns:
        ``(model, method, stage)``.

    Raises:
        CheckpointError: the weights do not match what the method builds for that stage.
        ConfigError: the stage writes no reports (e.g. a contrastive pre-training stage).
    """
    from mrg.methods.registry import get_method
    from mrg.model.trainable import stage_model

    method = get_method(cfg.model.method, option=f"{step_dir / CONFIG_NAME}: model.method")
    stage = method.stage(checkpoint_stage(meta, cfg) or method.stages[-1].name, option=f"{step_dir / META_NAME}: stage")
    if not stage.generates_reports:
        later = [s.name for s in method.stages if s.generates_reports]
        raise ConfigError(f"{step_dir}: a checkpoint of stage {stage.name} of {method.name}, which writes no reports; "
                          f"use a checkpoint of stage {' or '.join(later) or '-'}")
    model = stage_model(method, cfg, stage)
    model.load_trainable_state_dict(load_trainable_weights(step_dir), strict=True)
    return model, method, stage
