"""The metric registry: every metric a scorer returns is registered, names shown anywhere are registered names."""

from __future__ import annotations

import pytest

from mrg.errors import ConfigError
from mrg.metrics import registry
from mrg.metrics.registry import REPORT_GENERATION, Metric, get_metric, metrics_for_task, register_metric


def test_the_scorers_return_exactly_the_registered_report_metrics() -> None:
    from mrg.config import EvalConfig
    from mrg.evaluate import make_scorer

    scorer = make_scorer(EvalConfig(meteor=False), "r2gen-iu")
    metrics = scorer(["the heart is normal .", "no effusion ."], ["the heart is normal .", "small left effusion ."])
    registered = {m.name for m in metrics_for_task(REPORT_GENERATION) if m.family in ("nlg", "clinical")}
    assert set(metrics) == registered


def test_clinical_family_matches_the_clinical_module() -> None:
    from mrg.metrics.clinical import metric_keys

    assert [m.name for m in registry.family_metrics("clinical")] == metric_keys()


def test_names_shown_by_the_viewer_demo_and_config_are_registered() -> None:
    from mrg.config import TrainConfig
    from mrg.demo import DEMO_METRICS
    from mrg.viewer import html, studies

    shown = [*DEMO_METRICS, *html._VAL_CHARTED, *html._VAL_COLUMNS, *(k for k, _ in html.HEADLINE),
             *(k for k, _ in studies.SCORE_COLUMNS if k != "ce_example_f1"), *TrainConfig().select]
    for name in shown:
        get_metric(name)
    assert get_metric("ce_example_f1").family == "clinical"


def test_unknown_names_suggest_and_duplicates_are_refused() -> None:
    with pytest.raises(ConfigError, match="'blue_4' is not a registered metric. Did you mean 'bleu_4'"):
        get_metric("blue_4")
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("bleu_4", "B4", "other"))
    problems = registry.selection_problems({"bleu_4": 1.0}, ["retrieval"])
    assert problems and "does not produce" in problems[0]


def test_model_based_families_are_registered_with_their_metrics() -> None:
    from mrg.metrics.model_based import FAMILIES

    assert tuple(FAMILIES) == registry.MODEL_FAMILY_NAMES
    for family in FAMILIES.values():
        for info in family.metrics:
            metric = get_metric(info.name)
            assert metric.family == f"model:{family.name}" and metric.higher_is_better == info.higher_is_better
