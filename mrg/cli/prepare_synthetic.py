"""``mrg prepare synthetic``: the embedded default dataset (synthetic chest films, reports and true labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrg.cli.options import ForceOpt
from mrg.cli.prepare import prepare_app, print_prepare_summary
from mrg.console import console, make_progress
from mrg.data.chexpert import OBSERVATIONS
from mrg.errors import ConfigError

_PANEL_DATA = "What to generate"


def parse_split(text: str) -> tuple[float, ...]:
    """``"0.7,0.1,0.2"`` -> (0.7, 0.1, 0.2); the library checks the values."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--split {text}: expected three fractions train,val,test such as 0.7,0.1,0.2") from None


def print_prevalence(record: dict[str, Any]) -> None:
    """A table of the share of studies with each finding, per split (hedged findings in parentheses)."""
    label_counts = record.get("protocol", {}).get("label_counts")
    if not label_counts:
        return
    counts = record["counts"]
    observations = [obs for obs in OBSERVATIONS if any(obs in label_counts.get(s, {}) for s in counts)]
    table = Table(title="Finding prevalence: positive % (+ hedged %)", show_header=True, header_style="bold")
    table.add_column("finding")
    for split in counts:
        table.add_column(f"{split} ({counts[split]:,})", justify="right")
    for obs in observations:
        cells = []
        for split, total in counts.items():
            entry = label_counts.get(split, {}).get(obs, {"positive": 0, "uncertain": 0})
            cell = f"{100 * entry['positive'] / max(total, 1):.1f}"
            if entry["uncertain"]:
                cell += f" (+{100 * entry['uncertain'] / max(total, 1):.1f})"
            cells.append(cell)
        table.add_row(obs, *cells)
    console.print(table)


@prepare_app.command("synthetic")
def synthetic_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("data/synthetic"),
    n: Annotated[int, typer.Option("--n", help="Number of studies.", rich_help_panel=_PANEL_DATA)] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed and options give identical files.",
                                      rich_help_panel=_PANEL_DATA)] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Side of the square PNG images, in pixels.",
                                            rich_help_panel=_PANEL_DATA)] = 128,
    views: Annotated[int, typer.Option("--views", help="2: a frontal (0.png) and a lateral (1.png) view per study, "
                                       "like IU X-ray; 1: frontal only.", rich_help_panel=_PANEL_DATA)] = 2,
    split: Annotated[str, typer.Option("--split", help="Train,val,test fractions of a seeded shuffle (R2Gen's IU "
                                       "X-ray protocol: 0.7,0.1,0.2).", rich_help_panel=_PANEL_DATA)] = "0.7,0.1,0.2",
    normal_fraction: Annotated[float, typer.Option("--normal-fraction", help="Share of studies without pathology.",
                                                   rich_help_panel=_PANEL_DATA)] = 0.35,
    difficulty: Annotated[str, typer.Option(
        "--difficulty", help="easy: the default set (a few findings, big differences). hard: 1-5 findings per study "
        "with side, size and severity, finer differences, hedged and negated phrasing, distractors (granulomas, "
        "nipple and breast shadows, skin folds, ECG electrodes, rotated films) and no co-occurrence to guess "
        "from, built to leave room between methods. See docs/synthetic.md.",
        rich_help_panel=_PANEL_DATA)] = "easy",
    workers: Annotated[int | None, typer.Option("--workers", help="Processes rendering images (default: up to 4 "
                                                "for 1,000+ images); the output does not depend on it.")] = None,
    force: ForceOpt = False,
) -> None:
    """Generate the synthetic dataset: chest films whose visible structures encode findings, reports and true labels.

    Free-text reports (FINDINGS, plus IMPRESSION in sections) in varied radiology phrasing, and the true
    CheXpert-14 labels of every study. Needs no download. The output has the same format as 'mrg prepare iu-xray'.
    --difficulty hard makes a harder set that leaves room between methods. See docs/synthetic.md.
    """
    from mrg.data.sources.synthetic import prepare_synthetic

    ratios = parse_split(split)
    with make_progress() as progress:
        record = prepare_synthetic(out, n=n, seed=seed, image_size=image_size, views=views, split=ratios,
                                   normal_fraction=normal_fraction, difficulty=difficulty, force=force,
                                   workers=workers, progress=progress)
    print_prepare_summary(record, out, skipped=bool(record.get("skipped")))
    print_prevalence(record)
