"""``mrg metrics``: every registered metric, with its task, inputs, direction and protocol."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


def _load_registering_modules() -> None:
    """Import the modules that register metrics on import (model-based families, methods' validation metrics)."""
    import importlib

    from mrg.methods import list_methods

    importlib.import_module("mrg.metrics.model_based")
    importlib.import_module("mrg.metrics.labels")  # auroc (mrg evaluate on a label-probability CSV)
    list_methods()  # loads every method module, built-in and plugin


@app.command("metrics")
def metrics_cmd(
    task: Annotated[str | None, typer.Option("--task", help="Only the metrics of this task (e.g. report-generation, retrieval).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
) -> None:
    """List the metrics mrg computes: the names 'mrg evaluate --metrics', 'train.select' and benchmarks accept."""
    from rich.table import Table

    from mrg.errors import ConfigError
    from mrg.metrics.registry import all_metrics, suggest

    _load_registering_modules()
    metrics = all_metrics()
    tasks = sorted({t for m in metrics for t in m.tasks})
    if task is not None:
        if task not in tasks:
            raise ConfigError(f"--task '{task}' is not a metric task.{suggest(task, tasks)} Tasks: {', '.join(tasks)}")
        metrics = [m for m in metrics if task in m.tasks]
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(m) for m in metrics], indent=2))
        return
    table = Table(title=f"metrics ({len(metrics)})")
    for column in ("name", "display", "family", "tasks", "inputs", "better"):
        table.add_column(column, no_wrap=True)
    table.add_column("protocol", overflow="fold")
    for m in metrics:
        table.add_row(m.name, m.display, m.family, ", ".join(m.tasks), ", ".join(m.inputs),
                      "higher" if m.higher_is_better else "lower", m.protocol)
    console.print(table)
