"""``mrg perceive``: per-study zero-shot disease probabilities of a TRRG checkpoint, as a CheXpert-layout CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


@app.command("perceive")
def perceive_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-k", help="A trrg run folder (its last stage's best "
                                             "checkpoint), a stage folder, a best/last pointer or a step folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV: id + the 14 CheXpert observations, each P(present) "
                                      "(empty: not perceived); FILE.meta.json records the checkpoint and, for a "
                                      "split, the per-class AUROC against the references' labels; "
                                      "mrg evaluate -p FILE --data DIR scores it.")],
    image_files: Annotated[
        list[Path] | None,  # noqa: UP007  typer needs typing.Optional here
        typer.Argument(help="Image files (with --images).", show_default=False),
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Prepared dataset folder (default: the run's data.root).",
                                              show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of the dataset: test, val or train.")] = None,
    images: Annotated[bool, typer.Option("--images", help="The arguments are image files (PNG, JPEG, DICOM).")] = False,
    images_per_study: Annotated[int, typer.Option("--images-per-study", min=1,
                                                  help="Consecutive image files that form one study.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Studies per forward pass.")] = 16,
) -> None:
    """Zero-shot disease perception: each study's image embedding against "there is X." / "no X." per class.

    Examples: mrg perceive --checkpoint runs/trrg --split test --out runs/trrg/perceived.csv;
    mrg perceive --checkpoint runs/trrg --images a.png b.png --out p.csv.
    """
    from mrg.errors import ConfigError
    from mrg.perceive import perceive_run

    if image_files and not images:
        raise ConfigError(f"unexpected argument '{image_files[0]}'; image files need --images")
    rows = perceive_run(checkpoint, out, data=data, split=split, images=image_files if images else None,
                        images_per_study=images_per_study, batch_size=batch_size)
    console.print(f"{len(rows):,} studies perceived -> {out} (record in {out.name}.meta.json)", soft_wrap=True)
