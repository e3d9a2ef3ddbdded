"""``mrg label``: CheXpert-style labels for a CSV of reports, in the CheXpert labeler's file formats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.console import console, info


@app.command("label")
def label_cmd(
    reports_csv: Annotated[
        Path,
        typer.Argument(
            help="Headerless one-column CSV, one report per row (quote reports that contain commas).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output CSV: Reports plus the 14 observations (1.0, 0.0, -1.0 or empty)."),
    ],
) -> None:
    """Label reports with mrg's CheXpert-style rule labeler (offline, pure Python; not CheXbert).

    Input and output use the CheXpert labeler's formats, so files made for it work here. Labels: 1.0
    positive, 0.0 negative, -1.0 uncertain, empty when the observation is not mentioned; No Finding is 1.0
    or empty. The rules are documented in docs/labeler.md.
    """
    from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, label_counts, label_csv

    started = time.perf_counter()
    labels = label_csv(reports_csv, out)
    seconds = time.perf_counter() - started

    table = Table(title=f"{len(labels)} reports labelled by {LABELER_NAME} {LABELER_VERSION}", title_justify="left")
    table.add_column("observation")
    for column in ("positive", "negative", "uncertain", "blank"):
        table.add_column(column, justify="right")
    for observation, row in label_counts(labels).items():
        table.add_row(observation, *(str(row[column]) for column in ("positive", "negative", "uncertain", "blank")))
    console.print(table)
    info(f"wrote {out} ({seconds:.2f} s)")
