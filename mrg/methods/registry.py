"""The method registry: every method mrg trains, by name (``mrg methods`` lists them).

A method is one module (``mrg/methods/<name>.py``) with a ``Method`` subclass that declares its config
section, its stages (what trains in each, the loss, the data, the stage it starts from), builds its model
from the shared parts in ``mrg.model`` and ships its presets (``mrg/configs/*.yaml`` with ``model.method``).
Built-in methods are imported on first use; other packages register theirs through the ``mrg.methods``
entry-point group (``name = "package.module"``) or by calling ``register_method`` (e.g. in a test)::

    from mrg.methods import get_method, register_method
    register_method(MyMethod())
    get_method("my-method").stages
"""

from __future__ import annotations

import importlib

from mrg.errors import ConfigError
from mrg.methods.base import Method
from mrg.metrics.registry import suggest

_BUILTIN_MODULES = {
    "mrg-llm": "mrg.methods.mrg_llm",
    "two-stage": "mrg.methods.two_stage",
    "trrg": "mrg.methods.trrg",
    "mavilt": "mrg.methods.mavilt",
}
"""Built-in method name -> the module that registers it (imported lazily: methods import torch)."""
_METHODS: dict[str, Method] = {}
_plugins_loaded = False


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` (an instance of a ``Method`` subclass) to the registry and return it.

    Raises:
        ValueError: another method already has this name (pass ``replace=True`` to swap it, e.g. in a test).
    """
    name = method.name
    if name in _METHODS and not replace and type(_METHODS[name]) is not type(method):
        raise ValueError(f"a method named {name!r} is already registered ({type(_METHODS[name]).__name__})")
    stage_names = [s.name for s in method.stages]
    if not stage_names or len(set(stage_names)) != len(stage_names):
        raise ValueError(f"method {name!r} needs at least one stage and unique stage names, got {stage_names}")
    for stage in method.stages:
        if stage.starts_from is not None and stage.starts_from not in stage_names[: stage_names.index(stage.name)]:
            raise ValueError(f"stage {stage.name!r} of {name!r} starts from {stage.starts_from!r}, not an earlier stage")
    _METHODS[name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method (tests that registered a toy method clean up with this)."""
    _METHODS.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group="mrg.methods"):
        importlib.import_module(entry.value.split(":")[0])


def method_names() -> list[str]:
    """Every method name: the built-ins and those registered so far (plugins included)."""
    _load_plugins()
    return sorted(set(_BUILTIN_MODULES) | set(_METHODS))


def get_method(name: str, *, option: str = "--method") -> Method:
    """The method registered as ``name``.

    Raises:
        ConfigError: unknown name, with "did you mean" and the list of methods.
    """
    if name not in _METHODS and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _METHODS:
        _load_plugins()
    if name not in _METHODS:
        names = method_names()
        raise ConfigError(f"{option} {name}: not a registered method.{suggest(name, names)} Methods: {', '.join(names)} "
                          "('mrg methods' describes them)")
    return _METHODS[name]


def list_methods() -> list[Method]:
    """Every method, built-ins first in the registry's order, then the others by name."""
    return [get_method(name) for name in method_names()]
