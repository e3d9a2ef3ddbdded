"""``mrg train``: train the report model under accelerate, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrg.cli.app import app
from mrg.cli.options import ConfigOpt, OverridesArg
from mrg.console import console, is_main_process


@app.command("train")
def train_cmd(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints step-NNNNNN/, best, last, metrics.")],
    overrides: OverridesArg = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue a run: 'auto' (the newest complete checkpoint in --out; a new run when there is none) or a "
            "checkpoint path (RUN_DIR, RUN_DIR/last, RUN_DIR/step-NNNNNN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train the report model (visual encoder + instance-specific prompts + frozen LLM).

    One process: mrg train --config tiny --out runs/tiny. Several GPUs: accelerate launch --config_file
    mrg/configs/accelerate/ddp.yaml -m mrg train --config iu_xray --out runs/iu. An interrupted run continues
    with --resume auto and reproduces the uninterrupted one.
    """
    from mrg.config import load_config
    from mrg.trainer import fit

    cfg = load_config(config, list(overrides or []))
    if cfg.train.val_every == -1:
        scorer = None
    elif is_main_process():
        scorer = _make_scorer(cfg)
    else:  # fit scores on process 0 only: no METEOR JVM on the other processes
        scorer = _scored_on_process_zero
    result = fit(cfg, out, resume=resume, scorer=scorer)
    if is_main_process():
        _print_result(result)


def _scored_on_process_zero(predictions: list[str], references: list[str]) -> dict[str, float]:
    raise RuntimeError("validation is scored on process 0 only")  # pragma: no cover - fit never calls it here


def _make_scorer(cfg: Any) -> Any:
    """The validation scorer of ``mrg evaluate``'s library, with the references' cleaning mode resolved."""
    from mrg.data.prepared import STAMP_NAME
    from mrg.evaluate import make_scorer
    from mrg.files import read_json

    normalize = cfg.data.normalize
    if normalize == "auto":
        stamp = Path(cfg.data.root) / STAMP_NAME
        normalize = read_json(stamp).get("normalize", "none") if stamp.is_file() else "none"
    return make_scorer(cfg.eval, normalize)


def _print_result(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"trained {result.run_dir}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # paths are folded, never cut
    table.add_row("steps", f"{result.step:,} of {result.total_steps:,} (epochs completed: {result.epoch})")
    if result.history:
        table.add_row("last loss", f"{result.history[-1]['loss']:.4f}")
    table.add_row("last", str(result.last_checkpoint) if result.last_checkpoint else "-")
    if result.best_checkpoint is not None and result.best_score is not None:
        from mrg.trainer import HEADLINE_METRICS

        metrics = result.best_metrics or {}
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics)
        table.add_row("best", f"{result.best_checkpoint} (score {result.best_score:.4f}; {shown})")
    console.print(table)
    target = result.run_dir / ("best" if result.best_checkpoint is not None else "last")
    if result.last_checkpoint is not None:
        console.print(f"next: mrg generate --checkpoint {target} --split test --out {result.run_dir / 'test_predictions.jsonl'}",
                      soft_wrap=True)
