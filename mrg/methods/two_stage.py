"""``two-stage``: align visual features to the LLM as soft visual prompts, then fine-tune the LLM with LoRA.

"Effectively Fine-tune to Improve Large Multimodal Models for Radiology Report Generation" (arXiv 2312.01504,
NeurIPS 2023 DGM4H; OpenLLaMA-7B). The paper gives the protocol's outline only; mrg's reading of it
(``docs/methods/two-stage.md``):

* ``align``: the encoder (as ``model.encoder.trainable`` says) and the projector train with the LLM frozen;
  the projected visual tokens are the soft visual prompts (no customised prompt: ``model.promptbook.mode``
  defaults to ``none`` for this method, any mode works).
* ``finetune``: starts from ``align``'s best checkpoint and adds LoRA adapters to the LLM
  (``model.llm.lora_*``); the adapters train, plus the parts in ``method.finetune_also`` (the projector by
  default, as LLaVA's second stage does); everything else is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from mrg.config import MethodOptions, RunConfig
from mrg.methods.base import SoftTokenGroup, Stage
from mrg.methods.mrg_llm import encoder_patterns, llm_weight
from mrg.methods.registry import register_method
from mrg.methods.report import ReportMethod, report_model_groups

PART_PATTERNS = {"projector": ["projector.*"], "promptbook": ["promptbook.*"]}


@dataclass(frozen=True, kw_only=True)
class TwoStageOptions(MethodOptions):
    """Settings of the ``two-stage`` method."""

    finetune_also: list[Literal["encoder", "projector", "promptbook"]] = field(default_factory=lambda: ["projector"])
    """Parts that keep training next to the LLM's LoRA adapters in ``finetune`` ([] = the adapters alone)."""


class TwoStage(ReportMethod):
    name = "two-stage"
    summary = "stage align: encoder + projector with the LLM frozen; stage finetune: LoRA on the LLM from align"
    demo_preset = "two-stage-demo"
    paper = "arXiv 2312.01504"
    options = TwoStageOptions
    stages = (
        Stage("align", "encoder and projector align visual features to the frozen LLM (soft visual prompts)",
              trains=("encoder.*", "projector.*", "promptbook.*")),
        Stage("finetune", "LoRA adapters on the LLM train (+ method.finetune_also), initialised from align",
              trains=("llm.*lora_*", "projector.*"), starts_from="align"),
    )
    config_defaults = {"model": {"promptbook": {"mode": "none"}}}

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        if stage.name == "align":
            patterns = [*encoder_patterns(cfg), "projector.*"]
            return patterns + (["promptbook.*"] if cfg.model.promptbook.mode != "none" else [])
        also: list[str] = cfg.method.finetune_also  # type: ignore[attr-defined]
        patterns = ["llm.*lora_*"]
        for part in also:
            patterns += encoder_patterns(cfg) if part == "encoder" else PART_PATTERNS[part]
        return patterns

    def never_trains(self, name: str) -> bool:
        return llm_weight(name)

    def soft_token_groups(self, cfg: RunConfig, stage: Stage) -> list[SoftTokenGroup]:
        return report_model_groups(cfg)

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        from mrg.model.build import build_report_model

        return build_report_model(cfg, llm_lora=stage.name == "finetune")


register_method(TwoStage())
