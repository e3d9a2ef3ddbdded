"""``mrg config``: list the shipped presets and show a resolved configuration."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.syntax import Syntax

from mrg.cli.app import app
from mrg.cli.options import OverridesArg
from mrg.console import console

config_app = typer.Typer(help="List presets and print resolved configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("list")
def list_cmd() -> None:
    """List the configuration presets shipped with mrg: runs (``mrg train``, ``mrg demo``), image tokenizers
    (``mrg train-vq -c``) and benchmarks (``mrg benchmark --config``)."""
    from mrg.config import PRESET_DIR, VQ_PRESET_DIR, list_presets

    groups = [("run presets (mrg train --config NAME)", PRESET_DIR),
              ("image tokenizer presets (mrg train-vq -c NAME)", VQ_PRESET_DIR),
              ("benchmark presets (mrg benchmark --config NAME)", PRESET_DIR / "benchmarks")]
    for index, (title, folder) in enumerate(groups):
        console.print(("\n" if index else "") + f"[bold underline]{title}[/]")
        for name in list_presets(folder):
            first = (folder / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
            summary = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
            console.print(f"[bold]{name}[/]  {summary}", soft_wrap=True)


@config_app.command("show")
def show_cmd(
    source: Annotated[str, typer.Argument(help="Preset name or YAML path.")] = "",
    overrides: OverridesArg = None,
) -> None:
    """Print the fully resolved configuration (defaults + preset + overrides) as YAML."""
    from mrg.config import dump_config, load_config

    overrides = list(overrides or [])
    if "=" in source:  # `mrg config show train.lr=1e-3` means defaults plus an override
        overrides.insert(0, source)
        source = ""
    cfg = load_config(source or None, overrides)
    console.print(Syntax(dump_config(cfg), "yaml", theme="ansi_dark", background_color="default"))
