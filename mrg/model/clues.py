"""Disease clues (TRRG): clue embeddings weighted by perceived probabilities, and their interaction with the image.

* ``select_clues``: which classes become clues for each study: all of them, the top-k perceived, or none.
* ``ClueInjection``: one learned embedding per class and state (present / absent); a study's clue for class
  ``k`` with perceived probability ``p`` is ``p * E[k, present] + (1 - p) * E[k, absent]`` (``states="both"``)
  or ``p * E[k, present]`` (``states="present"``).
* ``ClueInteraction``: visual tokens and any number of clue embeddings (0 included) attend to each other, at
  the patch level (clues <-> every visual token) and the pooled level (clues <-> the study's mean visual
  token). Every residual branch ends in a zero-initialised projection, so at the start of fine-tuning the
  visual tokens are exactly the pre-trained encoder's.

Shapes: B studies, M visual tokens of width C, K' clues of width C.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ClueSelect = Literal["all", "top-k", "none"]
Granularity = Literal["both", "patch", "pooled", "none"]


def select_clues(probs: torch.Tensor, select: str, top_k: int) -> torch.Tensor:
    """(B, K') long indices of the classes that become clues, from the (B, K) perceived probabilities.

    ``all``: every class in class order; ``top-k``: the ``top_k`` most probable per study, most probable
    first; ``none``: no clue (K' = 0).
    """
    batch, classes = probs.shape
    if select == "none" or (select == "top-k" and top_k == 0):
        return torch.zeros(batch, 0, dtype=torch.long, device=probs.device)
    if select == "all":
        return torch.arange(classes, device=probs.device).expand(batch, -1)
    if select == "top-k":
        return probs.topk(min(top_k, classes), dim=1).indices  # (B, K'), sorted by probability
    raise ValueError(f"unknown clue selection {select!r}")


class ClueInjection(nn.Module):
    """Clue embeddings of width ``dim`` for ``num_classes`` classes, mixed by perceived probability."""

    def __init__(self, num_classes: int, dim: int, *, states: Literal["both", "present"] = "both",
                 init_std: float = 0.02) -> None:
        super().__init__()
        if states not in ("both", "present"):
            raise ValueError(f"unknown clue states {states!r}")
        gen = torch.randn(num_classes, 2 if states == "both" else 1, dim) * init_std
        self.embed = nn.Parameter(gen)  # (K, S, C): S = 0 present, 1 absent
        self.embed._mrg_no_decay = True  # type: ignore[attr-defined]  # embeddings, as word embeddings
        self.states = states

    @property
    def num_classes(self) -> int:
        return int(self.embed.shape[0])

    def forward(self, probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, K', C) clues of the classes ``index`` (B, K') given the (B, K) probabilities ``probs``."""
        p = probs.gather(1, index).unsqueeze(-1).to(self.embed.dtype)  # (B, K', 1)
        chosen = self.embed[index]  # (B, K', S, C)
        clue = p * chosen[:, :, 0]
        if self.states == "both":
            clue = clue + (1 - p) * chosen[:, :, 1]
        return clue


class _Attend(nn.Module):
    """Pre-norm cross-attention whose output projection starts at zero (the residual branch starts closed)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, C) update of ``query`` from ``keys`` (B, N, C); ``padding`` (B, N) True where a key is padding."""
        out, _ = self.attn(self.norm_q(query), self.norm_kv(keys), self.norm_kv(keys), key_padding_mask=padding,
                           need_weights=False)
        return out


class ClueInteractionLayer(nn.Module):
    """One round of clue <-> visual attention at the patch level, the pooled level, or both."""

    def __init__(self, dim: int, heads: int, granularity: Granularity) -> None:
        super().__init__()
        self.patch = granularity in ("both", "patch")
        self.pooled = granularity in ("both", "pooled")
        if self.patch:
            self.clue_from_patches = _Attend(dim, heads)  # each clue looks at every visual token
            self.patches_from_clues = _Attend(dim, heads)  # each visual token looks at the clues
        if self.pooled:
            self.clue_from_pooled = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim))
            self.pooled_from_clues = _Attend(dim, heads)  # the mean visual token looks at the clues
            nn.init.zeros_(self.clue_from_pooled[1].weight)
            nn.init.zeros_(self.clue_from_pooled[1].bias)

    def forward(self, visual: torch.Tensor, mask: torch.Tensor | None,
                clues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, C) visual tokens with their (B, M) mask (None: all real) and (B, K', C) clues -> both updated."""
        padding = None if mask is None else ~mask
        has_clues = clues.shape[1] > 0  # attention over zero keys is undefined: the visual side stays as is
        new_visual, new_clues = visual, clues
        if self.patch:
            if has_clues:
                new_clues = new_clues + self.clue_from_patches(clues, visual, padding)
                new_visual = new_visual + self.patches_from_clues(visual, clues)
        if self.pooled:
            weights = torch.ones_like(visual[..., :1]) if mask is None else mask.unsqueeze(-1).to(visual.dtype)
            pooled = (visual * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)  # (B, 1, C)
            if has_clues:
                both = torch.cat([clues, pooled.expand(-1, clues.shape[1], -1)], dim=-1)  # (B, K', 2C)
                new_clues = new_clues + self.clue_from_pooled(both)
                new_visual = new_visual + self.pooled_from_clues(pooled, clues)  # (B, 1, C) broadcast to M
        return new_visual, new_clues


class ClueInteraction(nn.Module):
    """``layers`` rounds of ``ClueInteractionLayer``; any number of clues, fixed at run time by the input."""

    def __init__(self, dim: int, *, heads: int = 4, layers: int = 1, granularity: Granularity = "both") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"interaction heads {heads} must divide the visual width {dim}")
        self.layers = nn.ModuleList(ClueInteractionLayer(dim, heads, granularity) for _ in range(layers))

    def forward(self, visual: torch.Tensor, mask: torch.Tensor | None,
                clues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            visual, clues = layer(visual, mask, clues)
        return visual, clues
