"""``mrg prepare tokenize``: cache token ids of a prepared dataset and show its report lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from mrg.cli.options import ForceOpt
from mrg.cli.prepare import prepare_app
from mrg.console import console


@prepare_app.command("tokenize")
def tokenize_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="A dataset folder written by 'mrg prepare'.")],
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", "-t", help="A Hugging Face tokenizer: a local folder or a model id (cached or "
                     "reachable). Its ids of every report_clean are cached in DATA/tokens/."),
    ] = None,
    vocab: Annotated[
        Literal["r2gen"] | None,
        typer.Option("--vocab", help="Build R2Gen's word vocabulary from the train split instead: tokens with count "
                     ">= --threshold plus <unk>, sorted; id 0 is BOS/EOS/PAD."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", help="Minimum count of an R2Gen vocabulary token \\[default: R2Gen's, 3 for IU "
                     "X-ray, 10 for MIMIC-CXR].", min=1),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="Length above which a report counts as truncated \\[default: R2Gen's "
                     "max_seq_length, 60 for IU X-ray, 100 for MIMIC-CXR and others].", min=1),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Cache the token ids of every report and print length statistics per split (mean, p95, max, truncated).

    With --tokenizer the lengths include the tokenizer's own special tokens; with --vocab r2gen they
    include BOS and EOS, as R2Gen's max_seq_length does.
    """
    from mrg.data.tokenize import tokenize_dataset

    result = tokenize_dataset(data, tokenizer=tokenizer, vocab=vocab, threshold=threshold, max_length=max_length,
                              force=force)
    meta = result.meta
    identity = meta["tokenizer"]
    title = f"{result.name}: {identity['vocab_size']:,} tokens, truncation at {meta['max_length']}"
    if result.skipped:
        title += " (cache up to date; --force recomputes)"
    table = Table(title=title, header_style="bold")
    for column in ("split", "reports", "mean", "p95", "max", f"> {meta['max_length']}"):
        table.add_column(column, justify="left" if column == "split" else "right")
    with_unk = "unk" in meta["stats"].get("train", {})
    if with_unk:
        table.add_column("<unk>", justify="right")
    for split, stats in meta["stats"].items():
        if not stats["count"]:
            row = [split, "0", "-", "-", "-", "-"] + (["-"] if with_unk else [])
        else:
            row = [split, f"{stats['count']:,}", f"{stats['mean']:.1f}", f"{stats['p95']:.1f}", str(stats["max"]),
                   f"{stats['truncated']:,} ({stats['truncated_share']:.1%})"]
            if with_unk:
                row.append(f"{stats['unk']:,}")
        table.add_row(*row)
    console.print(table)
    console.print(f"lengths include {meta['lengths_include']}; cache: {result.path}", soft_wrap=True)
    if identity.get("vocab_file"):
        console.print(f"vocabulary: {Path(data) / identity['vocab_file']}", soft_wrap=True)
