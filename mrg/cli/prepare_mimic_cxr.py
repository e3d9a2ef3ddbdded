"""``mrg prepare mimic-cxr``: MIMIC-CXR from PhysioNet (credentialed), a local copy or an R2Gen annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mrg.cli.options import ForceOpt, OutDirOpt
from mrg.cli.prepare import prepare_app, print_prepare_summary
from mrg.console import info

_PANEL_SOURCE = "Where the data comes from"
_PANEL_PROTOCOL = "Protocol"


_SourceOpt = Annotated[
    Path | None,
    typer.Option("--source", help="A local MIMIC-CXR(-JPG) folder (CSV files plain or .gz; reports as "
                 "mimic-cxr-reports.zip or a files/ tree) instead of downloading.", rich_help_panel=_PANEL_SOURCE),
]
_ReportsOpt = Annotated[
    Path | None,
    typer.Option("--reports", help="With --source: mimic-cxr-reports.zip or its extracted folder, when it is "
                 "not inside --source.", rich_help_panel=_PANEL_SOURCE),
]
_FromAnnotationOpt = Annotated[
    Path | None,
    typer.Option("--from-annotation", help="Import an existing R2Gen-format MIMIC-CXR annotation.json as it is.",
                 rich_help_panel=_PANEL_SOURCE),
]
_ImagesOpt = Annotated[
    Path | None,
    typer.Option("--images", help="With --from-annotation: the images/ folder its image_path entries are "
                 "relative to (default: images/ beside the file).", rich_help_panel=_PANEL_SOURCE),
]
_VersionOpt = Annotated[
    str | None,
    typer.Option("--version", help="PhysioNet release of MIMIC-CXR and MIMIC-CXR-JPG (default: 2.1.0).",
                 rich_help_panel=_PANEL_SOURCE),
]
_BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="Where PhysioNet's project files are (default: https://physionet.org/files/); "
                 "<base>/<project>/<version>/ is fetched.", rich_help_panel=_PANEL_SOURCE),
]
_CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Download cache (default: $MRG_CACHE_DIR, else $XDG_CACHE_HOME/mrg or ~/.cache/mrg); images are "
                 "hard-linked from it into --out when both are on one file system.", rich_help_panel=_PANEL_SOURCE),
]
_UnitOpt = Annotated[
    Literal["image", "study"],
    typer.Option("--unit", help="One entry per image (R2Gen) or per study (all its images, frontal first).",
                 rich_help_panel=_PANEL_PROTOCOL),
]
_SectionOpt = Annotated[
    Literal["findings", "impression", "findings+impression"],
    typer.Option("--section", help="Report section used as the report (R2Gen: findings); entries without it "
                 "are dropped.", rich_help_panel=_PANEL_PROTOCOL),
]
_LabelsOpt = Annotated[
    Literal["chexpert", "negbio", "none"],
    typer.Option("--labels", help="Official label file copied into each entry's labels.",
                 rich_help_panel=_PANEL_PROTOCOL),
]
_LimitStudiesOpt = Annotated[
    int | None,
    typer.Option("--limit-studies", min=1, help="Keep the N studies with the smallest study ids of each split "
                 "(after filtering); only their images are downloaded.", rich_help_panel=_PANEL_PROTOCOL),
]
_ImageSizeOpt = Annotated[
    int | None,
    typer.Option("--image-size", min=8, help="Write images resized so the shorter side is N pixels (aspect "
                 "kept, JPEG quality 95).", rich_help_panel=_PANEL_PROTOCOL),
]
_SkipImagesOpt = Annotated[
    bool,
    typer.Option("--skip-images", help="Write the manifests only: no image is downloaded or placed.",
                 rich_help_panel=_PANEL_PROTOCOL),
]


@prepare_app.command("mimic-cxr")
def mimic_cxr_cmd(
    out: OutDirOpt,
    source: _SourceOpt = None,
    reports: _ReportsOpt = None,
    from_annotation: _FromAnnotationOpt = None,
    images: _ImagesOpt = None,
    version: _VersionOpt = None,
    base_url: _BaseUrlOpt = None,
    cache_dir: _CacheDirOpt = None,
    unit: _UnitOpt = "image",
    section: _SectionOpt = "findings",
    labels: _LabelsOpt = "chexpert",
    limit_studies: _LimitStudiesOpt = None,
    image_size: _ImageSizeOpt = None,
    skip_images: _SkipImagesOpt = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel downloads / resize processes.")] = 4,
    force: ForceOpt = False,
) -> None:
    """Prepare MIMIC-CXR in R2Gen's protocol: one entry per image of the official split, findings only.

    Downloads from PhysioNet by default, with credentials from PHYSIONET_USERNAME / PHYSIONET_PASSWORD, ~/.netrc (machine physionet.org) or a hidden prompt; they are never printed or stored. Every file is verified against the release's SHA256SUMS.txt, and an interrupted run resumes where it stopped. See docs/prepare-mimic-cxr.md.
    """
    from mrg.data.sources.mimic_cxr import MimicOptions, prepare_mimic_cxr

    options = MimicOptions(unit=unit, section=section, labels=labels, limit_studies=limit_studies,
                           image_size=image_size, skip_images=skip_images)
    result = prepare_mimic_cxr(out, options=options, source=source, reports=reports, annotation=from_annotation,
                               images_dir=images, version=version, base_url=base_url, cache_dir=cache_dir,
                               workers=workers, force=force)
    print_prepare_summary(result.record, out, skipped=result.skipped)
    for note in result.notes:
        info(note)
