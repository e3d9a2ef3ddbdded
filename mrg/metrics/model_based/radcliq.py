"""RadCliQ-v1 (Yu et al. 2023): a fixed linear combination of four standardised per-report metrics.

Per pair, the features in this order are

1. ``radgraph_combined``: (entity F1 + relation F1) / 2 of RadGraph (``mrg.metrics.model_based.radgraph``),
2. ``bertscore``: rescaled BERTScore F1, distilroberta-base layer 5 (``...bertscore``),
3. ``semb_score``: cosine of CheXbert [CLS] embeddings (``...chexbert``),
4. ``bleu_score``: **sentence-level** BLEU-2 of the pair: CXR-Report-Metric's ``prep_reports`` tokens
   (lower-cased, ``.`` split off, split on single spaces, empty tokens dropped), ``fast_bleu.BLEU`` with
   weights (1/2, 1/2) and its default smoothing ``method1`` (a zero count becomes 0.1), which equals
   nltk's ``sentence_bleu(..., smoothing_function=SmoothingFunction().method1)`` used here. This is *not*
   pycocoevalcap's corpus BLEU-2 (no smoothing of that kind, pooled counts, whitespace tokens).

RadCliQ-v1 = ((x - mean) / scale) . coefs + intercept, with the constants of ``radcliq-v1.pkl`` in
rajpurkarlab/CXR-Report-Metric (``CompositeMetric``: a StandardScaler and coefficients with the
intercept last), as RadEval 2.x writes them out in ``radcliq.py``:

* mean  = (0.53792312, 0.61757256, 0.76479421, 0.44738335)
* scale = (0.30282584, 0.22430938, 0.25394391, 0.29892717)
* coefs = (-0.377083683, -0.370300100, -0.252616218, 4.31504841e-12), intercept 2.46655256e-10

Lower is better; ``radcliq_v1`` is the mean over pairs and ``radcliq_v1_inverse`` its reciprocal, the
number ReXrank ranks on ("1/RadCliQ-v1").

The components share the caches of their own families, so ``--metrics chexbert,radcliq`` runs CheXbert
once per text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrg.errors import ConfigError
from mrg.metrics.model_based import bertscore, chexbert, radgraph
from mrg.metrics.model_based.base import FamilyResult, MetricInfo, ModelMetricOptions, check_pairs, mean

OPTION = "eval.weights.radcliq"
FEATURES = ("radgraph_combined", "bertscore", "semb_score", "bleu_score")
SCALER_MEAN = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
SCALER_SCALE = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
COEFS = np.array([-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12])
INTERCEPT = 2.46655256e-10
COMPONENTS = ("chexbert", "radgraph", "bertscore")

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("radcliq_v1", "RadCliQ-v1", False, "RadCliQ-v1 composite (CXR-Report-Metric), mean over reports"),
    MetricInfo("radcliq_v1_inverse", "1/RadCliQ-v1", True, "reciprocal of the mean RadCliQ-v1 (ReXrank)"),
    MetricInfo("radcliq_bleu2", "BLEU-2 (RadCliQ)", True,
               "sentence BLEU-2 with method1 smoothing on CXR-Report-Metric tokens, mean over reports"),
)


def prep_tokens(text: str) -> list[str]:
    """CXR-Report-Metric ``prep_reports`` for one report."""
    return [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]


def bleu2(prediction: str, reference: str) -> float:
    """RadCliQ's per-pair BLEU-2 (nltk sentence BLEU, weights 1/2 1/2, smoothing method1)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ref, hyp = prep_tokens(reference), prep_tokens(prediction)
    if not ref:
        return 0.0
    return float(sentence_bleu([ref], hyp, weights=(0.5, 0.5), smoothing_function=SmoothingFunction().method1))


def combine(features: np.ndarray) -> np.ndarray:
    """RadCliQ-v1 per row of an (n, 4) feature matrix in :data:`FEATURES` order."""
    return ((features - SCALER_MEAN) / SCALER_SCALE) @ COEFS + INTERCEPT


def component_options(options: ModelMetricOptions) -> dict[str, ModelMetricOptions]:
    """Per component, the options with its own weights.

    ``options.weights``: None (every component's default), ``chexbert=PATH,radgraph=PATH,bertscore=PATH``
    (any subset; the rest use their defaults), or a folder holding ``chexbert.pth``, ``radgraph/`` (or
    ``radgraph.tar.gz``) and ``bertscore/``.
    """
    spec = (options.weights or "").strip()
    weights: dict[str, str | None] = dict.fromkeys(COMPONENTS)
    if spec and "=" in spec:
        for part in spec.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in COMPONENTS or not value.strip():
                raise ConfigError(
                    f"{OPTION}={spec}: expected name=PATH pairs with names {', '.join(COMPONENTS)}, e.g. "
                    "chexbert=/w/chexbert.pth,radgraph=/w/radgraph,bertscore=/w/distilroberta-base"
                )
            weights[name] = value.strip()
    elif spec:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"{OPTION}={spec}: not a folder; pass a folder with chexbert.pth, radgraph/ and bertscore/, or "
                "chexbert=PATH,radgraph=PATH,bertscore=PATH"
            )
        candidates = {"chexbert": ["chexbert.pth"], "radgraph": ["radgraph", "radgraph.tar.gz"], "bertscore": ["bertscore"]}
        for name, entries in candidates.items():
            found = next((folder / e for e in entries if (folder / e).exists()), None)
            weights[name] = str(found) if found is not None else None
    return {name: ModelMetricOptions(weights[name], options.device, options.batch_size, options.cache_dir)
            for name in COMPONENTS}


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """RadCliQ-v1 per pair and its mean (and reciprocal), with the four features as items."""
    check_pairs("radcliq", predictions, references)
    parts = component_options(options)
    rg = radgraph.RadGraphScorer(parts["radgraph"], f"{OPTION} (radgraph)")
    bs = bertscore.BertScorer(parts["bertscore"], f"{OPTION} (bertscore)")
    cb = chexbert.ChexbertScorer(parts["chexbert"], f"{OPTION} (chexbert)")
    radgraph_items = radgraph.score_with(rg, predictions, references).items["radgraph_combined"]
    bert_result = bertscore.score_with(bs, predictions, references)
    chexbert_result = chexbert.score_with(cb, predictions, references)
    bleu_items = [bleu2(p, r) for p, r in zip(predictions, references, strict=True)]
    features = np.column_stack([radgraph_items, bert_result.items["bertscore"], chexbert_result.items["semb_score"],
                                bleu_items])  # (n, 4)
    per_item = [float(x) for x in combine(features)]
    average = mean(per_item)
    corpus = {"radcliq_v1": average, "radcliq_v1_inverse": 1.0 / average if average else float("nan"),
              "radcliq_bleu2": mean(bleu_items)}
    items: dict[str, list[float]] = {"radcliq_v1": per_item, "radcliq_bleu2": bleu_items}
    info: dict[str, Any] = {
        "implementation": "RadCliQ-v1 constants of CXR-Report-Metric radcliq-v1.pkl (mrg)",
        "components": {"radgraph": rg.info(), "bertscore": bs.info(), "chexbert": cb.info()},
        "bleu": "nltk sentence_bleu, weights (0.5, 0.5), SmoothingFunction().method1 (= fast_bleu default)",
    }
    return FamilyResult(corpus, items, info)
