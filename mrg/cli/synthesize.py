"""``mrg synthesize``: chest films from reports with a ``mavilt`` run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


@app.command("synthesize")
def synthesize_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A 'mavilt' run (its best checkpoint) or step folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <id>.png and <id>.json.")],
    text: Annotated[str | None, typer.Option("--text", help="One report to draw.")] = None,
    reports: Annotated[Path | None, typer.Option("--reports", help="A .jsonl of {report, id?, study_id?} or a text file, one report a line.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="A prepared dataset: its split's reports, with their study ids.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --data.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="At most N prompts.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Image i uses seed + i.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts sampled together.")] = 8,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature (0: greedy).")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the k most probable codes (0: all).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus mass (1: all).")] = 1.0,
    cfg_scale: Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance scale (1: off).")] = 1.0,
) -> None:
    """Sample image tokens after each report, decode them with the run's VQ tokenizer, write PNG + JSON sidecar.

    Each report is first cleaned as the run's training reports were (the sidecar keeps both texts)."""
    from mrg.synthesize import read_prompts, synthesize

    prompts = read_prompts(text, reports, data, split, limit)
    rows = synthesize(checkpoint, prompts, out, seed=seed, batch_size=batch_size, temperature=temperature,
                      top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
    console.print(f"{len(rows)} images -> {out} (prompts cleaned: {rows[0]['config']['prompt_cleaning']})")
