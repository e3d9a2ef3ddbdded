"""The Synthesized images section of ``mrg report``: each synthesized image beside its study's real image and
reconstruction, from a ``mrg synthesize`` folder; one-line errors for a wrong folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrg.errors import DataError
from mrg.viewer import build_report


def _synthesized(folder: Path, ids: list[tuple[str, str | None]], prompt: str = "Cardiomegaly <b>big</b>.") -> Path:
    folder.mkdir(parents=True)
    for seed, (image_id, study_id) in enumerate(ids):
        Image.fromarray(np.full((16, 16), 40 + seed, dtype=np.uint8), mode="L").save(folder / f"{image_id}.png")
        (folder / f"{image_id}.json").write_text(json.dumps({"id": image_id, "prompt": prompt, "seed": seed,
                                                             "study_id": study_id, "sampling": {"top_k": 32}}))
    return folder


def test_synthesized_folder_gets_a_section_with_real_reconstructed_and_synthesized(tmp_path: Path, eval_dir: Path,
                                                                                     dataset_dir: Path) -> None:
    synthesized = _synthesized(tmp_path / "synth", [("s1", "CXR0001"), ("s2", "CXR0002"), ("s3", "unknown-study")])
    recon = tmp_path / "recon"
    recon.mkdir()
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8), mode="L").save(recon / "CXR0001.png")
    (synthesized / "notes.json").write_text("{}")  # a JSON file without an image beside it is not a sidecar
    result = build_report([eval_dir], tmp_path / "page.html", data=dataset_dir, synthesized=synthesized,
                          reconstructed=recon, images=True)
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    section = page[page.index('<section class="synthesis"'):]
    section = section[: section.index("</section>")]
    assert result.synthesized == 3 and 'href="#synthesis-1"' in page
    assert [h in section for h in ("<th scope=\"col\">real</th>", "reconstructed</th>", "synthesized</th>")] == [True] * 3
    # s1: all three images; s2: real + synthesized, no reconstruction; s3: only the synthesized image
    assert section.count("data:image/jpeg;base64") == 3 + 2 + 1
    assert section.count('aria-label="image missing"') == 1 + 2
    assert "Cardiomegaly &lt;b&gt;big&lt;/b&gt;." in section and "<b>big" not in section  # the prompt is escaped
    assert "top_k 32" in section


def test_synthesized_without_reconstructions_has_no_such_column(tmp_path: Path, eval_dir: Path,
                                                                 dataset_dir: Path) -> None:
    synthesized = _synthesized(tmp_path / "synth", [("s1", "CXR0001")])
    build_report([eval_dir], tmp_path / "page.html", data=dataset_dir, synthesized=synthesized)
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "Synthesized images" in page and "reconstructed</th>" not in page


def test_wrong_synthesis_folders_are_refused(tmp_path: Path, eval_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no <id>.png with an <id>.json sidecar"):
        build_report([eval_dir], tmp_path / "a.html", synthesized=empty)
    with pytest.raises(DataError, match="--synthesized .*no such folder"):
        build_report([eval_dir], tmp_path / "a.html", synthesized=tmp_path / "missing")
    with pytest.raises(DataError, match="--reconstructed .*needs --synthesized"):
        build_report([eval_dir], tmp_path / "a.html", reconstructed=empty)
    assert not (tmp_path / "a.html").exists()


def test_report_cli_takes_synthesized_and_reconstructed(run_cli, tmp_path: Path, eval_dir: Path,
                                                        dataset_dir: Path) -> None:
    synthesized = _synthesized(tmp_path / "synth", [("s1", "CXR0001")])
    result = run_cli("report", eval_dir, "--data", dataset_dir, "--synthesized", synthesized, "-o", tmp_path / "p.html")
    assert result.exit_code == 0 and "1 synthesized image" in result.stdout
    bad = run_cli("report", eval_dir, "--reconstructed", synthesized, "-o", tmp_path / "q.html")
    assert bad.exit_code == 1 and "--reconstructed" in bad.output and "Traceback" not in bad.output
