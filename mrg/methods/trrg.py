# DRAFT, NOT REGISTERED AND NOT TESTED: written at the deadline; register in mrg/methods/registry.py once tested.
"""``trrg``: text-guided visual pre-training, then report generation from the pre-trained encoder.

TRRG ("Towards Truthful Radiology Report Generation With Cross-modal Disease Clue Enhanced Large Language
Models"): stage ``pretrain`` trains the visual encoder contrastively against a text encoder on report
sentences (``mrg.model.clip_pretrain``), validated by image-to-sentence retrieval and zero-shot per-class
AUROC; stage ``finetune`` starts from it and trains the report model (encoder, projector, prompts) with
the LLM frozen. mrg's finetune does not yet inject disease clues (see ``docs/methods/trrg.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mrg.config import MethodOptions, RunConfig
from mrg.metrics.registry import RETRIEVAL, Metric, register_metrics
from mrg.methods.base import Stage
from mrg.methods.mrg_llm import encoder_patterns, llm_weight
from mrg.methods.registry import register_method
from mrg.methods.report import ReportMethod

register_metrics([
    Metric("recall_at_1", "R@1", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,), headline=True,
           protocol="image-to-sentence retrieval over the validation sentences; a hit is any positive sentence"),
    Metric("recall_at_5", "R@5", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,), headline=True,
           protocol="image-to-sentence retrieval over the validation sentences; a hit is any positive sentence"),
    Metric("recall_at_10", "R@10", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,),
           protocol="image-to-sentence retrieval over the validation sentences; a hit is any positive sentence"),
    Metric("zero_shot_auroc", "ZS-AUROC", "retrieval", inputs=("embeddings", "labels"), tasks=(RETRIEVAL,), headline=True,
           protocol="mean per-class AUROC of P('there is X') vs 'no X'; labels from mrg's CheXpert labeler on the reference"),
], replace=True)


@dataclass(frozen=True, kw_only=True)
class TRRGOptions(MethodOptions):
    """Settings of the ``trrg`` method."""

    text_encoder: str = "random:bert"
    """Hugging Face text encoder (folder or hub id, with its tokenizer) of the pre-training stage."""
    contrastive_dim: int = 128
    """Width of the shared image-text space."""
    init_temperature: float = 0.07
    """Initial softmax temperature of the InfoNCE (learnt, as log(1/T), clamped at 1/T <= 100)."""
    negated_sentences: str = "keep"
    """Sentences whose every finding is negated: keep (a positive like others), drop, or prompt (replaced by
    the label prompts "no X"). The paper does not say; keep is the plain CLIP reading."""
    text_max_length: int = 64
    """Tokens per sentence for the text encoder."""

    def problems(self) -> list[str]:
        from mrg.model.text_encoder import NEGATED_CHOICES

        out = []
        if self.negated_sentences not in NEGATED_CHOICES:
            out.append(f"'method.negated_sentences' must be one of {', '.join(NEGATED_CHOICES)}, got {self.negated_sentences!r}")
        if self.init_temperature <= 0:
            out.append("'method.init_temperature' must be above 0")
        return out


class TRRG(ReportMethod):
    name = "trrg"
    summary = "stage pretrain: image-sentence contrastive encoder training; stage finetune: report model from it, LLM frozen"
    paper = "TRRG (cross-modal disease clue enhanced LLMs)"
    options = TRRGOptions
    demo_preset = None
    stages = (
        Stage("pretrain", "visual encoder, text encoder and contrastive head train (multi-positive InfoNCE)",
              trains=("encoder.*", "text_encoder.*", "head.*"), loss="symmetric multi-positive InfoNCE over sentences",
              task=RETRIEVAL, generates_reports=False),
        Stage("finetune", "encoder (from pretrain), projector and prompts train; the LLM is frozen",
              trains=("encoder.*", "projector.*", "promptbook.*"), starts_from="pretrain", carries=("encoder.*",)),
    )
    config_defaults = {"stages": {"pretrain": {"train": {"select": {"zero_shot_auroc": 1.0}}}}}  # untested draft

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        if stage.name == "pretrain":
            return [*encoder_patterns(cfg), "text_encoder.*", "head.*"]
        patterns = [*encoder_patterns(cfg), "projector.*"]
        return patterns + (["promptbook.*"] if cfg.model.promptbook.mode != "none" else [])

    def never_trains(self, name: str) -> bool:
        return llm_weight(name)

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        from mrg.model.build import build_report_model

        if stage.name == "finetune":
            return build_report_model(cfg)
        from mrg.model.build import _build_encoder, image_settings_for
        from mrg.model.clip_pretrain import ContrastivePretrainModel
        from mrg.model.random_models import resolve_model_path
        from mrg.model.text_encoder import TextEncoder

        o: TRRGOptions = cfg.method  # type: ignore[assignment]
        encoder_dir = resolve_model_path(cfg.model.encoder.name_or_path)
        encoder = _build_encoder(cfg, encoder_dir)
        model = ContrastivePretrainModel(encoder, TextEncoder(o.text_encoder, max_length=o.text_max_length),
                                         dim=o.contrastive_dim, negated=o.negated_sentences,
                                         init_temperature=o.init_temperature)
        model.image_settings = image_settings_for(encoder_dir, encoder.num_channels)
        return model

    def collate(self, cfg: RunConfig, stage: Stage, model: nn.Module, *, data_root: Any = None) -> Any:
        if stage.name == "pretrain":
            from mrg.data.dataset import collate_studies

            return collate_studies
        return super().collate(cfg, stage, model, data_root=data_root)

    def make_validation(self, context: Any) -> Any:
        if context.stage.name != "pretrain":
            return None
        return RetrievalValidation(context)


class RetrievalValidation:
    """Retrieval recall@k and zero-shot per-class AUROC of the pre-trained encoders on the val split."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def run(self, step: int, *, sanity: bool = False) -> Any:
        from mrg.validation import ValidationOutput, share_from_main

        c = self.context
        indices = c.indices[: 2 * c.cfg.train.micro_batch_size] if sanity else c.indices
        metrics = share_from_main(c.accelerator, lambda: self._measure(indices))
        return ValidationOutput(metrics, len(indices))

    @torch.no_grad()
    def _measure(self, indices: list[int]) -> dict[str, float]:
        from mrg.data.chexpert import OBSERVATIONS, POSITIVE
        from mrg.metrics.labeler import label_report
        from mrg.model.clip_pretrain import per_class_auroc, recall_at_k
        from mrg.model.contrastive import positive_mask, sentence_keys

        c = self.context
        model = c.accelerator.unwrap_model(c.model)
        was_training = model.training
        model.eval()
        images, texts, owners, scores, labels = [], [], [], [], []
        size = c.cfg.train.micro_batch_size
        try:
            for start in range(0, len(indices), size):
                batch = c.collate([c.dataset[i] for i in indices[start : start + size]])
                batch["pixel_values"] = batch["pixel_values"].to(c.accelerator.device)
                batch["view_mask"] = batch["view_mask"].to(c.accelerator.device)
                images.append(model.head.image_proj(model.image_features(batch)).float().cpu())
                found, owner = model.sentences(batch["reports"])
                texts += found
                owners.append(owner + start)
                scores.append(model.zero_shot_scores(batch, OBSERVATIONS).float().cpu())
                labels += [[1.0 if label_report(r).get(k) == POSITIVE else 0.0 for k in OBSERVATIONS] for r in batch["reports"]]
            text = torch.cat([model.head.text_proj(model.text_encoder(texts[i : i + 64])).float().cpu()
                              for i in range(0, len(texts), 64)])
        finally:
            model.train(was_training)
        image = torch.cat(images)
        positives = positive_mask(torch.cat(owners), sentence_keys(texts), image.shape[0])
        out = recall_at_k(image, text, positives, ks=(1, 5, 10))
        out.update(per_class_auroc(torch.cat(scores), torch.tensor(labels), OBSERVATIONS))
        return out


register_method(TRRG())
