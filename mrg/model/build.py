"""Build the report model from a ``RunConfig`` and declare, in one place, which parameters train.

``trainable_patterns(model_cfg)`` is the single declaration of what trains (a test asserts the
resulting parameter names for every variant); ``apply_trainability`` enforces it. The frozen LLM's
own weights never match a pattern; in stage 2 only its LoRA adapters do.

| part        | frozen encoder | lora encoder          | full encoder |
| ----------- | -------------- | --------------------- | ------------ |
| encoder     | -              | ``encoder.*lora_*``   | ``encoder.*`` |
| projector   | ``projector.*`` (always)                              |
| promptbook  | ``promptbook.*`` (unless mode ``none``)               |
| LLM         | stage 2 only: ``llm.*lora_*``                          |

Backbone parameters that the used tokens do not depend on (a ViT pooler in patch mode, DINOv2's
mask token, CLIP's post-layernorm) are found by one probe pass and left frozen: a trainable
parameter without a gradient breaks DDP and wastes optimizer state.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import torch

from mrg.config import ModelConfig, RunConfig
from mrg.data.dataset import IMAGENET_MEAN, IMAGENET_STD, ImageSettings
from mrg.errors import CheckpointError
from mrg.model.encoder import VisualEncoder, load_backbone
from mrg.model.llm import FrozenLLM, add_lora, build_template, load_causal_lm, load_tokenizer
from mrg.model.projector import Projector
from mrg.model.promptbook import Promptbook
from mrg.model.random_models import resolve_model_path
from mrg.model.report_model import ReportModel

TRAINABLE_FILE = "trainable.safetensors"


def quiet_hub_progress() -> None:
    """Hide transformers' per-load "Loading weights" bars: mrg shows its own progress, once per stage."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def trainable_patterns(model_cfg: ModelConfig) -> list[str]:
    """The parameter-name patterns (``fnmatch``) that train under ``model_cfg``: THE declaration."""
    patterns = ["projector.*"]
    if model_cfg.promptbook.mode != "none":
        patterns.append("promptbook.*")
    if model_cfg.encoder.trainable == "full":
        patterns.append("encoder.*")
    elif model_cfg.encoder.trainable == "lora":
        patterns.append("encoder.*lora_*")
    if model_cfg.stage == 2:
        patterns.append("llm.*lora_*")
    return patterns


def apply_trainability(model: ReportModel, model_cfg: ModelConfig) -> None:
    """Set ``requires_grad`` on every parameter from ``trainable_patterns`` (and the unused-parameter probe)."""
    patterns = trainable_patterns(model_cfg)
    unused = {f"encoder.backbone.{name}" for name in model.encoder.unused_parameters}
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch.fnmatchcase(name, p) for p in patterns) and name not in unused)
    leaked = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("llm.") and "lora_" not in n]
    if leaked:  # guard: the LLM's own weights must never train
        raise AssertionError(f"frozen LLM weights marked trainable: {leaked[:3]}")


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


