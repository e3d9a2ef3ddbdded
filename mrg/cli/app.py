"""The typer application object that every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

import mrg

app = typer.Typer(
    name="mrg",
    help=(
        "Radiology report generation with multimodal LLMs.\n\n"
        "Prepare IU X-ray, MIMIC-CXR or a synthetic set with the field's protocol, train a method of the "
        "registry stage by stage (mrg-llm: visual encoder + instance-specific prompts + frozen LLM; two-stage: "
        "align then LoRA; see 'mrg methods'), generate reports, score them exactly as the field does and "
        "compare methods over seeds with 'mrg benchmark'."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mrg {mrg.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the mrg version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """Radiology report generation with multimodal LLMs."""
