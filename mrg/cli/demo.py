"""``mrg demo``: the whole pipeline on the embedded synthetic default, on a CPU, in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("runs/demo"),
    fast: Annotated[bool, typer.Option("--fast", help="A smaller run (800 studies, 200 training steps) for CI; about a minute and a half.")] = False,
    method: Annotated[str, typer.Option("--method", "-m", help="The method to train (see 'mrg methods').")] = "mrg-llm",
) -> None:
    """Prepare synthetic data, train a frozen LM and a method (MRG-LLM by default), generate and evaluate test reports, write an HTML report.

    Needs no GPU, credentials or downloads. Running it again into the same folder reuses the finished data,
    LM and training run. Prints the metric table against the most-frequent-report baseline and three test
    studies side by side; everything is written under --out (demo.json summarises it).
    """
    from mrg.demo import print_summary, run_demo

    def heading(index: int, total: int, title: str) -> None:
        console.rule(f"[bold][{index}/{total}] {title}")

    result = run_demo(out, fast=fast, method=method, on_stage=heading)
    console.rule("[bold]result")
    print_summary(result)
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    console.print(f"stages: {timings} (total {sum(result.seconds.values()):.0f}s)", soft_wrap=True)
    console.print(f"HTML report: [bold]{result.report_html}[/]  summary: {result.out_dir / 'demo.json'}", soft_wrap=True)
