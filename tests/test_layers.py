"""Data flows one way: a module never imports a later stage (checked on the source, imports in functions too).

Stages, in order: foundation (errors, files, console, provenance, the run-folder layout, the metric
registry) -> configuration (config, the method registry and what a method declares) -> data -> model ->
training (loop, checkpoints, distributed, optimizer, validation) -> generate -> metrics ->
evaluate/viewer/domain LM/analysis -> method implementations (they compose all of the above) -> recipes -> cli/demo.
Methods are found by the registry at run time (``importlib`` on the built-in module names and the
``mrg.methods`` entry points), as plugins are, so configuration never imports a method's implementation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mrg

PACKAGE_DIR = Path(mrg.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("mrg", "mrg.errors", "mrg.files", "mrg.console", "mrg.provenance", "mrg.runs", "mrg.seeds", "mrg.metrics.registry"),
    ("mrg.config", "mrg.methods.registry", "mrg.methods.base"),
    ("mrg.data",),
    ("mrg.model",),
    ("mrg.trainer", "mrg.checkpoint", "mrg.distributed", "mrg.optim", "mrg.trackers", "mrg.validation"),
    ("mrg.generate", "mrg.answer"),
    ("mrg.metrics",),
    ("mrg.evaluate", "mrg.label_eval", "mrg.viewer", "mrg.domain_lm", "mrg.baselines", "mrg.perceive", "mrg.analysis",
     "mrg.synthesize"),
    ("mrg.methods",),
    ("mrg.recipes",),
    ("mrg.cli", "mrg.demo", "mrg.__main__"),
]


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"module {module} is not assigned to a layer in tests/test_layers.py"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "mrg" or name.startswith("mrg.")}


def test_no_upward_imports() -> None:
    problems = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        importer = module_name(path)
        mine = layer_of(importer)
        for imported in imported_modules(path):
            # `from mrg.data import text` lists `mrg.data.text`; `from mrg import x` lists `mrg.x`
            target = imported if any(imported.startswith(p) for layer in LAYERS for p in layer[1:]) else "mrg"
            if layer_of(target) > mine:
                problems.append(f"{importer} imports {imported} (a later stage)")
    assert not problems, "\n".join(problems)
