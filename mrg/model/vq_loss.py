"""The image tokenizer's reconstruction loss: pixel L1 + lambda_grad gradient term + lambda_feat feature term + patch GAN.

MAViLT's "clinical gradient-weighted tokenization" adds ``lambda_grad * ||grad x - grad x_hat||^2`` (edges such as
rib borders, tube lines and the cardiac silhouette survive quantisation) and ``lambda_feat * ||phi(x) - phi(x_hat)||^2``
with a pretrained CXR encoder phi. The GAN term is VQ-GAN's hinge patch discriminator, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mrg.config import VQLossConfig

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0  # /8: unit response to a unit ramp


def image_gradients(images: torch.Tensor, operator: str = "sobel") -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical gradients of ``(B, 1, H, W)`` images.

    ``finite-difference``: forward differences, ``(B, 1, H, W-1)`` and ``(B, 1, H-1, W)``; ``sobel``: 3x3 Sobel
    filters with replicated borders, both ``(B, 1, H, W)``.
    """
    if operator == "finite-difference":
        return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]
    if operator != "sobel":
        raise ValueError(f"unknown gradient operator {operator!r}")
    kx = _SOBEL_X.to(images)[None, None]  # (1, 1, 3, 3)
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(-1, -2))


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) Sobel gradient magnitude (the metric's operator, whatever the loss uses)."""
    gx, gy = image_gradients(images, "sobel")
    return torch.sqrt(gx.pow(2) + gy.pow(2) + 1e-12)


def gradient_loss(x: torch.Tensor, x_hat: torch.Tensor, operator: str) -> torch.Tensor:
    """Mean of ``||grad x - grad x_hat||^2`` over pixels (both directions)."""
    gx, gy = image_gradients(x, operator)
    hx, hy = image_gradients(x_hat, operator)
    return F.mse_loss(hx, gx) + F.mse_loss(hy, gy)


class FeatureLoss(nn.Module):
    """``||phi(x) - phi(x_hat)||^2`` with a frozen vision backbone phi through mrg's ``VisualEncoder`` (patch tokens).

    Grayscale [0, 1] images are replicated to the backbone's channels, resized to its native size when it has one,
    and normalised with ImageNet statistics (those of most hub backbones).
    """

    def __init__(self, name_or_path: str) -> None:
        super().__init__()
        from mrg.model.encoder import VisualEncoder, load_backbone
        from mrg.model.random_models import resolve_model_path

        backbone = load_backbone(resolve_model_path(name_or_path), option="loss.feat_encoder")
        self.encoder = VisualEncoder(backbone)
        self.encoder.frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[:, None, None], persistent=False)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        channels = self.encoder.num_channels
        size = self.encoder.native_image_size
        if size and images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        pixels = images.expand(-1, channels, -1, -1)
        if channels == 3:
            pixels = (pixels - self.mean) / self.std
        return self.encoder.encode_images(pixels)  # (B, M, C)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._features(x)
        return F.mse_loss(self._features(x_hat), target)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: (B, 1, H, W) -> (B, 1, H/8, W/8) real/fake logits (VQ-GAN's, narrower)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, 2, 1), _gn(width * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(width * 2, width * 4, 4, 2, 1), _gn(width * 4), nn.LeakyReLU(0.2),
            nn.Conv2d(width * 4, 1, 3, 1, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


@dataclass
class LossTerms:
    """The weighted total and each unweighted term (for logging)."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class ReconstructionLoss(nn.Module):
    """The tokenizer's generator-side loss; builds phi and the discriminator only when their weights are > 0."""

    def __init__(self, cfg: VQLossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = FeatureLoss(cfg.feat_encoder) if cfg.feat_weight > 0 else None
        self.discriminator = PatchDiscriminator() if cfg.gan_weight > 0 else None

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, vq_loss: torch.Tensor, step: int) -> LossTerms:
        """Total loss of a batch; ``x`` and ``x_hat`` are (B, 1, H, W) in [0, 1]."""
        c = self.cfg
        l1 = F.l1_loss(x_hat, x)
        total = c.pixel_l1 * l1 + vq_loss
        terms = {"l1": float(l1.detach()), "vq": float(vq_loss.detach())}
        if c.grad_weight > 0:
            grad = gradient_loss(x, x_hat, c.grad_operator)
            total = total + c.grad_weight * grad
            terms["grad"] = float(grad.detach())
        if self.features is not None:
            feat = self.features(x, x_hat)
            total = total + c.feat_weight * feat
            terms["feat"] = float(feat.detach())
        if self.discriminator is not None and step >= c.gan_start:
            self.discriminator.requires_grad_(False)  # the generator's term must not train the discriminator
            gan = -self.discriminator(x_hat).mean()
            self.discriminator.requires_grad_(True)
            total = total + c.gan_weight * gan
            terms["gan"] = float(gan.detach())
        return LossTerms(total, terms)
