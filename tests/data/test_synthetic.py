"""The synthetic dataset: determinism, labels that follow CheXpert semantics, reports that match the findings,
and images whose pixels show the findings (measured on the arrays, with counterfactual renders of one case)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrg.data.chexpert import OBSERVATIONS
from mrg.data.images import load_image
from mrg.data.prepared import MARKER_NAME, STAMP_NAME, load_prepared_dataset
from mrg.data.sources import synthetic
from mrg.data.sources.synthetic import (
    SyntheticCase,
    compose_report,
    findings_in_words,
    generate_studies,
    prepare_synthetic,
    render_frontal,
    render_lateral,
    sample_cases,
    split_counts,
)
from mrg.errors import ConfigError, OutputDirError

SIZE = 128
HEDGE_CUES = ("possible", "cannot exclude", "cannot be excluded", "may represent", "questionable")
KIND_TO_OBSERVATION = {"cardiomegaly": "Cardiomegaly", "pleural_effusion": "Pleural Effusion",
                       "pneumothorax": "Pneumothorax", "lung_lesion": "Lung Lesion", "consolidation": "Consolidation",
                       "lung_opacity": "Lung Opacity"}


@pytest.fixture(scope="module")
def cases() -> list[SyntheticCase]:
    return sample_cases(700, 7)


@pytest.fixture(scope="module")
def studies():
    return generate_studies(500, 11)


def _without(case: SyntheticCase, kind: str) -> SyntheticCase:
    twin = copy.deepcopy(case)
    twin.findings = [f for f in twin.findings if f["kind"] != kind]
    return twin


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != STAMP_NAME}


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = prepare_synthetic(tmp_path / "a", n=20, seed=3)
    prepare_synthetic(tmp_path / "b", n=20, seed=3)
    prepare_synthetic(tmp_path / "c", n=20, seed=4)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b  # studies.jsonl, annotation.json and every PNG, byte for byte
    assert len([k for k in a if k.endswith(".png")]) == 40
    assert a["studies.jsonl"] != c["studies.jsonl"]
    differing = [k for k in a if k.endswith(".png") and a[k] != c.get(k)]
    assert len(differing) == 40
    assert first["images"]["sha256"] == json.loads((tmp_path / "b" / STAMP_NAME).read_text())["images"]["sha256"]


def test_a_study_depends_only_on_seed_and_index() -> None:
    small, large = sample_cases(10, 5), sample_cases(30, 5)
    assert [c.to_extra() for c in small] == [c.to_extra() for c in large[:10]]
    assert [compose_report(c, 5) for c in small] == [compose_report(c, 5) for c in large[:10]]
    # rendering a study alone or inside any batch gives the same pixels
    for render in (render_frontal, render_lateral):
        batch = render(large, 64, 5)
        for i in range(len(large)):
            assert np.array_equal(batch[i], render(large[i : i + 1], 64, 5)[0]), (render.__name__, i)


def _digest(root: Path, suffixes: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != STAMP_NAME and path.name.endswith(suffixes):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# sha256 of a small easy set, computed with the generator as it was before --difficulty existed (commit 3a32d29,
# numpy 2.4.6, CPython 3.11, x86-64) by prepare_synthetic(out, n=16, seed=3, image_size=64) and _digest above:
# the hard set must not change a byte of the easy one.
_EASY_TEXT_SHA256 = "abeeaa884f6fe56960076f28d5842481111d172dd3803afb589403ff2a80eb75"  # annotation.json, studies.jsonl
_EASY_PNG_SHA256 = "7dba491ac18276423de1170cc3cd25b73a8689fd23afda1947a9fa508a284e74"  # the 32 PNGs
_EASY_PINNED_NUMPY = "2.4"


def test_easy_set_is_byte_identical_to_the_generator_before_difficulty(tmp_path: Path) -> None:
    record = prepare_synthetic(tmp_path / "ds", n=16, seed=3, image_size=64)
    assert record["source"]["difficulty"] == "easy" and record["protocol"]["difficulty"] == "easy"
    assert _digest(tmp_path / "ds", (".json", ".jsonl")) == _EASY_TEXT_SHA256
    if not np.__version__.startswith(_EASY_PINNED_NUMPY + "."):
        pytest.skip(f"pixel digest pinned with numpy {_EASY_PINNED_NUMPY}; float32 maths may differ in numpy {np.__version__}")
    assert _digest(tmp_path / "ds", (".png",)) == _EASY_PNG_SHA256


def test_easy_folder_prepared_before_difficulty_existed_is_still_accepted(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_synthetic(out, n=8, seed=1, image_size=48)
    stamp = json.loads((out / STAMP_NAME).read_text())
    del stamp["source"]["difficulty"]  # what the generator wrote before --difficulty existed
    (out / STAMP_NAME).write_text(json.dumps(stamp))
    assert prepare_synthetic(out, n=8, seed=1, image_size=48)["skipped"] is True
    with pytest.raises(OutputDirError, match="difficulty: None here vs 'hard' now"):
        prepare_synthetic(out, n=8, seed=1, image_size=48, difficulty="hard")


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    prepare_synthetic(tmp_path / "one", n=24, seed=2, image_size=64, workers=1)
    prepare_synthetic(tmp_path / "two", n=24, seed=2, image_size=64, workers=2)
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


# -------------------------------------------------------------------------------------- the output folder


def test_output_format_matches_the_real_datasets(tmp_path: Path) -> None:
    record = prepare_synthetic(tmp_path / "ds", n=30, seed=1)
    assert record["skipped"] is False
    assert record["source"]["kind"] == "synthetic" and record["source"]["n"] == 30
    assert record["protocol"]["name"] == "synthetic" and record["normalize"] == "r2gen-iu"
    assert record["counts"] == {"train": 21, "val": 3, "test": 6}
    assert record["labels"] == ["synthetic-truth"]
    assert record["num_images"] == 60
    ds = load_prepared_dataset(tmp_path / "ds")
    study = ds.studies[0]
    assert study.image_paths == [f"images/{study.id}/0.png", f"images/{study.id}/1.png"]
    assert set(study.sections) == {"findings", "impression"} and study.sections["findings"] == study.report
    assert study.labels_source == "synthetic-truth" and study.extra["findings"] is not None
    with Image.open(ds.image_path(study.image_paths[0])) as image:
        assert image.mode == "L" and image.size == (SIZE, SIZE)
    annotation = json.loads((tmp_path / "ds" / "annotation.json").read_text())
    assert [len(annotation[s]) for s in ("train", "val", "test")] == [21, 3, 6]
    entry = annotation["train"][0]
    assert set(entry) == {"id", "report", "image_path", "split"} and entry["image_path"][0].endswith("/0.png")
    label_counts = record["protocol"]["label_counts"]
    assert sum(v["positive"] for s in label_counts.values() for k, v in s.items() if k == "No Finding") == sum(
        1 for s in ds.studies if s.labels.get("No Finding") == 1.0)


def test_png_files_hold_exactly_the_rendered_pixels(tmp_path: Path) -> None:
    prepare_synthetic(tmp_path / "ds", n=9, seed=8, image_size=80)
    cases = sample_cases(9, 8)
    frontal, lateral = render_frontal(cases, 80, 8), render_lateral(cases, 80, 8)
    for case, front, side in zip(cases, frontal, lateral, strict=True):
        for view, expected in ((0, front), (1, side)):
            decoded = np.asarray(load_image(tmp_path / "ds" / "images" / case.id / f"{view}.png"))
            assert decoded.dtype == np.uint8 and np.array_equal(decoded, expected)


def test_one_view_and_other_sizes(tmp_path: Path) -> None:
    prepare_synthetic(tmp_path / "ds", n=5, seed=1, views=1, image_size=96)
    ds = load_prepared_dataset(tmp_path / "ds")
    assert all(len(s.image_paths) == 1 for s in ds.studies)
    assert not list((tmp_path / "ds" / "images").rglob("1.png"))
    with Image.open(ds.image_path(ds.studies[0].image_paths[0])) as image:
        assert image.size == (96, 96)


def test_rerun_skips_and_force_redoes(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_synthetic(out, n=8, seed=1, image_size=64)
    png = out / "images" / "synth-000000" / "0.png"
    before = png.stat().st_mtime_ns
    again = prepare_synthetic(out, n=8, seed=1, image_size=64)
    assert again["skipped"] is True and png.stat().st_mtime_ns == before
    redone = prepare_synthetic(out, n=8, seed=1, image_size=64, force=True)
    assert redone["skipped"] is False and png.stat().st_mtime_ns != before
    with pytest.raises(OutputDirError, match="seed: 1 here vs 2 now"):
        prepare_synthetic(out, n=8, seed=2, image_size=64)


def test_interrupted_run_leaves_no_stamp_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    real = synthetic._render_chunk
    calls = []

    def flaky(*args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic, "_render_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_synthetic(out, n=20, seed=6, image_size=64, workers=1)
    assert not (out / STAMP_NAME).exists() and (out / MARKER_NAME).exists()
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(synthetic, "_render_chunk", real)
    record = prepare_synthetic(out, n=20, seed=6, image_size=64, workers=1)
    assert record["skipped"] is False and (out / STAMP_NAME).is_file()
    prepare_synthetic(tmp_path / "clean", n=20, seed=6, image_size=64, workers=1)
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "clean")


def test_split_counts() -> None:
    assert split_counts(2000, (0.7, 0.1, 0.2)) == {"train": 1400, "val": 200, "test": 400}
    assert split_counts(2955, (0.7, 0.1, 0.2)) == {"train": 2069, "val": 296, "test": 590}  # R2Gen's IU X-ray sizes
    assert split_counts(7, (0.5, 0.0, 0.5)) == {"train": 4, "val": 0, "test": 3}
    splits = Counter(s.split for s in generate_studies(100, 2, split=(0.6, 0.2, 0.2)))
    assert splits == {"train": 60, "val": 20, "test": 20}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n": 0}, "--n 0"),
        ({"seed": -1}, "--seed -1"),
        ({"image_size": 16}, "--image-size 16"),
        ({"views": 3}, "--views 3"),
        ({"split": (0.5, 0.5)}, "--split 0.5,0.5"),
        ({"split": (0.8, 0.3, -0.1)}, "--split 0.8,0.3,-0.1"),
        ({"normal_fraction": 1.5}, "--normal-fraction 1.5"),
        ({"workers": 0}, "--workers 0"),
        ({"difficulty": "medium"}, "--difficulty medium"),
    ],
)
def test_bad_options_raise_before_writing(tmp_path: Path, options: dict, match: str) -> None:
    kwargs = {"n": 10, "seed": 0, **options}
    with pytest.raises(ConfigError, match=re.escape(match)):
        prepare_synthetic(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------ labels and reports


def test_labels_follow_chexpert_semantics(studies) -> None:
    device_only = 0
    for study in studies:
        labels = study.labels
        assert labels and set(labels) <= set(OBSERVATIONS) and set(labels.values()) <= {1.0, 0.0, -1.0}
        assert list(labels) == [o for o in OBSERVATIONS if o in labels]  # CheXpert order
        found = any(v in (1.0, -1.0) for o, v in labels.items() if o not in ("No Finding", "Support Devices"))
        # No Finding: 1.0 exactly when nothing abnormal is reported, otherwise blank (never 0 or -1)
        assert labels.get("No Finding") == (None if found else 1.0)
        if not found and labels.get("Support Devices") == 1.0:
            device_only += 1
    assert device_only > 0  # support devices do not block No Finding


def test_labels_are_the_truth_of_the_image(studies) -> None:
    for study in studies:
        labels, extra = study.labels, study.extra
        kinds = {f["kind"] for f in extra["findings"]}
        for finding in extra["findings"]:
            expected = -1.0 if finding["hedged"] else 1.0
            assert labels[KIND_TO_OBSERVATION[finding["kind"]]] == expected, (study.id, study.report)
            if finding["kind"] == "consolidation":
                assert labels["Lung Opacity"] == 1.0
        assert (labels.get("Support Devices") == 1.0) == bool(extra["devices"])
        for obs, kind in ((o, k) for k, o in KIND_TO_OBSERVATION.items()):
            if labels.get(obs) == 0.0:  # a negation never denies something the image shows
                assert kind not in kinds and not (obs == "Lung Opacity" and "consolidation" in kinds), study.report
        assert labels.get("Cardiomegaly") != 1.0 or extra["patient"]["ctr"] > 0.55


def test_report_words_match_the_image(studies) -> None:
    for study in studies:
        text = study.report.lower()
        for f in study.extra["findings"]:
            if f["hedged"]:
                assert any(cue in text for cue in HEDGE_CUES), study.report
            if f["kind"] == "pleural_effusion" and not f["hedged"]:
                assert f["size"] in text and f["side"] in text
            elif f["kind"] == "pneumothorax":
                assert f["side"] in text and ("tiny" if f["hedged"] else f["size"]) in text
            elif f["kind"] == "cardiomegaly" and not f["hedged"]:
                words = {"mild": ("mild",), "moderate": ("moderate",), "severe": ("marked", "severe")}[f["severity"]]
                assert any(w in text for w in words), study.report
            elif f["kind"] == "consolidation":
                assert "consolidat" in text and ("opacity" in text or "airspace disease" in text)
                assert (f["site"] if f["site"] != "lingula" else "lingula") in text
            elif f["kind"] == "lung_lesion":
                assert ("nodule" in text or "mass" in text) and (f["side"] in text or f["type"] == "multiple")
        if not study.extra["findings"]:  # a normal report only mentions findings to deny them
            assert not any(cue in text for cue in HEDGE_CUES + ("enlarged",)), study.report
            for sentence in re.split(r"(?<=\.) ", text):
                if re.search(r"effusion|pneumothorax|consolidat|opacity|airspace|nodule|edema", sentence):
                    assert re.search(r"\b(no|negative for|without)\b", sentence), sentence
        assert study.sections["impression"].strip()


def test_reports_vary(studies) -> None:
    reports = [s.report for s in studies]
    assert len(set(reports)) >= 0.9 * len(reports)
    normal = [s.report for s in studies if not s.extra["findings"]]
    assert len(set(normal)) >= 0.7 * len(normal)
    heart_openings = {s.report.split(".")[0] for s in studies if s.report.lower().startswith(("the heart", "heart", "normal heart"))}
    assert len(heart_openings) >= 4
    assert any(re.search(r"(^|\s)1\. .* 2\. ", r) for r in reports)  # numbered lists
    assert any("XXXX" in r for r in reports)  # IU-style de-identification tokens
    assert any(s.report.lower().startswith(("no ", "there is no", "negative for")) or
               re.search(r"\. (No|There is no|Negative for) ", s.report) for s in studies)
    # sentence order varies: the heart sentence is not always first when the heart is normal
    positions = Counter(next((i for i, t in enumerate(r.split(". ")) if "heart" in t.lower()), None) for r in normal)
    assert len([p for p in positions if p is not None]) >= 2


def test_findings_in_words(studies) -> None:
    normal = next(s for s in studies if not s.extra["findings"] and not s.extra["devices"])
    assert findings_in_words(normal) == ["normal"]
    effusion = next(s for s in studies if any(f["kind"] == "pleural_effusion" and f["side"] == "left" and not f["hedged"]
                                              for f in s.extra["findings"]))
    size = next(f["size"] for f in effusion.extra["findings"] if f["kind"] == "pleural_effusion")
    assert f"{size} left pleural effusion" in findings_in_words(effusion)
    assert findings_in_words(effusion.extra) == findings_in_words(effusion)
    devices = next(s for s in studies if s.extra["devices"])
    assert len(findings_in_words(devices)) >= len(devices.extra["devices"]) + 1


def test_prevalence_is_sensible_for_learning(studies) -> None:
    n = len(studies)
    positive = Counter(o for s in studies for o, v in s.labels.items() if v == 1.0)
    assert 0.28 * n <= positive["No Finding"] <= 0.42 * n
    for obs in ("Cardiomegaly", "Pleural Effusion", "Lung Opacity", "Consolidation", "Support Devices"):
        assert positive[obs] >= 0.1 * n, obs
    for obs in ("Pneumothorax", "Lung Lesion"):
        assert positive[obs] >= 0.03 * n, obs
    assert sum(1 for s in studies if len(s.extra["findings"]) >= 2) >= 0.1 * n  # findings co-occur


# ----------------------------------------------------------------------------------------- the pixels


def _heart_width(image: np.ndarray) -> float:
    """Median width of the bright central silhouette over the rows where the heart sits, as a fraction of the image."""
    size = image.shape[0]
    pixels = image.astype(float)
    widths = []
    for r in range(int(0.55 * size), int(0.75 * size)):
        row = pixels[r]
        lung = np.percentile(row[int(0.1 * size) : int(0.9 * size)], 15)
        threshold = (lung + np.median(row[int(0.45 * size) : int(0.6 * size)])) / 2
        centre = int(0.55 * size)
        if row[centre] < threshold:
            continue
        lo = hi = centre
        while lo > 0 and row[lo - 1] >= threshold:
            lo -= 1
        while hi < size - 1 and row[hi + 1] >= threshold:
            hi += 1
        widths.append(hi - lo + 1)
    return float(np.median(widths)) / size


def _only(case: SyntheticCase, kind: str) -> bool:
    return [f["kind"] for f in case.findings] == [kind] and not case.devices


def test_cardiomegaly_heart_is_wider(cases) -> None:
    normal = [c for c in cases if not c.findings and not c.devices][:20]
    big = [c for c in cases if _only(c, "cardiomegaly") and c.findings[0]["severity"] in ("moderate", "severe")][:12]
    assert len(normal) == 20 and len(big) >= 8
    normal_w = [_heart_width(img) for img in render_frontal(normal, SIZE, 7)]
    big_w = [_heart_width(img) for img in render_frontal(big, SIZE, 7)]
    assert np.mean(big_w) > np.mean(normal_w) + 0.08
    assert min(big_w) > np.median(normal_w)


def _region(image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    size = image.shape[0]
    return image[int(rows[0] * size) : int(rows[1] * size), int(cols[0] * size) : int(cols[1] * size)].astype(float)


# On a PA film the patient's left is on the image's right.
_IMAGE_COLS = {"left": (0.72, 0.95), "right": (0.05, 0.28)}
_OTHER = {"left": "right", "right": "left"}


def test_effusion_brightens_the_base_on_its_side_only(cases) -> None:
    chosen = [c for c in cases if (f := c.finding("pleural_effusion")) and f["side"] != "bilateral"
              and f["size"] in ("small", "moderate", "large")][:16]
    assert len(chosen) >= 10
    with_fluid = render_frontal(chosen, SIZE, 7)
    without = render_frontal([_without(c, "pleural_effusion") for c in chosen], SIZE, 7)
    for case, a, b in zip(chosen, with_fluid, without, strict=True):
        side = case.finding("pleural_effusion")["side"]
        gain = _region(a, (0.6, 0.9), _IMAGE_COLS[side]).mean() - _region(b, (0.6, 0.9), _IMAGE_COLS[side]).mean()
        assert gain > 2.0, (case.index, side, gain)  # grey levels, mean over the whole base region
        other = _region(a, (0.0, 1.0), (0.0, 0.45) if side == "left" else (0.55, 1.0)).astype(int)
        assert np.array_equal(other, _region(b, (0.0, 1.0), (0.0, 0.45) if side == "left" else (0.55, 1.0)))


def test_effusion_studies_have_brighter_bases(cases) -> None:
    """Across different patients (no counterfactual): the base on the effusion's side is brighter, relative to
    the mid lung of the same side (which cancels exposure), than the bases of normal studies."""
    chosen = [c for c in cases if (f := c.finding("pleural_effusion")) and f["side"] != "bilateral"
              and f["size"] in ("moderate", "large") and not c.finding("consolidation") and not c.finding("lung_opacity")]
    normal = [c for c in cases if not c.findings][:20]
    assert len(chosen) >= 10

    def base_contrast(image: np.ndarray, side: str) -> float:
        cols = _IMAGE_COLS[side]
        return _region(image, (0.62, 0.82), cols).mean() - _region(image, (0.35, 0.5), cols).mean()

    sick = [base_contrast(img, c.finding("pleural_effusion")["side"])
            for c, img in zip(chosen, render_frontal(chosen, SIZE, 7), strict=True)]
    healthy = [base_contrast(img, side) for img in render_frontal(normal, SIZE, 7) for side in ("left", "right")]
    assert np.mean(sick) > np.mean(healthy) + 15
    assert np.mean(np.asarray(sick) > np.median(healthy)) >= 0.9


def test_pneumothorax_darkens_the_apex_on_its_side_only(cases) -> None:
    chosen = [c for c in cases if (f := c.finding("pneumothorax")) and not f["hedged"]][:12]
    assert len(chosen) >= 8
    with_air = render_frontal(chosen, SIZE, 7)
    without = render_frontal([_without(c, "pneumothorax") for c in chosen], SIZE, 7)
    for case, a, b in zip(chosen, with_air, without, strict=True):
        side = case.finding("pneumothorax")["side"]
        cols = (0.6, 0.9) if side == "left" else (0.1, 0.4)
        change = _region(a, (0.1, 0.35), cols).mean() - _region(b, (0.1, 0.35), cols).mean()
        assert change < -3.0, (case.index, side, change)
        other = (0.0, 0.45) if side == "left" else (0.55, 1.0)
        assert np.array_equal(_region(a, (0.0, 1.0), other), _region(b, (0.0, 1.0), other))


def _to_pixel(case: SyntheticCase, x: float, y: float, size: int) -> tuple[float, float]:
    """Patient coordinates -> (row, column) of the frontal image."""
    p = case.patient
    theta = np.deg2rad(p["rotation_deg"])
    xi = p["scale"] * (np.cos(theta) * x - np.sin(theta) * y) + p["shift_x"]
    yi = p["scale"] * (np.sin(theta) * x + np.cos(theta) * y) + p["shift_y"]
    return (yi + 1) * size / 2 - 0.5, (xi + 1) * size / 2 - 0.5


def test_lesion_is_a_round_density_where_extra_says(cases) -> None:
    chosen = [c for c in cases if (f := c.finding("lung_lesion")) and f["type"] in ("nodule", "mass")][:10]
    assert len(chosen) >= 6
    diff = render_frontal(chosen, SIZE, 7).astype(int) - render_frontal(
        [_without(c, "lung_lesion") for c in chosen], SIZE, 7).astype(int)
    for case, d in zip(chosen, diff, strict=True):
        x, y, radius = case.finding("lung_lesion")["spots"][0][:3]
        row, col = _to_pixel(case, x, y, SIZE)
        peak = np.unravel_index(np.argmax(d), d.shape)
        assert abs(peak[0] - row) <= radius * SIZE / 2 + 2 and abs(peak[1] - col) <= radius * SIZE / 2 + 2
        assert d.max() >= 10 and d.min() >= 0


def test_airspace_disease_and_devices_show_on_the_right_side(cases) -> None:
    chosen = [c for c in cases if c.finding("consolidation") or c.finding("lung_opacity")][:12]
    for case in chosen:
        kind = "consolidation" if case.finding("consolidation") else "lung_opacity"
        finding = case.finding(kind)
        d = render_frontal([case], SIZE, 7)[0].astype(int) - render_frontal([_without(case, kind)], SIZE, 7)[0].astype(int)
        mass_left_image, mass_right_image = np.abs(d[:, : SIZE // 2]).sum(), np.abs(d[:, SIZE // 2 :]).sum()
        assert mass_left_image + mass_right_image > 200
        if finding["side"] == "right":
            assert mass_left_image > 0.9 * (mass_left_image + mass_right_image)
        elif finding["side"] == "left":
            assert mass_right_image > 0.9 * (mass_left_image + mass_right_image)
    consolidation = [c for c in cases if c.finding("consolidation")][:8]
    opacity = [c for c in cases if c.finding("lung_opacity")][:8]
    gain = {}
    for name, group, kind in (("consolidation", consolidation, "consolidation"), ("opacity", opacity, "lung_opacity")):
        d = render_frontal(group, SIZE, 7).astype(int) - render_frontal([_without(c, kind) for c in group], SIZE, 7).astype(int)
        gain[name] = np.mean([x[x > 2].mean() for x in d])
    assert gain["consolidation"] > gain["opacity"]  # consolidation is denser than a hazy opacity
    tubes = [c for c in cases if c.device("endotracheal_tube")][:4]
    bare = []
    for case in tubes:
        twin = copy.deepcopy(case)
        twin.devices = []
        bare.append(twin)
    d = render_frontal(tubes, SIZE, 7).astype(int) - render_frontal(bare, SIZE, 7).astype(int)
    for x in d:  # a radiopaque tube down the trachea, near the midline in the upper chest
        assert x[: SIZE // 3, SIZE // 3 : 2 * SIZE // 3].max() > 30


def test_lateral_view_shows_the_same_findings(cases) -> None:
    effusions = [c for c in cases if (f := c.finding("pleural_effusion")) and f["size"] in ("moderate", "large")][:6]
    d = render_lateral(effusions, SIZE, 7).astype(int) - render_lateral(
        [_without(c, "pleural_effusion") for c in effusions], SIZE, 7).astype(int)
    for x in d:  # fluid pools at the bases, deepest posteriorly (the right of a lateral film)
        lower = x[SIZE // 2 :]
        assert lower.sum() > 0.9 * np.abs(x).sum() > 0
        assert lower[:, SIZE // 2 :].sum() > lower[:, : SIZE // 2].sum()
    hearts = [c for c in cases if (f := c.finding("cardiomegaly")) and f["severity"] in ("moderate", "severe")][:4]
    shrunk = []
    for case in hearts:
        twin = copy.deepcopy(case)
        twin.patient["ctr"] = 0.45
        shrunk.append(twin)
    d = render_lateral(hearts, SIZE, 7).astype(int) - render_lateral(shrunk, SIZE, 7).astype(int)
    for x in d:  # a bigger heart fills more of the anterior lower chest
        assert x[SIZE // 3 :, : SIZE // 2].sum() > 1000
