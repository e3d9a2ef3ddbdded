"""``mrg prepare vqa``: question-answer pairs derived from a prepared dataset, or imported from a public format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrg.cli.options import ForceOpt
from mrg.cli.prepare import prepare_app
from mrg.console import console


@prepare_app.command("vqa")
def vqa_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (questions.jsonl and the vqa.json stamp).")],
    data: Annotated[Path | None, typer.Option("--from", help="A prepared dataset ('mrg prepare ...'): the studies to "
                                              "derive questions from, or the MIMIC-CXR studies an import refers to.",
                                              show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="derived (from --from's labels and reports), vqa-rad, slake, "
                                     "mimic-diff-vqa or mimic-ext-vqa.")] = "derived",
    import_path: Annotated[Path | None, typer.Option("--import", help="The public-format file (or the folder of its "
                                                     "split files) to import.", show_default=False)] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Image folder of vqa-rad / slake.",
                                                show_default=False)] = None,
    uncertain: Annotated[str, typer.Option("--uncertain", help="Presence questions about uncertain (hedged) mentions: "
                                           "skip them, or answer yes or no.")] = "skip",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the phrasing choice.")] = 0,
    force: ForceOpt = False,
) -> None:
    """Write visual questions with answers: presence (yes/no), normal, abnormality, side and severity.

    Every question keeps its study's split. Example: mrg prepare vqa --from data/synthetic --out data/synthetic-vqa.
    See docs/vqa.md.
    """
    from mrg.data.vqa_import import prepare_vqa

    record = prepare_vqa(out, data=data, fmt=fmt, import_path=import_path, images=images, seed=seed,
                         uncertain=uncertain, force=force)
    title = f"{record['source']['kind']} questions -> {out}"
    if record.get("skipped_run"):
        title += " (already prepared; --force redoes it)"
    console.print(f"[bold]{title}[/]", soft_wrap=True)
    types = sorted({t for split in record["types"].values() for t in split})
    table = Table(show_header=True, header_style="bold")
    table.add_column("split")
    for qtype in types:
        table.add_column(qtype, justify="right")
    table.add_column("total", justify="right")
    for split, count in record["counts"].items():
        table.add_row(split, *(f"{record['types'][split].get(t, 0):,}" for t in types), f"{count:,}")
    console.print(table)
    if record.get("skipped"):
        console.print("left out: " + ", ".join(f"{k}={v}" for k, v in record["skipped"].items()), soft_wrap=True)
