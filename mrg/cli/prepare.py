"""``mrg prepare``: the command group; each source's command lives in its own ``prepare_*`` module."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.console import console

prepare_app = typer.Typer(
    help=(
        "Download or import a dataset and write it in the field's protocol: annotation.json (R2Gen format), "
        "studies.jsonl and the prepare.json completion stamp."
    ),
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")


def print_prepare_summary(record: dict[str, Any], out_dir: Any, *, skipped: bool = False) -> None:
    """Print the rich summary every prepare command ends with: counts per split, protocol, where files are."""
    title = f"{record['source'].get('kind', 'dataset')} -> {out_dir}"
    if skipped:
        title += " (already prepared; --force redoes it)"
    console.print(f"[bold]{title}[/]", soft_wrap=True)  # a table title would wrap to the table's width
    table = Table(show_header=True, header_style="bold")
    table.add_column("split")
    table.add_column("entries", justify="right")
    for split, count in record["counts"].items():
        table.add_row(split, f"{count:,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(record['counts'].values()):,}[/]")
    console.print(table)
    protocol = ", ".join(f"{k}={v}" for k, v in record.get("protocol", {}).items() if not isinstance(v, (dict, list)))
    console.print(f"protocol: {protocol}", soft_wrap=True)
    console.print(f"images: {record.get('num_images', 0):,}  normalize: {record.get('normalize')}", soft_wrap=True)
