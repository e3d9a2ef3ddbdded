"""The report model: encoder -> projector -> promptbook -> frozen LLM, fused through ``inputs_embeds``.

Training input of one study (the order of image and prompt follows ``model.promptbook.position``)::

    [BOS] prefix-text  visual tokens (M)  customised prompt (L)  instruction-text  report  EOS  pad...
    -100  -100 ...     -100 ...           -100 ...               -100 ...          ids     EOS  -100

A visual question (the ``vqa`` training task, docs/vqa.md) follows the same prefix as ``Question: ... Answer:``
and its answer is the target (``target_mask`` from ``mrg.data.dataset.task_tensors``); answering feeds the
question after the prefix and generates::

    [BOS] prefix-text  visual tokens  customised prompt  instruction-text  question  answer  EOS
    -100  -100 ...     -100 ...       -100 ...           -100 ...          -100 ...  ids     EOS

The loss is next-token cross-entropy on the report (or answer) tokens and the EOS only. A report longer than
``model.max_report_tokens`` is cut to ``max_report_tokens - 1`` tokens and still ends with EOS, so
the model learns to stop (R2GenGPT truncates after appending ``</s>`` and loses it). Training
sequences are right-padded: with causal attention, padding after the last real token cannot
influence any real position, so no attention mask is passed and the fused causal kernels run.
When views are concatenated and a study has fewer views than the batch, the missing visual tokens
are squeezed out of the sequence (a stable sort on the token mask), so every sequence stays
contiguous.

Generation feeds the same layout without the report. Prefixes of equal length need no padding;
unequal ones (concatenated views) are left-padded with an attention mask, from which
transformers derives the position ids, so batched output equals one-at-a-time output.

Reports arrive tokenized (``report_ids``, ``report_mask``): the collate step
(``mrg.data.dataset.ReportCollator``) tokenizes them, or takes the ids from the ``mrg prepare tokenize``
cache when it was made with the same tokenizer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrg.data.dataset import ImageSettings
from mrg.model.encoder import VisualEncoder
from mrg.model.llm import FrozenLLM
from mrg.model.projector import Projector
from mrg.model.promptbook import Promptbook
from mrg.model.trainable import TrainableState

IGNORE_INDEX = -100
INPUT_GROUPS = ("padding", "instruction", "visual", "prompt", "generated", "clues")
"""What each position of the LLM input is (``ReportModel.input_groups`` codes are indices into this): template
text (BOS, the instruction and its frame) is ``instruction``; tokens generated after the prefix are ``generated``;
``clues`` are disease-clue tokens a subclass appends to the image segment (TRRG)."""


@dataclass
class ModelOutput:
    """What ``ReportModel.forward`` returns."""

    loss: torch.Tensor
    """Mean cross-entropy over the batch's target tokens (report tokens and EOS)."""
    num_target_tokens: int
    """How many tokens the loss averages over (for token-weighted accumulation)."""


