"""``mrg synthesize``: report -> image tokens (seeded sampling) -> the VQ decoder -> PNG + JSON sidecar.

Prompts come from ``--text``, a ``--reports`` file (``.jsonl``: one ``{"report": ..., "id"?: ..., "study_id"?: ...}``
per line; any other file: one report per non-empty line) or a dataset split (``--data DIR --split S``: each
study's report, with its ``study_id``). Image ``i`` (0-based, in prompt order) is sampled from its own generator
seeded ``seed + i``, so its pixels do not depend on the batch size. Each image is ``OUT/<id>.png`` (8-bit
grayscale) with ``OUT/<id>.json``: ``id``, ``prompt``, ``seed``, ``study_id`` (null unless the prompt came from a
dataset study), ``model_prompt`` (the prompt cleaned as the checkpoint's training reports were: ``prompt_cleaning``),
``checkpoint``, ``sampling`` and ``config`` (the tokenizer's grid and codebook, the prompt cleaning).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrg.errors import ConfigError, DataError


@dataclass(frozen=True)
class Prompt:
    id: str
    report: str
    study_id: str | None = None


def prompt_cleaning(step_dir: Path) -> str:
    """How the checkpoint's training reports were cleaned (``meta.json``'s ``report_cleaning``; for an older
    checkpoint, ``data.normalize`` resolved against its prepared dataset when that is still there).

    A prompt is cleaned the same way before it is tokenized: the model never saw, e.g., the capitals and
    punctuation of a raw report that its ``r2gen-iu``-cleaned training text lacked.
    """
    from mrg.checkpoint import load_checkpoint_config, load_meta
    from mrg.data.prepared import load_prepared_dataset
    from mrg.data.text import resolve_cleaning
    from mrg.errors import MrgError

    recorded = load_meta(step_dir).get("report_cleaning")
    if recorded:
        return str(recorded)
    data = load_checkpoint_config(step_dir).data
    try:
        dataset_mode = load_prepared_dataset(data.root).normalize
    except MrgError:
        dataset_mode = None
    return resolve_cleaning(data.normalize, dataset_mode)


def load_synthesis_model(checkpoint: str | Path) -> tuple[Any, Path]:
    """The ``mavilt`` model of a run or step folder, weights loaded, in eval mode, and its step folder.

    Raises:
        ConfigError: the checkpoint is not a ``mavilt`` run.
    """
    from mrg.checkpoint import load_checkpoint_config, load_meta, resolve_checkpoint
    from mrg.generate import checkpoint_model

    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    cfg = load_checkpoint_config(step_dir)
    if cfg.model.method != "mavilt":
        raise ConfigError(f"{step_dir}: a checkpoint of method {cfg.model.method}; 'mrg synthesize' needs a mavilt run "
                          "('mrg train --config mavilt-demo method.vq=VQ_RUN --out RUN')")
    model, _, _ = checkpoint_model(step_dir, cfg, load_meta(step_dir))
    return model.eval(), step_dir


def read_prompts(text: str | None = None, reports: Path | None = None, data: Path | None = None,
                 split: str = "test", limit: int | None = None) -> list[Prompt]:
    """The prompts of exactly one source (see the module docstring).

    Raises:
        ConfigError: none or several sources; DataError: an unreadable or empty file.
    """
    given = [name for name, v in (("--text", text), ("--reports", reports), ("--data", data)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of --text, --reports, --data (got {', '.join(given) or 'none'})")
    prompts: list[Prompt]
    if text is not None:
        prompts = [Prompt("text-000", text)]
    elif reports is not None:
        if not reports.is_file():
            raise DataError(f"--reports {reports}: no such file")
        lines = [line for line in reports.read_text(encoding="utf-8").splitlines() if line.strip()]
        if reports.suffix == ".jsonl":
            prompts = []
            for n, line in enumerate(lines):
                try:
                    row = json.loads(line)
                    prompts.append(Prompt(str(row.get("id", f"report-{n:03d}")), str(row["report"]), row.get("study_id")))
                except (json.JSONDecodeError, KeyError, AttributeError):
                    raise DataError(f"--reports {reports}: line {n + 1} is not a JSON object with a 'report'") from None
        else:
            prompts = [Prompt(f"report-{n:03d}", line.strip()) for n, line in enumerate(lines)]
    else:
        from mrg.data.prepared import load_prepared_dataset

        prepared = load_prepared_dataset(data)
        studies = [s for s in prepared.studies if s.split == split]
        prompts = [Prompt(s.id, s.report, s.id) for s in studies]
    prompts = prompts[:limit] if limit is not None else prompts
    if not prompts:
        raise DataError("no prompts to synthesize from (empty file or split)")
    return prompts


def _safe_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def synthesize(checkpoint: str | Path, prompts: list[Prompt], out_dir: str | Path, *, seed: int = 0,
               batch_size: int = 8, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               cfg_scale: float = 1.0) -> list[dict[str, Any]]:
    """Sample one image per prompt and write ``OUT/<id>.png`` and ``OUT/<id>.json``; returns the sidecars."""
    import numpy as np
    from PIL import Image

    from mrg.analysis.png import save_png
    from mrg.data.text import normalize_report
    from mrg.files import write_json_atomic
    from mrg.model.mavilt_model import SamplingSettings

    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1 or batch_size < 1:
        raise ConfigError("sampling needs --temperature >= 0, --top-k >= 0, 0 < --top-p <= 1 and --batch-size >= 1")
    settings = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
    model, step_dir = load_synthesis_model(checkpoint)
    cleaning = prompt_cleaning(step_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vq = model.encoder.vq
    config = {"grid": [model.grid, model.grid], "codebook_size": model.num_codes, "image_size": vq.cfg.image_size,
              "vq": str(model_vq_path(step_dir)), "prompt_cleaning": cleaning}
    rows = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seeds = [seed + start + i for i in range(len(chunk))]
        cleaned = [normalize_report(p.report, cleaning) for p in chunk]
        codes = model.sample_image_tokens(cleaned, seeds, settings)  # (B, h, w)
        images = vq.decode(codes.to(next(vq.parameters()).device))  # (B, 1, H, W) in [0, 1]
        for p, text, s, image in zip(chunk, cleaned, seeds, images, strict=True):
            name = _safe_id(p.id)
            pixels = (image[0].float().cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
            save_png(Image.fromarray(pixels, mode="L"), out / f"{name}.png")
            row = {"id": name, "prompt": p.report, "model_prompt": text, "seed": s, "study_id": p.study_id, "checkpoint": str(step_dir),
                   "sampling": dataclasses.asdict(settings), "config": config}
            write_json_atomic(out / f"{name}.json", row)
            rows.append(row)
    return rows


def model_vq_path(step_dir: Path) -> str:
    from mrg.checkpoint import load_checkpoint_config

    return getattr(load_checkpoint_config(step_dir).method, "vq", "")
