"""``mrg train-vq``: train the image tokenizer (conv encoder -> vector quantiser -> decoder) on a dataset's images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.console import console

VQOverridesArg = Annotated[
    list[str] | None,  # noqa: UP007  typer needs typing.Optional here
    typer.Argument(help="Dotted overrides of the tokenizer config, e.g. model.codebook_size=512 loss.grad_weight=0.",
                   show_default=False),
]


@app.command("train-vq")
def train_vq_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder written by 'mrg prepare' (train split trains, val validates).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, metrics and best/last pointers.")],
    config: Annotated[str, typer.Option("--config", "-c", help="Preset of mrg/configs/vq (demo, tiny) or a YAML path.")] = "demo",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in --out from its last checkpoint.")] = False,
    overrides: VQOverridesArg = None,
) -> None:
    """Train the image tokenizer of MAViLT: pixel L1 + lambda_grad image-gradient term (+ lambda_feat feature term).

    Every image of the train split is one example; each validation on the val split reports PSNR, SSIM,
    gradient-magnitude error, codebook usage and perplexity (val_metrics.jsonl), and 'best' is the highest
    PSNR. Settings are 'key=value' overrides of the preset, e.g. model.codebook_size=512 loss.grad_weight=0
    train.steps=1000 (see docs/methods/mavilt.md). Cache token ids with 'mrg tokenize-images --vq OUT'.
    """
    from mrg.config import load_vq_config
    from mrg.metrics.registry import display_name
    from mrg.recipes.vq import train_vq

    cfg = load_vq_config(config, overrides)
    result = train_vq(data, out, cfg, resume=resume)
    title = f"image tokenizer -> {result.out_dir}" + (" (already trained; nothing to do)" if result.skipped else "")
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("steps", str(result.step))
    table.add_row("best step (PSNR)", str(result.best_step))
    for name, value in result.metrics.items():
        table.add_row(display_name(name), f"{value:.4f}")
    if not result.skipped:
        table.add_row("seconds", f"{result.seconds}")
    console.print(table)
