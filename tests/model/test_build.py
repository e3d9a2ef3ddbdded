"""Building the report model through its method: what trains in every variant and stage, LoRA, presets, bad input.

What trains is declared by the method's stage (``mrg.methods``) and applied by ``stage_model``; these tests
state the rule independently and compare.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mrg.checkpoint import resolve_init_weights
from mrg.config import load_config
from mrg.errors import CheckpointError, ConfigError
from mrg.methods import get_method
from mrg.model.build import describe_model
from tests.builders import build_model, with_tokens

MODES = ["none", "static", "prompt-wise", "promptbook-wise"]
ENCODER = ["frozen", "lora", "full"]
# (method, stage): the variants of the trainability rule
STAGES = [("mrg-llm", "train"), ("two-stage", "align"), ("two-stage", "finetune")]


def _expected_trainable(names: list[str], mode: str, encoder: str, stage: str, also: tuple[str, ...]) -> set[str]:
    """The rule of the issues, written independently of the methods."""
    keep = set()
    for name in names:
        part = name.split(".")[0]
        if stage == "finetune":
            if part == "llm" and (".lora_A." in name or ".lora_B." in name):
                keep.add(name)
            elif part not in also:
                continue
        if part == "projector":
            keep.add(name)
        elif part == "promptbook" and mode != "none":
            keep.add(name)
        elif part == "encoder" and (encoder == "full" or (encoder == "lora" and ".lora_" in name)):
            keep.add(name)
    return keep


@pytest.mark.parametrize(("mode", "encoder", "method_stage"), list(itertools.product(MODES, ENCODER, STAGES)))
def test_trainable_names_per_variant(make_cfg, mode: str, encoder: str, method_stage: tuple[str, str]) -> None:
    method, stage = method_stage
    also = ("projector",)
    cfg = make_cfg(f"model.method={method}", f"model.promptbook.mode={mode}", f"model.encoder.trainable={encoder}")
    model = build_model(cfg, stage)
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, _ in model.trainable_named_parameters()}
    assert trainable == _expected_trainable(names, mode, encoder, stage, also)
    # spot checks of exact names
    finetune = stage == "finetune"
    assert "projector.proj.weight" in trainable
    assert ("promptbook.book" in trainable) == (mode == "promptbook-wise" and not finetune)
    assert ("promptbook.head.weight" in trainable) == (mode in ("prompt-wise", "promptbook-wise") and not finetune)
    lora_q = "encoder.backbone.layers.0.attention.q_proj.lora_A.default.weight"
    assert (lora_q in trainable) == (encoder == "lora" and not finetune)
    assert ("encoder.backbone.layers.0.mlp.fc1.weight" in trainable) == (encoder == "full" and not finetune)
    llm_lora = "llm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert (llm_lora in trainable) == finetune
    assert not any(n.startswith("llm.") and "lora_" not in n for n in trainable)  # never the LLM itself
    state = set(model.trainable_state_dict())
    if finetune:  # the weights align trained stay part of the trained state, frozen
        align = _expected_trainable(names, mode, encoder, "align", also)
        assert state == trainable | align
    else:
        assert state == trainable


def test_finetune_also_chooses_what_trains_beside_the_adapters(make_cfg) -> None:
    cfg = make_cfg("model.method=two-stage", "method.finetune_also=[]")
    trainable = {n for n, _ in build_model(cfg, "finetune").trainable_named_parameters()}
    assert trainable and all(".lora_" in n and n.startswith("llm.") for n in trainable)
    cfg = make_cfg("model.method=two-stage", "method.finetune_also=[encoder,projector]")
    parts = {n.split(".")[0] for n, _ in build_model(cfg, "finetune").trainable_named_parameters()}
    assert parts == {"llm", "encoder", "projector"}


def test_declaration_patterns() -> None:
    cfg = load_config("tiny", ["model.encoder.trainable=lora"])
    method = get_method("mrg-llm")
    assert method.trainable_patterns(cfg, method.stages[0]) == ["encoder.*lora_*", "projector.*", "promptbook.*"]
    two = get_method("two-stage")
    cfg = load_config("two-stage-tiny")
    assert two.trainable_patterns(cfg, two.stage("finetune")) == ["llm.*lora_*", "projector.*"]
    assert two.kept_patterns(cfg, two.stage("finetune")) == ["encoder.*", "projector.*"]


def test_unused_backbone_parameters_stay_frozen(make_cfg) -> None:
    model = build_model(make_cfg("model.encoder.name_or_path=random:dinov2"))
    trainable = {n for n, _ in model.trainable_named_parameters()}
    assert "encoder.backbone.embeddings.mask_token" not in trainable
    assert "encoder.backbone.embeddings.patch_embeddings.projection.weight" in trainable
    assert model.encoder.unused_parameters == frozenset({"embeddings.mask_token"})


def test_build_is_deterministic_and_leaves_the_global_rng(make_cfg) -> None:
    state = torch.get_rng_state()
    a = build_model(make_cfg()).trainable_state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model(make_cfg()).trainable_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_image_settings_come_from_the_backbone(make_cfg) -> None:
    vit = build_model(make_cfg())
    assert vit.image_settings.image_mean == (0.5, 0.5, 0.5)  # the random ViT ships a ViT-style processor config
    swin = build_model(make_cfg("model.encoder.name_or_path=random:swin"))
    assert swin.image_settings.image_mean == pytest.approx((0.485, 0.456, 0.406))


def _train(model, batch, steps: int = 3) -> None:
    optimizer = torch.optim.Adam([p for _, p in model.trainable_named_parameters()], lr=1e-2)
    for _ in range(steps):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_lora_encoder_trains_only_adapters(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg("model.encoder.trainable=lora"))
    base = model.encoder.backbone.layers[0].attention.q_proj
    before_base, before_b = base.base_layer.weight.clone(), base.lora_B.default.weight.clone()
    _train(model, with_tokens(model, tiny_batch))
    assert torch.equal(base.base_layer.weight, before_base)
    assert not torch.equal(base.lora_B.default.weight, before_b)


def test_bad_lora_targets_list_candidates(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model\.encoder\.lora_targets=\['qkv'\]: no linear layer.*candidates: .*q_proj"):
        build_model(make_cfg("model.encoder.trainable=lora", "model.encoder.lora_targets=qkv"))


def test_finetune_model_trains_llm_lora_in_float32_with_the_llm_in_eval_mode(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg("model.method=two-stage"), "finetune")
    q = model.llm.model.model.layers[0].self_attn.q_proj
    frozen_before, lora_before = q.base_layer.weight.clone(), q.lora_B.default.weight.clone()
    assert q.lora_B.default.weight.dtype == torch.float32
    model.train()
    assert q.lora_dropout.default.training and not q.base_layer.training  # adapter dropout on, LLM in eval
    assert not model.encoder.backbone.training  # nothing of the encoder trains here: fixed features
    _train(model, with_tokens(model, tiny_batch))
    assert torch.equal(q.base_layer.weight, frozen_before)
    assert not torch.equal(q.lora_B.default.weight, lora_before)


def test_init_weights_resolution(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in ("step-000004", "step-000009"):
        (run / step).mkdir(parents=True)
        (run / step / "trainable.safetensors").write_bytes(b"x")
        (run / step / "meta.json").write_text('{"step": 1}')
    (run / "config.yaml").write_text("data: {}\n")
    assert resolve_init_weights(run) == run / "step-000009" / "trainable.safetensors"  # newest step
    (run / "best").write_text("step-000004\n")  # a pointer file
    assert resolve_init_weights(run) == run / "step-000004" / "trainable.safetensors"
    assert resolve_init_weights(run / "step-000009") == run / "step-000009" / "trainable.safetensors"
    assert resolve_init_weights(run / "step-000009" / "trainable.safetensors").name == "trainable.safetensors"
    with pytest.raises(CheckpointError, match="no such file or directory"):
        resolve_init_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"model\.init_from: .*not a checkpoint or run folder"):
        resolve_init_weights(tmp_path / "empty")


def test_unloadable_llm_names_the_option(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.llm\.name_or_path: cannot load the tokenizer"):
        build_model(make_cfg(f"model.llm.name_or_path={tmp_path / 'no-llm'}"))


@pytest.mark.parametrize("preset", ["iu_xray", "mimic_cxr"])
def test_paper_presets(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.model.encoder.name_or_path == "microsoft/swin-base-patch4-window7-224"
    assert cfg.model.llm.name_or_path == "meta-llama/Llama-2-7b-chat-hf"
    assert cfg.model.promptbook.mode == "promptbook-wise"
    assert cfg.generate.num_beams == 3 and cfg.generate.repetition_penalty == 2.0
    expected = {"iu_xray": (60, 40, 100, 15), "mimic_cxr": (100, 80, 120, 5)}[preset]
    got = (cfg.model.max_report_tokens, cfg.generate.min_new_tokens, cfg.generate.max_new_tokens, cfg.train.epochs)
    assert got == expected


def test_frozen_encoder_stays_in_eval_mode(make_cfg) -> None:
    frozen = build_model(make_cfg("model.encoder.trainable=frozen", "model.encoder.name_or_path=random:resnet")).train()
    assert frozen.projector.training and not any(m.training for m in frozen.encoder.backbone.modules())
    full = build_model(make_cfg("model.encoder.name_or_path=random:resnet")).train()
    assert all(m.training for m in full.encoder.backbone.modules())


def test_describe_model(make_cfg) -> None:
    cfg = make_cfg("model.encoder.views=concat")
    info = describe_model(build_model(cfg), cfg)
    assert info["visual_tokens"] == 2 * 17 and info["prompt_tokens"] == 4 and info["template"] == "r2gengpt"
    assert info["trainable"] > 0 and info["frozen"] > 0


def test_image_settings_fall_back_to_imagenet(tmp_path: Path) -> None:
    from mrg.model.build import image_settings_for

    offline_hub_id = image_settings_for("no-such-org/no-such-model", 3)  # tests run with HF_HUB_OFFLINE=1
    assert offline_hub_id.image_mean == pytest.approx((0.485, 0.456, 0.406))
    (tmp_path / "preprocessor_config.json").write_text('{"image_mean": 0.5, "image_std": [0.25]}')
    one = image_settings_for(str(tmp_path), 1)
    assert (one.image_mean, one.image_std, one.num_channels) == ((0.5,), (0.25,), 1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.promptbook.hidden_size=0", r"'model\.promptbook\.hidden_size' must be at least 1, got 0"),
        ("model.promptbook.init_scale=0", r"'model\.promptbook\.init_scale' must be positive"),
        ("model.max_report_tokens=1", r"'model\.max_report_tokens' must be at least 2 \(report tokens plus the EOS\)"),
        ("model.llm.lora_dropout=1.5", r"'model\.llm\.lora_dropout' must be in \[0, 1\), got 1\.5"),
        ("model.encoder.lora_rank=0", r"'model\.encoder\.lora_rank' and 'model\.encoder\.lora_alpha' must be at least 1"),
        ("model.encoder.lora_targets=[]", r"'model\.encoder\.lora_targets' is empty"),
    ],
)
def test_model_config_single_field_checks(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])
