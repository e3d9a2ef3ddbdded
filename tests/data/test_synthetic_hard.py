"""The hard synthetic set: determinism, labels that mrg's labeler reads back exactly, side/size/severity that
the report states and the pixels show, distractors that carry no label, and findings that do not co-occur."""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mrg.data.chexpert import OBSERVATIONS
from mrg.data.prepared import STAMP_NAME, load_prepared_dataset
from mrg.data.sources.synthetic import (
    compose_report,
    findings_in_words,
    generate_studies,
    prepare_synthetic,
    render_frontal,
    render_lateral,
    sample_cases,
)
from mrg.data.sources.synthetic_hard import HARD_GENERATOR_VERSION, KIND_TO_OBSERVATION, HardCase
from mrg.errors import OutputDirError
from mrg.metrics.labeler import label_reports

SIZE = 128
HEDGE_CUES = ("possible", "cannot exclude", "cannot be excluded", "may represent", "questionable", "vascular congestion")
ATTRIBUTE_KEYS = {"finding", "observation", "label", "hedged", "side", "size", "severity", "location", "size_cm",
                  "size_by_side"}


@pytest.fixture(scope="module")
def cases() -> list[HardCase]:
    return sample_cases(700, 7, difficulty="hard")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def studies():
    return generate_studies(400, 11, difficulty="hard")


def _without(case: HardCase, kind: str) -> HardCase:
    twin = copy.deepcopy(case)
    twin.findings = [f for f in twin.findings if f["kind"] != kind]
    return twin


def _without_distractor(case: HardCase, kind: str) -> HardCase:
    twin = copy.deepcopy(case)
    twin.distractors = [d for d in twin.distractors if d["kind"] != kind]
    return twin


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != STAMP_NAME}


def _found(labels: dict[str, float]) -> dict[str, float]:
    return {obs: v for obs, v in labels.items() if v in (1.0, -1.0)}


# ------------------------------------------------------------------------------------ determinism and folder


def test_same_seed_gives_identical_files_and_the_easy_set_differs(tmp_path: Path) -> None:
    prepare_synthetic(tmp_path / "a", n=12, seed=3, image_size=64, difficulty="hard")
    prepare_synthetic(tmp_path / "b", n=12, seed=3, image_size=64, difficulty="hard")
    prepare_synthetic(tmp_path / "easy", n=12, seed=3, image_size=64)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a == b and len([k for k in a if k.endswith(".png")]) == 24
    assert all(k.startswith("images/synth-hard-") for k in a if k.endswith(".png"))
    easy = _tree_bytes(tmp_path / "easy")
    assert not set(a) & {k for k in easy if k.endswith(".png")}  # other ids: the two sets never mix


