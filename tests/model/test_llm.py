"""The frozen LLM: templates (chat vs R2GenGPT), special-token checks, frozen + eval mode, checkpointing."""

from __future__ import annotations

import re

import pytest
import torch

from mrg.errors import ConfigError
from mrg.model.llm import R2GENGPT_TEMPLATE, build_template, load_tokenizer
from mrg.model.random_models import materialize
from tests.builders import build_model, with_tokens


def _tokenizer(spec: str = "random:llama"):
    return load_tokenizer(str(materialize(spec)))


def _kinds(template) -> list[str]:
    return [s.kind for s in template.segments]


def test_r2gengpt_template_layout() -> None:
    tok = _tokenizer()
    template = build_template(tok, instruction="Describe.", chat_template="auto", position="after-image", has_prompt=True, model_name="m")
    assert template.style == "r2gengpt"
    assert template.text == R2GENGPT_TEMPLATE.format(content="<Img><ImageHere></Img><PromptHere> Describe.")
    assert _kinds(template) == ["text", "image", "text", "prompt", "text"]
    first = template.segments[0].ids
    assert first[0] == tok.bos_token_id and tok.decode(first[1:]).strip() == "Human: <Img>"
    assert tok.decode(template.segments[-1].ids).strip() == "Describe. \nAssistant:".strip()


@pytest.mark.parametrize(
    ("position", "kinds"),
    [
        ("before-image", ["text", "prompt", "text", "image", "text"]),
        ("after-instruction", ["text", "image", "text", "prompt", "text"]),
    ],
)
def test_prompt_positions(position: str, kinds: list[str]) -> None:
    template = build_template(_tokenizer(), instruction="Describe.", chat_template="r2gengpt", position=position, has_prompt=True, model_name="m")
    assert _kinds(template) == kinds
    if position == "after-instruction":
        assert "Describe.<PromptHere>" in template.text


def test_no_prompt_is_r2gengpt_exactly() -> None:
    template = build_template(_tokenizer(), instruction="Describe.", chat_template="auto", position="after-image", has_prompt=False, model_name="m")
    assert _kinds(template) == ["text", "image", "text"]


def test_chat_template_is_used_when_present() -> None:
    tok = _tokenizer("random:llama-chat")
    template = build_template(tok, instruction="Describe.", chat_template="auto", position="after-image", has_prompt=True, model_name="m")
    assert template.style == "chat"
    assert template.text.startswith("<s>[INST] <Img><ImageHere></Img><PromptHere> Describe. [/INST]")
    first = template.segments[0].ids
    assert first[0] == tok.bos_token_id and first[1] != tok.bos_token_id  # BOS from the template, not doubled
    forced = build_template(tok, instruction="Describe.", chat_template="r2gengpt", position="after-image", has_prompt=True, model_name="m")
    assert forced.style == "r2gengpt"


def test_missing_eos_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"has no EOS token.*set eos_token in its tokenizer_config\.json"):
        _tokenizer("random:llama?eos=false")


def test_missing_bos_with_r2gengpt_template(make_cfg) -> None:
    spec = "random:llama?bos=false"
    with pytest.raises(ConfigError, match=re.escape(f"'{spec}' has no BOS token, but the R2GenGPT template starts with one")):
        build_model(make_cfg(f"model.llm.name_or_path={spec}"))


def test_missing_pad_uses_eos() -> None:
    tok = _tokenizer("random:llama?pad=false")
    assert tok.pad_token_id == tok.eos_token_id


def test_llm_frozen_and_in_eval_mode_while_training(make_cfg) -> None:
    model = build_model(make_cfg())
    model.train()
    assert model.training and model.encoder.training and model.projector.training
    assert not any(m.training for m in model.llm.model.modules())
    assert not any(p.requires_grad for p in model.llm.parameters())
    model.eval()
    assert not model.encoder.training


def test_gradient_checkpointing_still_reaches_the_inputs(make_cfg, tiny_batch) -> None:
    plain = build_model(make_cfg("model.promptbook.mode=static"))
    ckpt = build_model(make_cfg("model.promptbook.mode=static", "model.llm.gradient_checkpointing=true"))
    ckpt.train()
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in ckpt.llm.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(m.training and m.gradient_checkpointing for m in layers)  # checkpointing active ...
    assert not any(m.training for m in ckpt.llm.model.modules() if m not in layers)  # ... dropout still off
    calls = {}
    for name, model in (("plain", plain), ("ckpt", ckpt)):
        attention = model.llm.model.model.layers[0].self_attn
        calls[name] = 0
        attention.register_forward_hook(lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
        model(with_tokens(model, tiny_batch)).loss.backward()
    assert calls == {"plain": 1, "ckpt": 2}  # the checkpointed layer ran again in the backward pass
    assert ckpt.promptbook.prompt.grad is not None
    assert torch.allclose(plain.promptbook.prompt.grad, ckpt.promptbook.prompt.grad, atol=1e-6)
