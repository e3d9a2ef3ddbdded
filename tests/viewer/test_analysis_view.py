"""The Analysis section of ``mrg report``: an ``mrg analyze`` folder is found, its numbers and figures shown inline."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from mrg.analysis import png
from mrg.errors import DataError
from mrg.viewer import build_report, discover


def _analysis_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    png.matrix(root / "attention-heads-visual.png", "mass", np.arange(6.0).reshape(2, 3), row_label="layer", col_label="head")
    record = {"format": "mrg-analysis", "version": 1, "analyses": {
        "attention": {"overall": {"instruction": 0.5, "visual": 0.3, "prompt": 0.15, "generated": 0.05},
                      "generated_tokens": 12, "decoding": "greedy", "implementation_note": "eager attention note",
                      "by_token": [{"token": "heart", "count": 3, "visual": 0.41, "prompt": 0.1, "instruction": 0.4,
                                    "generated": 0.09}],
                      "inputs": {"method": "mrg-llm", "stage": "train", "split": "test", "num_studies": 4},
                      "figures": [{"file": "attention-heads-visual.png", "title": "Heads on visual tokens"},
                                  {"file": "gone.png", "title": "missing"}]},
        "prompts": {"groups": {"prompt": {"nearest": {"tokens": 8, "top1_cosine": {"median": 0.21},
                                                      "mean_prompt": [{"index": 0, "nearest": [{"token": "lung", "cosine": 0.3}]}]},
                                          "similarity_vs_labels": {"pearson": None, "note": "the tokens are the same"},
                                          "spectrum": {"effective_rank": 2.5, "max_rank": 7}}},
                    "mixing": {"book_size": 4, "argmax_usage": [1, 3, 0, 0], "normalised_entropy_mean": 0.9},
                    "inputs": {"method": "mrg-llm"}, "figures": []}}}
    (root / "analysis.json").write_text(json.dumps(record), encoding="utf-8")
    return root


def test_analysis_folder_becomes_a_section_with_inline_figures(tmp_path: Path) -> None:
    folder = _analysis_folder(tmp_path / "runs" / "analysis")
    found = discover([tmp_path / "runs"])  # found one level down, as evaluations are
    assert [a.name for a in found.analyses] == [str(folder)] and list(found.analyses[0].figures) == ["attention-heads-visual.png"]
    result = build_report([tmp_path / "runs"], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result.analyses == 1 and '<section id="analysis-1">' in page and 'href="#analysis-1"' in page
    encoded = base64.b64encode((folder / "attention-heads-visual.png").read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{encoded}"' in page  # the PNG itself, inline
    assert "<code>heart</code>" in page and "eager attention note" in page and "the tokens are the same" in page
    assert "<code>lung</code>" in page and "1, 3, 0, 0" in page
    assert any("gone.png: figure missing" in n for n in result.notes)


def test_a_damaged_analysis_record_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "analysis.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(DataError, match=r"analysis.json: not an 'mrg analyze' record"):
        build_report([tmp_path / "a"], tmp_path / "r.html")