def test_a_hard_study_depends_only_on_seed_and_index() -> None:
    small, large = sample_cases(8, 5, difficulty="hard"), sample_cases(20, 5, difficulty="hard")
    assert [c.to_extra() for c in small] == [c.to_extra() for c in large[:8]]
    assert [compose_report(c, 5) for c in small] == [compose_report(c, 5) for c in large[:8]]
    for render in (render_frontal, render_lateral):
        batch = render(large, 64, 5)
        for i in range(len(large)):
            assert np.array_equal(batch[i], render(large[i : i + 1], 64, 5)[0]), (render.__name__, i)
    with pytest.raises(ValueError, match="mixes easy and hard"):
        render_frontal([large[0], sample_cases(1, 5)[0]], 64, 5)


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    prepare_synthetic(tmp_path / "one", n=24, seed=2, image_size=48, workers=1, difficulty="hard")
    prepare_synthetic(tmp_path / "two", n=24, seed=2, image_size=48, workers=2, difficulty="hard")
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def test_difficulty_is_recorded_and_a_folder_is_never_reused_for_the_other(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    record = prepare_synthetic(out, n=10, seed=1, image_size=48, difficulty="hard")
    assert record["source"]["difficulty"] == "hard" and record["protocol"]["difficulty"] == "hard"
    assert record["source"]["generator_version"] == HARD_GENERATOR_VERSION
    assert json.loads((out / STAMP_NAME).read_text())["source"]["difficulty"] == "hard"
    assert prepare_synthetic(out, n=10, seed=1, image_size=48, difficulty="hard")["skipped"] is True
    with pytest.raises(OutputDirError, match="difficulty: 'hard' here vs 'easy' now"):
        prepare_synthetic(out, n=10, seed=1, image_size=48)
    easy = tmp_path / "easy"
    prepare_synthetic(easy, n=10, seed=1, image_size=48)
    with pytest.raises(OutputDirError, match="difficulty: 'easy' here vs 'hard' now"):
        prepare_synthetic(easy, n=10, seed=1, image_size=48, difficulty="hard")
    ds = load_prepared_dataset(out)
    study = next(s for s in ds.studies if s.extra["findings"])
    assert study.extra["difficulty"] == "hard" and study.labels_source == "synthetic-truth"
    assert [a["finding"] for a in study.extra["attributes"]] == [f["kind"] for f in study.extra["findings"]]
    assert findings_in_words(study) == findings_in_words(study.extra) != ["normal"]


# ------------------------------------------------------------------------------------------ labels and reports


def test_mrg_labeler_reads_exactly_the_true_labels() -> None:
    cases = sample_cases(400, 5, difficulty="hard")
    composed = [compose_report(case, 5) for case in cases]
    labels = label_reports([findings for findings, _, _ in composed])
    wrong = [(f, truth, got) for (f, _, truth), got in zip(composed, labels, strict=True) if got != truth]
    assert not wrong, wrong[:3]


def test_labels_are_the_truth_of_the_image(studies) -> None:
    for study in studies:
        labels, extra = study.labels, study.extra
        assert list(labels) == [o for o in OBSERVATIONS if o in labels]
        expected = {KIND_TO_OBSERVATION[f["kind"]]: -1.0 if f["hedged"] else 1.0 for f in extra["findings"]}
        if any(f["kind"] == "consolidation" and not f["hedged"] for f in extra["findings"]):
            expected["Lung Opacity"] = 1.0  # a consolidation is an opacity (positive beats a hedged opacity)
        if extra["devices"]:
            expected["Support Devices"] = 1.0
        if not set(expected) - {"Support Devices"}:
            expected["No Finding"] = 1.0
        # what is found (1 or -1) is exactly what was drawn: distractors and wording add nothing
        assert _found(labels) == expected, (study.id, study.report)


def test_distractors_never_change_what_is_found(cases) -> None:
    with_distractors = [c for c in cases if c.distractors][:150]
    for case in with_distractors:
        bare = copy.deepcopy(case)
        bare.distractors = []
        assert _found(compose_report(case, 7)[2]) == _found(compose_report(bare, 7)[2])


def test_the_report_states_side_size_and_severity(studies) -> None:
    checked = set()
    for study in studies:
        text = study.report.lower()
        for f in study.extra["findings"]:
            kind, side = f["kind"], f["side"]
            checked.add(kind)
            if f["hedged"]:
                assert any(cue in text for cue in HEDGE_CUES), study.report
            if kind == "pleural_effusion":
                for s, size in f["size_by_side"].items():
                    assert size in text and (s in text or f["side"] == "bilateral" and "bilateral" in text), study.report
            elif kind == "pneumothorax":
                assert side in text and f["size"] in text
            elif kind == "cardiomegaly" and not f["hedged"]:
                words = {"mild": ("mild",), "moderate": ("moderate",), "severe": ("marked", "severe")}[f["severity"]]
                assert any(w in text for w in words), study.report
            elif kind == "lung_lesion":
                cm = f["size_cm"]
                stated = f"{round(cm * 10)} mm" if cm < 1.0 else f"{cm:.1f} cm"
                assert stated in text and (side in text or side == "bilateral" and "both lungs" in text), study.report
            elif kind == "fracture":
                assert f"{side} {f['rib_number']}th" in text and "fracture" in text, study.report
            elif kind == "atelectasis":
                assert "atelectasis" in text and ("bibasilar" in text or "bases" in text if side == "bilateral"
                                                  else side in text), study.report
            elif kind == "edema":
                assert (f"{f['severity']}" in text or "marked" in text) and ("edema" in text or "congestion" in text)
            elif kind == "widened_mediastinum":
                assert "widen" in text and ("mild" in text if f["severity"] == "mild" else "marked" in text)
            elif kind == "pleural_thickening":
                assert f"{f['severity']} {side} apical pleural thickening" in text or (
                    f["severity"] == "mild" and f"{side} apical pleural thickening" in text), study.report
    assert checked == set(KIND_TO_OBSERVATION)


def test_negations_name_sides_and_ride_on_positive_sentences(studies) -> None:
    reports = [s.report for s in studies]
    assert any(re.search(r"No (left|right) pleural effusion\.|No pleural effusion on the (left|right)\.", r) for r in reports)
    assert any(re.search(r"\w without (pneumothorax|pulmonary edema|focal consolidation|pleural effusion)\.", r)
               for r in reports)
    assert any("upper limits of normal" in r for r in reports)  # a large normal heart, labelled 0
    hedged = [f["hedged"] for s in studies for f in s.extra["findings"]]
    assert 0.12 <= np.mean(hedged) <= 0.28


def test_attributes_hold_side_size_and_severity_in_one_shape(studies) -> None:
    for study in studies:
        attributes = study.extra["attributes"]
        assert len(attributes) == len(study.extra["findings"])
        for a, f in zip(attributes, study.extra["findings"], strict=True):
            assert set(a) == ATTRIBUTE_KEYS and a["finding"] == f["kind"]
            # a hedged opacity next to a definite consolidation is still a positive opacity
            assert study.labels[a["observation"]] == a["label"] or (a["observation"] == "Lung Opacity"
                                                                   and study.labels["Lung Opacity"] == 1.0)
            assert a["side"] in (None, "left", "right", "bilateral")
            if f["kind"] in ("pleural_effusion", "pneumothorax", "lung_lesion", "atelectasis", "fracture",
                             "pleural_thickening", "consolidation", "lung_opacity"):
                assert a["side"] is not None
            if f["kind"] in ("cardiomegaly", "edema", "widened_mediastinum", "fracture", "lung_opacity",
                             "pleural_thickening"):
                assert a["severity"] is not None
            if f["kind"] in ("pleural_effusion", "pneumothorax", "lung_lesion", "atelectasis"):
                assert a["size"] is not None
    lesion = next(a for s in studies for a in s.extra["attributes"] if a["finding"] == "lung_lesion")
    assert lesion["size_cm"] > 0


def test_several_findings_per_study_and_none_predicts_another() -> None:
    hard = [c for c in sample_cases(3000, 1, difficulty="hard") if c.findings]
    counts = np.asarray([len(c.findings) for c in hard])
    assert 2.6 <= counts.mean() <= 3.5 and np.mean((counts >= 2) & (counts <= 5)) >= 0.85

    def max_phi(abnormal: list) -> float:
        kinds = sorted({f["kind"] for c in abnormal for f in c.findings})
        present = np.asarray([[any(f["kind"] == k for f in c.findings) for k in kinds] for c in abnormal], float)
        corr = np.corrcoef(present.T)
        return max(abs(corr[i, j]) for i, j in itertools.combinations(range(len(kinds)), 2))

    assert max_phi(hard) < 0.12  # independent kinds (given their number)
    assert max_phi([c for c in sample_cases(3000, 1) if c.findings]) > 0.3  # the easy set's co-occurrences


def test_findings_in_words(cases) -> None:
    bare = next(c for c in cases if not c.findings and not c.devices)
    assert findings_in_words(bare) == ["normal"]
    two = next(c for c in cases if (f := c.finding("pleural_effusion")) and len(set(f["size_by_side"].values())) == 2)
    sizes = two.finding("pleural_effusion")["size_by_side"]
    assert f"{sizes['right']} right and {sizes['left']} left pleural effusions" in findings_in_words(two)


# ------------------------------------------------------------------------------------------------ the pixels


def _halves(d: np.ndarray) -> tuple[float, float]:
    """Absolute change on the image's left half (the patient's right) and right half (the patient's left)."""
    size = d.shape[-1]
    return float(np.abs(d[:, : size // 2]).sum()), float(np.abs(d[:, size // 2 :]).sum())


def _diff(case: HardCase, twin: HardCase, render=render_frontal) -> np.ndarray:
    return render([case], SIZE, 7)[0].astype(int) - render([twin], SIZE, 7)[0].astype(int)


@pytest.mark.parametrize("kind", ["atelectasis", "pleural_thickening", "fracture", "pneumothorax", "lung_lesion"])
def test_one_sided_findings_show_on_their_side_only(cases, kind: str) -> None:
    chosen = [c for c in cases if (f := c.finding(kind)) and f["side"] in ("left", "right") and not f["hedged"]][:8]
    assert len(chosen) >= 5
    for case in chosen:
        right, left = _halves(_diff(case, _without(case, kind)))
        own, other = (right, left) if case.finding(kind)["side"] == "right" else (left, right)
        assert own > 100 and own > 0.9 * (own + other), (kind, case.index, own, other)


def test_edema_is_bilateral_and_the_widened_mediastinum_central(cases) -> None:
    for case in [c for c in cases if c.finding("edema")][:6]:
        right, left = _halves(_diff(case, _without(case, "edema")))
        assert min(right, left) > 0.25 * (right + left) > 0, case.index
    for case in [c for c in cases if (f := c.finding("widened_mediastinum")) and not f["hedged"]][:6]:
        d = np.abs(_diff(case, _without(case, "widened_mediastinum")))
        assert d[: SIZE // 2, SIZE // 4 : 3 * SIZE // 4].sum() > 0.9 * d.sum() > 0, case.index


def test_hedged_findings_are_drawn_subtler(cases) -> None:
    """Smaller, thinner or fainter: the total change a hedged finding makes to the film is smaller."""
    for kind in ("atelectasis", "lung_lesion", "fracture", "widened_mediastinum", "pleural_thickening"):
        strength = {True: [], False: []}
        for case in [c for c in cases if c.finding(kind)]:
            strength[case.finding(kind)["hedged"]].append(np.abs(_diff(case, _without(case, kind))).sum())
            if min(len(v) for v in strength.values()) >= 5:
                break
        assert np.mean(strength[True]) < np.mean(strength[False]), (kind, strength)


def test_sizes_and_grades_are_visible(cases) -> None:
    lesions = [c for c in cases if (f := c.finding("lung_lesion")) and f["type"] in ("nodule", "mass")][:12]
    area = [(np.abs(_diff(c, _without(c, "lung_lesion"))) > 4).sum() for c in lesions]
    assert np.corrcoef([c.finding("lung_lesion")["size_cm"] for c in lesions], area)[0, 1] > 0.8
    effusions = [c for c in cases if (f := c.finding("pleural_effusion")) and len(set(f["size_by_side"].values())) == 2][:6]
    order = ("small", "moderate", "large")
    for case in effusions:  # bilateral fluid of two sizes: the larger side changes more
        sizes = case.finding("pleural_effusion")["size_by_side"]
        right, left = _halves(_diff(case, _without(case, "pleural_effusion")))
        assert (right > left) == (order.index(sizes["right"]) > order.index(sizes["left"])), case.index
    base = next(c for c in cases if not c.findings)
    brightness = []
    for ctr in (0.44, 0.495, 0.52, 0.56, 0.61, 0.67):  # normal, upper-normal, borderline, mild, moderate, severe
        twin = copy.deepcopy(base)
        twin.patient["ctr"] = ctr
        brightness.append(render_frontal([twin], SIZE, 7)[0][int(0.55 * SIZE) : int(0.8 * SIZE)].astype(int).sum())
    assert all(a < b for a, b in itertools.pairwise(brightness))


def test_distractors_are_drawn_and_granulomas_are_denser_than_faint_nodules(cases) -> None:
    for kind in ("calcified_granuloma", "nipple_shadow", "breast_shadow", "skin_fold", "ecg_electrodes"):
        case = next(c for c in cases if any(d["kind"] == kind for d in c.distractors))
        assert np.abs(_diff(case, _without_distractor(case, kind))).sum() > 50, kind
    granulomas = [np.abs(_diff(c, _without_distractor(c, "calcified_granuloma"))).max()
                  for c in cases if any(d["kind"] == "calcified_granuloma" for d in c.distractors)][:10]
    faint = [np.abs(_diff(c, _without(c, "lung_lesion"))).max()
             for c in cases if (f := c.finding("lung_lesion")) and f["hedged"]][:10]
    assert np.mean(granulomas) > 1.5 * np.mean(faint)
