"""``mrg prepare iu-xray``: IU X-ray from Open-i (or local copies) in R2Gen's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mrg.cli.options import ForceOpt, OutDirOpt
from mrg.cli.prepare import prepare_app, print_prepare_summary
from mrg.console import console

_PANEL_SOURCE = "Where the data comes from"
_PANEL_PROTOCOL = "Protocol"
_PANEL_IMAGES = "Images"


_SourceOpt = Annotated[
    list[Path] | None,  # noqa: UP007
    typer.Option(
        "--source",
        help="Use local copies instead of downloading (repeatable): NLMCXR_reports.tgz, NLMCXR_png.tgz, their "
        "extracted folders (ecgen-radiology/ with the XML, a folder of PNGs), or a folder holding the two archives.",
        rich_help_panel=_PANEL_SOURCE,
        show_default=False,
    ),
]
_CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Where downloads are kept \\[default: $MRG_CACHE_DIR/iu_xray or "
                 "~/.cache/mrg/iu_xray]; an interrupted download resumes from here.", rich_help_panel=_PANEL_SOURCE),
]
_BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", envvar="MRG_IU_XRAY_BASE_URL", help="Where the two archives are downloaded from "
                 "\\[default: https://openi.nlm.nih.gov/imgs/collections].", rich_help_panel=_PANEL_SOURCE),
]
_SkipImagesOpt = Annotated[
    bool,
    typer.Option("--skip-images", help="Build every manifest from the XML reports alone (image paths listed, "
                 "files absent): inspect the splits before the ~1.3 GB image download.",
                 rich_help_panel=_PANEL_SOURCE),
]
_ImagesSha256Opt = Annotated[
    str | None,
    typer.Option("--images-sha256", help="Pin NLMCXR_png.tgz to this SHA-256 (no official checksum exists; a "
                 "first run prints the one it downloaded).", rich_help_panel=_PANEL_SOURCE),
]
_SectionOpt = Annotated[
    Literal["findings", "impression", "findings+impression"],
    typer.Option("--section", help="Report section used as the report (R2Gen: findings). Reports where it is "
                 "empty are skipped and counted in prepare.json.", rich_help_panel=_PANEL_PROTOCOL),
]
_SplitOpt = Annotated[
    Literal["r2gen", "random", "file"],
    typer.Option("--split", help="r2gen: R2Gen's exact assignment (2,069/296/590, shipped ids); random: a seeded "
                 "split of all eligible studies (--seed, --ratios); file: ids from --split-file.",
                 rich_help_panel=_PANEL_PROTOCOL),
]
_SplitFileOpt = Annotated[
    Path | None,
    typer.Option("--split-file", help="With --split file: JSON with lists of study ids under \"train\", \"val\" "
                 "and \"test\" (the format of data_manifests/iu_xray/r2gen_split.json).",
                 rich_help_panel=_PANEL_PROTOCOL),
]
_RatiosOpt = Annotated[
    str,
    typer.Option("--ratios", help="train,val,test fractions of --split random.", rich_help_panel=_PANEL_PROTOCOL),
]
_MinImagesOpt = Annotated[
    int,
    typer.Option("--min-images", help="Skip reports with fewer images (R2Gen: 2).", rich_help_panel=_PANEL_PROTOCOL),
]
_ImageSizeOpt = Annotated[
    int | None,
    typer.Option("--image-size", help="Write pre-resized PNGs whose shorter side is N pixels (aspect kept) "
                 "instead of the originals, so training reads less.", rich_help_panel=_PANEL_IMAGES),
]
_WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Processes that resize images with --image-size \\[default: CPU count, at "
                 "most 8].", rich_help_panel=_PANEL_IMAGES),
]


@prepare_app.command("iu-xray")
def iu_xray_cmd(
    out: OutDirOpt,
    source: _SourceOpt = None,
    cache_dir: _CacheDirOpt = None,
    base_url: _BaseUrlOpt = None,
    skip_images: _SkipImagesOpt = False,
    images_sha256: _ImagesSha256Opt = None,
    section: _SectionOpt = "findings",
    split: _SplitOpt = "r2gen",
    split_file: _SplitFileOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --split random.", rich_help_panel=_PANEL_PROTOCOL)] = 42,
    ratios: _RatiosOpt = "0.7,0.1,0.2",
    min_images: _MinImagesOpt = 2,
    image_size: _ImageSizeOpt = None,
    workers: _WorkersOpt = None,
    force: ForceOpt = False,
) -> None:
    """Prepare IU X-ray (Open-i) with R2Gen's protocol: findings, >= 2 images, R2Gen's exact split.

    Downloads NLMCXR_reports.tgz and NLMCXR_png.tgz from Open-i (resumable, verified) unless --source is
    given, and writes annotation.json (R2Gen format), studies.jsonl and prepare.json into --out.
    """
    from mrg.data.sources.iu_xray import IUXrayOptions, parse_ratios, prepare_iu_xray

    options = IUXrayOptions(
        out=out,
        sources=tuple(source or ()),
        cache_dir=cache_dir,
        base_url=base_url,
        skip_images=skip_images,
        section=section,
        split=split,
        split_file=split_file,
        seed=seed,
        ratios=parse_ratios(ratios),
        min_images=min_images,
        image_size=image_size,
        workers=workers,
        images_sha256=images_sha256,
        force=force,
    )
    result = prepare_iu_xray(options)
    _print_iu_xray_summary(result, out)


def _print_iu_xray_summary(result: Any, out: Path) -> None:
    """The summary of a prepare run, the reports the protocol skipped, and the run's notes."""
    print_prepare_summary(result.record, out, skipped=result.skipped)
    protocol = result.record.get("protocol", {})
    excluded = protocol.get("excluded") or {}
    if excluded:
        console.print(
            f"skipped reports: {excluded.get('empty_section', 0):,} with an empty {protocol.get('section')} section, "
            f"{excluded.get('fewer_images', 0):,} with fewer than {protocol.get('min_images')} images, "
            f"{excluded.get('not_in_split', 0):,} not in the split file",
            soft_wrap=True,
        )
    if not result.record.get("images", {}).get("placed", True):
        console.print("images: not placed (--skip-images); run again without it to add them", soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)
