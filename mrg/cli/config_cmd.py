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
    """List the configuration presets shipped with mrg."""
    from mrg.config import PRESET_DIR, list_presets

    for name in list_presets():
        first = (PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
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
