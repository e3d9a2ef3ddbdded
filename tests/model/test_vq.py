"""The image tokenizer's parts: straight-through gradients, codebook updates, dead-code restarts, losses, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from mrg.config import VQLossConfig, VQModelConfig, VQQuantizerConfig
from mrg.metrics.image import codebook_stats, gradient_magnitude_error, psnr, ssim
from mrg.model.vq import VectorQuantizer, VQAutoencoder
from mrg.model.vq_loss import ReconstructionLoss, gradient_loss, image_gradients

TINY = VQModelConfig(image_size=16, downsample=4, base_channels=4, max_channels=8, codebook_size=8, code_dim=4)


def _model(update: str = "ema", **quantizer: object) -> VQAutoencoder:
    torch.manual_seed(0)
    cfg = VQModelConfig(**{**TINY.__dict__, "update": update})
    return VQAutoencoder(cfg, VQQuantizerConfig(**{"restart_every": 0, **quantizer}))


def test_shapes_and_round_trip() -> None:
    model = _model().eval()
    x = torch.rand(3, 1, 16, 16)
    out = model(x)
    assert out.reconstruction.shape == (3, 1, 16, 16) and out.indices.shape == (3, 4, 4)
    ids = model.encode(x)
    assert ids.dtype == torch.long and int(ids.max()) < 8 and torch.equal(ids, out.indices)
    decoded = model.decode(ids)
    assert decoded.shape == (3, 1, 16, 16) and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    assert torch.allclose(decoded, out.reconstruction.clamp(0, 1), atol=1e-6)  # decode(encode(x)) is forward's output


@pytest.mark.parametrize("update", ["ema", "codebook-loss"])
def test_straight_through_reaches_the_encoder(update: str) -> None:
    model = _model(update).train()
    x = torch.rand(4, 1, 16, 16)
    out = model(x)
    # the reconstruction loss alone (no commitment term) must give the encoder a gradient: only the STE carries it
    torch.nn.functional.l1_loss(out.reconstruction, x).backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_codebook_learns_by_its_loss_in_codebook_loss_mode() -> None:
    model = _model("codebook-loss").train()
    out = model(torch.rand(4, 1, 16, 16))
    out.vq_loss.backward()
    book = model.quantizer.codebook
    assert isinstance(book, torch.nn.Parameter) and book.grad is not None
    used = out.counts > 0
    assert float(book.grad[used].abs().sum()) > 0 and float(book.grad[~used].abs().sum()) == 0


def test_codebook_moves_by_ema_without_gradient() -> None:
    model = _model("ema").train()
    q = model.quantizer
    assert not isinstance(q.codebook, torch.nn.Parameter)  # a buffer: no optimizer touches it
    model(torch.rand(4, 1, 16, 16))  # first forward: data-dependent init, then one EMA update
    before = q.codebook.clone()
    out = model(torch.rand(4, 1, 16, 16))
    used = out.counts > 0
    assert not torch.allclose(q.codebook[used], before[used])
    assert torch.equal(q.codebook[~used], before[~used])  # unused codes keep their value (until a restart)
    model.eval()
    frozen = q.codebook.clone()
    model(torch.rand(4, 1, 16, 16))
    assert torch.equal(q.codebook, frozen)  # no updates in eval mode


def test_ema_code_converges_to_the_mean_of_its_vectors() -> None:
    q = VectorQuantizer(2, 2, "ema", VQQuantizerConfig(ema_decay=0.5, restart_every=0)).train()
    z = torch.tensor([[1.0, 1.2], [1.0, 0.8]]).view(1, 2, 2, 1)  # (1, D=2, 2, 1): vectors (1, 1) and (1.2, 0.8)
    q.initialised.fill_(True)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.ema_sum.copy_(q.codebook)
    for _ in range(40):
        q(z)
    assert torch.allclose(q.codebook[0], torch.tensor([1.1, 0.9]), atol=1e-3)


def test_dead_code_restart_replaces_unused_codes_only() -> None:
    q = VectorQuantizer(4, 2, "ema", VQQuantizerConfig(restart_threshold=1.0, restart_every=0))
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, -50.0]]))
    q.usage.copy_(torch.tensor([5.0, 3.0, 0.0, 0.0]))
    recent = torch.tensor([[0.1, 0.2], [0.9, 1.1], [0.4, 0.5]])
    restarted = q.restart_dead_codes(recent)
    assert restarted == 2
    assert torch.equal(q.codebook[:2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    for row in q.codebook[2:]:
        assert any(torch.equal(row, r) for r in recent)  # moved onto encoder outputs
    assert float(q.usage.sum()) == 0  # counting starts again


def test_restarts_happen_on_schedule_in_training() -> None:
    model = _model("ema", restart_every=1)
    q = model.quantizer.train()
    model.train()
    model(torch.rand(2, 1, 16, 16))
    q.codebook[0] = 1e4  # a code no encoder output is near: dead
    q.ema_sum[0] = 1e4
    model(torch.rand(2, 1, 16, 16))
    assert float(q.codebook[0].abs().max()) < 1e3


def test_image_gradients_of_a_ramp() -> None:
    ramp = torch.linspace(0, 1, 9).repeat(9, 1)[None, None]  # (1, 1, 9, 9), x increases by 1/8 per pixel
    gx, gy = image_gradients(ramp, "finite-difference")
    assert torch.allclose(gx, torch.full_like(gx, 1 / 8)) and torch.allclose(gy, torch.zeros_like(gy))
    sx, sy = image_gradients(ramp, "sobel")
    inner = sx[..., 1:-1, 1:-1]
    assert torch.allclose(inner, torch.full_like(inner, 1 / 8), atol=1e-6) and float(sy.abs().max()) < 1e-6


@pytest.mark.parametrize("operator", ["finite-difference", "sobel"])
def test_gradient_loss_sees_blur_that_l1_barely_sees(operator: str) -> None:
    x = (torch.arange(16)[None, :] % 2).float().repeat(16, 1)[None, None]  # stripes: strong edges
    blurred = torch.full_like(x, 0.5)
    assert float(gradient_loss(x, x, operator)) == 0
    assert float(gradient_loss(x, blurred, operator)) > 0
    terms = ReconstructionLoss(VQLossConfig(grad_weight=0.0))(x, blurred, torch.tensor(0.0), step=0).terms
    assert "grad" not in terms  # lambda_grad = 0: the term is not computed


def test_feature_term_with_a_random_backbone() -> None:
    loss = ReconstructionLoss(VQLossConfig(feat_weight=1.0, feat_encoder="random:resnet"))
    x = torch.rand(2, 1, 32, 32)
    x_hat = torch.rand(2, 1, 32, 32, requires_grad=True)
    same = loss(x, x, torch.tensor(0.0), step=0)
    assert same.terms["feat"] == pytest.approx(0.0, abs=1e-10)
    out = loss(x, x_hat, torch.tensor(0.0), step=0)
    out.total.backward()
    assert out.terms["feat"] > 0 and x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in loss.features.parameters())  # phi stays frozen


def test_metrics_known_values() -> None:
    x = torch.zeros(2, 1, 16, 16)
    y = torch.full_like(x, 0.1)
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 20.0]), atol=1e-4)  # MSE 0.01
    img = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ssim(img, img), torch.ones(2), atol=1e-5)
    assert float(ssim(img, 1 - img).max()) < 0.5
    assert float(gradient_magnitude_error(img, img).abs().max()) < 1e-6
    uniform = codebook_stats(torch.tensor([3.0, 3.0, 3.0, 3.0]))
    assert uniform == {"codebook_usage": 1.0, "codebook_perplexity": pytest.approx(4.0)}
    skewed = codebook_stats(torch.tensor([6.0, 0.0, 0.0, 0.0]))
    assert skewed["codebook_usage"] == 0.25 and skewed["codebook_perplexity"] == pytest.approx(1.0)
    assert math.isclose(codebook_stats(torch.tensor([1.0, 1.0, 0.0, 0.0]))["codebook_perplexity"], 2.0)
