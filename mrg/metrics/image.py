"""Reconstruction metrics of an image tokenizer: PSNR, SSIM, gradient-magnitude error, codebook usage and perplexity.

Images are ``(B, 1, H, W)`` in [0, 1] (data range 1). Per-image values are averaged over images.

* PSNR: ``10 log10(1 / MSE)`` per image.
* SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, valid positions
  only (as skimage's ``gaussian_weights=True`` and the reference MATLAB code).
* Gradient-magnitude error: the mean absolute difference of Sobel gradient magnitudes, whatever operator the loss
  uses, so runs with and without the gradient term are compared on the same scale (lower is better).
* Codebook usage: the share of the K codes chosen at least once over the validation images; perplexity:
  ``exp(entropy)`` of the code histogram (K when all codes are used equally, 1 when one code is used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mrg.model.vq_loss import gradient_magnitude


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of each image pair (data range 1)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()[None, None]  # (1, 1, size, size)


def ssim_maps(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM's luminance and contrast-structure maps ``(l, cs)`` of each image pair, each ``(B, 1, H - 10, W - 10)``.

    Gaussian window 11 / 1.5, data range 1, valid positions; ``ssim`` is the mean of ``l * cs``, MS-SSIM
    (``mrg.metrics.synthesis.ms_ssim``) combines the mean ``cs`` of every scale with the last scale's ``l``.
    """
    window = _gaussian_window().to(x)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sxx = F.conv2d(x * x, window) - mu_x**2
    syy = F.conv2d(y * y, window) - mu_y**2
    sxy = F.conv2d(x * y, window) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * sxy + c2) / (sxx + syy + c2)
    return luminance, contrast_structure


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of each image pair (Gaussian window 11 / 1.5, data range 1, valid positions)."""
    luminance, contrast_structure = ssim_maps(x, y)
    return (luminance * contrast_structure).flatten(1).mean(1)


def gradient_magnitude_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean |‖∇x‖ - ‖∇y‖| (Sobel) of each image pair."""
    return (gradient_magnitude(x) - gradient_magnitude(y)).abs().flatten(1).mean(1)


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Usage share and perplexity of a ``(K,)`` code histogram."""
    total = float(counts.sum())
    if total <= 0:
        return {"codebook_usage": 0.0, "codebook_perplexity": 0.0}
    p = counts.double() / total
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    return {"codebook_usage": float((counts > 0).double().mean()), "codebook_perplexity": math.exp(entropy)}
