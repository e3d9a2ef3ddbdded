"""``mrg methods``: the registered methods, their stages (what trains, the loss, the data) and presets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


@app.command("methods")
def methods_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry as JSON (stages, options, presets).")] = False,
) -> None:
    """List the methods mrg trains, with their stages and presets (train one with 'mrg train --method NAME')."""
    from rich.table import Table

    from mrg.methods import list_methods

    methods = list_methods()
    if as_json:
        typer.echo(json.dumps([m.describe() for m in methods], indent=2))
        return
    table = Table(title="methods", show_lines=True)
    table.add_column("method", style="bold")
    table.add_column("stages (what trains)")
    table.add_column("presets")
    for method in methods:
        stages = "\n".join(
            f"{s.name}: {s.summary}" + (f" [from {s.starts_from}]" if s.starts_from else "") for s in method.stages
        )
        table.add_row(f"{method.name}\n[dim]{method.summary}[/dim]", stages, ", ".join(method.presets()) or "-")
    console.print(table)
