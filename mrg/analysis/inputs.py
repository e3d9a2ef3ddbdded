"""What ``mrg analyze`` reads: the checkpoint's model (rebuilt as ``mrg generate`` rebuilds it), its soft-token groups
and the first studies of a dataset split, in batches.

The model comes from ``mrg.generate.checkpoint_model`` (the method and stage of the checkpoint, its trained weights
loaded strictly). For the attention analysis the frozen LLM is loaded with ``attn_implementation="eager"``: the fused
SDPA and flash kernels never materialise the attention weights, so they cannot return them; eager attention computes
the same softmax explicitly (``model.llm.attn_implementation`` changes no weight, so the checkpoint loads as trained).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrg.checkpoint import (
    check_checkpoint_files,
    checkpoint_stage,
    load_checkpoint_config,
    load_meta,
    resolve_checkpoint,
)
from mrg.config import RunConfig
from mrg.data.prepared import SPLITS
from mrg.errors import ConfigError
from mrg.generate import checkpoint_model, generation_config
from mrg.methods.base import SoftTokenGroup
from mrg.runs import CONFIG_NAME, META_NAME, WEIGHTS_NAME


@dataclass
class AnalysisInputs:
    """A checkpoint's model, its soft-token groups and the studies to analyse."""

    step_dir: Path
    meta: dict[str, Any]
    cfg: RunConfig
    method: Any
    stage: Any
    groups: list[SoftTokenGroup]
    model: Any
    dataset: Any
    """The first ``limit`` studies of the split (``torch.utils.data.Subset``)."""
    collate: Any
    split: str
    attention_implementation: str
    notes: list[str] = field(default_factory=list)

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """The studies in dataset order, collated as ``mrg generate`` collates them (no worker processes)."""
        from torch.utils.data import DataLoader

        size = batch_size or self.cfg.generate.batch_size
        device = self.model.device
        for batch in DataLoader(self.dataset, batch_size=size, shuffle=False, num_workers=0, collate_fn=self.collate):
            yield {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    def record(self) -> dict[str, Any]:
        """What ``analysis.json`` says about the inputs."""
        return {
            "checkpoint": str(self.step_dir.resolve()),
            "step": self.meta.get("step"),
            "method": self.method.name,
            "stage": self.stage.name,
            "data": str(self.cfg.data.root),
            "split": self.split,
            "num_studies": len(self.dataset),
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "encoder": self.cfg.model.encoder.name_or_path,
            "llm": self.cfg.model.llm.name_or_path,
            "attention_implementation": self.attention_implementation,
            "device": str(self.model.device),
        }


def no_soft_tokens_message(method_name: str, stage_name: str) -> str:
    return (f"method {method_name} (stage {stage_name}) has no soft tokens to analyze: it feeds its LLM no visual tokens, "
            "customised prompts or clues (a method declares them with Method.soft_token_groups)")


def load_inputs(
    checkpoint: str | os.PathLike[str],
    *,
    split: str,
    data_root: str | os.PathLike[str] | None = None,
    limit: int = 50,
    eager_attention: bool = False,
    overrides: Sequence[str] | None = None,
) -> AnalysisInputs:
    """Rebuild the checkpoint's model and pick the first ``limit`` studies (0: all) of ``split``.

    Raises:
        ConfigError: a bad split or limit, an override of a non-generate key, or a method without soft tokens.
        CheckpointError: the checkpoint is missing, incomplete or damaged.
        DataError: the dataset or split is missing.
    """
    import torch
    from torch.utils.data import Subset

    from mrg.methods.registry import get_method

    if split not in SPLITS:
        raise ConfigError(f"--split {split}: not a split; use test, val or train")
    if limit < 0:
        raise ConfigError(f"--limit {limit}: give a number of studies (0 = the whole split)")
    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    check_checkpoint_files(step_dir, needed=(WEIGHTS_NAME, CONFIG_NAME, META_NAME))
    meta = load_meta(step_dir)
    cfg = generation_config(load_checkpoint_config(step_dir), overrides)
    if data_root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    method = get_method(cfg.model.method, option=f"{step_dir / CONFIG_NAME}: model.method")
    stage = method.stage(checkpoint_stage(meta, cfg) or method.stages[-1].name, option=f"{step_dir / META_NAME}: stage")
    groups = method.soft_token_groups(cfg, stage)
    if not groups:
        others = [s.name for s in method.stages if s.name != stage.name and method.soft_token_groups(cfg, s)]
        hint = f"; its stage {others[0]} has some: give that stage's checkpoint (RUN or RUN/{others[0]})" if others else ""
        raise ConfigError(no_soft_tokens_message(method.name, stage.name) + hint)
    implementation = cfg.model.llm.attn_implementation
    if eager_attention:
        implementation = "eager"
        llm = dataclasses.replace(cfg.model.llm, attn_implementation="eager")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, llm=llm))
    model, method, stage = checkpoint_model(step_dir, cfg, meta)
    model.to(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))  # one device, as far as it goes
    model.eval()
    for needed in ("soft_tokens", "input_groups", "assemble"):
        if not hasattr(model, needed):
            raise ConfigError(f"the model of method {method.name} ({type(model).__name__}) has no {needed}(); "
                              "mrg analyze reads soft tokens through mrg.model.report_model.ReportModel's interface")
    dataset = method.split_dataset(cfg, stage, model, split)
    count = len(dataset) if limit == 0 else min(limit, len(dataset))
    subset = Subset(dataset, list(range(count)))
    collate = method.collate(cfg, stage, model, data_root=cfg.data.root)
    return AnalysisInputs(step_dir, meta, cfg, method, stage, groups, model, subset, collate, split, implementation)
