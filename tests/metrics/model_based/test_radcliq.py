"""RadCliQ-v1: the published constants, RadCliQ's BLEU-2, weights parsing and the end-to-end family."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mrg.errors import ConfigError
from mrg.metrics.model_based import FAMILIES, ModelMetricOptions, radcliq
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES


def test_combination_uses_the_published_constants() -> None:
    at_mean = radcliq.combine(radcliq.SCALER_MEAN[None, :])
    assert at_mean[0] == pytest.approx(radcliq.INTERCEPT)
    one_sd_radgraph = radcliq.SCALER_MEAN + np.array([radcliq.SCALER_SCALE[0], 0, 0, 0])
    assert radcliq.combine(one_sd_radgraph[None, :])[0] == pytest.approx(-0.377083683 + radcliq.INTERCEPT)
    perfect = radcliq.combine(np.ones((1, 4)))[0]  # better reports score lower
    assert perfect < at_mean[0]


def test_bleu2_tokens_and_smoothing() -> None:
    assert radcliq.prep_tokens("No effusion.  Clear.") == ["no", "effusion", ".", "clear", "."]
    assert radcliq.bleu2("the lungs are clear.", "the lungs are clear.") == pytest.approx(1.0)
    # "lungs clear" vs "the lungs are clear ." : p1 = 1, p2 = 0 -> 0.1 (method1), BP = exp(1 - 5/2)
    assert radcliq.bleu2("lungs clear", "the lungs are clear.") == pytest.approx(np.exp(-1.5) * np.sqrt(0.1))
    assert radcliq.bleu2("", "the lungs") == 0.0


@pytest.mark.skipif(importlib.util.find_spec("fast_bleu") is None, reason="fast-bleu is not installed (optional)")
def test_bleu2_equals_fast_bleu() -> None:
    from fast_bleu import BLEU

    for pred, ref in zip(PREDICTIONS, REFERENCES, strict=True):
        if not radcliq.prep_tokens(ref):
            continue
        expected = BLEU([radcliq.prep_tokens(ref)], {"b": (0.5, 0.5)}).get_score([radcliq.prep_tokens(pred)])["b"][0]
        assert radcliq.bleu2(pred, ref) == pytest.approx(expected, abs=1e-12)


def test_component_weights_parsing(tmp_path) -> None:
    parts = radcliq.component_options(ModelMetricOptions("chexbert=/w/c.pth, bertscore=/w/b", "cpu", 8, ""))
    assert parts["chexbert"].weights == "/w/c.pth" and parts["bertscore"].weights == "/w/b"
    assert parts["radgraph"].weights is None and parts["radgraph"].batch_size == 8
    with pytest.raises(ConfigError, match="expected name=PATH pairs"):
        radcliq.component_options(ModelMetricOptions("chexbrt=/w", "cpu", 8, ""))
    (tmp_path / "chexbert.pth").write_bytes(b"x")
    (tmp_path / "bertscore").mkdir()
    folder = radcliq.component_options(ModelMetricOptions(str(tmp_path), "cpu", 8, ""))
    assert folder["chexbert"].weights == str(tmp_path / "chexbert.pth") and folder["radgraph"].weights is None


def test_end_to_end_is_deterministic_and_shares_the_component_caches(
    chexbert_dir, radgraph_dir, bertscore_dir, cache_dir
) -> None:
    weights = f"chexbert={chexbert_dir / 'chexbert.pth'},radgraph={radgraph_dir},bertscore={bertscore_dir}"
    options = ModelMetricOptions(weights, "cpu", 4, cache_dir)
    chexbert_first = FAMILIES["chexbert"].score(
        PREDICTIONS, REFERENCES, ModelMetricOptions(str(chexbert_dir / "chexbert.pth"), "cpu", 4, cache_dir))
    first = FAMILIES["radcliq"].score(PREDICTIONS, REFERENCES, options)
    assert first.info["components"]["chexbert"]["texts_computed"] == 0  # reused the chexbert family's cache
    assert first.info["components"]["chexbert"]["texts_cached"] == chexbert_first.info["texts_computed"]
    second = FAMILIES["radcliq"].score(PREDICTIONS, REFERENCES, options)
    assert first.corpus == second.corpus and first.items == second.items
    assert first.corpus["radcliq_v1_inverse"] == pytest.approx(1 / first.corpus["radcliq_v1"])
    assert len(first.items["radcliq_v1"]) == len(PREDICTIONS)
    assert list(first.corpus) == [m.name for m in radcliq.METRICS]
