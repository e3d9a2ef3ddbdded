"""The image tokenizer: a convolutional encoder, a vector quantiser and a convolutional decoder (VQ-VAE / VQ-GAN style).

A grayscale image ``(B, 1, H, W)`` in [0, 1] is encoded to ``(B, D, H/f, W/f)`` vectors; each vector is replaced by
its nearest code of a ``K x D`` codebook, giving ``(B, H/f, W/f)`` token ids; the decoder maps the codes back to an
image. The quantiser is written here rather than taken from vector-quantize-pytorch (docs/methods/mavilt.md says why):

* the encoder learns through the **straight-through estimator** ``z + sg[e - z]`` plus the commitment loss
  ``beta * ||z - sg[e]||^2``;
* the codes learn either by **EMA** (exponential moving averages of the vectors assigned to each code, with Laplace
  smoothing; no gradient reaches the codebook) or by the **codebook loss** ``||sg[z] - e||^2``;
* **dead-code restart**: codes used fewer than a threshold number of times since the last check are moved onto
  random encoder outputs, so the codebook does not collapse to a few codes;
* the codebook is initialised from the first training batch's encoder outputs (data-dependent init).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrg.config import VQModelConfig, VQQuantizerConfig


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: CPU batches are small and the statistics must not depend on the batch
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm, SiLU, 3x3 conv, twice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _widths(cfg: VQModelConfig) -> list[int]:
    """Channel width per level: base, 2*base, ... capped at max_channels; one level more than downsamplings."""
    levels = cfg.downsample.bit_length() - 1  # log2(f)
    return [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(levels + 1)]


class VQEncoder(nn.Module):
    """(B, 1, H, W) -> (B, D, H/f, W/f): residual blocks and stride-2 convolutions."""

    def __init__(self, cfg: VQModelConfig) -> None:
        super().__init__()
        widths = _widths(cfg)
        layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i + 1 < len(widths):
                layers.append(nn.Conv2d(width, widths[i + 1], 4, stride=2, padding=1))  # halves H and W
        layers += [_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    """(B, D, h, w) -> (B, 1, h*f, w*f): the encoder mirrored, nearest-neighbour upsampling + 3x3 convolutions."""

    def __init__(self, cfg: VQModelConfig) -> None:
        super().__init__()
        widths = _widths(cfg)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i + 1 < len(widths):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, widths[i + 1], 3, padding=1)]
        layers += [_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(codes)


@dataclass
class QuantizerOutput:
    """What the quantiser returns for a batch of encoder outputs."""

    quantized: torch.Tensor
    """(B, D, h, w) codes, with the straight-through gradient to the encoder output."""
    indices: torch.Tensor
    """(B, h, w) token ids in [0, K)."""
    loss: torch.Tensor
    """Commitment loss (plus the codebook loss when codes learn by gradient)."""
    counts: torch.Tensor
    """(K,) how often each code was chosen in this batch."""


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of ``(B, D, h, w)`` vectors with EMA or codebook-loss updates and dead-code restarts.

    Args:
        codebook_size: K.
        code_dim: D.
        update: ``ema`` or ``codebook-loss``.
        settings: commitment weight, EMA decay and restart schedule.
    """

    def __init__(self, codebook_size: int, code_dim: int, update: str, settings: VQQuantizerConfig) -> None:
        super().__init__()
        self.codebook_size, self.code_dim, self.update = codebook_size, code_dim, update
        self.settings = settings
        init = torch.randn(codebook_size, code_dim)
        if update == "ema":
            self.register_buffer("codebook", init.clone())
            self.register_buffer("ema_count", torch.ones(codebook_size))  # (K,) smoothed assignment counts
            self.register_buffer("ema_sum", init.clone())  # (K, D) smoothed sums of assigned vectors
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(codebook_size))  # (K,) uses since the last restart check
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training forwards, for the restart cadence

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors -> (N,) index of the nearest code (squared Euclidean distance)."""
        book = self.codebook.detach()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]  # (N, K)
        return dist.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) token ids -> (B, D, h, w) codes."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N = B*h*w, D)
        if self.training and not bool(self.initialised):
            self._init_from(flat.detach())
        indices = self.nearest(flat.detach())
        codes = F.embedding(indices, self.codebook)  # (N, D)
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
        loss = self.settings.commitment * F.mse_loss(flat, codes.detach())
        if self.update == "codebook-loss":
            loss = loss + F.mse_loss(codes, flat.detach())
        if self.training:
            self._after_step(flat.detach(), indices, counts)
        quantized = flat + (codes - flat).detach()  # straight-through: forward = codes, backward = identity to z
        quantized = quantized.view(b, h, w, d).permute(0, 3, 1, 2)
        return QuantizerOutput(quantized, indices.view(b, h, w), loss, counts)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        """Codes start as random encoder outputs of the first batch (fewer outputs than codes: drawn with replacement)."""
        pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        self.codebook.data.copy_(flat[pick])
        if self.update == "ema":
            self.ema_sum.copy_(flat[pick])
            self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _after_step(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        if self.update == "ema":
            decay = self.settings.ema_decay
            sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)  # (K, D)
            self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
            self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + 1e-5) / (n + self.codebook_size * 1e-5) * n  # Laplace: no division by 0
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.usage.add_(counts)
        self.steps.add_(1)
        every = self.settings.restart_every
        if every and int(self.steps) % every == 0:
            self.restart_dead_codes(flat)

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Move codes used fewer than ``restart_threshold`` times since the last check onto random rows of ``flat``.

        Args:
            flat: (N, D) recent encoder outputs.

        Returns:
            How many codes were restarted. The usage counts start again from zero.
        """
        dead = (self.usage < self.settings.restart_threshold).nonzero().flatten()
        if len(dead):
            pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
            self.codebook.data[dead] = flat[pick]
            if self.update == "ema":
                self.ema_sum[dead] = flat[pick]
                self.ema_count[dead] = 1.0
        self.usage.zero_()
        return int(len(dead))