def build_model(cfg: RunConfig, *, load_init: bool = True) -> ReportModel:
    """Build the report model of ``cfg.model`` (encoder, projector, promptbook, frozen LLM).

    Backbones load by hub id, local folder (no network needed) or ``random:<kind>`` spec. New
    weights (projector, promptbook) are initialised from ``cfg.train.seed`` without touching the
    global RNG, so the same config always builds the same model.

    Args:
        cfg: the run configuration (``cfg.model``, ``cfg.data.image_size``, ``cfg.train.seed`` are read).
        load_init: in stage 2, load the stage-1 weights from ``model.init_from``. Pass False when a
            stage-2 checkpoint is loaded right after (resume, generate), so the stage-1 run need not exist.

    Raises:
        ConfigError: a backbone or tokenizer cannot be loaded, missing special tokens, bad LoRA targets.
        CheckpointError: stage 2 and ``model.init_from`` has no usable ``trainable.safetensors``.
    """
    quiet_hub_progress()
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        encoder_dir = resolve_model_path(m.encoder.name_or_path)
        backbone = load_backbone(encoder_dir, features=m.encoder.features)
        encoder = VisualEncoder(backbone, features=m.encoder.features, views=m.encoder.views)
        if m.encoder.trainable == "lora":
            add_lora(
                backbone,
                rank=m.encoder.lora_rank,
                alpha=m.encoder.lora_alpha,
                dropout=m.encoder.lora_dropout,
                targets=list(m.encoder.lora_targets),
                option="model.encoder.lora_targets",
            )
        if m.encoder.trainable != "frozen":
            encoder.unused_parameters = encoder.find_unused_parameters(cfg.data.image_size)
        encoder.frozen = m.encoder.trainable == "frozen"

        llm_dir = resolve_model_path(m.llm.name_or_path)
        tokenizer = load_tokenizer(llm_dir, model_name=m.llm.name_or_path)
        template = build_template(
            tokenizer,
            instruction=m.llm.instruction,
            chat_template=m.llm.chat_template,
            position=m.promptbook.position,
            has_prompt=m.promptbook.mode != "none",
            model_name=m.llm.name_or_path,
        )
        causal_lm = load_causal_lm(
            llm_dir, dtype=m.llm.dtype, attn_implementation=m.llm.attn_implementation, model_name=m.llm.name_or_path
        )
        if m.stage == 2:
            add_lora(
                causal_lm,
                rank=m.llm.lora_rank,
                alpha=m.llm.lora_alpha,
                dropout=m.llm.lora_dropout,
                targets=list(m.llm.lora_targets),
                option="model.llm.lora_targets",
            )
        llm = FrozenLLM(causal_lm, template, gradient_checkpointing=m.llm.gradient_checkpointing)

        dim = llm.hidden_size
        projector = Projector(encoder.num_features, dim, kind=m.projector.kind, layer_norm=m.projector.layer_norm)
        embed_std = float(causal_lm.get_input_embeddings().weight.float().std())
        pb = m.promptbook
        promptbook = Promptbook(
            pb.mode,
            dim,
            num_tokens=pb.num_tokens,
            book_size=pb.book_size,
            hidden_size=pb.hidden_size,
            pooling=pb.pooling,
            init_std=pb.init_scale * embed_std,
        )
        model = ReportModel(
            encoder=encoder,
            projector=projector,
            promptbook=promptbook,
            llm=llm,
            tokenizer=tokenizer,
            max_report_tokens=m.max_report_tokens,
            image_settings=image_settings_for(encoder_dir, encoder.num_channels),
            feed_visual_tokens=m.visual_tokens,
        )
    apply_trainability(model, m)
    if m.stage == 2 and load_init:
        load_stage1_weights(model, resolve_init_path(m.init_from))
    return model


def resolve_init_path(init_from: str | None) -> Path:
    """The ``trainable.safetensors`` behind ``model.init_from``.

    Accepts the file itself, a checkpoint folder holding it, or a run folder: its ``best`` then
    ``last`` pointer (a folder, a symlink, or a text file naming the step folder), else its newest
    ``step-*`` folder.

    Raises:
        CheckpointError: nothing usable found (says where it looked).
    """
    if not init_from:
        raise CheckpointError("model.stage is 2 but model.init_from is empty; point it at a stage-1 run directory")
    root = Path(init_from).expanduser()
    if root.is_file():
        return root
    if not root.exists():
        raise CheckpointError(f"model.init_from {root}: no such file or directory; give a stage-1 run or checkpoint folder")
    candidates = [root / TRAINABLE_FILE]
    for pointer in ("best", "last"):
        target = root / pointer
        if target.is_file():  # a pointer file naming the step folder
            candidates.append(root / target.read_text(encoding="utf-8").strip() / TRAINABLE_FILE)
        else:
            candidates.append(target / TRAINABLE_FILE)
    candidates.extend(sorted(root.glob(f"step-*/{TRAINABLE_FILE}"), reverse=True))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"model.init_from {root}: found no {TRAINABLE_FILE} (looked in the folder, its best/ and last/ pointers and "
        "step-* folders); point it at a finished stage-1 run"
    )


def load_stage1_weights(model: ReportModel, path: Path) -> None:
    """Load a stage-1 ``trainable.safetensors`` into a stage-2 model (its LLM LoRA starts fresh).

    Raises:
        CheckpointError: unreadable file, or its tensors are not exactly the model's non-LoRA trainable set.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"model.init_from {path}: not a readable safetensors file ({err})") from None
    expected = {n for n, _ in model.trainable_named_parameters() if not (n.startswith("llm.") and "lora_" in n)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"model.init_from {path}: stage-1 weights do not match this model "
            f"(missing {len(missing)}: {', '.join(missing[:5]) or '-'}; unexpected {len(unexpected)}: "
            f"{', '.join(unexpected[:5]) or '-'}); stage 2 needs the stage-1 encoder, projector and promptbook settings"
        )
    model.load_trainable_state_dict(state, strict=False)


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
