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


def _stand_in_stages(monkeypatch, demo) -> None:
    """Replace the demo's data, LM, training, generation and scoring stages by stand-ins (the wiring tests)."""
    from types import SimpleNamespace

    monkeypatch.setattr("mrg.data.sources.synthetic.prepare_synthetic", lambda *a, **k: None)
    monkeypatch.setattr("mrg.domain_lm.train_report_lm", lambda *a, **k: SimpleNamespace(record={}))
    monkeypatch.setattr(demo, "load_prepared_dataset", lambda root: SimpleNamespace(normalize="r2gen-iu", split=lambda s: []))
    monkeypatch.setattr("mrg.evaluate.make_scorer", lambda *a, **k: None)
    monkeypatch.setattr("mrg.recipes.train.train", lambda *a, **k: None)
    monkeypatch.setattr("mrg.generate.generate_reports",
                        lambda run, out_path, **k: (out_path.parent.mkdir(parents=True, exist_ok=True),
                                                    out_path.write_text('{"id": "a", "prediction": "x."}\n')))
    monkeypatch.setattr("mrg.evaluate.run_evaluation", lambda *a, **k: SimpleNamespace(record={"ce_f1": 0.5}))
    monkeypatch.setattr(demo, "_most_frequent_baseline", lambda *a, **k: ("x.", SimpleNamespace(record={})))


def test_the_demo_page_gets_the_methods_perceptions(tmp_path, monkeypatch) -> None:
    """``run_demo`` computes the method's extras before the HTML page and passes their ``perceived_csv`` to it
    (the training stages are replaced by stand-ins: this checks the wiring, the full run is in .ci/run)."""
    from types import SimpleNamespace

    import mrg.demo as demo
    from mrg.methods import get_method

    calls: dict[str, object] = {}
    order: list[str] = []
    _stand_in_stages(monkeypatch, demo)
    trrg = type(get_method("trrg"))

    def extras(self, cfg, run_dir, data_dir, out_dir):
        order.append("extras")
        return {"perceived_csv": str(out_dir / "perceived.csv"), "perceive_threshold": 0.3}

    def page(dirs, out, **kwargs):
        order.append("page")
        calls.update(kwargs)
        return SimpleNamespace(path=out)

    monkeypatch.setattr(trrg, "demo_extras", extras)
    monkeypatch.setattr("mrg.viewer.build_report", page)
    result = demo.run_demo(tmp_path / "out", fast=True, method="trrg")
    assert order == ["extras", "page"]
    assert calls["perceptions"] == str(tmp_path / "out" / "perceived.csv") and calls["perceive_threshold"] == 0.3
    assert result.extras["perceive_threshold"] == 0.3


def test_the_demo_page_gets_the_mavilt_synthesized_and_reconstructed_folders(tmp_path, monkeypatch) -> None:
    """MAViLT's extras name its synthesized and reconstructed folders; ``run_demo`` passes both to the page."""
    from types import SimpleNamespace

    import mrg.demo as demo
    from mrg.methods import get_method

    calls: dict[str, object] = {}
    _stand_in_stages(monkeypatch, demo)
    mavilt = type(get_method("mavilt"))
    monkeypatch.setattr(mavilt, "demo_overrides", lambda self, data_dir, out_dir, *, fast: [])
    monkeypatch.setattr(mavilt, "demo_extras", lambda self, cfg, run_dir, data_dir, out_dir: {
        "synthesized_dir": str(out_dir / "synthesized"), "reconstructed_dir": str(out_dir / "reconstructed")})
    monkeypatch.setattr("mrg.viewer.build_report", lambda dirs, out, **kwargs: (calls.update(kwargs),
                                                                                SimpleNamespace(path=out))[1])
    demo.run_demo(tmp_path / "out", fast=True, method="mavilt")
    assert calls["synthesized"] == str(tmp_path / "out" / "synthesized")
    assert calls["reconstructed"] == str(tmp_path / "out" / "reconstructed")
