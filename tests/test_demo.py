"""mrg demo: the baseline it compares against and the studies it shows (the whole run is in .ci/run)."""

from __future__ import annotations

from mrg.baselines import most_frequent_report
from mrg.data.prepared import Study
from mrg.demo import FAST, FULL, _pick_examples


def _study(i: int, report: str, labels: dict[str, float], clean: str | None = None) -> Study:
    study = Study(id=f"s{i}", split="train", report=report, image_paths=[f"images/s{i}/0.png"], labels=labels,
                  extra={"findings": [], "devices": []})
    study.report_clean = clean if clean is not None else report.lower()
    return study


def test_most_frequent_report_counts_texts() -> None:
    studies = [_study(0, "A.", {}), _study(1, "B.", {}), _study(2, "B.", {})]
    assert most_frequent_report(studies) == "b."


def test_most_frequent_report_breaks_ties_by_label_vector() -> None:
    # every text unique: the winner carries the most common label vector (here: normal), then is shortest
    studies = [
        _study(0, "Heart is enlarged.", {"Cardiomegaly": 1.0}),
        _study(1, "The lungs are clear and the heart is normal.", {"No Finding": 1.0}),
        _study(2, "Lungs clear.", {"No Finding": 1.0}),
        _study(3, "Small left pleural effusion.", {"Pleural Effusion": 1.0}),
    ]
    assert most_frequent_report(studies) == "lungs clear."


def test_examples_cover_normal_single_and_multiple_findings() -> None:
    from mrg.data.sources.synthetic import generate_studies

    test = generate_studies(40, seed=3, views=1)
    predictions = {s.id: f"prediction of {s.id}" for s in test}
    examples = _pick_examples(test, predictions)
    by_id = {s.id: s for s in test}

    def abnormal(study: Study) -> int:
        return sum(v == 1.0 for k, v in study.labels.items() if k not in ("No Finding", "Support Devices"))

    assert [abnormal(by_id[e["id"]]) for e in examples][:2] == [0, 1]
    assert abnormal(by_id[examples[2]["id"]]) >= 2
    assert examples[0]["true_findings"][0] == "normal"
    assert all(e["generated"] == predictions[e["id"]] for e in examples)


def test_fast_plan_is_smaller() -> None:
    assert FAST.n < FULL.n
