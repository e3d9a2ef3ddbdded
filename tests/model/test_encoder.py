"""The visual encoder over ViT, Swin, ResNet, ConvNeXt, DINOv2 and CLIP/SigLIP vision towers; views; projector."""

from __future__ import annotations

import pytest
import torch

from mrg.errors import ConfigError
from mrg.model.encoder import VisualEncoder, load_backbone
from mrg.model.projector import Projector
from mrg.model.random_models import materialize

# kind -> (tokens per 64 px image, channels)
EXPECTED = {
    "vit": (17, 32),  # 4x4 patches + CLS
    "swin": (16, 32),  # 8x8 patches, one merge -> 4x4
    "resnet": (64, 32),  # feature map 8x8, flattened
    "convnext": (64, 32),
    "dinov2": (17, 32),
    "clip": (17, 32),  # vision tower of a full CLIP checkpoint
    "siglip": (16, 32),  # no CLS token
}


def _encoder(kind: str, **kwargs) -> VisualEncoder:
    return VisualEncoder(load_backbone(str(materialize(f"random:{kind}"))), **kwargs)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_tokens_per_backbone(kind: str) -> None:
    encoder = _encoder(kind)
    tokens, mask = encoder(torch.randn(2, 1, 3, 64, 64))
    assert tokens.shape == (2, *EXPECTED[kind])
    assert mask is None
    assert encoder.num_features == EXPECTED[kind][1]
    assert encoder.num_tokens(64) == EXPECTED[kind][0]


def test_full_clip_checkpoint_gives_the_vision_tower() -> None:
    backbone = load_backbone(str(materialize("random:clip")))
    assert "Vision" in type(backbone).__name__
    assert not any("text_model" in name for name, _ in backbone.named_parameters())


def test_other_resolution_interpolates_positions() -> None:
    tokens, _ = _encoder("vit")(torch.randn(1, 1, 3, 96, 96))
    assert tokens.shape == (1, 37, 32)  # 6x6 patches + CLS


def test_mean_of_views_ignores_padded_views() -> None:
    encoder = _encoder("swin").eval()
    images = torch.randn(2, 2, 3, 64, 64)
    mask = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        tokens, token_mask = encoder(images, mask)
        alone = encoder.encode_images(images[1, :1])  # the second study's only real view
        both = encoder.encode_images(images[0])
    assert token_mask is None
    assert torch.allclose(tokens[1], alone[0], atol=1e-5)
    assert torch.allclose(tokens[0], both.mean(dim=0), atol=1e-5)


def test_concat_views_masks_padded_tokens() -> None:
    encoder = _encoder("swin", views="concat").eval()
    images = torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        tokens, token_mask = encoder(images, torch.tensor([[True, True], [True, False]]))
        full, none_mask = encoder(images, torch.ones(2, 2, dtype=torch.bool))
    assert tokens.shape == (2, 32, 32)
    assert token_mask.tolist() == [[True] * 32, [True] * 16 + [False] * 16]
    assert none_mask is None and torch.allclose(full[0], tokens[0], atol=1e-5)


def test_padded_views_are_not_encoded() -> None:
    encoder = _encoder("vit")
    seen = []
    encoder.backbone.register_forward_hook(lambda module, args, kwargs, out: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True)
    encoder(torch.randn(3, 2, 3, 64, 64), torch.tensor([[True, True], [True, False], [True, False]]))
    assert seen == [4]  # 4 real views of 6 slots


def test_pooled_features_are_one_token() -> None:
    tokens, _ = _encoder("swin", features="pooled")(torch.randn(2, 1, 3, 64, 64))
    assert tokens.shape == (2, 1, 32)
    tokens, _ = _encoder("resnet", features="pooled")(torch.randn(2, 1, 3, 64, 64))
    assert tokens.shape == (2, 1, 32)


def test_unused_parameters_are_found() -> None:
    dinov2 = _encoder("dinov2")
    assert "embeddings.mask_token" in dinov2.find_unused_parameters(64)
    clip = _encoder("clip")
    unused = clip.find_unused_parameters(64)
    assert any("post_layernorm" in name for name in unused)  # applied to the pooled CLS only
    assert not any("encoder.layers" in name for name in unused)
    assert all(p.grad is None for p in clip.parameters())  # the probe leaves no gradients behind


def test_channel_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="images have 1 channels but the backbone expects 3"):
        _encoder("vit")(torch.randn(1, 1, 1, 64, 64))


def test_unloadable_backbone_names_the_option(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model\.encoder\.name_or_path: cannot load the vision backbone"):
        load_backbone(str(tmp_path / "nothing-here"))


def test_projector_kinds() -> None:
    linear = Projector(32, 64)
    assert linear(torch.randn(2, 5, 32)).shape == (2, 5, 64)
    mlp = Projector(32, 64, kind="mlp", layer_norm=False)
    assert mlp(torch.randn(2, 5, 32)).shape == (2, 5, 64)
    with pytest.raises(ValueError, match="projector expects 32-dim features"):
        linear(torch.randn(2, 5, 16))
