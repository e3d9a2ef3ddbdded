"""TRRG's report model: the report model plus zero-shot disease perception, clue injection and clue interaction.

``TRRGReportModel`` is a ``ReportModel`` whose visual tokens carry the disease clues (``mrg.model.clues``)::

    encoder -> features (B, M, C) --pool--> image_proj . text_proj(prompts) -> P(class present) (B, K)
    clues.embed mixed by P -> clue embeddings (B, K', C)
    interaction(features, clues) -> features', clues'        (patch-level and pooled attention, both ways)
    projector(features') (B, M, D) ++ clue_projector(clues') (B, K', D)  = the LLM's image segment

so the clue tokens sit right after the visual tokens in the template's image segment (and the promptbook sees
them as it sees the visual tokens). ``head.*`` and ``text_encoder.*`` are the ``pretrain`` stage's
contrastive head and text encoder; they stay frozen here and perceive under ``torch.no_grad`` (the
probabilities weight the clues but receive no gradient, so the perception stays the pre-trained zero-shot one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mrg.model.clip_pretrain import prompt_features, prompt_probabilities
from mrg.model.clues import ClueInjection, ClueInteraction, select_clues
from mrg.model.contrastive import ContrastiveHead
from mrg.model.projector import Projector
from mrg.model.report_model import ReportModel
from mrg.model.text_encoder import TextEncoder


class TRRGReportModel(ReportModel):
    """The report model with disease clues; see the module docstring for the data flow.

    Args:
        text_encoder, head: the pre-training stage's text encoder and contrastive head (frozen here).
        classes: the CheXpert classes perceived (and clue-able), in order.
        clues: the clue embeddings, or None (no clue injection: the ablation).
        interaction: the clue interaction, or None (clues go to the LLM as injected, the visual tokens unchanged).
        clue_projector: clue width C -> the LLM's width D (None when ``clues`` is None).
        clue_select, clue_top_k: which classes become clues (``mrg.model.clues.select_clues``).
        report_kwargs: the ``ReportModel`` parts.
    """

    def __init__(self, *, text_encoder: TextEncoder, head: ContrastiveHead, classes: Sequence[str],
                 clues: ClueInjection | None, interaction: ClueInteraction | None, clue_projector: Projector | None,
                 clue_select: str = "all", clue_top_k: int = 5, no_finding: str = "derived",
                 **report_kwargs: Any) -> None:
        super().__init__(**report_kwargs)
        self.text_encoder = text_encoder
        self.head = head
        self.classes = list(classes)
        self.clues = clues
        self.interaction = interaction
        self.clue_projector = clue_projector
        self.clue_select, self.clue_top_k = clue_select, clue_top_k
        self.no_finding = no_finding
        self._prompt_cache: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.train(self.training)

    def train(self, mode: bool = True) -> TRRGReportModel:
        """The frozen perception (text encoder, contrastive head) stays in eval mode like the LLM."""
        super().train(mode)
        if "text_encoder" in self._modules:
            self.text_encoder.train(False)
            self.head.train(False)
        return self

    def frozen_prefixes(self) -> tuple[str, ...]:
        return (*super().frozen_prefixes(), "text_encoder.", "head.")

    @staticmethod
    def _pool(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C) mean of the (B, M, C) visual features over real tokens (as the pretrain model pools)."""
        if mask is None:
            return features.mean(dim=1)
        weights = mask.unsqueeze(-1).to(features.dtype)
        return (features * weights).sum(1) / weights.sum(1).clamp(min=1)

    def _prompts(self) -> torch.Tensor:
        """(2K, d) prompt embeddings, computed once per state of the text side (the text encoder and head are
        frozen here; loading weights bumps the parameters' versions, which recomputes them)."""
        params = [*self.text_encoder.parameters(), *self.head.parameters()]
        key = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params[:1])  # a move changes the storage
        if self._prompt_cache is None or self._prompt_cache[0] != key or any(p.requires_grad for p in params):
            self._prompt_cache = (key, prompt_features(self.head, self.text_encoder, self.classes))
        return self._prompt_cache[1]

    @torch.no_grad()
    def perceive_features(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, K) zero-shot P(class present) of ``self.classes`` from (B, M, C) encoder features."""
        return prompt_probabilities(self.head, self.text_encoder, self._pool(features, mask).float(), self.classes,
                                    prompts=self._prompts(), no_finding=self.no_finding)

    @torch.no_grad()
    def perceive(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, K) zero-shot P(class present) of a batch of studies (``mrg perceive``, the demo)."""
        features, mask = self.encoder(batch["pixel_values"], batch.get("view_mask"))
        return self.perceive_features(features, mask)

    @property
    def num_clue_tokens(self) -> int:
        """K': the clue tokens every study gets (0 without clue injection); they end the image segment."""
        if self.clues is None:
            return 0
        return int(select_clues(torch.zeros(1, len(self.classes)), self.clue_select, self.clue_top_k).shape[1])

    def visual_and_clue_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Batch -> (B, M, D) visual tokens in the LLM space, their (B, M) mask (None: all real) and the (B, K', D)
        clue tokens (None without clue injection), after the clue interaction."""
        features, mask = self.encoder(batch["pixel_values"], batch.get("view_mask"))  # (B, M, C), (B, M) | None
        if self.clues is None:
            return self.projector(features), mask, None
        probs = self.perceive_features(features, mask)  # (B, K)
        index = select_clues(probs, self.clue_select, self.clue_top_k)  # (B, K')
        clues = self.clues(probs.to(features.dtype), index).to(features.dtype)  # (B, K', C)
        if self.interaction is not None:
            features, clues = self.interaction(features, mask, clues)
        assert self.clue_projector is not None
        return self.projector(features), mask, self.clue_projector(clues)

    def visual_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch -> (B, M + K', D) visual and clue tokens in the LLM space and their mask (None: all real)."""
        visual, mask, clues = self.visual_and_clue_tokens(batch)
        return _join(visual, mask, clues)

    def soft_tokens(self, batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """``visual`` (B, M, D) with its mask, ``clues`` (B, K', D) and ``prompt`` (B, L, D), as ``mrg analyze``
        reads them (the promptbook sees visual and clue tokens together, as in training)."""
        visual, mask, clues = self.visual_and_clue_tokens(batch)
        tokens, token_mask = _join(visual, mask, clues)
        groups: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {"prompt": (self.promptbook(tokens, token_mask), None)}
        if self.feed_visual_tokens:
            groups = {"visual": (visual, mask), **({"clues": (clues, None)} if clues is not None else {}), **groups}
        return groups

    def image_segment_codes(self, visual: torch.Tensor, token_mask: torch.Tensor | None,
                            codes: dict[str, int]) -> torch.Tensor:
        """The report model's codes for the (B, M + K') image segment, its last K' positions (the clues) ``clues``."""
        out = super().image_segment_codes(visual, token_mask, codes)  # (B, M + K')
        if self.num_clue_tokens:
            out[:, -self.num_clue_tokens :] = codes["clues"]
        return out


def _join(visual: torch.Tensor, mask: torch.Tensor | None,
          clues: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, M + K', D) visual then clue tokens and their mask (None: all real); the clue tokens are all real."""
    if clues is None:
        return visual, mask
    tokens = torch.cat([visual, clues], dim=1)  # (B, M + K', D)
    if mask is None:
        return tokens, None
    clue_mask = torch.ones(mask.shape[0], clues.shape[1], dtype=torch.bool, device=mask.device)
    return tokens, torch.cat([mask, clue_mask], dim=1)


def build_trrg_model(cfg: Any, *, llm_lora: bool) -> TRRGReportModel:
    """The TRRG fine-tuning model of ``cfg`` (``cfg.method`` a ``TRRGOptions``), every parameter trainable.

    Built from the same seed as ``build_report_model``; the pretrain parts (encoder, text encoder, head)
    are overwritten by the ``pretrain`` checkpoint when the stage starts from it.
    """
    from mrg.model.build import build_report_model

    o = cfg.method
    base = build_report_model(cfg, llm_lora=llm_lora)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + 1)
        text_encoder = TextEncoder(o.text_encoder, max_length=o.text_max_length)
        width = base.encoder.num_features
        head = ContrastiveHead(width, text_encoder.hidden_size, o.contrastive_dim, init_temperature=o.init_temperature)
        classes = resolve_classes(o.classes)
        clues = projector = interaction = None
        if o.clue_select != "none":
            clues = ClueInjection(len(classes), width, states=o.clue_states)
            projector = Projector(width, base.llm.hidden_size, kind=cfg.model.projector.kind,
                                  layer_norm=cfg.model.projector.layer_norm)
            if o.interaction != "none":
                interaction = ClueInteraction(width, heads=o.interaction_heads, layers=o.interaction_layers,
                                              granularity=o.interaction)
    parts = {name: getattr(base, name) for name in ("encoder", "projector", "promptbook", "llm", "tokenizer",
                                                     "max_report_tokens", "image_settings", "feed_visual_tokens")}
    model = TRRGReportModel(text_encoder=text_encoder, head=head, classes=classes, clues=clues,
                            interaction=interaction, clue_projector=projector, clue_select=o.clue_select,
                            clue_top_k=o.clue_top_k, no_finding=o.no_finding, **parts)
    model.encoder.unused_parameters = base.encoder.unused_parameters
    return model


def resolve_classes(classes: Sequence[str]) -> list[str]:
    """The classes perceived: ``classes`` as given, or the 14 CheXpert observations when empty."""
    from mrg.data.chexpert import OBSERVATIONS

    return list(classes) if classes else list(OBSERVATIONS)
