"""``mrg-llm``: MRG-LLM, a learnable visual encoder, a projector and instance-specific prompts feeding a frozen LLM.

"Multimodal Large Language Models for Medical Report Generation via Customized Prompt Tuning"
(arXiv 2506.15477). One stage, ``train``: the encoder (as ``model.encoder.trainable`` says), the projector
and the promptbook train; the LLM stays frozen. The prompt modes (``model.promptbook.mode``): ``none``
(visual tokens only, R2GenGPT), ``static``, ``prompt-wise`` and ``promptbook-wise`` (docs/model.md).
"""

from __future__ import annotations

from torch import nn

from mrg.config import RunConfig
from mrg.methods.base import SoftTokenGroup, Stage
from mrg.methods.registry import register_method
from mrg.methods.report import ReportMethod, report_model_groups


def encoder_patterns(cfg: RunConfig) -> list[str]:
    """What of the encoder trains under ``model.encoder.trainable``."""
    return {"full": ["encoder.*"], "lora": ["encoder.*lora_*"], "frozen": []}[cfg.model.encoder.trainable]


def llm_weight(name: str) -> bool:
    """The frozen LLM's own weights (its LoRA adapters excepted): never trainable in any report method."""
    return name.startswith("llm.") and "lora_" not in name


class MRGLLM(ReportMethod):
    name = "mrg-llm"
    summary = "visual encoder + projector + instance-specific prompts (conditional affine transforms) -> frozen LLM"
    demo_preset = "demo"
    paper = "arXiv 2506.15477"
    stages = (
        Stage("train", "encoder, projector and promptbook train; the LLM is frozen",
              trains=("encoder.*", "projector.*", "promptbook.*")),
    )

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        patterns = [*encoder_patterns(cfg), "projector.*"]
        if cfg.model.promptbook.mode != "none":
            patterns.append("promptbook.*")
        return patterns

    def never_trains(self, name: str) -> bool:
        return llm_weight(name)

    def soft_token_groups(self, cfg: RunConfig, stage: Stage) -> list[SoftTokenGroup]:
        return report_model_groups(cfg)

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        from mrg.model.build import build_report_model

        return build_report_model(cfg)


register_method(MRGLLM())
