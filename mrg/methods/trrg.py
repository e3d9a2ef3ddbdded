"""``trrg``: contrastive encoder pre-training, zero-shot disease perception, disease clues, cross-modal interaction.

TRRG ("Towards Truthful Radiology Report Generation With Cross-modal Disease Clue Enhanced Large Language
Models", arXiv 2408.12141). The paper has no public code; mrg's reading of it (``docs/methods/trrg.md``):

* ``pretrain``: the visual encoder trains contrastively against a text encoder on report sentences
  (``mrg.model.clip_pretrain``: multi-positive symmetric InfoNCE, learnable temperature, features gathered
  across processes); validated by image-to-sentence retrieval recall@k and per-class zero-shot AUROC.
* ``finetune``: starts from ``pretrain`` (encoder, text encoder, contrastive head); the frozen text encoder
  and head perceive each CheXpert class zero-shot, the clue embeddings weighted by those probabilities
  interact with the visual tokens and enter the frozen LLM as soft tokens (``mrg.model.trrg_model``);
  encoder, projector, promptbook and the clue modules train, LoRA on the LLM optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mrg.config import MethodOptions, RunConfig
from mrg.methods.base import SoftTokenGroup, Stage
from mrg.methods.mrg_llm import encoder_patterns, llm_weight
from mrg.methods.registry import register_method
from mrg.methods.report import ReportMethod, report_model_groups
from mrg.metrics.registry import RETRIEVAL, Metric, register_metrics, suggest

_RETRIEVAL_PROTOCOL = "image-to-sentence retrieval over the validation sentences; a hit is any positive sentence"
register_metrics([
    Metric("recall_at_1", "R@1", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,), headline=True,
           protocol=_RETRIEVAL_PROTOCOL),
    Metric("recall_at_5", "R@5", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,), headline=True,
           protocol=_RETRIEVAL_PROTOCOL),
    Metric("recall_at_10", "R@10", "retrieval", inputs=("embeddings",), tasks=(RETRIEVAL,), protocol=_RETRIEVAL_PROTOCOL),
    Metric("zero_shot_auroc", "ZS-AUROC", "retrieval", inputs=("embeddings", "labels"), tasks=(RETRIEVAL,), headline=True,
           protocol="mean per-class AUROC of P('there is X') vs 'no X' over the classes with both outcomes; "
                    "labels from mrg's CheXpert labeler on the reference (positive vs not positive)"),
])


@dataclass(frozen=True, kw_only=True)
class TRRGOptions(MethodOptions):
    """Settings of the ``trrg`` method (the ``method:`` section); every choice the paper leaves open."""

    text_encoder: str = "random:bert"
    """Hugging Face text encoder (hub id or folder, with its tokenizer), e.g. a CXR-BERT; ``random:bert`` in tests."""
    text_max_length: int = 64
    """Tokens per sentence for the text encoder."""
    text_encoder_trains: bool = True
    """Whether the text encoder trains in ``pretrain`` (False: only the visual side and the head move)."""
    contrastive_dim: int = 128
    """Width of the shared image-text space."""
    init_temperature: float = 0.07
    """Initial InfoNCE temperature (learnt as log(1/T), clamped at 1/T <= 100)."""
    negated_sentences: str = "keep"
    """Sentences whose every finding is negated ("no pleural effusion."): ``keep`` (a positive like any other),
    ``drop`` (left out: absence says little of what the image shows) or ``prompt`` (replaced by the label
    prompts "no X." of the classes it negates, which many reports share: multi-positive)."""
    label_prompts: bool = False
    """Add each report's label prompts ("there is X." / "no X.", mrg's labeler) as extra positives in ``pretrain``."""
    classes: list[str] = field(default_factory=list)
    """CheXpert classes perceived and available as clues; empty: all 14."""
    clue_select: Literal["all", "top-k", "none"] = "all"
    """Which classes become clue tokens per study: ``all``, the ``top-k`` most probable, or ``none`` (no clue
    injection: the ablation; the model is then the pre-trained encoder under MRG-LLM's report model)."""
    clue_top_k: int = 5
    """Clues per study under ``clue_select: top-k``."""
    clue_states: Literal["both", "present"] = "both"
    """``both``: a clue is p*E[present] + (1-p)*E[absent]; ``present``: p*E[present] (absence fades the clue out)."""
    interaction: Literal["both", "patch", "pooled", "none"] = "both"
    """Granularity of the cross-modal clue interaction (``none``: clues are not mixed with the visual tokens)."""
    interaction_layers: int = 1
    """Rounds of clue <-> visual attention."""
    interaction_heads: int = 8
    """Attention heads of the interaction (must divide the encoder's feature width)."""
    finetune_lora: bool = False
    """LoRA adapters on the LLM in ``finetune`` (``model.llm.lora_*``); the LLM's own weights never train."""
    no_finding: Literal["derived", "prompt"] = "derived"
    """How "No Finding" is perceived: ``derived`` P = prod(1 - p_k) over the perceived pathology classes (CheXpert's
    definition; Support Devices is not a pathology), ``prompt`` its own prompts "there is no finding." / "no no
    finding." (which a text encoder trained on reports reads backwards: AUROC 0.09-0.12 on the synthetic set)."""
    perceive_threshold: float = 0.5
    """P(present) from which ``mrg demo`` lists a class as perceived (``mrg perceive`` writes the probabilities)."""

    def problems(self) -> list[str]:
        from mrg.data.chexpert import OBSERVATIONS
        from mrg.model.text_encoder import NEGATED_CHOICES

        out = []
        if self.negated_sentences not in NEGATED_CHOICES:
            out.append(f"'method.negated_sentences' must be one of {', '.join(NEGATED_CHOICES)}, "
                       f"got {self.negated_sentences!r}")
        if self.init_temperature <= 0:
            out.append("'method.init_temperature' must be above 0")
        for name in self.classes:
            if name not in OBSERVATIONS:
                out.append(f"'method.classes' names {name!r}, not a CheXpert class.{suggest(name, OBSERVATIONS)} "
                           f"Classes: {', '.join(OBSERVATIONS)}")
        if len(set(self.classes)) != len(self.classes):
            out.append("'method.classes' lists a class twice")
        for key in ("clue_top_k", "interaction_layers", "interaction_heads", "contrastive_dim", "text_max_length"):
            if getattr(self, key) < (0 if key == "clue_top_k" else 1):
                out.append(f"'method.{key}' must be at least {0 if key == 'clue_top_k' else 1}")
        if not 0.0 <= self.perceive_threshold <= 1.0:
            out.append("'method.perceive_threshold' must be within [0, 1]")
        return out


def _options(cfg: RunConfig) -> TRRGOptions:
    assert isinstance(cfg.method, TRRGOptions), "the trrg method's config has TRRGOptions as its method section"
    return cfg.method


class TRRG(ReportMethod):
    name = "trrg"
    summary = ("stage pretrain: image-sentence contrastive encoder; stage finetune: zero-shot disease clues "
               "injected as soft tokens, interacting with the visual tokens; LLM frozen")
    paper = "arXiv 2408.12141"
    options = TRRGOptions
    demo_preset = "trrg-demo"
    architecture_options = ("text_encoder", "contrastive_dim", "classes", "clue_select", "clue_states", "interaction",
                            "interaction_layers", "interaction_heads", "finetune_lora")
    stages = (
        Stage("pretrain", "visual encoder, text encoder and contrastive head train (multi-positive InfoNCE)",
              trains=("encoder.*", "text_encoder.*", "head.*"),
              loss="symmetric multi-positive InfoNCE over report sentences, learnable temperature",
              data="train split (images + report sentences); validation: retrieval and zero-shot AUROC on val",
              task=RETRIEVAL, generates_reports=False),
        Stage("finetune", "encoder (from pretrain), projector, promptbook and clue modules train; the LLM is frozen",
              trains=("encoder.*", "projector.*", "promptbook.*", "clues.*", "clue_projector.*", "interaction.*"),
              starts_from="pretrain"),
    )
    config_defaults = {"stages": {"pretrain": {"train": {"select": {"zero_shot_auroc": 1.0}}}}}

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        o = _options(cfg)
        if stage.name == "pretrain":
            return [*encoder_patterns(cfg), "head.*"] + (["text_encoder.*"] if o.text_encoder_trains else [])
        patterns = [*encoder_patterns(cfg), "projector.*"]
        if cfg.model.promptbook.mode != "none":
            patterns.append("promptbook.*")
        if o.clue_select != "none":
            patterns += ["clues.*", "clue_projector.*"] + (["interaction.*"] if o.interaction != "none" else [])
        return patterns + (["llm.*lora_*"] if o.finetune_lora else [])

    def soft_token_groups(self, cfg: RunConfig, stage: Stage) -> list[SoftTokenGroup]:
        """``finetune``: MRG-LLM's groups (visual tokens, customised prompt) plus the disease clues, which follow the
        visual tokens in the image segment; ``pretrain`` feeds no LLM, so it has none."""
        if stage.name == "pretrain":
            return []
        groups = report_model_groups(cfg)
        if _options(cfg).clue_select != "none" and cfg.model.visual_tokens:
            clue = SoftTokenGroup("clues", f"projected disease clues ({_options(cfg).clue_select}, states "
                                           f"{_options(cfg).clue_states}, after the {_options(cfg).interaction} interaction)")
            groups.insert(1 if groups and groups[0].name == "visual" else 0, clue)
        return groups

    def never_trains(self, name: str) -> bool:
        return llm_weight(name)

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        from mrg.errors import ConfigError

        try:
            if stage.name == "finetune":
                from mrg.model.trrg_model import build_trrg_model

                return build_trrg_model(cfg, llm_lora=_options(cfg).finetune_lora)
            return _build_pretrain_model(cfg)
        except ValueError as err:  # a part refuses its settings (e.g. heads that do not divide the width)
            raise ConfigError(f"method: {err}") from None

    def collate(self, cfg: RunConfig, stage: Stage, model: nn.Module, *, data_root: Any = None) -> Any:
        if stage.name == "pretrain":
            from mrg.data.dataset import collate_studies

            return collate_studies
        return super().collate(cfg, stage, model, data_root=data_root)

    def make_validation(self, context: Any) -> Any:
        if context.stage.name != "pretrain":
            return None
        return RetrievalValidation(context)

    def demo_overrides(self, data_dir: Path, out_dir: Path, *, fast: bool) -> list[str]:
        """The fast demo pre-trains 100 steps instead of the preset's 150, to fit the fast demo's 120 s on 2 cores
        (measured: validation zero-shot AUROC 0.81 at 100 steps, as at 150; benchmarks/RESULTS.md)."""
        return ["stages.pretrain.train.max_steps=100", "stages.pretrain.train.val_every=100"] if fast else []

    def demo_extras(self, cfg: RunConfig, run_dir: Path, data_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Each test study's perceived classes (P >= ``method.perceive_threshold``; all probabilities in
        ``perceived.csv``), the test split's zero-shot AUROC, and the pretrain stage's best validation metrics."""
        import json

        from mrg.perceive import perceive_run
        from mrg.runs import VAL_METRICS_NAME

        out = out_dir / "perceived.csv"
        rows = perceive_run(run_dir, out, data=data_dir, split="test")
        record = json.loads(out.with_name(out.name + ".meta.json").read_text(encoding="utf-8"))
        threshold = _options(cfg).perceive_threshold
        perceived = {r["id"]: [k for k, v in r["probabilities"].items() if v >= threshold] for r in rows}
        val_path = Path(run_dir) / "pretrain" / VAL_METRICS_NAME
        pretrain = [json.loads(line) for line in val_path.read_text(encoding="utf-8").splitlines()] if val_path.is_file() else []
        best = max(pretrain, key=lambda r: r["score"], default=None)
        return {"perceived_csv": str(out), "perceive_threshold": threshold, "perceived": perceived,
                "test_zero_shot_auroc": record.get("auroc", {}).get("zero_shot_auroc"),
                "pretrain_val": best["metrics"] if best else None}


def _build_pretrain_model(cfg: RunConfig) -> nn.Module:
    """The ``pretrain`` model: the report model's visual encoder, the text encoder and the contrastive head."""
    from mrg.model.build import _build_encoder, image_settings_for, quiet_hub_progress
    from mrg.model.clip_pretrain import ContrastivePretrainModel
    from mrg.model.random_models import resolve_model_path
    from mrg.model.text_encoder import TextEncoder

    quiet_hub_progress()
    o = _options(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        encoder_dir = resolve_model_path(cfg.model.encoder.name_or_path)
        encoder = _build_encoder(cfg, encoder_dir)
        torch.manual_seed(cfg.train.seed + 1)  # the same text encoder and head as finetune builds
        text_encoder = TextEncoder(o.text_encoder, max_length=o.text_max_length)
        model = ContrastivePretrainModel(encoder, text_encoder, dim=o.contrastive_dim, negated=o.negated_sentences,
                                         init_temperature=o.init_temperature, label_prompts=o.label_prompts,
                                         no_finding=o.no_finding)
    model.image_settings = image_settings_for(encoder_dir, encoder.num_channels)
    return model


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
        from mrg.model.contrastive import positive_mask, sentence_keys
        from mrg.model.trrg_model import resolve_classes

        c = self.context
        model = c.accelerator.unwrap_model(c.model)
        classes = resolve_classes(_options(c.cfg).classes)
        was_training = model.training
        model.eval()
        try:
            image, texts, owners, scores, labels = self._embed(model, indices, classes)
            text = torch.cat([model.head.text_proj(model.text_encoder(texts[i : i + 64])).float().cpu()
                              for i in range(0, len(texts), 64)])
        finally:
            model.train(was_training)
        from mrg.model.clip_pretrain import per_class_auroc, recall_at_k

        positives = positive_mask(owners, sentence_keys(texts), image.shape[0])
        out = recall_at_k(image, text, positives, ks=(1, 5, 10))
        out.update(per_class_auroc(scores, labels, classes))
        return out

    def _embed(self, model: Any, indices: list[int], classes: list[str]) -> tuple[Any, ...]:
        """Projected image features, the sentences and their owners, zero-shot scores and reference labels."""
        from mrg.data.chexpert import POSITIVE
        from mrg.metrics.labeler import label_report

        c = self.context
        device, size = c.accelerator.device, c.cfg.train.micro_batch_size
        images, texts, owners, scores, labels = [], [], [], [], []
        for start in range(0, len(indices), size):
            batch = c.collate([c.dataset[i] for i in indices[start : start + size]])
            batch = {**batch, "pixel_values": batch["pixel_values"].to(device), "view_mask": batch["view_mask"].to(device)}
            images.append(model.head.image_proj(model.image_features(batch)).float().cpu())
            found, owner = model.sentences(batch["reports"])
            texts += found
            owners.append(owner + start)
            scores.append(model.zero_shot_scores(batch, classes).float().cpu())
            labels += [[1.0 if label_report(r).get(k) == POSITIVE else 0.0 for k in classes] for r in batch["reports"]]
        return torch.cat(images), texts, torch.cat(owners), torch.cat(scores), torch.tensor(labels)


register_method(TRRG())
