"""Model-based report metrics: CheXbert F1 and SembScore, RadGraph F1, BERTScore, RadCliQ-v1, RaTEScore, GREEN.

Each family is computed the way its reference implementation computes it (see each module's docstring
and ``docs/metrics.md``); all are re-implementations on torch + transformers, because f1chexbert 0.0.2,
radgraph 0.1.18 and bert-score 0.3.13 do not run correctly under transformers 5, RaTEScore 0.6.0 pulls
medspaCy (and spaCy, and an older numpy) and green-score 0.0.12 requires Python ==3.12.1. Weights are
local files or hub ids (``ModelMetricOptions.weights``); per-text outputs are cached on disk.

``FAMILIES`` maps a family name to its :class:`~mrg.metrics.model_based.base.Family`; the evaluation
registry calls ``FAMILIES[name].score(predictions, references, options)``.
"""

from __future__ import annotations

from mrg.metrics.model_based import bertscore, chexbert, green, radcliq, radgraph, ratescore
from mrg.metrics.model_based.base import (
    Family,
    FamilyResult,
    MetricInfo,
    ModelMetricOptions,
    unavailable_reason,
)

__all__ = ["FAMILIES", "Family", "FamilyResult", "MetricInfo", "ModelMetricOptions", "unavailable_reason"]

_REQUIRES = ("torch", "transformers")

FAMILIES: dict[str, Family] = {
    "chexbert": Family("chexbert", chexbert.METRICS, str(chexbert.DEFAULT_WEIGHTS), _REQUIRES, chexbert.score),
    "radgraph": Family("radgraph", radgraph.METRICS, str(radgraph.DEFAULT_WEIGHTS), _REQUIRES, radgraph.score),
    "bertscore": Family("bertscore", bertscore.METRICS, str(bertscore.DEFAULT_WEIGHTS), _REQUIRES, bertscore.score),
    "radcliq": Family(
        "radcliq", radcliq.METRICS,
        f"{chexbert.DEFAULT_WEIGHTS}, {radgraph.DEFAULT_WEIGHTS}, {bertscore.DEFAULT_WEIGHTS}",
        _REQUIRES, radcliq.score,
    ),
    "ratescore": Family(
        "ratescore", ratescore.METRICS, f"{ratescore.DEFAULT_NER}, {ratescore.DEFAULT_EMBED}", _REQUIRES,
        ratescore.score,
    ),
    "green": Family("green", green.METRICS, str(green.DEFAULT_WEIGHTS), _REQUIRES, green.score, gpu_recommended=True),
}


def _register() -> None:
    from mrg.metrics.registry import Metric, register_metrics

    for family in FAMILIES.values():
        register_metrics(Metric(m.name, m.display, f"model:{family.name}", higher_is_better=m.higher_is_better,
                                protocol=m.description, description="model-based (docs/metrics.md)")
                         for m in family.metrics)


_register()
