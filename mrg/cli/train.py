"""``mrg train``: train a method's stages under accelerate, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrg.cli.app import app
from mrg.cli.options import OverridesArg
from mrg.console import console, is_main_process


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints step-NNNNNN/, best, last, metrics "
                                      "(one sub-folder per stage for multi-stage methods).")],
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="A preset name (see 'mrg config list') or a path to a YAML config file; "
                     "default: the built-in defaults of the method.", show_default=False),
    ] = None,
    overrides: OverridesArg = None,
    method: Annotated[
        str | None,
        typer.Option("--method", "-m", help="The method to train (see 'mrg methods'); the same as model.method=NAME.",
                     show_default=False),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="Train this stage only; default: every stage not finished yet, in order.",
                     show_default=False),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue a run: 'auto' (the newest complete checkpoint of each stage; a new stage when there is none) "
            "or a checkpoint path (RUN_DIR, RUN_DIR/last, RUN_DIR/step-NNNNNN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a method (default mrg-llm: visual encoder + instance-specific prompts + frozen LLM), stage by stage.

    One process: mrg train --config tiny --out runs/tiny. Two stages: mrg train --method two-stage --config
    two-stage-tiny --out runs/two. Several GPUs: accelerate launch --config_file mrg/configs/accelerate/ddp.yaml
    -m mrg train --config iu_xray --out runs/iu. An interrupted run continues with --resume auto and reproduces
    the uninterrupted one.
    """
    from mrg.config import load_config
    from mrg.recipes.train import train

    extra = [f"model.method={method}"] if method else []
    cfg = load_config(config, [*list(overrides or []), *extra])
    result = train(cfg, out, resume=resume, stage=stage)
    if is_main_process():
        _print_result(result)


def _print_result(result: Any) -> None:
    from rich.table import Table

    from mrg.metrics.registry import headline_metrics

    table = Table(title=f"trained {result.run_dir} ({result.method})", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # paths are folded, never cut
    for stage in result.stages:
        prefix = f"{stage.stage}: " if len(result.stages) > 1 else ""
        done = " (finished before; skipped)" if stage.skipped else ""
        table.add_row(f"{prefix}steps", f"{stage.step:,} of {stage.total_steps:,} (epochs completed: {stage.epoch}){done}")
        if stage.history:
            table.add_row(f"{prefix}last loss", f"{stage.history[-1]['loss']:.4f}")
        table.add_row(f"{prefix}last", str(stage.last_checkpoint) if stage.last_checkpoint else "-")
        if stage.best_checkpoint is not None and stage.best_score is not None:
            metrics = stage.best_metrics or {}
            shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in headline_metrics() if k in metrics)
            table.add_row(f"{prefix}best", f"{stage.best_checkpoint} (score {stage.best_score:.4f}; {shown})")
    console.print(table)
    last = result.last
    if last.last_checkpoint is not None:
        console.print(f"next: mrg generate --checkpoint {result.run_dir} --split test --out "
                      f"{result.run_dir / 'test_predictions.jsonl'}", soft_wrap=True)
