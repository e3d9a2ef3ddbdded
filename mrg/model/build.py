"""Build the report model (encoder -> projector -> promptbook -> frozen LLM) from a ``RunConfig``.

``build_report_model`` composes the shared parts; which parameters train is not decided here but by the
method's stage (``mrg.methods``, applied with ``mrg.model.trainable.apply_trainability``). Backbone
parameters that the used tokens do not depend on (a ViT pooler in patch mode, DINOv2's mask token,
CLIP's post-layernorm) are found by one probe pass and reported by ``ReportModel.unused_parameter_names``
so that they stay frozen: a trainable parameter without a gradient breaks DDP and wastes optimizer state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mrg.config import RunConfig
from mrg.data.dataset import IMAGENET_MEAN, IMAGENET_STD, ImageSettings
from mrg.model.encoder import VisualEncoder, load_backbone
from mrg.model.llm import FrozenLLM, add_lora, build_template, load_causal_lm, load_tokenizer
from mrg.model.projector import Projector
from mrg.model.promptbook import Promptbook
from mrg.model.random_models import resolve_model_path
from mrg.model.report_model import ReportModel


def quiet_hub_progress() -> None:
    """Hide transformers' per-load "Loading weights" bars: mrg shows its own progress, once per stage."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def image_settings_for(folder: str, num_channels: int) -> ImageSettings:
    """Pixel normalisation from the backbone's ``preprocessor_config.json`` (ImageNet's when absent)."""
    path: Path | None = Path(folder) / "preprocessor_config.json"
    if not path.is_file():  # a hub id: look in the Hugging Face cache (downloads only if online)
        try:
            from transformers.utils import cached_file

            found = cached_file(folder, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
            path = Path(found) if found else None
        except Exception:  # offline and not cached: fall back to ImageNet statistics
            path = None
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if path is not None and path.is_file():
        info = json.loads(path.read_text(encoding="utf-8"))
        mean, std = info.get("image_mean", mean), info.get("image_std", std)
    if isinstance(mean, (int, float)):
        mean = [mean]
    if isinstance(std, (int, float)):
        std = [std]
    if len(mean) == 1:
        mean = list(mean) * num_channels
    if len(std) == 1:
        std = list(std) * num_channels
    return ImageSettings(image_mean=tuple(float(v) for v in mean), image_std=tuple(float(v) for v in std), num_channels=num_channels)


def build_report_model(cfg: RunConfig, *, llm_lora: bool = False, prompt_mode: str | None = None) -> ReportModel:
    """Build the report model of ``cfg.model`` (encoder, projector, promptbook, frozen LLM); every parameter
    is left trainable for the method's stage to decide.

    Backbones load by hub id, local folder (no network needed) or ``random:<kind>`` spec. New
    weights (projector, promptbook) are initialised from ``cfg.train.seed`` without touching the
    global RNG, so the same config always builds the same model.

    Args:
        cfg: the run configuration (``cfg.model``, ``cfg.data.image_size``, ``cfg.train.seed`` are read).
        llm_lora: inject LoRA adapters into the LLM (``model.llm.lora_*``), for stages that adapt it.
        prompt_mode: the promptbook mode to build instead of ``model.promptbook.mode`` (e.g. ``none``).

    Raises:
        ConfigError: a backbone or tokenizer cannot be loaded, missing special tokens, bad LoRA targets.
    """
    quiet_hub_progress()
    m = cfg.model
    mode = prompt_mode or m.promptbook.mode
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        encoder_dir = resolve_model_path(m.encoder.name_or_path)
        encoder = _build_encoder(cfg, encoder_dir)
        llm_dir = resolve_model_path(m.llm.name_or_path)
        tokenizer = load_tokenizer(llm_dir, model_name=m.llm.name_or_path)
        template = build_template(
            tokenizer,
            instruction=m.llm.instruction,
            chat_template=m.llm.chat_template,
            position=m.promptbook.position,
            has_prompt=mode != "none",
            model_name=m.llm.name_or_path,
        )
        causal_lm = load_causal_lm(
            llm_dir, dtype=m.llm.dtype, attn_implementation=m.llm.attn_implementation, model_name=m.llm.name_or_path
        )
        if llm_lora:
            add_lora(causal_lm, rank=m.llm.lora_rank, alpha=m.llm.lora_alpha, dropout=m.llm.lora_dropout,
                     targets=list(m.llm.lora_targets), option="model.llm.lora_targets")
        llm = FrozenLLM(causal_lm, template, gradient_checkpointing=m.llm.gradient_checkpointing)
        dim = llm.hidden_size
        projector = Projector(encoder.num_features, dim, kind=m.projector.kind, layer_norm=m.projector.layer_norm)
        embed_std = float(causal_lm.get_input_embeddings().weight.float().std())
        pb = m.promptbook
        promptbook = Promptbook(mode, dim, num_tokens=pb.num_tokens, book_size=pb.book_size, hidden_size=pb.hidden_size,
                                pooling=pb.pooling, init_std=pb.init_scale * embed_std)
        return ReportModel(
            encoder=encoder,
            projector=projector,
            promptbook=promptbook,
            llm=llm,
            tokenizer=tokenizer,
            max_report_tokens=m.max_report_tokens,
            image_settings=image_settings_for(encoder_dir, encoder.num_channels),
            feed_visual_tokens=m.visual_tokens,
        )


def _build_encoder(cfg: RunConfig, encoder_dir: str) -> VisualEncoder:
    """The visual encoder of ``cfg.model.encoder`` (LoRA-injected when it trains that way)."""
    e = cfg.model.encoder
    backbone = load_backbone(encoder_dir, features=e.features)
    encoder = VisualEncoder(backbone, features=e.features, views=e.views)
    if e.trainable == "lora":
        add_lora(backbone, rank=e.lora_rank, alpha=e.lora_alpha, dropout=e.lora_dropout, targets=list(e.lora_targets),
                 option="model.encoder.lora_targets")
    if e.trainable != "frozen":
        encoder.unused_parameters = encoder.find_unused_parameters(cfg.data.image_size)
    encoder.frozen = e.trainable == "frozen"
    return encoder


def describe_model(model: ReportModel, cfg: RunConfig) -> dict[str, Any]:
    """A short summary for start-up logs: parts, token counts and parameter counts."""
    template = model.llm.template
    return {
        "encoder": type(model.encoder.backbone).__name__,
        "llm": type(model.llm.model).__name__,
        "template": template.style,
        "visual_tokens": model.encoder.num_tokens(cfg.data.image_size, cfg.data.max_views),
        "prompt_tokens": model.promptbook.num_tokens,
        "template_tokens": template.num_text_tokens,
        "max_report_tokens": model.max_report_tokens,
        **model.parameter_counts(),
    }
