"""Disease clues: selection, probability-weighted clue embeddings, and the interaction with any number of clues."""

from __future__ import annotations

import pytest
import torch

from mrg.model.clues import ClueInjection, ClueInteraction, select_clues


def test_select_clues_all_top_k_and_none() -> None:
    probs = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    assert select_clues(probs, "all", 2).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert select_clues(probs, "top-k", 2).tolist() == [[1, 2], [0, 2]]  # most probable first
    assert select_clues(probs, "top-k", 9).shape == (2, 3)
    assert select_clues(probs, "none", 2).shape == (2, 0) and select_clues(probs, "top-k", 0).shape == (2, 0)


def test_clue_is_the_probability_weighted_mix_of_the_states() -> None:
    torch.manual_seed(0)
    both, present = ClueInjection(3, 4, states="both"), ClueInjection(3, 4, states="present")
    probs = torch.tensor([[0.25, 1.0, 0.0]])
    index = torch.tensor([[2, 0]])
    e = both.embed.detach()
    expected = torch.stack([0.0 * e[2, 0] + 1.0 * e[2, 1], 0.25 * e[0, 0] + 0.75 * e[0, 1]])
    assert torch.allclose(both(probs, index)[0], expected)
    assert torch.allclose(present(probs, index)[0], torch.stack([0 * present.embed[2, 0], 0.25 * present.embed[0, 0]]))


@pytest.mark.parametrize("granularity", ["both", "patch", "pooled"])
@pytest.mark.parametrize("num_clues", [0, 1, 5, 14])
def test_interaction_takes_any_number_of_clues(granularity: str, num_clues: int) -> None:
    torch.manual_seed(0)
    module = ClueInteraction(8, heads=2, layers=2, granularity=granularity)
    for p in module.parameters():  # leave the zero-initialised start so both directions act
        torch.nn.init.normal_(p, std=0.3)
    visual = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    clues = torch.randn(2, num_clues, 8, requires_grad=True)
    new_visual, new_clues = module(visual, mask, clues)
    assert new_visual.shape == (2, 6, 8) and new_clues.shape == (2, num_clues, 8)
    assert torch.isfinite(new_visual).all() and torch.isfinite(new_clues).all()
    if num_clues == 0:
        assert torch.equal(new_visual, visual)  # nothing to attend to
        return
    assert not torch.allclose(new_visual, visual)  # the clues reach the visual tokens
    new_clues.sum().backward()
    assert clues.grad is not None and clues.grad.abs().sum() > 0
    # padded visual tokens never reach a clue: changing them leaves the clues as they were
    changed = visual.clone()
    changed[1, 4:] += 100.0
    assert torch.allclose(module(changed, mask, clues)[1][1], new_clues[1], atol=1e-5)


def test_interaction_starts_as_the_identity_and_refuses_bad_heads() -> None:
    module = ClueInteraction(8, heads=2)
    visual, clues = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    out_visual, out_clues = module(visual, None, clues)
    assert torch.equal(out_visual, visual) and torch.equal(out_clues, clues)
    with pytest.raises(ValueError, match="heads 3 must divide the visual width 8"):
        ClueInteraction(8, heads=3)
