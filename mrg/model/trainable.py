"""What trains and what a checkpoint holds: the trainable-model contract shared by every method's model.

A method declares, per stage, the parameter-name patterns that train (``fnmatch``, e.g. ``projector.*``,
``llm.*lora_*``); ``apply_trainability`` sets ``requires_grad`` from them and nothing else does. A model
that mixes in ``TrainableState`` then gives the trainer and the checkpoint code all they need:

* ``trainable_named_parameters()``: what the optimizer updates;
* ``trainable_state_dict()`` / ``load_trainable_state_dict()``: the trained state (trainable weights plus
  the running statistics of normalisation layers that train), never the frozen backbone;
* ``no_decay_parameter_names()``: biases, norms and prompt tokens (no weight decay);
* ``parameter_counts()``.

A model declares its frozen parts with ``frozen_prefixes()`` (e.g. ``llm.`` for the frozen LLM): their
modules stay in eval mode, so their statistics never change and are not saved.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mrg.errors import CheckpointError

NO_DECAY_NAMES = ("promptbook.prompt", "promptbook.book")
"""Prompt tokens are embeddings, not weights: no weight decay (as word embeddings)."""


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a parameter name matches any ``fnmatch`` pattern."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def apply_trainability(
    model: nn.Module,
    patterns: Sequence[str],
    *,
    kept: Sequence[str] = (),
    never: Callable[[str], bool] | None = None,
    exempt: Iterable[str] = (),
) -> list[str]:
    """Set ``requires_grad`` from ``patterns``: THE place that decides what trains.

    Args:
        patterns: parameter-name patterns that train.
        kept: patterns of weights that do not train here but belong to the trained state all the same
            (weights an earlier stage trained): checkpoints hold them next to the trainable ones.
        never: names that must never train (e.g. the frozen LLM's own weights); a parameter matching
            ``patterns`` and ``never`` is a bug in the method's declaration and raises.
        exempt: names to leave frozen although they match (e.g. backbone parameters no used token depends on).

    Returns:
        The names that train, in module order.
    """
    exempt = set(exempt)
    trained = []
    for name, param in model.named_parameters():
        on = matches(name, patterns) and name not in exempt
        param.requires_grad_(on)
        if on:
            trained.append(name)
    leaked = [n for n in trained if never is not None and never(n)]
    if leaked:
        raise AssertionError(f"frozen weights marked trainable by the stage's patterns: {leaked[:3]}")
    model._mrg_kept_patterns = tuple(kept)  # type: ignore[assignment]
    after = getattr(model, "after_trainability", None)
    if callable(after):
        after()
    return trained


def stage_model(method: Any, cfg: Any, stage: Any) -> nn.Module:
    """The model of a method's ``stage``, its trainability applied (what trains, what is kept, what never trains).

    ``method`` is a registered ``mrg.methods.base.Method``; every command that builds a method's model
    (train, generate, ...) goes through here.
    """
    model = method.build_model(cfg, stage)
    unused = getattr(model, "unused_parameter_names", None)
    apply_trainability(model, method.trainable_patterns(cfg, stage), kept=method.kept_patterns(cfg, stage),
                       never=method.never_trains_under(cfg), exempt=unused() if callable(unused) else ())
    return model


class TrainableState:
    """Mixin for ``nn.Module`` models: the trained state, weight-decay groups and parameter counts."""

    def frozen_prefixes(self) -> tuple[str, ...]:
        """Module-name prefixes of parts that never train and stay in eval mode (their statistics are not saved)."""
        return ()

    def unused_parameter_names(self) -> set[str]:
        """Parameters no output depends on (found by a probe pass); they stay frozen whatever the patterns say."""
        return set()

    def after_trainability(self) -> None:
        """Called once ``apply_trainability`` has set what trains (e.g. to put parts without any in eval mode)."""

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything that trains, in module order."""
        return [(name, p) for name, p in self.named_parameters() if p.requires_grad]  # type: ignore[attr-defined]

    def kept_patterns(self) -> tuple[str, ...]:
        """Patterns of weights saved although they do not train now (set by ``apply_trainability``)."""
        return getattr(self, "_mrg_kept_patterns", ())

    def state_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the trained state: what trains now plus the kept weights of earlier stages."""
        kept = self.kept_patterns()
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad or (kept and matches(n, kept))]  # type: ignore[attr-defined]

    def running_statistics(self) -> list[tuple[str, torch.Tensor]]:
        """(name, buffer) of the normalisation statistics that training updates (or an earlier stage did).

        A trainable CNN encoder's BatchNorm layers update ``running_mean``/``running_var`` in training
        mode; evaluation uses them, so they belong to the trained state as much as the weights do.
        """
        frozen, kept = self.frozen_prefixes(), self.kept_patterns()
        stats = []
        for module_name, module in self.named_modules():  # type: ignore[attr-defined]
            if not isinstance(module, nn.modules.batchnorm._NormBase) or not module.track_running_stats:
                continue
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer is None or buffer_name in module._non_persistent_buffers_set:
                    continue
                name = f"{module_name}.{buffer_name}"
                if not any(module_name.startswith(prefix) for prefix in frozen) or (kept and matches(name, kept)):
                    stats.append((name, buffer))
        return stats

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained state only (never the frozen parts), detached: trainable and kept weights, running statistics."""
        state = {name: p.detach() for name, p in self.state_parameters()}
        state.update((name, b.detach()) for name, b in self.running_statistics())
        return state

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load weights saved by ``trainable_state_dict``.

        Raises:
            CheckpointError: with ``strict``, missing or unexpected keys (listed); always, a shape mismatch.
        """
        params: dict[str, torch.Tensor] = dict(self.state_parameters())
        params.update(self.running_statistics())
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        if strict and (missing or unexpected):
            raise CheckpointError(key_problem(missing, unexpected))
        for name in sorted(set(params) & set(state_dict)):
            if tuple(state_dict[name].shape) != tuple(params[name].shape):
                raise CheckpointError(
                    f"checkpoint tensor {name} has shape {tuple(state_dict[name].shape)} but the model's is "
                    f"{tuple(params[name].shape)}; the checkpoint was made with another model config"
                )
        with torch.no_grad():
            for name in set(params) & set(state_dict):
                params[name].copy_(state_dict[name].to(params[name].device, params[name].dtype))

    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": n, "frozen": n} parameter counts."""
        counts = {"trainable": 0, "frozen": 0}
        for p in self.parameters():  # type: ignore[attr-defined]
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        return counts

    def no_decay_parameter_names(self) -> set[str]:
        """Trainable parameters exempt from weight decay: biases, norm weights, prompt tokens."""
        names = set()
        norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
        for module_name, module in self.named_modules():  # type: ignore[attr-defined]
            for param_name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                full = f"{module_name}.{param_name}" if module_name else param_name
                is_norm = isinstance(module, norm_types) or "norm" in type(module).__name__.lower()
                if param_name == "bias" or is_norm or full in NO_DECAY_NAMES or getattr(p, "_mrg_no_decay", False):
                    names.add(full)
        return names


def key_problem(missing: list[str], unexpected: list[str]) -> str:
    """A one-line description of checkpoint keys that do not match a model."""

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} trainable tensor(s): {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} tensor(s): {listing(unexpected)}")
    return (
        "checkpoint does not match the model (" + "; ".join(parts) + "); it was made with another model config "
        "(method, stage, encoder trainability or promptbook mode)"
    )
