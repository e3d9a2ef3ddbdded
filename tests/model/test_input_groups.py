"""``ReportModel.input_groups`` labels the positions ``assemble`` lays out; ``soft_tokens``; promptbook mixing weights."""

from __future__ import annotations

import pytest
import torch

from mrg.model.report_model import INPUT_GROUPS
from tests.builders import build_model


def _check_layout(model, batch, *, left_pad: bool) -> torch.Tensor:
    """Every position labelled visual / prompt / instruction / padding holds what its label says."""
    with torch.no_grad():
        visual, token_mask = model.visual_tokens(batch)
        visual = visual + torch.arange(visual.shape[1], dtype=visual.dtype)[None, :, None] * 10  # distinguishable tokens
        prompt = model.promptbook(visual, token_mask)
        embeds, mask, _, _ = model.assemble(visual, token_mask, prompt, left_pad=left_pad)
        codes = model.input_groups(visual, token_mask, left_pad=left_pad)
    assert codes.shape == mask.shape
    code = {name: i for i, name in enumerate(INPUT_GROUPS)}
    assert torch.equal(codes != code["padding"], mask)  # padding exactly where assemble masks
    text = torch.cat([t[0] for t in model.llm.text_embeddings()])  # (T_text, D)
    for b in range(embeds.shape[0]):
        real = visual[b] if token_mask is None else visual[b][token_mask[b]]
        if model.feed_visual_tokens:
            assert torch.equal(embeds[b][codes[b] == code["visual"]], real)  # in order: k-th visual = k-th real token
        else:
            assert not (codes[b] == code["visual"]).any()
        assert torch.equal(embeds[b][codes[b] == code["prompt"]], prompt[b])
        assert torch.equal(embeds[b][codes[b] == code["instruction"]], text)
    return codes


@pytest.mark.parametrize("views", ["mean", "concat"])
@pytest.mark.parametrize("left_pad", [True, False])
def test_groups_follow_the_assembled_layout(make_cfg, tiny_batch, views: str, left_pad: bool) -> None:
    model = build_model(make_cfg(f"model.encoder.views={views}")).eval()
    codes = _check_layout(model, tiny_batch, left_pad=left_pad)
    if views == "concat":  # study b has one real view: its 17 padded visual tokens sit at the front or the end
        pads = (codes[1] == 0).nonzero().flatten().tolist()
        assert len(pads) == 17 and pads == (list(range(17)) if left_pad else list(range(codes.shape[1] - 17, codes.shape[1])))


@pytest.mark.parametrize("overrides", [("model.promptbook.mode=none",), ("model.promptbook.position=before-image",),
                                       ("model.promptbook.position=after-instruction",),
                                       ("model.visual_tokens=false", "model.promptbook.mode=prompt-wise")])
def test_groups_for_prompt_modes_and_positions(make_cfg, tiny_batch, overrides) -> None:
    model = build_model(make_cfg(*overrides)).eval()
    _check_layout(model, tiny_batch, left_pad=True)
    soft = model.soft_tokens(tiny_batch)
    assert ("visual" in soft) == model.feed_visual_tokens and soft["prompt"][0].shape[1] == model.promptbook.num_tokens


def test_mixing_weights_are_the_ones_forward_mixes_with(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg()).eval()
    pb = model.promptbook
    with torch.no_grad():
        torch.nn.init.normal_(pb.head.weight, std=0.5)  # away from the uniform zero-init mixing
        visual, mask = model.visual_tokens(tiny_batch)
        weights = pb.mixing_weights(visual, mask)
        assert weights.shape == (3, pb.book_size) and torch.allclose(weights.sum(dim=1), torch.ones(3))
        assert weights.std() > 0
        out = pb.head(pb.condition(pb.pool(visual, mask)))
        gamma, beta = out[:, pb.book_size :].view(3, 2, pb.book_size, 1, pb.dim).unbind(dim=1)
        expected = torch.einsum("bn,bnld->bld", weights, (1 + gamma) * pb.book + beta)
        assert torch.allclose(pb(visual, mask), expected, atol=1e-6)
    assert build_model(make_cfg("model.promptbook.mode=static")).promptbook.mixing_weights(visual, mask) is None
