"""``mrg benchmark``: a grid of methods × seeds × datasets (+ baselines) scored onto one leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrg.cli.app import app
from mrg.console import console


@app.command("benchmark")
def benchmark_cmd(
    config: Annotated[str, typer.Option("--config", "-c", help="A benchmark preset (fast, learning, hard; in "
                                        "mrg/configs/benchmarks/) or a YAML path.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Benchmark folder: datasets, runs, evaluations, leaderboard.*")],
    overrides: Annotated[
        list[str] | None,  # noqa: UP007  typer needs typing.Optional here
        typer.Argument(help="key=value overrides of the benchmark config, e.g. seeds=[0] resamples=500.",
                       show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Reuse a folder made with another benchmark config.")] = False,
    screenshot: Annotated[bool, typer.Option("--screenshot", help="Also write leaderboard.png as headless Chromium "
                                             "renders the page (needs Chromium).")] = False,
) -> None:
    """Train every system for every seed on every dataset, score them and the baselines, write a leaderboard.

    Finished runs and evaluations are reused, an interrupted benchmark continues where it stopped. The leaderboard
    (leaderboard.md/.csv/.json/.html) gives each metric's mean over seeds with its 95% interval, the test-bootstrap
    interval of the pooled seeds and a paired test against the reference system.
    """
    from mrg.recipes.benchmark import load_bench, render_markdown, run_benchmark

    bench = load_bench(config, list(overrides or []))
    record = run_benchmark(bench, out, force=force)
    console.print(render_markdown(record), soft_wrap=True)
    console.print(f"leaderboard: {out / 'leaderboard.html'} (and .md, .csv, .json); {record['seconds']:.0f} s", soft_wrap=True)
    if screenshot:
        from mrg.viewer.browser import screenshot as take

        console.print(f"screenshot: {take(out / 'leaderboard.html')}", soft_wrap=True)
