"""Option types shared by several commands, so the same flag reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.", show_default=True)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo finished work and overwrite the output directory's files.")]
ConfigOpt = Annotated[
    str,
    typer.Option("--config", "-c", help="A preset name (see 'mrg config list') or a path to a YAML config file."),
]
OverridesArg = Annotated[
    list[str] | None,  # noqa: UP007  typer needs typing.Optional here
    typer.Argument(help="Dotted overrides, e.g. train.lr=3e-4 model.promptbook.mode=prompt-wise.", show_default=False),
]
