"""Baselines every report generator should beat: the most frequent training report, and nearest-neighbour retrieval.

- ``most_frequent_report``: the training split's most frequent normalised report, for every study;
- ``nearest_neighbour_predictions``: each study gets the report of the training study whose image is most similar
  (cosine of the mean-pooled encoder tokens) under a trained checkpoint's encoder.

``mrg demo`` and ``mrg benchmark`` score both exactly as the methods are scored.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from mrg.data.prepared import Study, load_prepared_dataset


def most_frequent_report(studies: list[Study]) -> str:
    """The training split's most frequent normalised report.

    Ties (in the synthetic set every report is unique) go to the report whose CheXpert label vector
    is the most frequent among training reports, then to the shortest, then to the first.
    """
    from mrg.metrics.labeler import label_reports

    texts = [s.report_clean for s in studies]
    counts = Counter(texts)
    top = max(counts.values())
    candidates = [t for t in dict.fromkeys(texts) if counts[t] == top]
    if len(candidates) == 1:
        return candidates[0]
    labels = label_reports([s.report for s in studies])
    keys = [tuple(sorted(lab.items())) for lab in labels]
    key_counts = Counter(keys)
    key_of = dict(zip(texts, keys, strict=True))
    return min(candidates, key=lambda t: (-key_counts[key_of[t]], len(t), texts.index(t)))


@torch.no_grad()
def pooled_features(model: torch.nn.Module, dataset: torch.utils.data.Dataset, collate_fn) -> tuple[list[str], torch.Tensor]:
    """(ids, (N, C) L2-normalised mean-pooled encoder tokens) of every study of ``dataset``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, collate_fn=collate_fn)
    ids, chunks = [], []
    for batch in loader:
        tokens, mask = model.encoder(batch["pixel_values"], batch["view_mask"])  # (B, M, C)
        if mask is not None:
            tokens = tokens * mask[..., None]
            pooled = tokens.sum(1) / mask.sum(1, keepdim=True)
        else:
            pooled = tokens.mean(1)
        ids += batch["ids"]
        chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
    return ids, torch.cat(chunks)


def nearest_neighbour_predictions(checkpoint: str | Path, data_dir: str | Path, split: str = "test") -> list[dict[str, str]]:
    """Each study of ``split`` gets the report of its most similar training image under the checkpoint's encoder.

    Raises:
        CheckpointError: the checkpoint is missing or damaged; ConfigError: its model has no visual encoder.
    """
    from mrg.checkpoint import load_checkpoint_config, load_meta, resolve_checkpoint
    from mrg.data.dataset import collate_studies
    from mrg.errors import ConfigError
    from mrg.generate import checkpoint_model

    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    cfg = load_checkpoint_config(step_dir)
    model, method, stage = checkpoint_model(step_dir, cfg, load_meta(step_dir))
    if not hasattr(model, "encoder"):
        raise ConfigError(f"{step_dir}: the {method.name} model has no visual encoder for nearest-neighbour retrieval")
    model.eval()
    import dataclasses

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_dir)))
    train_ids, train_features = pooled_features(model, method.split_dataset(cfg, stage, model, "train"), collate_studies)
    ids, features = pooled_features(model, method.split_dataset(cfg, stage, model, split), collate_studies)
    reports = {s.id: s.report_clean for s in load_prepared_dataset(data_dir).split("train")}
    best = (features @ train_features.T).argmax(dim=1)  # (N,)
    return [{"id": sid, "prediction": reports[train_ids[int(j)]]} for sid, j in zip(ids, best, strict=True)]
