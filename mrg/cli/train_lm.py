"""``mrg train-lm``: train a small domain causal LM on a dataset's reports (the demo's frozen LLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.cli.options import ForceOpt, OverridesArg
from mrg.console import console


@app.command("train-lm")
def train_lm_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder written by 'mrg prepare' (its train split is used).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the model and tokenizer (save_pretrained).")],
    overrides: OverridesArg = None,
    force: ForceOpt = False,
) -> None:
    """Train a small Llama-style LM and a BPE tokenizer on the training reports, for use as a frozen LLM.

    Each sequence has the report model's layout with the labeler's findings as tag tokens where the
    visual tokens will sit, so the frozen LM learns to follow that context; the report model's visual
    tokens and prompt then have to supply it. Settings are 'key=value' overrides of the LM config
    (vocab_size, hidden_size, num_layers, steps, batch_size, lr, context, context_dropout, ...).
    Use the result with 'mrg train ... model.llm.name_or_path=OUT'.
    """
    from mrg.config import LMConfig, build_config
    from mrg.domain_lm import train_report_lm

    cfg = build_config(LMConfig, {}, overrides)
    result = train_report_lm(data, out, cfg, force=force)
    record = result.record
    table = Table(title=f"report LM -> {result.out_dir}" + (" (already trained; --force retrains)" if result.skipped else ""))
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{record['num_parameters']:,}")
    table.add_row("vocabulary", f"{record['vocab_size']:,}")
    table.add_row("training reports", f"{record['num_train_reports']:,}")
    table.add_row("final training loss", f"{record['final_train_loss']:.3f}")
    table.add_row("held-out loss with context", f"{record['heldout_loss_with_context']:.3f}")
    table.add_row("held-out loss without context", f"{record['heldout_loss_without_context']:.3f}")
    table.add_row("seconds", f"{record['seconds']}")
    console.print(table)
