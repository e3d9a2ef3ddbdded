"""TRRG's ``pretrain`` model: visual encoder + text encoder + contrastive head, and its validation measures.

``forward(batch)`` takes a collated batch of studies with reports (``mrg.data.dataset.collate_studies``),
splits each report into its positive sentences (``mrg.model.text_encoder.positives_of``) and returns the
multi-positive InfoNCE loss against the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mrg.errors import DataError
from mrg.model.contrastive import ContrastiveHead, sentence_keys
from mrg.model.report_model import ModelOutput
from mrg.model.text_encoder import TextEncoder, label_prompt, positives_of
from mrg.model.trainable import TrainableState


class ContrastivePretrainModel(TrainableState, nn.Module):
    """Image-text contrastive pre-training of a visual encoder (``encoder.*``) against a text encoder."""

    def __init__(self, encoder: nn.Module, text_encoder: TextEncoder, *, dim: int = 128, negated: str = "keep",
                 init_temperature: float = 0.07, label_prompts: bool = False, no_finding: str = "derived") -> None:
        super().__init__()
        self.encoder = encoder
        self.text_encoder = text_encoder
        self.head = ContrastiveHead(encoder.num_features, text_encoder.hidden_size, dim, init_temperature=init_temperature)
        self.negated = negated
        self.label_prompts = label_prompts
        self.no_finding = no_finding
        """Add the report's label prompts ("there is X." / "no X.", mrg's labeler on the report) as positives."""

    def unused_parameter_names(self) -> set[str]:
        """The encoder's backbone parameters no used token depends on; they stay frozen (DDP needs a gradient for each)."""
        return {f"encoder.backbone.{name}" for name in getattr(self.encoder, "unused_parameters", ())}

    def image_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, C) mean of the visual tokens of each study."""
        tokens, mask = self.encoder(batch["pixel_values"], batch.get("view_mask"))  # (B, M, C), (B, M) | None
        if mask is None:
            return tokens.mean(dim=1)
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)

    def sentences(self, reports: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """The positive sentences of the batch and the (T,) index of the report of each.

        Raises:
            DataError: no report of the batch has a sentence.
        """
        texts, owner = [], []
        for i, report in enumerate(reports):
            found = positives_of(report, negated=self.negated)
            if self.label_prompts:
                found += [p for p in report_label_prompts(report) if p not in found]
            texts += found
            owner += [i] * len(found)
        if not texts:
            raise DataError("reports: no report of the batch has a sentence; check the dataset's report column")
        return texts, torch.tensor(owner, dtype=torch.long)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        image = self.image_features(batch)
        texts, owner = self.sentences(batch["reports"])
        text = self.text_encoder(texts)
        loss = self.head(image, text, owner.to(image.device), sentence_keys(texts, image.device))
        return ModelOutput(loss=loss, num_target_tokens=len(texts))

    @torch.no_grad()
    def zero_shot_scores(self, batch: dict[str, Any], classes: Sequence[str]) -> torch.Tensor:
        """(B, K) zero-shot scores: P("there is X") against "no X" for each class, from the image features."""
        return prompt_probabilities(self.head, self.text_encoder, self.image_features(batch), classes,
                                    no_finding=self.no_finding)


NO_FINDING_MODES = ("derived", "prompt")
"""How zero-shot perception scores "No Finding": ``derived`` P = prod(1 - p_k) over the perceived pathology
classes (CheXpert's definition: no pathology present; Support Devices is not one), ``prompt`` its own prompts."""


def prompt_probabilities(head: ContrastiveHead, text_encoder: TextEncoder, image: torch.Tensor,
                         classes: Sequence[str], prompts: torch.Tensor | None = None,
                         no_finding: str = "derived") -> torch.Tensor:
    """(B, K) P(class present) from (B, C) pooled image features: a softmax over the scaled cosine
    similarities to the prompts "there is X." and "no X." (TRRG's zero-shot disease perception).

    ``prompts``: the (2K, d) ``prompt_features`` when already computed (a frozen text side).
    ``no_finding``: ``derived`` (default) scores "No Finding" as P(no perceived pathology) = prod(1 - p_k);
    its prompts "there is no finding." / "no no finding." read as the opposite of what they mean to a text
    encoder trained on reports, which never say them (measured: AUROC 0.09-0.12 on the synthetic set).
    ``prompt`` keeps the prompt probability; so does ``derived`` when no pathology class is perceived."""
    img = nn.functional.normalize(head.image_proj(image), dim=-1)  # (B, d)
    txt = prompt_features(head, text_encoder, classes) if prompts is None else prompts  # (2K, d)
    sims = head.scale() * img @ txt.T.to(img.dtype)  # (B, 2K)
    k = len(classes)
    probs = torch.softmax(torch.stack([sims[:, :k], sims[:, k:]], dim=-1).float(), dim=-1)[..., 0]  # (B, K)
    return derive_no_finding(probs, classes) if no_finding == "derived" else probs


def derive_no_finding(probs: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """(B, K) ``probs`` with the "No Finding" column replaced by prod(1 - p_k) over the pathology classes
    among ``classes`` (all but No Finding and Support Devices); unchanged without either."""
    from mrg.metrics.labeler import NO_FINDING

    if NO_FINDING not in classes:
        return probs
    pathology = [j for j, c in enumerate(classes) if c not in (NO_FINDING, "Support Devices")]
    if not pathology:
        return probs
    out = probs.clone()
    out[:, list(classes).index(NO_FINDING)] = (1 - probs[:, pathology]).prod(dim=1)
    return out


def prompt_features(head: ContrastiveHead, text_encoder: TextEncoder, classes: Sequence[str]) -> torch.Tensor:
    """(2K, d) normalised embeddings of "there is X." for each class, then "no X." for each class."""
    prompts = [label_prompt(c, True) for c in classes] + [label_prompt(c, False) for c in classes]
    return nn.functional.normalize(head.text_proj(text_encoder(prompts)), dim=-1)


def report_label_prompts(report: str) -> list[str]:
    """The label prompts of a report: "there is X." for each positive class, "no X." for each negative one
    (mrg's CheXpert labeler; uncertain and unmentioned classes give none, "No Finding" is left out)."""
    from mrg.data.chexpert import NEGATIVE, POSITIVE
    from mrg.metrics.labeler import NO_FINDING, label_report

    labels = label_report(report)
    return [label_prompt(name, value == POSITIVE) for name, value in labels.items()
            if name != NO_FINDING and value in (POSITIVE, NEGATIVE)]


def recall_at_k(image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image-to-sentence retrieval: the share of images with a positive among their top-k sentences.

    ``image`` (B, d), ``text`` (T, d), ``positives`` (B, T) bool; images without a positive are left out.
    """
    sims = nn.functional.normalize(image, dim=-1) @ nn.functional.normalize(text, dim=-1).T  # (B, T)
    rows = positives.any(dim=1)
    order = sims.argsort(dim=1, descending=True)
    hits = torch.gather(positives, 1, order)  # (B, T): is the r-th ranked sentence a positive
    return {f"recall_at_{k}": hits[rows, :k].any(dim=1).float().mean().item() for k in ks}


def per_class_auroc(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    """AUROC per class (classes with both outcomes only) and their mean as ``zero_shot_auroc``.

    ``scores`` (N, K); ``labels`` (N, K) with 1 positive, 0 negative and NaN unknown (left out).
    """
    out: dict[str, float] = {}
    for j, name in enumerate(classes):
        known = ~torch.isnan(labels[:, j])
        y = labels[known, j]
        if 0 < int((y == 1).sum()) < len(y):
            out[f"zero_shot_auroc/{name}"] = auroc(scores[known, j], y == 1)
    values = list(out.values())
    out["zero_shot_auroc"] = sum(values) / len(values) if values else float("nan")
    return out


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic with tied scores ranked by their mean rank.

    ``scores`` (N,), ``positive`` (N,) bool with both outcomes present.
    """
    scores = scores.double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    for value in scores.unique():  # average the ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum().item() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)