class ReportModel(TrainableState, nn.Module):
    """Encoder, projector, promptbook and frozen LLM, composed.

    Build it with ``mrg.model.build.build_model(cfg)``, which also declares what trains.

    Attributes:
        tokenizer: the LLM's tokenizer.
        image_settings: pixel normalisation for the dataset (``ImageSettings.kwargs()``).
        max_report_tokens: report tokens per study in training, EOS included.
    """

    def __init__(
        self,
        *,
        encoder: VisualEncoder,
        projector: Projector,
        promptbook: Promptbook,
        llm: FrozenLLM,
        tokenizer: Any,
        max_report_tokens: int,
        image_settings: ImageSettings | None = None,
        feed_visual_tokens: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.promptbook = promptbook
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_report_tokens = max_report_tokens
        self.feed_visual_tokens = feed_visual_tokens
        """False: the visual tokens condition the prompt but are left out of the LLM input (an ablation)."""
        self.image_settings = image_settings or ImageSettings(num_channels=encoder.num_channels)
        if projector.out_features != llm.hidden_size or promptbook.dim != llm.hidden_size:
            raise ValueError(
                f"projector produces {projector.out_features}-dim and promptbook {promptbook.dim}-dim tokens "
                f"but the LLM's hidden size is {llm.hidden_size}"
            )
        eos = {tokenizer.eos_token_id}
        extra = getattr(getattr(llm.model, "generation_config", None), "eos_token_id", None)
        eos.update(extra if isinstance(extra, list) else [extra] if extra is not None else [])
        self.eos_token_ids: list[int] = sorted(eos)
        self.train(True)

    # ------------------------------------------------------------------------------------ modes

    def train(self, mode: bool = True) -> ReportModel:
        """Set train/eval mode on the trainable parts; the frozen LLM stays in eval mode (no dropout)."""
        super().train(mode)
        self.llm.set_mode(mode)
        return self

    # ------------------------------------------------------------------------------------ pieces

    @property
    def device(self) -> torch.device:
        return self.llm.text_ids.device

    def visual_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch -> (B, M, D) visual tokens in the LLM space and their (B, M) mask (None: all real)."""
        pixel_values = batch["pixel_values"]  # (B, V, C, H, W)
        view_mask = batch.get("view_mask")
        features, token_mask = self.encoder(pixel_values, view_mask)  # (B, M, C)
        return self.projector(features), token_mask  # (B, M, D)

    def assemble(
        self,
        visual: torch.Tensor,
        token_mask: torch.Tensor | None,
        prompt: torch.Tensor,
        report_ids: torch.Tensor | None = None,
        report_mask: torch.Tensor | None = None,
        *,
        left_pad: bool = False,
        target_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Lay out the LLM input.

        Args:
            visual: (B, M, D) visual tokens; token_mask: (B, M) or None.
            prompt: (B, L, D) customised prompt.
            report_ids, report_mask: (B, R) report ids (EOS included) and their mask, for training.
            left_pad: move padding to the front (generation) instead of the end.
            target_mask: (B, R) which of ``report_ids`` are targets (None: all real ones); a VQA row's question
                is input, not target. For generation after a question, the question comes as ``report_ids``.

        Returns:
            inputs_embeds (B, T, D) in the LLM's dtype, attention mask (B, T) bool, labels (B, T) or
            None, and whether any padding had to be moved (the prefix lengths differ).
        """
        batch = visual.shape[0]
        dtype = self.llm.dtype
        text = iter(self.llm.text_embeddings())  # (1, T_i, D) each
        parts: list[torch.Tensor] = []
        masks: list[torch.Tensor | None] = []
        for segment in self.llm.template.segments:
            if segment.kind == "text":
                piece = next(text)
                parts.append(piece.expand(batch, -1, -1))  # (B, T_i, D)
                masks.append(None)
            elif segment.kind == "image":
                if not self.feed_visual_tokens:
                    continue  # the image reaches the LLM only through the customised prompt
                parts.append(visual.to(dtype))  # (B, M, D)
                masks.append(token_mask)
            else:
                if prompt.shape[1] != self.promptbook.num_tokens:
                    raise ValueError(
                        f"promptbook produced {prompt.shape[1]} prompt tokens but the model expects {self.promptbook.num_tokens}"
                    )
                parts.append(prompt.to(dtype))  # (B, L, D)
                masks.append(None)
        prefix_len = sum(p.shape[1] for p in parts)
        labels = None
        if report_ids is not None:
            parts.append(self.llm.embed(report_ids))  # (B, R, D)
            masks.append(report_mask)
            labels = torch.cat(
                [
                    torch.full((batch, prefix_len), IGNORE_INDEX, dtype=torch.long, device=report_ids.device),
                    report_ids.masked_fill(~(report_mask if target_mask is None else report_mask & target_mask),
                                           IGNORE_INDEX),  # (B, R)
                ],
                dim=1,
            )
        embeds = torch.cat(parts, dim=1)  # (B, T, D)
        mask = torch.cat(
            [m if m is not None else torch.ones(batch, p.shape[1], dtype=torch.bool, device=embeds.device) for p, m in zip(parts, masks, strict=True)],
            dim=1,
        )  # (B, T)
        moved = token_mask is not None and self.feed_visual_tokens
        if moved or (left_pad and report_ids is not None):
            # stable sort: real tokens keep their order, padding goes to the end (or the front)
            key = mask.long() if left_pad else (~mask).long()
            order = torch.argsort(key, dim=1, stable=True)  # (B, T)
            embeds = embeds.gather(1, order[:, :, None].expand(-1, -1, embeds.shape[-1]))
            mask = mask.gather(1, order)
            labels = labels.gather(1, order) if labels is not None else None
        return embeds, mask, labels, moved

    def soft_tokens(self, batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """The learned tokens this model feeds the LLM, by group: ``visual`` (B, M, D) with its (B, M) mask (None:
        all real) and ``prompt`` (B, L, D). Used by ``mrg analyze``; a subclass with other soft tokens adds its own."""
        visual, token_mask = self.visual_tokens(batch)
        groups: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {"prompt": (self.promptbook(visual, token_mask), None)}
        if self.feed_visual_tokens:
            groups = {"visual": (visual, token_mask), **groups}
        return groups

    def input_groups(self, visual: torch.Tensor, token_mask: torch.Tensor | None, *, left_pad: bool = False) -> torch.Tensor:
        """(B, T) codes (indices into ``INPUT_GROUPS``) of the input ``assemble(visual, token_mask, prompt,
        left_pad=left_pad)`` lays out without a report.

        The segments and the padding permutation are ``assemble``'s: a padded visual token is ``padding`` and the
        stable sort on the mask moves it as ``assemble`` moves it, so code ``t`` describes position ``t``; the
        ``k``-th ``visual`` position of a row holds that study's ``k``-th real visual token.
        """
        batch = visual.shape[0]
        codes = dict(zip(INPUT_GROUPS, range(len(INPUT_GROUPS)), strict=True))
        parts: list[torch.Tensor] = []
        text_sizes = iter(len(s.ids) for s in self.llm.template.segments if s.kind == "text")
        for segment in self.llm.template.segments:
            if segment.kind == "image" and not self.feed_visual_tokens:
                continue
            if segment.kind == "image":
                parts.append(self.image_segment_codes(visual, token_mask, codes))  # (B, M)
                continue
            size, code = {"text": (0, codes["instruction"]), "prompt": (self.promptbook.num_tokens, codes["prompt"])}[segment.kind]
            size = next(text_sizes) if segment.kind == "text" else size
            parts.append(torch.full((batch, size), code, dtype=torch.long, device=visual.device))
        out = torch.cat(parts, dim=1)  # (B, T)
        if token_mask is not None and self.feed_visual_tokens:
            real = out != codes["padding"]
            key = real.long() if left_pad else (~real).long()  # the sort key assemble uses
            out = out.gather(1, torch.argsort(key, dim=1, stable=True))
        return out

    def image_segment_codes(self, visual: torch.Tensor, token_mask: torch.Tensor | None,
                            codes: dict[str, int]) -> torch.Tensor:
        """(B, M) codes of the image segment's positions before ``assemble``'s padding permutation: ``visual``,
        or ``padding`` where ``token_mask`` is False. A subclass whose ``visual_tokens`` appends other tokens
        labels them here."""
        batch, num_visual = visual.shape[:2]
        if token_mask is None:
            return torch.full((batch, num_visual), codes["visual"], dtype=torch.long, device=visual.device)
        return torch.where(token_mask.to(visual.device), codes["visual"], codes["padding"]).long()

    # ------------------------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Loss on a batch from ``ReportCollator`` (it needs ``report_ids`` and ``report_mask``)."""
        if "report_ids" not in batch:
            raise ValueError("training batches need 'report_ids' (collate with mrg.data.dataset.ReportCollator); "
                             "image-file batches are for generate()")
        visual, token_mask = self.visual_tokens(batch)  # (B, M, D)
        prompt = self.promptbook(visual, token_mask)  # (B, L, D)
        report_ids, report_mask = batch["report_ids"].to(visual.device), batch["report_mask"].to(visual.device)  # (B, R)
        num_targets = int(batch["num_target_tokens"])
        target_mask = batch.get("target_mask")  # (B, R): VQA batches train on the answer tokens only
        embeds, _, labels, moved = self.assemble(visual, token_mask, prompt, report_ids, report_mask,
                                                 target_mask=target_mask.to(visual.device) if target_mask is not None else None)
        assert labels is not None
        total = embeds.shape[1]
        # logits are needed only where a report token is predicted: from the position before the
        # first report token on; with moved padding the first report position varies, so keep all
        keep = 0 if moved else report_ids.shape[1] + 1
        logits = self.llm.logits(embeds, attention_mask=None, keep_last=keep)  # (B, K, V)
        targets = labels[:, total - logits.shape[1] + 1 :]  # (B, K-1): the token after each kept position
        loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return ModelOutput(loss=loss / max(num_targets, 1), num_target_tokens=num_targets)

    # ------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], gen_cfg: Any) -> list[str]:
        """Reports for a batch (``reports`` not needed), or answers to its questions, decoded and cut at EOS.

        Args:
            batch: ``{"pixel_values": (B, V, C, H, W), "view_mask": (B, V)}`` at least; with ``question_ids`` and
                ``question_mask`` (B, Q) (``mrg.data.dataset.question_tensors``) the question follows the prompt.
            gen_cfg: a ``GenerateConfig`` (strategy beam / greedy / sample and its settings).
        """
        from transformers import GenerationConfig

        visual, token_mask = self.visual_tokens(batch)
        prompt = self.promptbook(visual, token_mask)
        question = batch.get("question_ids")  # (B, Q): answers are generated after the question
        embeds, mask, _, _ = self.assemble(
            visual, token_mask, prompt, question.to(visual.device) if question is not None else None,
            batch["question_mask"].to(visual.device) if question is not None else None, left_pad=True)
        settings: dict[str, Any] = {
            "max_new_tokens": gen_cfg.max_new_tokens,
            "min_new_tokens": gen_cfg.min_new_tokens,
            "repetition_penalty": gen_cfg.repetition_penalty,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "use_cache": True,
            # set explicitly: transformers fills unset fields from the checkpoint's generation_config.json
            # (Llama-2-chat's asks for sampling at temperature 0.6), which would change the decoding silently
            "no_repeat_ngram_size": 0,
            "num_return_sequences": 1,
            "early_stopping": False,
        }
        if gen_cfg.strategy == "beam":
            settings.update(num_beams=gen_cfg.num_beams, length_penalty=gen_cfg.length_penalty, do_sample=False)
        elif gen_cfg.strategy == "greedy":
            settings.update(num_beams=1, do_sample=False)
        else:  # nucleus sampling only: no top-k cut
            settings.update(num_beams=1, do_sample=True, temperature=gen_cfg.temperature, top_p=gen_cfg.top_p, top_k=0)
        config = GenerationConfig(**settings)
        devices = [embeds.device] if embeds.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=gen_cfg.strategy == "sample"), warnings.catch_warnings():
            if gen_cfg.strategy == "sample":
                torch.manual_seed(gen_cfg.seed)
            # R2GenGPT's behaviour, on purpose: the repetition penalty sees only generated tokens
            warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
            out = self.llm.model.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config)
        return self.decode(out)

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """(B, N) generated ids -> texts, each cut at its first EOS, special tokens removed."""
        texts = []
        stops = set(self.eos_token_ids)
        for row in sequences.tolist():
            cut = next((i for i, tok in enumerate(row) if tok in stops), len(row))
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts

    # ------------------------------------------------------------------------------------ weights

    def frozen_prefixes(self) -> tuple[str, ...]:
        """The frozen LLM, and a frozen encoder: kept in eval mode, never saved."""
        return ("llm.", "encoder.") if self.encoder.frozen else ("llm.",)

    def unused_parameter_names(self) -> set[str]:
        """Backbone parameters the used tokens do not depend on (``VisualEncoder.find_unused_parameters``)."""
        return {f"encoder.backbone.{name}" for name in self.encoder.unused_parameters}

    def after_trainability(self) -> None:
        """An encoder none of whose weights train is fixed features: eval mode (no BatchNorm updates, no dropout)."""
        self.encoder.frozen = not any(p.requires_grad for p in self.encoder.parameters())
        self.train(self.training)
