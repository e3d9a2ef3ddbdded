"""``mrg generate``: reports from a checkpoint for a dataset split or for image files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console, is_main_process

_OVERRIDE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+=")


@app.command("generate")
def generate_cmd(
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", "-k", help="RUN_DIR (its best checkpoint, else last), RUN_DIR/best, RUN_DIR/last "
                     "or RUN_DIR/step-NNNNNN."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file of {id, prediction, reference}; a FILE.meta.json "
                                      "sidecar records the checkpoint and decoding settings.")],
    args: Annotated[
        list[str] | None,  # noqa: UP007  typer needs typing.Optional here
        typer.Argument(help="Image files (with --images) and/or generate.key=value overrides, e.g. "
                       "generate.strategy=greedy generate.num_beams=1.", show_default=False),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset folder (default: the run's data.root).", show_default=False),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of the dataset: test, val or train.")] = None,
    images: Annotated[
        bool,
        typer.Option("--images", help="The positional arguments are image files (PNG, JPEG, DICOM), one study per "
                     "file unless --images-per-study says otherwise."),
    ] = False,
    images_per_study: Annotated[
        int,
        typer.Option("--images-per-study", help="Consecutive image files that form one study (e.g. 2: frontal then "
                     "lateral of each study); the study id is its first file's name.", min=1),
    ] = 1,
) -> None:
    """Generate reports with batched beam search (R2GenGPT's settings by default), greedy decoding or sampling.

    Examples: mrg generate --checkpoint runs/iu --split test --out runs/iu/test.jsonl;
    mrg generate --checkpoint runs/iu/best --images a.png b.dcm --out preds.jsonl generate.strategy=greedy.
    """
    from mrg.errors import ConfigError
    from mrg.generate import generate_reports

    overrides, files = [], []
    for arg in args or []:
        (overrides if _OVERRIDE.match(arg) and not Path(arg).exists() else files).append(arg)
    if files and not images:
        raise ConfigError(f"unexpected argument '{files[0]}'; image files need --images, overrides look like generate.key=value")
    if images and split is not None:
        raise ConfigError("give either --split or --images, not both")
    result = generate_reports(
        checkpoint,
        out_path=out,
        data_root=data,
        split=split,
        images=files if images else None,
        images_per_study=images_per_study,
        overrides=overrides,
    )
    if is_main_process():
        console.print(
            f"{result.num_reports:,} reports from {result.checkpoint} (step {result.step}) -> {result.out_path} "
            f"({result.reports_per_second:.2f} reports/s; settings in {result.meta_path.name})",
            soft_wrap=True,
        )
