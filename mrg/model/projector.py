"""The projector: visual features (C) -> the LLM's embedding space (D).

``linear`` is R2GenGPT's ``Linear(C, D)``; ``mlp`` is ``Linear(C, D) -> GELU -> Linear(D, D)``
(LLaVA-1.5 style). Either is followed by ``LayerNorm(D)`` when ``layer_norm`` is on (R2GenGPT).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class Projector(nn.Module):
    """(B, M, C) visual features -> (B, M, D) visual tokens."""

    def __init__(self, in_features: int, out_features: int, *, kind: Literal["linear", "mlp"] = "linear", layer_norm: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        if kind == "linear":
            self.proj: nn.Module = nn.Linear(in_features, out_features)
        else:
            self.proj = nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))
        self.norm: nn.Module = nn.LayerNorm(out_features) if layer_norm else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(f"projector expects {self.in_features}-dim features, got shape {tuple(features.shape)}")
        return self.norm(self.proj(features))  # (B, M, C) -> (B, M, D)
