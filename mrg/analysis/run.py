"""``mrg analyze`` as ``setup(config) -> run()``: load the checkpoint's model and studies, analyse, write the folder.

The output folder holds ``analysis.json`` (one section per analysis kind; running the other kind into the same
folder adds its section and keeps the first) and the PNG figures each section lists. ``mrg report`` shows a folder
holding an ``analysis.json`` as an Analysis section.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrg.errors import ConfigError, DataError
from mrg.files import read_json, write_json_atomic
from mrg.provenance import provenance, utc_now
from mrg.runs import ANALYSIS_FORMAT, ANALYSIS_NAME

KINDS = ("prompts", "attention")
EAGER_NOTE = ("attention weights from eager attention: the LLM was loaded with attn_implementation=eager because "
              "SDPA and flash attention do not return their weights (the softmax is the same)")


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``mrg analyze`` was asked to do."""

    kind: str
    checkpoint: Path
    out: Path
    split: str = "test"
    data: Path | None = None
    limit: int = 50
    """Studies analysed: the first ``limit`` of the split (0: all)."""
    maps: int = 4
    """Heat maps drawn (attention): the first ``maps`` studies unless ``studies`` names them."""
    studies: tuple[str, ...] = ()
    top_k: int = 5
    overrides: tuple[str, ...] = ()


@dataclass
class AnalysisResult:
    """What ``AnalysisRecipe.run`` wrote."""

    path: Path
    figures: list[Path]
    num_studies: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


class AnalysisRecipe:
    """``setup(config)`` loads and checks everything; ``run()`` analyses and writes."""

    def __init__(self, config: AnalysisConfig, inputs: Any) -> None:
        self.config = config
        self.inputs = inputs

    @classmethod
    def setup(cls, config: AnalysisConfig) -> AnalysisRecipe:
        """Check the options and rebuild the model.

        Raises:
            ConfigError: an unknown kind, a bad number, unknown study ids, a method without soft tokens.
            CheckpointError, DataError: as ``mrg generate``.
        """
        from mrg.analysis.inputs import load_inputs

        if config.kind not in KINDS:
            raise ConfigError(f"mrg analyze {config.kind}: not an analysis; use {' or '.join(KINDS)}")
        if config.maps < 0 or config.top_k < 1:
            raise ConfigError(f"--maps must be at least 0 and --top-k at least 1 (got {config.maps}, {config.top_k})")
        out = Path(config.out)
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out}: is a file; give a folder for analysis.json and the PNG figures")
        _existing(out / ANALYSIS_NAME)  # another tool's file there is refused before any work
        inputs = load_inputs(config.checkpoint, split=config.split, data_root=config.data, limit=config.limit,
                             eager_attention=config.kind == "attention", overrides=config.overrides)
        if config.studies:
            known = [item["id"] for item in (inputs.dataset[i] for i in range(len(inputs.dataset)))]
            missing = [s for s in config.studies if s not in known]
            if missing:
                raise ConfigError(f"--study {missing[0]}: not among the {len(known)} analysed studies of the {config.split} "
                                  f"split (the first --limit {config.limit}); e.g. {', '.join(known[:3])}")
        return cls(config, inputs)

    def _map_ids(self) -> list[str]:
        if self.config.studies:
            return list(self.config.studies)
        count = min(self.config.maps, len(self.inputs.dataset))
        return [self.inputs.dataset[i]["id"] for i in range(count)]

    def run(self) -> AnalysisResult:
        """Analyse and write ``analysis.json`` (merged with another kind's section already there) and the figures."""
        started = time.perf_counter()
        out = Path(self.config.out)
        out.mkdir(parents=True, exist_ok=True)
        if self.config.kind == "prompts":
            from mrg.analysis.prompts import analyze_prompts

            section, figures = analyze_prompts(self.inputs, out, top_k=self.config.top_k)
        else:
            from mrg.analysis.attention import analyze_attention

            section, figures = analyze_attention(self.inputs, out, map_ids=self._map_ids())
            section["implementation"] = self.inputs.attention_implementation
            section["implementation_note"] = EAGER_NOTE
        seconds = time.perf_counter() - started
        section.update(inputs=self.inputs.record(), figures=figures, seconds=round(seconds, 3), created=utc_now())
        path = out / ANALYSIS_NAME
        record = _existing(path)
        record.update(format=ANALYSIS_FORMAT, version=1, provenance=provenance())
        record.setdefault("analyses", {})[self.config.kind] = section
        write_json_atomic(path, record)
        return AnalysisResult(path, [out / f["file"] for f in figures], len(self.inputs.dataset), seconds,
                              _headline(self.config.kind, section))


def _existing(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != ANALYSIS_FORMAT:
        raise DataError(f"{path}: not an mrg analysis file; choose another --out folder")
    return record


def _headline(kind: str, section: dict[str, Any]) -> dict[str, Any]:
    if kind == "attention":
        return {f"mass on {g}": round(v, 4) for g, v in section["overall"].items()}
    return {f"{name} effective rank": round(g["spectrum"]["effective_rank"], 2) for name, g in section["groups"].items()}


def analyze(kind: str, checkpoint: str | os.PathLike[str], *, out: str | os.PathLike[str], split: str = "test",
            data: str | os.PathLike[str] | None = None, limit: int = 50, maps: int = 4, studies: Sequence[str] = (),
            top_k: int = 5, overrides: Sequence[str] = ()) -> AnalysisResult:
    """``mrg analyze KIND``: ``AnalysisRecipe.setup(AnalysisConfig(...)).run()``."""
    config = AnalysisConfig(kind, Path(checkpoint), Path(out), split, Path(data) if data is not None else None, limit,
                            maps, tuple(studies), top_k, tuple(overrides))
    return AnalysisRecipe.setup(config).run()
