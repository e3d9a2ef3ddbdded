"""Instance-specific prompts: learnable prompt tokens customised per image by affine transforms.

This is this project's reading of MRG-LLM ("Multimodal Large Language Models for Medical Report
Generation via Customized Prompt Tuning", arXiv 2506.15477). The paper publishes no code and its
abstract fixes only the idea: learnable prompts, customised per image through conditional affine
transformations derived from visual features, in a *prompt-wise* and a *promptbook-wise* variant.
Everything below (shapes, the conditioning network, pooling, initialisation, where the prompt sits)
is our definition, and every choice is a config field in ``model.promptbook``.

Notation: B studies, M visual tokens, D the LLM's hidden size, L prompt tokens, N prompts in the
book, H the width of the conditioning network.

* Conditioning vector: ``g = pool(V)`` with V (B, M, D) the projected visual tokens (``mean``/``max``
  over real tokens, or the ``first`` token, e.g. ViT's CLS), then ``h = GELU(W1 LayerNorm(g))``,
  (B, H). The LayerNorm keeps h's scale independent of the projector's output scale.
* ``none``: no prompt tokens (the R2GenGPT baseline).
* ``static``: one learnable P in R^{L x D}, the same for every image (task-wise prompt).
* ``prompt-wise``: ``[gamma, beta] = W2 h`` with gamma, beta in R^{L x D}; the customised prompt is
  ``P~ = (1 + gamma) * P + beta`` (FiLM on every token and channel).
* ``promptbook-wise``: a book P_1..P_N, each in R^{L x D}. ``W2 h`` gives N mixing logits and one
  (gamma_i, beta_i) in R^D per prompt (shared over the prompt's L tokens):
  ``w = softmax(logits)``, ``P~ = sum_i w_i ((1 + gamma_i) * P_i + beta_i)``.

W2 (the last layer) starts at zero, so at initialisation gamma = beta = 0 and the mixing weights are
uniform: the prompt-wise prompt equals P and the promptbook-wise prompt equals the book's mean for
every image. Training therefore starts from a static prompt and learns how much to customise it
(zero-initialised residual branches, as in adaLN-zero / ControlNet).

Prompt tokens start as N(0, (init_scale * s)^2) with s the standard deviation of the frozen LLM's
input embedding table, so they begin at the scale of real word embeddings.

Parameter count with D = 4096, H = 512, L = N = 8: the W2 head holds H * 2LD = H * (N + 2ND) ~ 33.6 M
weights in both customised variants; the book itself N * L * D = 0.26 M.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PromptMode = Literal["none", "static", "prompt-wise", "promptbook-wise"]


class Promptbook(nn.Module):
    """Makes the (B, L, D) customised prompt of each study from its visual tokens.

    Args:
        mode: ``none``, ``static``, ``prompt-wise`` or ``promptbook-wise``.
        dim: D, the LLM's hidden size.
        num_tokens: L.
        book_size: N (promptbook-wise only).
        hidden_size: H, the width of the conditioning network.
        pooling: how g is pooled from the visual tokens: ``mean``, ``max`` or ``first``.
        init_std: standard deviation of the initial prompt tokens.
    """

    def __init__(
        self,
        mode: PromptMode,
        dim: int,
        *,
        num_tokens: int = 8,
        book_size: int = 8,
        hidden_size: int = 512,
        pooling: Literal["mean", "max", "first"] = "mean",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.dim = dim
        self.num_tokens = 0 if mode == "none" else num_tokens
        self.book_size = book_size if mode == "promptbook-wise" else 1
        self.pooling = pooling
        if mode == "none":
            return
        if mode == "promptbook-wise":
            self.book = nn.Parameter(torch.randn(book_size, num_tokens, dim) * init_std)  # (N, L, D)
            head_out = book_size + 2 * book_size * dim  # N mixing logits + (gamma_i, beta_i) in R^D per prompt
        else:
            self.prompt = nn.Parameter(torch.randn(num_tokens, dim) * init_std)  # (L, D)
            head_out = 2 * num_tokens * dim  # gamma, beta in R^{L x D}
        if mode in ("prompt-wise", "promptbook-wise"):
            self.condition = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_size), nn.GELU())
            self.head = nn.Linear(hidden_size, head_out)
            nn.init.zeros_(self.head.weight)  # zero-init: training starts from the static prompt
            nn.init.zeros_(self.head.bias)

    def pool(self, visual: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """g: (B, M, D) visual tokens (+ (B, M) mask of real tokens) -> (B, D)."""
        if self.pooling == "first":
            return visual[:, 0]
        if self.pooling == "max":
            if token_mask is not None:
                visual = visual.masked_fill(~token_mask[:, :, None], torch.finfo(visual.dtype).min)
            return visual.max(dim=1).values
        if token_mask is None:
            return visual.mean(dim=1)
        weights = token_mask.to(visual.dtype)[:, :, None]  # (B, M, 1)
        return (visual * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, visual: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Customised prompts.

        Args:
            visual: (B, M, D) projected visual tokens.
            token_mask: (B, M) bool, True for real tokens; None when all are real.

        Returns:
            (B, L, D) prompt tokens; (B, 0, D) in mode ``none``.
        """
        batch = visual.shape[0]
        if visual.shape[-1] != self.dim:
            raise ValueError(f"promptbook expects {self.dim}-dim visual tokens, got shape {tuple(visual.shape)}")
        if self.mode == "none":
            return visual.new_zeros(batch, 0, self.dim)
        if self.mode == "static":
            return self.prompt.unsqueeze(0).expand(batch, -1, -1)  # (B, L, D)
        h = self.condition(self.pool(visual, token_mask))  # (B, H)
        out = self.head(h)  # (B, head_out)
        if self.mode == "prompt-wise":
            gamma, beta = out.view(batch, 2, self.num_tokens, self.dim).unbind(dim=1)  # 2 x (B, L, D)
            return (1.0 + gamma) * self.prompt + beta  # (B, L, D)
        n = self.book_size
        weights = out[:, :n].softmax(dim=-1)  # (B, N)
        gamma, beta = out[:, n:].view(batch, 2, n, 1, self.dim).unbind(dim=1)  # 2 x (B, N, 1, D)
        transformed = (1.0 + gamma) * self.book + beta  # (B, N, L, D)
        return torch.einsum("bn,bnld->bld", weights.to(transformed.dtype), transformed)  # (B, L, D)

    def mixing_weights(self, visual: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The promptbook-wise mixing weights w (B, N) that ``forward`` uses for these (B, M, D) visual tokens;
        None in the other modes (there is no book to mix)."""
        if self.mode != "promptbook-wise":
            return None
        out = self.head(self.condition(self.pool(visual, token_mask)))  # (B, head_out)
        return out[:, : self.book_size].softmax(dim=-1)  # (B, N)

    def static_prompt(self) -> torch.Tensor:
        """The prompt every image gets at initialisation: P, or the book's mean (L, D)."""
        if self.mode == "promptbook-wise":
            return self.book.mean(dim=0)
        if self.mode == "none":
            return torch.zeros(0, self.dim)
        return self.prompt
