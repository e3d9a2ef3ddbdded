"""The promptbook: shapes per mode, the zero-init property, masked pooling, and that customisation is per image."""

from __future__ import annotations

import pytest
import torch

from mrg.model.promptbook import Promptbook

MODES = ["none", "static", "prompt-wise", "promptbook-wise"]


@pytest.mark.parametrize("mode", MODES)
def test_shapes(mode: str) -> None:
    book = Promptbook(mode, 24, num_tokens=5, book_size=3, hidden_size=8)
    out = book(torch.randn(2, 7, 24))
    assert out.shape == (2, 0 if mode == "none" else 5, 24)
    assert book.num_tokens == (0 if mode == "none" else 5)


def test_parameter_shapes() -> None:
    pw = Promptbook("prompt-wise", 24, num_tokens=5, hidden_size=8)
    assert pw.prompt.shape == (5, 24) and pw.head.weight.shape == (2 * 5 * 24, 8)
    pbw = Promptbook("promptbook-wise", 24, num_tokens=5, book_size=3, hidden_size=8)
    assert pbw.book.shape == (3, 5, 24) and pbw.head.weight.shape == (3 + 2 * 3 * 24, 8)


@pytest.mark.parametrize("mode", ["prompt-wise", "promptbook-wise"])
def test_starts_as_the_static_prompt(mode: str) -> None:
    book = Promptbook(mode, 24, num_tokens=5, book_size=3, hidden_size=8, init_std=0.5)
    visual = torch.randn(4, 7, 24) * 3.0
    out = book(visual)
    static = book.static_prompt()
    assert torch.allclose(out, static.expand(4, -1, -1), atol=1e-6)  # identical for every image at init


@pytest.mark.parametrize("mode", ["prompt-wise", "promptbook-wise"])
def test_customised_per_image_once_the_head_moves(mode: str) -> None:
    book = Promptbook(mode, 24, num_tokens=5, book_size=3, hidden_size=8)
    with torch.no_grad():
        book.head.weight.normal_(0, 0.1)
    out = book(torch.randn(2, 7, 24))
    assert not torch.allclose(out[0], out[1])


def test_zero_init_head_still_learns() -> None:
    book = Promptbook("promptbook-wise", 24, num_tokens=5, book_size=3, hidden_size=8)
    target = torch.randn(2, 5, 24)
    loss = ((book(torch.randn(2, 7, 24)) - target) ** 2).mean()
    loss.backward()
    assert book.head.weight.grad.abs().sum() > 0  # gradient reaches the zero-initialised layer
    assert book.book.grad.abs().sum() > 0


def test_promptbook_wise_formula() -> None:
    """P~ = sum_i w_i ((1 + gamma_i) * P_i + beta_i), written out for one image."""
    torch.manual_seed(0)
    book = Promptbook("promptbook-wise", 6, num_tokens=2, book_size=3, hidden_size=4)
    with torch.no_grad():
        book.head.weight.normal_(0, 0.5)
        book.head.bias.normal_(0, 0.5)
    visual = torch.randn(1, 5, 6)
    out = book(visual)[0]
    raw = book.head(book.condition(visual.mean(dim=1)))[0]
    w = raw[:3].softmax(-1)
    gamma, beta = raw[3:].view(2, 3, 6)
    expected = sum(w[i] * ((1 + gamma[i]) * book.book[i] + beta[i]) for i in range(3))
    assert torch.allclose(out, expected, atol=1e-5)


def test_pooling_respects_the_token_mask() -> None:
    visual = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    mean = Promptbook("prompt-wise", 6, pooling="mean")
    assert torch.allclose(mean.pool(visual, mask)[0], visual[0, :2].mean(dim=0))
    maxp = Promptbook("prompt-wise", 6, pooling="max")
    assert torch.allclose(maxp.pool(visual, mask)[0], visual[0, :2].max(dim=0).values)
    first = Promptbook("prompt-wise", 6, pooling="first")
    assert torch.equal(first.pool(visual, mask), visual[:, 0])


def test_wrong_width_is_explained() -> None:
    with pytest.raises(ValueError, match="promptbook expects 24-dim visual tokens, got shape"):
        Promptbook("static", 24)(torch.randn(1, 3, 16))
