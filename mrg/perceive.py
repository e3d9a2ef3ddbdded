"""``mrg perceive``: zero-shot disease perception of a TRRG checkpoint, per study, as a CheXpert-layout CSV.

For each study, each perceived class gets P(present): the study's pooled image embedding against the prompt
embeddings "there is X." and "no X." (a softmax over the two scaled cosine similarities;
``mrg.model.clip_pretrain.prompt_probabilities``). Either stage of ``trrg`` works (``pretrain`` or
``finetune``: the encoder, text encoder and contrastive head are in both).

The CSV is the CheXpert label layout with the study id in front: ``id`` then the 14 observations in
CheXpert order, each cell a probability in [0, 1] (empty for classes the run does not perceive)::

    id,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,...,Support Devices
    CXR12,,0.0312,0.8841,...

For a dataset split, the sidecar ``<out>.meta.json`` also records the per-class AUROC against the reference
reports' labels (mrg's CheXpert labeler; positive vs not positive) and their mean, ``zero_shot_auroc``.
``mrg evaluate`` scores the CSV itself (``mrg.label_eval``: thresholded label metrics and per-class AUROC).
Runs on one process.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mrg.checkpoint import (
    check_checkpoint_files,
    checkpoint_stage,
    load_checkpoint_config,
    load_meta,
    load_trainable_weights,
    resolve_checkpoint,
)
from mrg.data.chexpert import OBSERVATIONS, POSITIVE
from mrg.data.prepared import SPLITS
from mrg.errors import ConfigError
from mrg.files import atomic_write, write_json_atomic
from mrg.provenance import utc_now
from mrg.runs import CONFIG_NAME, META_NAME, WEIGHTS_NAME

ID_COLUMN = "id"


def perceive_run(checkpoint: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                 data: str | os.PathLike[str] | None = None, split: str | None = None,
                 images: Sequence[str | os.PathLike[str]] | None = None, images_per_study: int = 1,
                 batch_size: int = 16) -> list[dict[str, Any]]:
    """Write the perceived probabilities of every study of ``split`` (or of ``images``) to ``out_path``.

    Returns:
        One ``{"id", "probabilities": {class: p}}`` per study, in dataset order.

    Raises:
        CheckpointError: the checkpoint is missing or damaged.
        ConfigError: not a ``trrg`` checkpoint; no input or both inputs; an unknown split.
        DataError: a missing dataset, split or image file.
    """
    from mrg.generate import group_images
    from mrg.methods.registry import get_method
    from mrg.model.trainable import stage_model

    if (images is None) == (split is None):
        raise ConfigError("give either --split (with --data or the run's dataset) or --images FILE..., not both or neither")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split {split}: not a split; use test, val or train")
    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    check_checkpoint_files(step_dir, needed=(WEIGHTS_NAME, CONFIG_NAME, META_NAME))
    meta = load_meta(step_dir)
    cfg = load_checkpoint_config(step_dir)
    if cfg.model.method != "trrg":
        raise ConfigError(f"--checkpoint {step_dir}: a {cfg.model.method} checkpoint; mrg perceive needs a trrg run "
                          "(its encoders perceive the classes zero-shot)")
    if data is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data)))
    method = get_method("trrg")
    stage = method.stage(checkpoint_stage(meta, cfg) or method.stages[-1].name, option=f"{step_dir / META_NAME}: stage")
    model = stage_model(method, cfg, stage)
    model.load_trainable_state_dict(load_trainable_weights(step_dir), strict=True)
    model.eval()
    if images is not None:
        studies, ids = group_images(images, images_per_study)
        dataset: Any = method.image_dataset(cfg, stage, model, studies, ids)
    else:
        dataset = method.split_dataset(cfg, stage, model, split)  # type: ignore[arg-type]
    classes, ids, probs, reports = _perceive(model, cfg, dataset, batch_size)
    rows = [{"id": i, "probabilities": dict(zip(classes, p, strict=True))} for i, p in zip(ids, probs.tolist(), strict=True)]
    write_perception_csv(out_path, rows)
    record: dict[str, Any] = {"perceptions": Path(out_path).name, "checkpoint": str(step_dir.resolve()),
                              "stage": stage.name, "step": meta.get("step"), "classes": classes, "num_studies": len(rows),
                              "input": {"data": str(cfg.data.root), "split": split} if split else {"images": len(ids)},
                              "created": utc_now()}
    if reports is not None:
        from mrg.metrics.labeler import label_reports
        from mrg.model.clip_pretrain import per_class_auroc

        labels = torch.tensor([[1.0 if r.get(c) == POSITIVE else 0.0 for c in classes] for r in label_reports(reports)])
        record["auroc"] = per_class_auroc(probs, labels, classes)
    write_json_atomic(Path(out_path).with_name(Path(out_path).name + ".meta.json"), record)
    return rows


@torch.no_grad()
def _perceive(model: Any, cfg: Any, dataset: Any, batch_size: int) -> tuple[list[str], list[str], torch.Tensor, Any]:
    """The classes, study ids, (N, K) probabilities and the reference reports (None for image files)."""
    from mrg.data.dataset import collate_studies
    from mrg.model.trrg_model import resolve_classes

    classes = list(getattr(model, "classes", None) or resolve_classes(cfg.method.classes))
    ids: list[str] = []
    reports: list[str] | None = []
    chunks = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_studies([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        ids += batch["ids"]
        if reports is not None and "reports" in batch:
            reports += batch["reports"]
        else:
            reports = None
        if hasattr(model, "perceive"):
            chunks.append(model.perceive(batch).float().cpu())
        else:  # the pretrain stage's model
            chunks.append(model.zero_shot_scores(batch, classes).float().cpu())
    return classes, ids, torch.cat(chunks), reports


def write_perception_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """``id`` + the 14 CheXpert observations (probabilities, empty where not perceived), atomically."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([ID_COLUMN, *OBSERVATIONS])
        for row in rows:
            probs = row["probabilities"]
            writer.writerow([row["id"], *("" if c not in probs else f"{probs[c]:.6f}" for c in OBSERVATIONS)])


def read_perception_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows ``write_perception_csv`` wrote: ``{"id", "probabilities": {class: p}}`` (empty cells left out)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [{"id": r[ID_COLUMN], "probabilities": {c: float(r[c]) for c in OBSERVATIONS if r.get(c)}}
                for r in csv.DictReader(handle)]