@dataclass
class VQOutput:
    """One forward pass of the tokenizer."""

    reconstruction: torch.Tensor
    """(B, 1, H, W) decoded image."""
    indices: torch.Tensor
    """(B, h, w) token ids."""
    vq_loss: torch.Tensor
    """The quantiser's loss (commitment, plus codebook loss when codes learn by gradient)."""
    counts: torch.Tensor
    """(K,) code use in this batch."""


class VQAutoencoder(nn.Module):
    """The image tokenizer: ``encode`` images to token ids, ``decode`` token ids to images.

    Args:
        cfg: architecture (image size, downsampling, widths, codebook size and code width, update rule).
        quantizer: the quantiser's training settings.
    """

    def __init__(self, cfg: VQModelConfig, quantizer: VQQuantizerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = VQEncoder(cfg)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.update, quantizer or VQQuantizerConfig())
        self.decoder = VQDecoder(cfg)

    @property
    def grid_size(self) -> int:
        """h = w, the side of the token grid."""
        return self.cfg.image_size // self.cfg.downsample

    def forward(self, images: torch.Tensor) -> VQOutput:
        """(B, 1, H, W) images in [0, 1] -> reconstruction, token ids and quantiser loss."""
        q = self.quantizer(self.encoder(images * 2 - 1))  # the convs see [-1, 1]
        return VQOutput(self._decode(q.quantized), q.indices, q.loss, q.counts)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images in [0, 1] -> (B, h, w) token ids."""
        z = self.encoder(images * 2 - 1)
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) token ids -> (B, 1, H, W) images in [0, 1]."""
        return self._decode(self.quantizer.lookup(indices)).clamp(0, 1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return (self.decoder(codes) + 1) / 2  # back from [-1, 1] to [0, 1]
