"""Methods: each a module with a ``Method`` subclass (stages, config, presets, model), found through the registry.

``mrg.methods.registry`` holds the registry (``get_method``, ``register_method``, ...); ``mrg.methods.base``
declares what a method is; ``mrg.methods.report`` gives report-generation methods their data and batches;
``mrg.methods.mrg_llm``, ``mrg.methods.two_stage``, ... are the methods. See ``docs/architecture.md``.
"""

from __future__ import annotations

from mrg.methods.base import Method, SoftTokenGroup, Stage
from mrg.methods.registry import get_method, list_methods, method_names, register_method, unregister_method

__all__ = ["Method", "SoftTokenGroup", "Stage", "get_method", "list_methods", "method_names", "register_method", "unregister_method"]
