"""The visual encoder: any Hugging Face vision backbone -> visual tokens (B, M, C) per study.

Supported backbones are those whose ``AutoModel`` output has ``last_hidden_state`` as tokens
(ViT, DeiT, Swin, DINOv2, CLIP/SigLIP vision towers: ``(N, M, C)``) or as a feature map (ResNet,
ConvNeXt: ``(N, C, h, w)``, flattened to ``h*w`` tokens). For a full CLIP/SigLIP checkpoint the
vision tower is taken and the text tower dropped.

Several views of one study are encoded as separate images (padded views are skipped, not encoded)
and then combined: ``mean`` averages them token-wise over the real views (R2GenGPT; still M tokens),
``concat`` lays them side by side (V*M tokens, with a token mask for the padded views).
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
from torch import nn

from mrg.errors import ConfigError


class VisualEncoder(nn.Module):
    """Wraps a vision backbone; ``forward`` turns a batch of studies into tokens.

    Args:
        backbone: the Hugging Face vision model (already loaded).
        features: ``patch`` for all tokens, ``pooled`` for the backbone's pooled vector as one token
            (the mean of the patch tokens when the backbone has no pooler).
        views: ``mean`` or ``concat`` (see the module docstring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        features: Literal["patch", "pooled"] = "patch",
        views: Literal["mean", "concat"] = "mean",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features
        self.views = views
        config = backbone.config
        sizes = getattr(config, "hidden_sizes", None)
        declared = getattr(backbone, "num_features", None)  # Swin: the last stage's width
        self.num_features: int = int(declared if isinstance(declared, int) else (sizes[-1] if sizes else config.hidden_size))
        """C, the width of the tokens."""
        self.num_channels: int = int(getattr(config, "num_channels", 3))
        self.native_image_size: int | None = _int_or_none(getattr(config, "image_size", None))
        accepted = inspect.signature(backbone.forward).parameters
        self._can_interpolate = "interpolate_pos_encoding" in accepted
        self.frozen = False
        """Set by ``build_model`` for ``trainable: frozen``: the backbone then stays in eval mode (no dropout,
        drop-path or BatchNorm statistics updates), as befits fixed features."""
        self.unused_parameters: frozenset[str] = frozenset()
        """Backbone parameters that do not influence the tokens used (e.g. a pooler in patch mode).

        Filled by ``find_unused_parameters``; they stay frozen, because a trainable parameter without a
        gradient breaks DDP and wastes optimizer state."""

    def train(self, mode: bool = True) -> VisualEncoder:
        """Train/eval mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, M, C') tokens."""
        kwargs = {}
        if self._can_interpolate and self.native_image_size and images.shape[-1] != self.native_image_size:
            kwargs["interpolate_pos_encoding"] = True  # ViT/CLIP/DINOv2 at another resolution than pre-trained
        out = self.backbone(pixel_values=images, **kwargs)
        if self.features == "pooled":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                return self._tokens(out.last_hidden_state).mean(dim=1, keepdim=True)  # (N, 1, C)
            return pooled.flatten(1).unsqueeze(1)  # (N, C) or (N, C, 1, 1) -> (N, 1, C)
        return self._tokens(out.last_hidden_state)

    @staticmethod
    def _tokens(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() == 4:  # feature map (N, C, h, w) -> (N, h*w, C)
            return hidden.flatten(2).transpose(1, 2)
        return hidden  # (N, M, C)

    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode studies.

        Args:
            pixel_values: (B, V, C, H, W) images, padded views anywhere after the real ones.
            view_mask: (B, V) bool, True for real views; None means all views are real.

        Returns:
            tokens (B, M, C) for ``mean`` or (B, V*M, C) for ``concat``, and a (B, V*M) bool token
            mask for ``concat`` with padded views (None when every token is real).
        """
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (B, V, C, H, W), got shape {tuple(pixel_values.shape)}")
        batch, num_views = pixel_values.shape[:2]
        if pixel_values.shape[2] != self.num_channels:
            raise ValueError(
                f"images have {pixel_values.shape[2]} channels but the backbone expects {self.num_channels}; "
                "build the dataset with the model's image_settings"
            )
        all_real = view_mask is None or bool(view_mask.all())
        if all_real:
            feats = self.encode_images(pixel_values.flatten(0, 1))  # (B*V, M, C)
            feats = feats.unflatten(0, (batch, num_views))  # (B, V, M, C)
        else:
            real = self.encode_images(pixel_values[view_mask])  # (N_real, M, C): padded views never encoded
            feats = real.new_zeros((batch, num_views, *real.shape[1:]))  # (B, V, M, C)
            feats[view_mask] = real
        if feats.shape[-1] != self.num_features:
            raise ValueError(f"backbone produced {feats.shape[-1]}-dim tokens but num_features is {self.num_features}")
        if self.views == "mean":
            if all_real:
                return feats.mean(dim=1), None  # (B, M, C)
            weights = view_mask.to(feats.dtype)[:, :, None, None]  # (B, V, 1, 1)
            return (feats * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0), None  # (B, M, C)
        tokens = feats.flatten(1, 2)  # (B, V*M, C)
        if all_real:
            return tokens, None
        token_mask = view_mask[:, :, None].expand(-1, -1, feats.shape[2]).flatten(1)  # (B, V*M)
        return tokens, token_mask

    @torch.no_grad()
    def num_tokens(self, image_size: int, num_views: int = 1) -> int:
        """M for images of ``image_size`` (times the views for ``concat``), by a dry run on one image."""
        probe = torch.zeros(1, self.num_channels, image_size, image_size, device=_device_of(self.backbone))
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            count = self.encode_images(probe.to(_dtype_of(self.backbone))).shape[1]
        finally:
            self.backbone.train(was_training)
        return count * (num_views if self.views == "concat" else 1)

    def find_unused_parameters(self, image_size: int) -> frozenset[str]:
        """Names (relative to ``backbone``) of parameters that get no gradient from the tokens used.

        One forward/backward pass on a blank image in eval mode (BatchNorm on running statistics);
        requires_grad flags and .grad are restored afterwards.
        """
        params = dict(self.backbone.named_parameters())
        flags = {name: p.requires_grad for name, p in params.items()}
        grads = {name: p.grad for name, p in params.items()}
        was_training = self.backbone.training
        try:
            for p in params.values():
                p.requires_grad_(True)
                p.grad = None
            self.backbone.eval()
            probe = torch.zeros(1, self.num_channels, image_size, image_size, device=_device_of(self.backbone))
            self.encode_images(probe.to(_dtype_of(self.backbone))).float().sum().backward()
            unused = frozenset(name for name, p in params.items() if p.grad is None)
        finally:
            for name, p in params.items():
                p.grad = grads[name]
                p.requires_grad_(flags[name])
            self.backbone.train(was_training)
        return unused


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
        return int(value[0])
    return None


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def load_backbone(name_or_path: str, *, features: str = "patch", option: str = "model.encoder.name_or_path") -> nn.Module:
    """Load a vision backbone by hub id or folder; a full CLIP/SigLIP-style model gives its vision tower.

    Raises:
        ConfigError: the folder or hub id cannot be loaded, or holds no vision model.
    """
    from transformers import AutoConfig, AutoModel

    kwargs = {}
    try:
        config = AutoConfig.from_pretrained(name_or_path)
        model_class = AutoModel._model_mapping[type(config)]
        if features == "patch" and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            kwargs["add_pooling_layer"] = False  # ViT's pooler is unused in patch mode (and absent from many checkpoints)
    except Exception:  # let from_pretrained below report what is wrong
        kwargs = {}
    try:
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{option}: cannot load the vision backbone {name_or_path!r} ({first}); give a local folder "
            "saved with save_pretrained, a hub id (needs network or the Hugging Face cache), or a random:<kind> spec"
        ) from None
    vision = getattr(model, "vision_model", None)
    if vision is not None and hasattr(model.config, "vision_config"):
        if not hasattr(vision, "config"):  # older transformers: a bare transformer without .config
            vision.config = model.config.vision_config
        return vision
    if not hasattr(model.config, "hidden_size") and not hasattr(model.config, "hidden_sizes"):
        raise ConfigError(f"{option}: {name_or_path!r} ({type(model).__name__}) is not a vision backbone")
    return model
