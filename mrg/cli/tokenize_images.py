"""``mrg tokenize-images``: cache the image token ids of every image of a prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.cli.options import ForceOpt
from mrg.console import console


@app.command("tokenize-images")
def tokenize_images_cmd(
    vq: Annotated[Path, typer.Option("--vq", help="A 'mrg train-vq' run folder (its best checkpoint), pointer or step folder.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder written by 'mrg prepare'; the cache goes to DATA/image_tokens/.")],
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 32,
    force: ForceOpt = False,
) -> None:
    """Encode every image of every split with the tokenizer and cache the ids (safetensors + JSON, atomic).

    Running it again with the same tokenizer weights and dataset does nothing.
    """
    from mrg.recipes.vq_tokens import tokenize_images

    result = tokenize_images(vq, data, batch_size=batch_size, force=force)
    grid = "x".join(str(g) for g in result.record["grid"])
    state = "already current" if result.skipped else "written"
    console.print(f"{result.num_images} images -> {grid} tokens each ({result.record['codebook_size']} codes): "
                  f"{result.path} ({state})")
