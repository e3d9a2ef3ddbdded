"""``mrg analyze prompts|attention``: what a checkpoint's soft tokens encode and where its LLM looks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console, info


@app.command("analyze")
def analyze_cmd(
    kind: Annotated[str, typer.Argument(help="prompts (what the soft tokens encode) or attention (where the LLM looks "
                                        "while it writes; eager attention, greedy decoding).", show_default=False)],
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", "-k", help="RUN_DIR (its best checkpoint, else last), RUN_DIR/best, RUN_DIR/last "
                     "or RUN_DIR/step-NNNNNN."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for analysis.json and the PNG figures (the other "
                                      "kind's section already there is kept).")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset folder (default: the run's data.root).", show_default=False),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of the dataset: test, val or train.")] = "test",
    limit: Annotated[int, typer.Option("--limit", help="Analyse the first N studies of the split (0: all).")] = 50,
    maps: Annotated[int, typer.Option("--maps", help="attention: heat maps for the first N studies (unless --study).")] = 4,
    study: Annotated[
        list[str] | None,  # noqa: UP007  typer needs typing.Optional here
        typer.Option("--study", help="attention: draw the heat map of this study id (repeatable).", show_default=False),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="prompts: nearest vocabulary tokens listed per soft token.")] = 5,
    overrides: Annotated[
        list[str] | None,  # noqa: UP007
        typer.Argument(help="generate.key=value overrides (e.g. generate.max_new_tokens=40 generate.batch_size=8).",
                       show_default=False),
    ] = None,
) -> None:
    """Analyse the soft tokens (visual tokens, customised prompts) of a checkpoint, or its attention on them.

    Examples: mrg analyze prompts --checkpoint runs/demo/run --split test --out runs/demo/analysis;
    mrg analyze attention --checkpoint runs/demo/run --split test --out runs/demo/analysis --study CXR12.
    Then 'mrg report runs/demo/run runs/demo/analysis' shows the figures (docs/analysis.md explains them).
    """
    from mrg.analysis import analyze

    result = analyze(kind, checkpoint, out=out, split=split, data=data, limit=limit, maps=maps, studies=study or (),
                     top_k=top_k, overrides=overrides or ())
    headline = ", ".join(f"{k} {v}" for k, v in result.summary.items())
    console.print(f"[bold]analyze {kind}[/bold]: {result.num_studies} studies; {headline}", soft_wrap=True)
    info(f"wrote {result.path} and {len(result.figures)} figures ({result.seconds:.1f} s)")
