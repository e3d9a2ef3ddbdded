"""Optimizer and learning-rate schedule: AdamW with parameter groups, linear warm-up then cosine decay.

Used by ``mrg train`` (every method and stage) and by ``mrg train-lm`` (the in-project domain LM), so
both optimise the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from mrg.errors import ConfigError


def adamw(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    *,
    no_decay: set[str],
    lr: float,
    weight_decay: float,
    what: str = "the model",
) -> torch.optim.AdamW:
    """AdamW over ``named_parameters``; those named in ``no_decay`` get no weight decay.

    Raises:
        ConfigError: there is nothing to optimise.
    """
    decay, plain = [], []
    for name, param in named_parameters:
        (plain if name in no_decay else decay).append(param)
    if not decay and not plain:
        raise ConfigError(
            f"{what} has no trainable parameters; check model.encoder.trainable, model.promptbook.mode and the stage"
        )
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8)


def build_optimizer(model: nn.Module, train_cfg: object) -> torch.optim.AdamW:
    """AdamW over a model's trainable parameters; biases, norms and prompt tokens get no weight decay.

    ``model`` follows the trainable-model contract (``trainable_named_parameters``,
    ``no_decay_parameter_names``; see ``mrg.model.trainable``).
    """
    return adamw(
        model.trainable_named_parameters(),  # type: ignore[operator]
        no_decay=set(model.no_decay_parameter_names()),  # type: ignore[operator]
        lr=train_cfg.lr,  # type: ignore[attr-defined]
        weight_decay=train_cfg.weight_decay,  # type: ignore[attr-defined]
    )


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): linear warm-up, cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of ``lr_factor`` as a LambdaLR stepped once per optimizer step."""

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: object, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``warmup_cosine`` from a ``TrainConfig`` (warm-up steps, peak and final learning rate)."""
    return warmup_cosine(
        optimizer,
        warmup_steps=train_cfg.warmup_steps,  # type: ignore[attr-defined]
        total_steps=total_steps,
        min_ratio=train_cfg.min_lr / train_cfg.lr,  # type: ignore[attr-defined]
    )
