"""Image-text contrastive pre-training (TRRG stage ``pretrain``): multi-positive symmetric InfoNCE.

A study's image is paired with every sentence of its report (sentence-level positives), and with any
sentence in the batch whose text is identical to one of them ("no pneumothorax." is written in many
reports; treating its copies as negatives would push apart what is the same statement). Features are
gathered across ranks with gradients, so the negatives are the global batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def sentence_keys(sentences: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """A stable integer per sentence text (CRC-32 of its lower-cased, whitespace-collapsed form), shape (T,)."""
    keys = [zlib.crc32(" ".join(s.lower().split()).encode("utf-8")) for s in sentences]
    return torch.tensor(keys, dtype=torch.long, device=device)


def positive_mask(owner: torch.Tensor, keys: torch.Tensor, num_images: int) -> torch.Tensor:
    """Which (image, sentence) pairs are positives, shape (B, T) bool.

    ``owner`` (T,) is the index of the image whose report holds each sentence; ``keys`` (T,) identify the
    sentence texts. Image ``i`` is positive with sentence ``t`` when ``t`` is in its report or has the same
    text as a sentence in it.
    """
    own = F.one_hot(owner, num_images).T.float()  # (B, T)
    same = (keys[:, None] == keys[None, :]).float()  # (T, T)
    return (own @ same) > 0


def multi_positive_info_nce(image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor,
                            logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE.

    Args:
        image: (B, D) image features (normalised here).
        text: (T, D) sentence features (normalised here).
        positives: (B, T) bool, at least one positive per row with sentences.
        logit_scale: the inverse temperature (not its log).

    Image to text: each image's loss is the mean over its positives of ``-log softmax_t(logits)``; text to
    image likewise over the images of each sentence. Rows (images with no sentences) or columns without a
    positive are left out. The result is the mean of the two directions.
    """
    logits = logit_scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T  # (B, T)
    pos = positives.float()
    i2t = _direction(logits, pos)
    t2i = _direction(logits.T, pos.T)
    return (i2t + t2i) / 2


def _direction(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive of the mean ``-log softmax`` at the row's positives; (R, C) inputs."""
    counts = pos.sum(dim=1)  # (R,)
    rows = counts > 0
    log_prob = torch.log_softmax(logits, dim=1)  # (R, C)
    per_row = -(log_prob * pos).sum(dim=1)[rows] / counts[rows]
    return per_row.mean()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N_r, ...) from every rank along dim 0, gradients flowing back to each rank.

    Ranks may hold different N_r (reports have different numbers of sentences): each pads to the largest
    and the padding is dropped after the gather. Without an initialised process group, returns ``tensor``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = F.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, longest - tensor.shape[0]])
    parts = _AllGatherWithGrad.apply(padded)  # backward sums each rank's gradient into its own slice
    return torch.cat([part[: int(n.item())] for part, n in zip(parts, sizes, strict=True)])


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward all-reduces the incoming gradients and keeps this rank's slice.

    Written here because ``torch.distributed.nn.functional.all_gather`` is deprecated in favour of a private
    module; the semantics are the same (every rank's loss depends on every rank's rows).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (N, ...) -> world x (N, ...)
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        stacked = torch.stack([g.contiguous() for g in grads])  # (world, N, ...)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return stacked[dist.get_rank()]


class ContrastiveHead(nn.Module):
    """Projections of pooled image and sentence features into one space, with a learnable temperature."""

    def __init__(self, image_dim: int, text_dim: int, dim: int = 128, *, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, dim, bias=False)
        self.text_proj = nn.Linear(text_dim, dim, bias=False)
        # learnt as log(1/T), as in CLIP; clamped so the logits cannot blow up
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_logit_scale = max_logit_scale

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image: torch.Tensor, text: torch.Tensor, owner: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The loss of one (local) batch against the global one.

        Args:
            image: (B_r, image_dim) pooled image features of this rank's studies.
            text: (T_r, text_dim) pooled sentence features of this rank's sentences.
            owner: (T_r,) local image index of each sentence.
            keys: (T_r,) sentence-text keys (``sentence_keys``).
        """
        import torch.distributed as dist

        img = gather_with_grad(self.image_proj(image))  # (B, dim)
        txt = gather_with_grad(self.text_proj(text))  # (T, dim)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # local image indices -> global: offset by the images of lower ranks
            counts = gather_with_grad(torch.tensor([image.shape[0]], device=image.device))
            offsets = torch.cumsum(counts, 0) - counts
            rank_of = gather_with_grad(torch.full_like(owner, dist.get_rank()))
            owner = gather_with_grad(owner) + offsets[rank_of]
            keys = gather_with_grad(keys)
        return multi_positive_info_nce(img, txt, positive_mask(owner, keys, img.shape[0]), self.scale())
