"""An LLM's vocabulary extended with image tokens: begin/end-of-image markers and one token per VQ code (MAViLT).

The base model's embedding table and output head are left exactly as they are (frozen, never resized): the
new rows live in their own parameters, so the original token ids, their embeddings and their logits cannot
change, whatever trains. Ids are laid out after the model's *embedding rows* ``V`` (which may exceed the
tokenizer's length, e.g. when a model pads its table to a multiple of 64)::

    0 .. V-1          the LLM's own tokens (unchanged)
    V                 <boi>  begin of image
    V + 1             <eoi>  end of image
    V + 2 + k         image code k, k in [0, K)

The codes never enter the tokenizer (thousands of strings nobody types); sequences are built from id tensors.
Output rows are initialised from the mean of the base output rows plus small noise, input rows likewise from
the base embeddings, so new tokens start at the scale the LLM expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ImageVocabulary:
    """The id layout of the image tokens appended to a base vocabulary of ``base_size`` rows."""

    base_size: int
    """V, the LLM's embedding rows."""
    num_codes: int
    """K, the image tokenizer's codebook size."""

    @property
    def boi_id(self) -> int:
        return self.base_size

    @property
    def eoi_id(self) -> int:
        return self.base_size + 1

    @property
    def num_new(self) -> int:
        """Rows added: the two markers and the K codes."""
        return self.num_codes + 2

    @property
    def size(self) -> int:
        """Total vocabulary size V + K + 2."""
        return self.base_size + self.num_new

    def code_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image token ids of VQ codes (any shape)."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(f"image codes must be in [0, {self.num_codes}), got {int(codes.min())}..{int(codes.max())}")
        return codes + self.base_size + 2

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """VQ codes of image token ids (the inverse of ``code_ids``)."""
        return ids - self.base_size - 2

    def is_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the ids that are image codes."""
        return ids >= self.base_size + 2

    def image_sequence(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, h*w + 2) ids: ``<boi>`` codes in raster order ``<eoi>``."""
        flat = self.code_ids(codes.flatten(1))
        boi = torch.full((flat.shape[0], 1), self.boi_id, dtype=flat.dtype, device=flat.device)
        eoi = torch.full_like(boi, self.eoi_id)
        return torch.cat([boi, flat, eoi], dim=1)


def _init_rows(base: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """(count, D) rows around the mean of ``base`` with its per-dimension spread scaled down."""
    mean, std = base.float().mean(0), base.float().std(0)
    noise = torch.randn(count, base.shape[1], generator=generator)
    return (mean + 0.1 * std * noise).to(base.dtype)


class ExtendedVocabulary(nn.Module):
    """Input embeddings and output logits over ``V + K + 2`` ids around a frozen base embedding and head.

    Args:
        input_embeddings: the LLM's ``get_input_embeddings()`` (V, D).
        output_head: the LLM's ``get_output_embeddings()`` (a Linear D -> V).
        num_codes: K.
        seed: seed of the new rows' initial noise.
    """

    def __init__(self, input_embeddings: nn.Embedding, output_head: nn.Linear, num_codes: int, seed: int = 0) -> None:
        super().__init__()
        self.vocab = ImageVocabulary(input_embeddings.num_embeddings, num_codes)
        self.base_embeddings = input_embeddings
        self.base_head = output_head
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.new_embeddings = nn.Parameter(_init_rows(input_embeddings.weight, self.vocab.num_new, generator))
            self.new_head = nn.Parameter(_init_rows(output_head.weight, self.vocab.num_new, generator))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids over the extended vocabulary -> (B, T, D) input embeddings."""
        base = ids < self.vocab.base_size
        out = self.base_embeddings(ids.clamp(max=self.vocab.base_size - 1))  # (B, T, D)
        new = self.new_embeddings[(ids - self.vocab.base_size).clamp(min=0)]  # (B, T, D)
        return torch.where(base[..., None], out, new.to(out.dtype))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, D) final hidden states -> (B, T, V + K + 2) logits; the first V are the base head's own."""
        return torch.cat([self.base_head(hidden), hidden @ self.new_head.to(hidden.dtype).t()], dim=-1)


IGNORE_INDEX = -100
DIRECTIONS = ("image-to-report", "report-to-image")


def pair_sequence(
    vocab: ImageVocabulary, text_ids: list[int], codes: torch.Tensor, direction: str, *, bos_id: int | None, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image-report pair as ``(input_ids, labels)`` (both ``(T,)``) in either direction of the unified model.

    ``image-to-report``: ``[BOS] <boi> codes <eoi> report [EOS]``, loss on the report and EOS;
    ``report-to-image``: ``[BOS] report <boi> codes <eoi>``, loss on the codes and ``<eoi>`` (``<boi>`` is the
    prompt's last token: generation starts the image by placing it, so it needs no loss).

    Args:
        text_ids: the report's token ids, without special tokens.
        codes: ``(h, w)`` VQ codes of the image.
        bos_id: the LLM's BOS id, or None for LLMs without one.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    image = vocab.image_sequence(codes[None])[0].tolist()  # <boi> codes <eoi>
    head = [bos_id] if bos_id is not None else []
    if direction == "image-to-report":
        prefix, target = head + image, [*text_ids, eos_id]
    else:
        prefix, target = head + [*text_ids, image[0]], image[1:]
    ids = torch.tensor(prefix + target, dtype=torch.long)
    labels = torch.tensor([IGNORE_INDEX] * len(prefix) + target, dtype=torch.long)
    return ids, labels
