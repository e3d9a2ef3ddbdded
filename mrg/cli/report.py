"""``mrg report``: one self-contained HTML page from training runs and evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console, info, warn


@app.command("report")
def report_cmd(
    dirs: Annotated[
        list[Path],
        typer.Argument(help="Folders written by 'mrg train', 'mrg evaluate' and/or 'mrg analyze' (or a folder holding them).",
                       show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset with the studies' images (default: the one the folders recorded).",
                     show_default=False),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", help="The predictions JSONL that was evaluated (default: the one metrics.json names).",
                     show_default=False),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="Page title.")] = "mrg report",
    thumbnail_size: Annotated[int, typer.Option("--thumbnail-size", help="Longer side of each thumbnail in pixels.")] = 96,
    views: Annotated[int, typer.Option("--views", help="Thumbnails per study (IU X-ray studies have two views).")] = 2,
    no_images: Annotated[bool, typer.Option("--no-images", help="Leave the image column out (a smaller file).")] = False,
    perceptions: Annotated[
        Path | None,
        typer.Option("--perceptions", help="A label-probability CSV (mrg perceive): each study's perceived classes "
                     "become a column of the per-study table.", show_default=False),
    ] = None,
    perceive_threshold: Annotated[float, typer.Option("--perceive-threshold", help="P from which a class is listed "
                                                      "as perceived (with --perceptions).")] = 0.5,
    synthesized: Annotated[
        Path | None,
        typer.Option("--synthesized", help="A 'mrg synthesize' folder: a section with each image beside its study's "
                     "real image (from --data or the run's dataset).", show_default=False),
    ] = None,
    reconstructed: Annotated[
        Path | None,
        typer.Option("--reconstructed", help="A folder of <study_id>.png tokenizer reconstructions, shown beside "
                     "them (with --synthesized).", show_default=False),
    ] = None,
    screenshot: Annotated[bool, typer.Option("--screenshot", help="Also write OUT.png as headless Chromium renders the "
                                             "page (needs Chromium, e.g. apt-get install chromium).")] = False,
) -> None:
    """Write one self-contained HTML report: metrics with intervals, training curves, a per-study table and, for
    folders written by 'mrg analyze', an Analysis section with its figures.

    The page needs no network (inline CSS, JavaScript, SVG charts and base64 thumbnails). Its per-study
    table sorts by any column, filters by text, by "only disagreements" and by observation; without
    JavaScript it is a plain table. Example: mrg report runs/tiny runs/tiny/eval --out report.html
    """
    from mrg.viewer import build_report

    result = build_report(dirs, out, data=data, predictions=predictions, title=title, thumbnail_size=thumbnail_size,
                          max_views=views, images=not no_images, perceptions=perceptions,
                          perceive_threshold=perceive_threshold, synthesized=synthesized, reconstructed=reconstructed)
    for note in result.notes:
        warn(note)
    parts = [f"{result.runs} training run{'s' if result.runs != 1 else ''}",
             f"{result.evaluations} evaluation{'s' if result.evaluations != 1 else ''}",
             f"{result.studies} studies"]
    if result.analyses:
        parts.append(f"{result.analyses} analys{'es' if result.analyses != 1 else 'is'}")
    if result.answers:
        parts.append(f"{result.answers} answer file{'s' if result.answers != 1 else ''} (VQA)")
    if result.synthesized:
        parts.append(f"{result.synthesized} synthesized image{'s' if result.synthesized != 1 else ''}")
    if result.thumbnails or result.missing_images:
        parts.append(f"{result.thumbnails} thumbnails" + (f", {result.missing_images} images missing" if result.missing_images else ""))
    console.print(f"[bold]report[/bold]: {', '.join(parts)}")
    info(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f} s)")
    if screenshot:
        from mrg.viewer.browser import screenshot as take

        info(f"wrote {take(result.path)}")
