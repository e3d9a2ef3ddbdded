"""MAViLT's unified model: one frozen LLM over text and VQ image tokens (``docs/methods/mavilt.md``).

The image is tokenized by a frozen ``mrg train-vq`` tokenizer (first view, resized to its size) into h*w codes;
``ExtendedVocabulary`` adds ``<boi>``, ``<eoi>`` and the K codes after the LLM's V ids (its own rows train, the
base table and head never change). Both directions, and visual questions, share the LLM::

    image-to-report   [BOS] prefix <Img> <boi> c_1 .. c_hw <eoi> </Img> instruction  report EOS    (loss: report, EOS)
    image + question  [BOS] prefix <Img> <boi> c_1 .. c_hw <eoi> </Img> instruction  question answer EOS (loss: answer)
    report-to-image   [BOS] report EOS <boi> c_1 .. c_hw                           (loss: the codes, over the K codes)

The image-to-report layout is ``ReportModel``'s with the image segment filled by the code embeddings (so
``mrg generate``, ``mrg answer`` and the demo read it like every report model). Image tokens are predicted
over the K code rows only (a restricted softmax): an image always has exactly h*w codes, so ``<eoi>`` is
placed, not predicted. A report is dropped (``[BOS] <boi>`` alone) with probability ``cfg_dropout`` so that the
same model gives the unconditional logits of classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrg.model.report_model import IGNORE_INDEX, ModelOutput, ReportModel
from mrg.model.vocab import ExtendedVocabulary
from mrg.model.vq import VQAutoencoder


class VQImageEncoder(nn.Module):
    """The frozen VQ tokenizer in the report model's encoder slot: (B, V, 1, H, W) in [0, 1] -> (B, h, w) codes."""

    num_channels = 1

    def __init__(self, vq: VQAutoencoder) -> None:
        super().__init__()
        self.vq = vq.eval()
        self.frozen = True
        self.unused_parameters: set[str] = set()

    def train(self, mode: bool = True) -> VQImageEncoder:
        super().train(False)  # the tokenizer is fixed: EMA and restarts stay off
        return self

    @torch.no_grad()
    def codes(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, V, 1, H, W) -> (B, h, w) codes of the first view."""
        images = pixel_values[:, 0].float()  # (B, 1, H, W)
        size = self.vq.cfg.image_size
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return self.vq.encode(images.clamp(0, 1))


@dataclass(frozen=True)
class SamplingSettings:
    """How image tokens are sampled (``mrg synthesize``)."""

    temperature: float = 1.0
    top_k: int = 0
    """Keep the k most probable codes (0: all)."""
    top_p: float = 1.0
    """Nucleus: keep the smallest set of codes whose probability reaches top_p (1: all)."""
    cfg_scale: float = 1.0
    """Classifier-free guidance: logits = uncond + s * (cond - uncond); 1 = no guidance (one pass)."""


class MAViLTModel(ReportModel):
    """The report model whose visual tokens are VQ code embeddings, plus report -> image token training and sampling.

    Args:
        vocab: the extended vocabulary over the LLM's input table and head.
        weights: loss weight per direction (``image-to-report``, ``report-to-image``).
        preserve, preserve_weight: the language-preservation term (``lm``, ``kl`` or ``none``).
        cfg_dropout: probability of training a report-to-image row without its report.
        report_kwargs: the ``ReportModel`` parts (``encoder`` is a ``VQImageEncoder``).
    """

    def __init__(self, *, vocab: ExtendedVocabulary, weights: dict[str, float], preserve: str = "none",
                 preserve_weight: float = 0.0, cfg_dropout: float = 0.0, **report_kwargs: Any) -> None:
        super().__init__(**report_kwargs)
        self.vocab = vocab
        self.weights = dict(weights)
        self.preserve, self.preserve_weight = preserve, preserve_weight
        self.cfg_dropout = cfg_dropout
        self.bos_id = self.tokenizer.bos_token_id

    @property
    def grid(self) -> int:
        return self.encoder.vq.grid_size

    @property
    def num_codes(self) -> int:
        return self.vocab.vocab.num_codes

    def _decoder(self) -> nn.Module:
        """The LLM's body (final hidden states, normed), without its head."""
        lm = self.llm.model
        return getattr(lm, lm.base_model_prefix)

    def image_ids(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, h*w + 2) ids ``<boi> codes <eoi>`` of each study's first view."""
        codes = self.encoder.codes(batch["pixel_values"].to(self.device))  # (B, h, w)
        return self.vocab.vocab.image_sequence(codes)

    def visual_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, h*w + 2, D) embeddings of ``<boi> codes <eoi>``; every position real."""
        return self.vocab.embed(self.image_ids(batch)), None

    # ------------------------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Weighted sum of the directions' losses (+ the preservation term); VQA batches train the answer only."""
        report = super().forward(batch)
        if batch.get("target_mask") is not None:
            return report  # image + question -> answer: the report model's loss on the answer tokens
        loss = self.weights.get("image-to-report", 1.0) * report.loss
        if self.weights.get("report-to-image", 0.0) > 0:
            loss = loss + self.weights["report-to-image"] * self.report_to_image_loss(batch)
        if self.preserve != "none" and self.preserve_weight > 0:
            loss = loss + self.preserve_weight * self.preservation_loss(batch)
        return ModelOutput(loss=loss, num_target_tokens=report.num_target_tokens)

    def _text_prefix(self, report_ids: torch.Tensor, report_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[BOS] report (B, 1 + R) ids and mask (BOS only where the LLM has one)."""
        if self.bos_id is None:
            return report_ids, report_mask
        bos = torch.full_like(report_ids[:, :1], self.bos_id)
        return torch.cat([bos, report_ids], 1), torch.cat([torch.ones_like(report_mask[:, :1]), report_mask], 1)

    def report_to_image_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy of the h*w codes after ``[BOS] report EOS <boi>``, over the K code rows."""
        device = self.device
        image = self.image_ids(batch)[:, :-1]  # (B, 1 + hw): <boi> codes (<eoi> is placed, not predicted)
        report_ids, report_mask = batch["report_ids"].to(device), batch["report_mask"].to(device)  # (B, R)
        if self.training and self.cfg_dropout > 0:
            drop = torch.rand(report_ids.shape[0], device=device) < self.cfg_dropout
            report_mask = report_mask & ~drop[:, None]
        text, text_mask = self._text_prefix(report_ids, report_mask)
        ids = torch.cat([text, image], 1)  # (B, T)
        mask = torch.cat([text_mask, torch.ones_like(image, dtype=torch.bool)], 1)
        labels = torch.cat([torch.full_like(text, IGNORE_INDEX), torch.full_like(image[:, :1], IGNORE_INDEX),
                            image[:, 1:] - (self.vocab.vocab.base_size + 2)], 1)  # code index k
        order = torch.argsort((~mask).long(), dim=1, stable=True)  # real tokens first, padding after (causal)
        ids, labels = ids.gather(1, order), labels.gather(1, order)
        hidden = self._decoder()(inputs_embeds=self.vocab.embed(ids).to(self.llm.dtype), use_cache=False).last_hidden_state
        targets = labels[:, 1:]  # (B, T-1): the token after each position
        keep = targets != IGNORE_INDEX
        logits = self.code_logits(hidden[:, :-1][keep])  # (N, K)
        return F.cross_entropy(logits.float(), targets[keep])

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> (..., K) logits over the code rows only."""
        head = self.vocab.new_head[2:]  # rows after <boi>, <eoi>
        return hidden @ head.to(hidden.dtype).t()

    def preservation_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """``lm``: next-token loss of ``[BOS] report EOS`` alone; ``kl``: KL(frozen LLM || adapted LLM) on it.

        Both move only weights inside the LLM (LoRA): with the LLM frozen their gradient is zero.
        """
        report_ids, report_mask = batch["report_ids"].to(self.device), batch["report_mask"].to(self.device)
        ids, mask = self._text_prefix(report_ids, report_mask)
        logits = self.llm.logits(self.llm.embed(ids), attention_mask=None, keep_last=0)[:, :-1].float()  # (B, T-1, V)
        real = mask[:, 1:]
        if self.preserve == "lm":
            return F.cross_entropy(logits[real], ids[:, 1:][real])
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.llm.model.modules() if isinstance(m, BaseTunerLayer)]
        with torch.no_grad():
            for layer in layers:
                layer.enable_adapters(False)
            try:
                reference = self.llm.logits(self.llm.embed(ids), attention_mask=None, keep_last=0)[:, :-1].float()
            finally:
                for layer in layers:
                    layer.enable_adapters(True)
        return F.kl_div(logits[real].log_softmax(-1), reference[real].log_softmax(-1), log_target=True,
                        reduction="batchmean")

    # ------------------------------------------------------------------------------------ synthesis

    @torch.no_grad()
    def sample_image_tokens(self, prompts: Sequence[str], seeds: Sequence[int],
                            settings: SamplingSettings = SamplingSettings()) -> torch.Tensor:
        """(B, h, w) codes sampled after each prompt report; row i uses its own generator seeded ``seeds[i]``, so a
        row's codes do not depend on the other rows of the batch."""
        was_training = self.training
        self.eval()
        try:
            return self._sample(list(prompts), list(seeds), settings)
        finally:
            self.train(was_training)

    def _prompt_batch(self, prompts: list[str], unconditional: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``[BOS] report EOS <boi>`` ids (B, T) and mask; ``[BOS] <boi>`` when unconditional."""
        rows = []
        for text in prompts:
            ids = [] if unconditional else [*self.tokenizer(text, add_special_tokens=False)["input_ids"]
                                            [: self.max_report_tokens - 1], self.tokenizer.eos_token_id]
            rows.append(([self.bos_id] if self.bos_id is not None else []) + ids + [self.vocab.vocab.boi_id])
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = True
        return ids.to(self.device), mask.to(self.device)

    def _step_logits(self, ids: torch.Tensor, mask: torch.Tensor, past: Any) -> tuple[torch.Tensor, Any]:
        """Feed ``ids`` (B, t) under the full mask (B, T): the (B, K) code logits of the last position, the cache."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        out = self._decoder()(inputs_embeds=self.vocab.embed(ids).to(self.llm.dtype), attention_mask=mask.long(),
                              position_ids=positions, past_key_values=past, use_cache=True)
        return self.code_logits(out.last_hidden_state[:, -1]).float(), out.past_key_values

    def _sample(self, prompts: list[str], seeds: list[int], s: SamplingSettings) -> torch.Tensor:
        guided = s.cfg_scale != 1.0
        ids, mask = self._prompt_batch(prompts, unconditional=False)
        streams = [(ids, mask)]
        if guided:
            streams.append(self._prompt_batch(prompts, unconditional=True))
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        states = [[i, m, None] for i, m in streams]
        codes: list[torch.Tensor] = []
        step_ids = [i for i, _ in streams]
        for _ in range(self.grid * self.grid):
            logits = []
            for state, fed in zip(states, step_ids, strict=True):
                out, state[2] = self._step_logits(fed, state[1], state[2])
                logits.append(out)
            mixed = logits[0] if not guided else logits[1] + s.cfg_scale * (logits[0] - logits[1])  # (B, K)
            picked = filter_and_sample(mixed.cpu(), generators, s)  # (B,)
            codes.append(picked)
            nxt = self.vocab.vocab.code_ids(picked)[:, None].to(self.device)  # (B, 1)
            step_ids = [nxt] * len(states)
            for state in states:
                state[1] = torch.cat([state[1], torch.ones_like(state[1][:, :1])], 1)
        return torch.stack(codes, 1).view(len(prompts), self.grid, self.grid)


def filter_and_sample(logits: torch.Tensor, generators: list[torch.Generator], s: SamplingSettings) -> torch.Tensor:
    """(B, K) logits -> (B,) codes: temperature, then top-k, then top-p, one draw per row from its generator.

    Temperature 0 picks the most probable code (greedy)."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / s.temperature
    if 0 < s.top_k < logits.shape[-1]:
        kth = logits.topk(s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= s.top_p  # keep the first code that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators, strict=True)])
