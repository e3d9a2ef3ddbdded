"""The MRG-LLM report model: visual encoder -> projector -> promptbook -> frozen causal LLM.

Public API::

    from mrg.model import build_model, ReportModel, ModelOutput
    model = build_model(cfg)                  # cfg: RunConfig
    out = model(batch)                        # batch from mrg.data.dataset.collate_studies
    out.loss.backward()
    reports = model.generate(batch, cfg.generate)

Heavy libraries (transformers, peft) are imported only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mrg.model.build import build_model, trainable_patterns
    from mrg.model.report_model import ModelOutput, ReportModel

__all__ = ["ModelOutput", "ReportModel", "build_model", "trainable_patterns"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "trainable_patterns"):
        from mrg.model import build

        return getattr(build, name)
    if name in ("ModelOutput", "ReportModel"):
        from mrg.model import report_model

        return getattr(report_model, name)
    raise AttributeError(f"module 'mrg.model' has no attribute {name!r}")
