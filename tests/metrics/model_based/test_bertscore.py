"""BERTScore: tokenization, greedy matching, rescaling, batching, cache, and bert-score's own numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mrg.errors import MetricError
from mrg.metrics.model_based import ModelMetricOptions, bertscore
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES


def test_identical_texts_score_one_after_rescaling(bertscore_dir) -> None:
    result = bertscore.score(["mild cardiomegaly"], ["mild cardiomegaly"], ModelMetricOptions(str(bertscore_dir), "cpu", 4, ""))
    assert result.corpus["bertscore"] == pytest.approx(1.0, abs=1e-5)  # float32 cosines, x6.5 by rescaling


def test_greedy_matching_by_hand() -> None:
    hyp = np.array([[9, 9], [1, 0], [0, 1], [9, 9]], dtype=np.float32)  # <s> a b </s>
    ref = np.array([[9, 9], [1, 0], [9, 9]], dtype=np.float32)  # <s> a </s>
    p, r, f = bertscore.greedy_match([0, 5, 6, 2], hyp, [0, 5, 2], ref, special={0, 2})
    # hyp token a matches a (1); b's best is <s>/</s> (cos 1/sqrt2); recall: a matches a (1)
    assert p == pytest.approx((1 + 1 / np.sqrt(2)) / 2, abs=1e-6) and r == pytest.approx(1.0)
    assert f == pytest.approx(2 * p * r / (p + r), abs=1e-6)
    assert bertscore.greedy_match([0, 2], hyp[[0, 3]], [0, 5, 2], ref, special={0, 2}) == (0.0, 0.0, 0.0)
    assert bertscore.rescale((1.0, 1.0, 1.0)) == pytest.approx((1.0, 1.0, 1.0))
    assert bertscore.rescale(bertscore.BASELINE) == pytest.approx((0.0, 0.0, 0.0), abs=1e-7)


def test_roberta_text_gets_the_leading_space(bertscore_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bertscore_dir))
    assert bertscore.is_byte_level(tokenizer)
    ids = bertscore.encode(tokenizer, "  mild cardiomegaly ")
    assert ids == tokenizer.encode(" mild cardiomegaly", add_special_tokens=True)
    assert ids != tokenizer.encode("mild cardiomegaly", add_special_tokens=True)
    assert bertscore.encode(tokenizer, "") == [tokenizer.cls_token_id, tokenizer.sep_token_id]


def test_batching_determinism_and_pair_cache(bertscore_dir, cache_dir) -> None:
    one = bertscore.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(bertscore_dir), "cpu", 1, ""))
    seven = bertscore.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(bertscore_dir), "cpu", 7, ""))
    assert np.allclose(one.items["bertscore"], seven.items["bertscore"], atol=1e-5)
    first = bertscore.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(bertscore_dir), "cpu", 4, cache_dir))
    second = bertscore.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(bertscore_dir), "cpu", 4, cache_dir))
    assert first.items == second.items
    assert first.info["pairs_computed"] == len(set(zip(PREDICTIONS, REFERENCES, strict=True)))
    assert second.info["pairs_computed"] == 0 and second.info["pairs_cached"] == first.info["pairs_computed"]
    assert first.corpus["bertscore"] == pytest.approx(np.mean(first.items["bertscore"]))


def test_a_folder_without_a_model_is_refused(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricError, match="expected a folder with config.json and model.safetensors"):
        bertscore.score(["a"], ["b"], ModelMetricOptions(str(tmp_path / "empty"), "cpu", 4, ""))


def _baseline_file(tmp_path: Path) -> Path:
    import bert_score

    shipped = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / "distilroberta-base.tsv"
    assert shipped.is_file()
    return shipped


@pytest.mark.skipif(importlib.util.find_spec("bert_score") is None, reason="bert-score is not installed (optional)")
def test_equals_bert_score_with_its_own_baseline_file(bert6_dir, tmp_path) -> None:
    import bert_score
    import transformers

    baseline = _baseline_file(tmp_path)
    row = [float(x) for x in baseline.read_text().splitlines()[1 + bertscore.LAYER].split(",")[1:]]
    assert tuple(np.float32(row)) == tuple(np.float32(bertscore.BASELINE))
    # transformers 5 removed build_inputs_with_special_tokens, which bert-score needs for an empty text
    keep = [i for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES, strict=True)) if p.strip() and r.strip()]
    if int(transformers.__version__.split(".")[0]) < 5:
        keep = list(range(len(PREDICTIONS)))
    preds, refs = [PREDICTIONS[i] for i in keep], [REFERENCES[i] for i in keep]
    # batch_size=1: no padding inside bert-score, where a padded 0 could beat negative cosines
    scorer = bert_score.BERTScorer(model_type=str(bert6_dir), num_layers=bertscore.LAYER, batch_size=1, lang="en",
                                   rescale_with_baseline=True, baseline_path=str(baseline), idf=False)
    p, r, f = scorer.score(preds, refs)
    ours = bertscore.score(preds, refs, ModelMetricOptions(str(bert6_dir), "cpu", 3, ""))
    assert np.allclose(ours.items["bertscore"], f.numpy(), atol=1e-5)
    assert np.allclose(ours.items["bertscore_precision"], p.numpy(), atol=1e-5)
    assert np.allclose(ours.items["bertscore_recall"], r.numpy(), atol=1e-5)
