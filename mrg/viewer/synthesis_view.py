"""The synthesis section of the report: images drawn from reports (``mrg synthesize``) beside the study's real
image and its reconstruction through the image tokenizer.

A synthesized folder holds ``<id>.png`` with a ``<id>.json`` sidecar (``id``, ``prompt``, ``seed``, ``study_id``;
what ``mrg synthesize`` writes). The real image is the sidecar's ``study_id``'s first view in the prepared dataset;
the reconstruction is ``<reconstructed>/<study_id>.png`` when a reconstructed folder is given (``mrg demo
--method mavilt`` writes both folders). A missing image becomes a "missing" cell, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from mrg.errors import DataError
from mrg.files import read_json

MAX_SHOWN = 12
"""Synthesized images shown at most (the page embeds each as a thumbnail)."""
COLUMNS = ("real", "reconstructed", "synthesized")


@dataclass
class SynthesisRow:
    """One synthesized image and what it is compared with."""

    id: str
    prompt: str
    seed: Any
    study_id: str | None
    images: dict[str, Path | None]
    """Column ("real", "reconstructed", "synthesized") -> the image file (None: not available)."""
    thumbnails: dict[str, str | None] = field(default_factory=dict)


@dataclass
class SynthesisInputs:
    """A synthesized folder, read."""

    folder: Path
    rows: list[SynthesisRow]
    total: int
    """Synthesized images in the folder (``rows`` holds the first ``MAX_SHOWN``)."""
    reconstructed: Path | None
    sampling: dict[str, Any]


def read_synthesis(folder: Path, dataset: Any = None, reconstructed: Path | None = None,
                   limit: int = MAX_SHOWN) -> SynthesisInputs:
    """Read ``folder``'s sidecars (sorted by id), pairing each with its study's real image in ``dataset`` (a
    ``PreparedDataset`` or None) and its reconstruction in ``reconstructed``.

    Raises:
        DataError: the folder is missing, or holds no ``<id>.png`` with a ``<id>.json`` sidecar, or a sidecar is
            not a JSON object with ``id`` and ``prompt``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--synthesized {folder}: no such folder; give the --out folder of 'mrg synthesize'")
    if reconstructed is not None and not Path(reconstructed).is_dir():
        raise DataError(f"--reconstructed {reconstructed}: no such folder; give a folder of <study_id>.png")
    sidecars = [p for p in sorted(folder.glob("*.json")) if p.with_suffix(".png").is_file()]
    if not sidecars:
        raise DataError(f"--synthesized {folder}: no <id>.png with an <id>.json sidecar in it; give the --out folder "
                        "of 'mrg synthesize'")
    studies = {s.id: s for s in dataset.studies} if dataset is not None else {}
    rows, sampling = [], {}
    for path in sidecars[:limit]:
        side = read_json(path)
        if not isinstance(side, dict) or "prompt" not in side:
            raise DataError(f"{path}: not a 'mrg synthesize' sidecar (a JSON object with id and prompt)")
        sampling = sampling or dict(side.get("sampling") or {})
        study_id = side.get("study_id")
        study = studies.get(study_id) if study_id is not None else None
        real = dataset.image_path(study.image_paths[0]) if study is not None and study.image_paths else None
        recon = Path(reconstructed) / f"{study_id}.png" if reconstructed is not None and study_id is not None else None
        rows.append(SynthesisRow(str(side.get("id", path.stem)), str(side["prompt"]), side.get("seed"), study_id,
                                 {"real": real, "reconstructed": recon if recon is not None and recon.is_file() else None,
                                  "synthesized": path.with_suffix(".png")}))
    return SynthesisInputs(folder, rows, len(sidecars), Path(reconstructed) if reconstructed else None, sampling)


def attach_synthesis_thumbnails(found: SynthesisInputs, size: int) -> int:
    """Thumbnails of every row's images; returns how many are missing."""
    from mrg.viewer.studies import thumbnail_data_uri

    missing = 0
    for row in found.rows:
        for column in COLUMNS:
            if column == "reconstructed" and found.reconstructed is None:
                continue
            path, uri = row.images.get(column), None
            if path is not None:
                try:
                    uri = thumbnail_data_uri(path, size)
                except (OSError, DataError, ValueError):
                    uri = None
            missing += uri is None
            row.thumbnails[column] = uri
    return missing


def synthesis_section(found: SynthesisInputs, index: int, thumbnail_size: int) -> str:
    """The section of one synthesized folder: a row per image, real | reconstructed | synthesized | prompt."""
    columns = [c for c in COLUMNS if c != "reconstructed" or found.reconstructed is not None]
    body = []
    for row in found.rows:
        cells = []
        for column in columns:
            uri = row.thumbnails.get(column)
            # width fixed so a 64 px synthesized image and a 128 px real one show at the same size
            cells.append(f'<td class="img"><img src="{escape(uri)}" alt="{column} image of {escape(row.id)}" '
                         f'loading="lazy"></td>' if uri else
                         '<td class="img"><span class="noimg" role="img" aria-label="image missing">missing</span></td>')
        study = escape(row.study_id) if row.study_id is not None else "–"
        body.append(f'<tr><th scope="row">{escape(row.id)}</th><td>{study}</td>{"".join(cells)}'
                    f'<td>{escape(str(row.seed))}</td><td class="report">{escape(row.prompt)}</td></tr>')
    head = "".join(f'<th scope="col">{h}</th>' for h in ("id", "study", *columns, "seed", "prompt (report)"))
    sampling = ", ".join(f"{k} {v}" for k, v in found.sampling.items())
    shown = f"the first {len(found.rows)} of {found.total}" if found.total > len(found.rows) else f"{found.total}"
    meta = (f'<p class="meta">{shown} images of {escape(str(found.folder))}'
            + (f"; sampling: {escape(sampling)}" if sampling else "")
            + ("; reconstructed: the real image through the image tokenizer and back"
               if found.reconstructed is not None else "") + "</p>")
    return (f'<section class="synthesis" id="synthesis-{index}" aria-labelledby="synthesis-{index}-h">'
            f'<h2 id="synthesis-{index}-h">Synthesized images</h2>{meta}<div class="scroll"><table class="studies '
            f'synthesis" style="--thumb: {thumbnail_size}px"><caption>Each prompt report drawn as an image beside '
            f'its study\'s real image</caption><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'</div></section>')
