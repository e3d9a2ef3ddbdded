"""TRRG's models through the method: what trains per stage and option, gradients, clue tokens, bad settings."""

from __future__ import annotations

import pytest
import torch

from mrg.config import load_config
from mrg.errors import ConfigError
from tests.builders import build_model, with_tokens

BATCH = {"pixel_values": torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
         "view_mask": torch.tensor([[True, True], [True, False]]),
         "reports": ["The heart is enlarged. No pleural effusion.", "There is a right pneumothorax."]}


def _expected(names: list[str], stage: str, *, text_trains: bool = True, clues: bool = True, interaction: bool = True,
              lora: bool = False) -> set[str]:
    """The rule of issue 11, written independently of the method."""
    out = set()
    for name in names:
        part = name.split(".")[0]
        if stage == "pretrain":
            if part in ("encoder", "head") or (part == "text_encoder" and text_trains):
                out.add(name)
            continue
        is_lora = part == "llm" and ".lora_" in name
        if part in ("encoder", "projector", "promptbook") or (lora and is_lora):
            out.add(name)
        elif clues and (part in ("clues", "clue_projector") or (interaction and part == "interaction")):
            out.add(name)
    return out


@pytest.mark.parametrize(("stage", "overrides", "flags"), [
    ("pretrain", [], {}),
    ("pretrain", ["method.text_encoder_trains=false"], {"text_trains": False}),
    ("finetune", [], {}),
    ("finetune", ["method.interaction=none"], {"interaction": False}),
    ("finetune", ["method.clue_select=none"], {"clues": False}),
    ("finetune", ["method.finetune_lora=true"], {"lora": True}),
])
def test_trainable_names_per_stage(stage: str, overrides: list[str], flags: dict) -> None:
    model = build_model(load_config("trrg-tiny", overrides), stage)
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, _ in model.trainable_named_parameters()}
    assert trainable == _expected(names, stage, **flags)
    assert not any(n.startswith("llm.") and ".lora_" not in n for n in trainable)
    if stage == "finetune":  # pretrain's weights stay in the trained state, frozen
        assert {n for n in model.trainable_state_dict() if n.startswith(("head.", "text_encoder."))} == \
            {n for n in names if n.startswith(("head.", "text_encoder."))}
    if stage == "finetune" and not flags.get("clues", True):
        assert not any(n.startswith(("clues.", "interaction.", "clue_projector.")) for n in names)


def test_finetune_gradients_reach_encoder_and_clues_not_the_frozen_parts() -> None:
    model = build_model(load_config("trrg-tiny"), "finetune")
    model(with_tokens(model, BATCH)).loss.backward()
    for prefix in ("encoder.", "clues.", "clue_projector.", "interaction.", "projector.", "promptbook."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), prefix
    for name, p in model.named_parameters():
        if name.startswith(("llm.", "text_encoder.", "head.")):
            assert p.grad is None, name


@pytest.mark.parametrize(("overrides", "clues"), [([], 14), (["method.clue_select=top-k", "method.clue_top_k=3"], 3),
                                                 (["method.classes=[Edema,Cardiomegaly]"], 2),
                                                 (["method.clue_select=none"], 0)])
def test_clue_tokens_follow_the_visual_tokens(overrides: list[str], clues: int) -> None:
    cfg = load_config("trrg-tiny", overrides)
    model = build_model(cfg, "finetune")
    plain = model.encoder(BATCH["pixel_values"], BATCH["view_mask"])[0].shape[1]
    tokens, mask = model.visual_tokens(BATCH)
    assert tokens.shape[1] == plain + clues and tokens.shape[2] == model.llm.hidden_size
    assert mask is None or bool(mask[:, plain:].all())
    probs = model.perceive(BATCH)
    assert probs.shape == (2, len(model.classes)) and bool(((probs > 0) & (probs < 1)).all())
    assert len(model.generate(BATCH, cfg.generate)) == 2


def test_bad_settings_are_one_message() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("trrg-tiny", ["method.classes=[Edemma]", "method.negated_sentences=ignore",
                                  "method.clue_top_k=-1"])
    message = str(err.value)
    assert "'method.classes' names 'Edemma', not a CheXpert class. Did you mean 'Edema'" in message
    assert "'method.negated_sentences' must be one of keep, drop, prompt" in message
    assert "'method.clue_top_k' must be at least 0" in message
    with pytest.raises(ConfigError, match="method: interaction heads 5 must divide the visual width 32"):
        build_model(load_config("trrg-tiny", ["method.interaction_heads=5"]), "finetune")


def test_prompt_embeddings_are_cached_until_the_text_side_changes() -> None:
    from mrg.model.clip_pretrain import prompt_probabilities

    model = build_model(load_config("trrg-tiny"), "finetune")
    features, mask = model.encoder(BATCH["pixel_values"], BATCH["view_mask"])
    first = model.perceive_features(features, mask)
    pooled = model._pool(features, mask).float()
    assert torch.allclose(first, prompt_probabilities(model.head, model.text_encoder, pooled, model.classes))
    cached = model._prompts()
    assert model._prompts() is cached
    with torch.no_grad():  # as loading a checkpoint does
        model.head.text_proj.weight.copy_(torch.randn_like(model.head.text_proj.weight))
    assert model._prompts() is not cached
    again = model.perceive_features(features, mask)
    assert torch.allclose(again, prompt_probabilities(model.head, model.text_encoder, pooled, model.classes))
    assert not torch.allclose(again, first)
