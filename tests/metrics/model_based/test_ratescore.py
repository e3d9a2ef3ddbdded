"""RaTEScore: span rules and matching by hand, the two random-weight models end to end, cache, options, package."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from mrg.errors import ConfigError, MetricError
from mrg.metrics.model_based import ModelMetricOptions, ratescore
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES


def _options(ner, embed, batch_size=4, cache=""):
    return ModelMetricOptions(f"ner={ner},embed={embed}", "cpu", batch_size, cache)


def test_sentences_split_at_line_breaks_and_final_punctuation() -> None:
    text = "No effusion. Mild cardiomegaly?\nLines in place! 1.5 cm nodule. ok . ."
    assert ratescore.split_sentences(text) == ["No effusion.", "Mild cardiomegaly?", "Lines in place!",
                                               "1.5 cm nodule.", "ok ."]
    assert ratescore.split_sentences("   ") == [] and ratescore.split_sentences("") == []


def test_entity_spans_follow_the_package_state_machine() -> None:
    tokens = ["[CLS]", "small", "left", "effusion", "no", "lung", "[SEP]"]
    labels = ["O", "B-ABNORMALITY", "I-ABNORMALITY", "I-ABNORMALITY", "O", "B-ANATOMY", "O"]
    assert ratescore.entity_spans(tokens, labels) == [(1, 3, "ABNORMALITY"), (5, 5, "ANATOMY")]
    # a span open at the end of the sentence runs to the token before [SEP] ...
    open_end = ["O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "I-DISEASE"]
    assert ratescore.entity_spans(["[CLS]", "a", "b", "c", "[SEP]"], open_end) == [(1, 3, "DISEASE")]
    # ... but not after B followed by B, which leaves an end set (the package's quirk, kept)
    quirk = ["O", "B-ANATOMY", "B-DISEASE", "I-DISEASE", "I-DISEASE", "I-DISEASE"]
    assert ratescore.entity_spans(["[CLS]", "a", "b", "c", "d", "[SEP]"], quirk) == [(1, 1, "ANATOMY")]
    # I followed by B closes the span and opens one at the I token
    tokens = ["[CLS]", "a", "b", "c", "[SEP]"]
    labels = ["O", "B-ANATOMY", "I-ANATOMY", "B-DISEASE", "O"]
    assert ratescore.entity_spans(tokens, labels) == [(1, 2, "ANATOMY"), (3, 3, "DISEASE")]


def test_matching_by_hand() -> None:
    table = ratescore.affinity(ratescore.AFFINITY_LONG)
    reference = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    candidate = np.array([[2.0, 1.0], [0.0, 2.0]], dtype=np.float32)
    ref_types, cand_types = ["DISEASE", "ANATOMY"], ["NON-DISEASE", "ANATOMY"]
    # the package's "long" matrix: (DISEASE, NON-DISEASE), (ANATOMY, ANATOMY), (NON-DISEASE, DISEASE), neg_weight
    w_dn, w_aa, w_nd, neg = 0.3789136708096537, 0.2856134859160784, 0.10073046076318157, 0.8716553966489615
    # reference -> candidate: DISEASE's best is NON-DISEASE (cos 2/sqrt5, a negation pair), ANATOMY's is ANATOMY (1)
    p = (2 / math.sqrt(5) * w_dn * neg + 1.0 * w_aa) / (w_dn + w_aa)
    # candidate -> reference: NON-DISEASE's best is DISEASE (cos 2/sqrt5), ANATOMY's is ANATOMY
    r = (2 / math.sqrt(5) * w_nd * neg + 1.0 * w_aa) / (w_nd + w_aa)
    assert ratescore.directed_score(reference, candidate, ref_types, cand_types, table) == pytest.approx(p, rel=1e-6)
    assert ratescore.directed_score(candidate, reference, cand_types, ref_types, table) == pytest.approx(r, rel=1e-6)
    expected = 2 * p * r / (p + r)
    assert ratescore.pair_score(candidate, cand_types, reference, ref_types, table) == pytest.approx(expected, rel=1e-6)
    assert ratescore.pair_score(candidate[:0], [], reference, ref_types, table) == 0.5  # a side without entities
    opposite = np.array([[-1.0, 0.0]], dtype=np.float32)  # cos -1 both ways: P = R = -1, and F = 2PR/(P+R) = -1
    same = ratescore.pair_score(reference[:1], ["ANATOMY"], reference[:1], ["ANATOMY"], table)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert ratescore.pair_score(opposite, ["ANATOMY"], reference[:1], ["ANATOMY"], table) == pytest.approx(-1.0)


def test_random_models_end_to_end_deterministic_and_cached(rate_ner_dir, rate_embed_dir, cache_dir) -> None:
    first = ratescore.score(PREDICTIONS, REFERENCES, _options(rate_ner_dir, rate_embed_dir, 4, cache_dir))
    items = first.items["ratescore"]
    assert len(items) == len(PREDICTIONS) and first.corpus["ratescore"] == pytest.approx(np.mean(items))
    assert items[2] == 0.5  # the empty prediction has no entity
    assert any(0.0 < x < 1.0 and x != 0.5 for x in items)  # the random NER finds entities on both sides
    assert first.info["texts_computed"] > 0 and first.info["entities_computed"] > 0
    again = ratescore.score(PREDICTIONS, REFERENCES, _options(rate_ner_dir, rate_embed_dir, 4, cache_dir))
    assert again.items == first.items
    assert again.info["texts_computed"] == 0 and again.info["entities_computed"] == 0
    one = ratescore.score(PREDICTIONS, REFERENCES, _options(rate_ner_dir, rate_embed_dir, 1, ""))
    seven = ratescore.RaTEScorer(_options(rate_ner_dir, rate_embed_dir, 7, ""))
    assert seven.entities(PREDICTIONS) == ratescore.RaTEScorer(_options(rate_ner_dir, rate_embed_dir, 1, "")).entities(
        PREDICTIONS)
    assert np.allclose(one.items["ratescore"], ratescore.score_with(seven, PREDICTIONS, REFERENCES).items["ratescore"],
                       atol=1e-5)


def test_weights_spec_forms(rate_ner_dir, rate_embed_dir, tmp_path, monkeypatch) -> None:
    assert ratescore.component_weights(None) == (None, None)
    assert ratescore.component_weights("embed=/e") == (None, "/e")
    folder = tmp_path / "rate"
    (folder / "ner").mkdir(parents=True)
    (folder / "embed").mkdir()
    assert ratescore.component_weights(str(folder)) == (str(folder / "ner"), str(folder / "embed"))
    with pytest.raises(ConfigError, match="expected ner=PATH,embed=PATH"):
        ratescore.component_weights("nerr=/x")
    with pytest.raises(ConfigError, match="a folder with ner/ and embed/"):
        ratescore.component_weights(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(MetricError) as err:  # the NER model given, the encoder missing: named with its option
        ratescore.score(["a"], ["b"], ModelMetricOptions(f"ner={rate_ner_dir}", "cpu", 4, str(tmp_path)))
    assert str(err.value) == (
        "eval.weights.ratescore_embed: no weights found (offline); download the BioLORD entity encoder from the hub "
        "repository FremyCompany/BioLORD-2023-C and pass eval.weights.ratescore_embed=/path/to/folder")


def test_a_model_with_other_labels_is_refused(rate_embed_dir, tmp_path) -> None:
    from transformers import BertConfig, BertForTokenClassification

    folder = tmp_path / "other-ner"
    BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                          intermediate_size=8, num_labels=3)).save_pretrained(str(folder))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (rate_embed_dir / name).is_file():
            (folder / name).write_bytes((rate_embed_dir / name).read_bytes())
    with pytest.raises(MetricError, match="are not O or B-/I- of ABNORMALITY"):
        ratescore.score(["no effusion"], ["effusion"], _options(folder, rate_embed_dir))


@pytest.mark.skipif(importlib.util.find_spec("RaTEScore") is None, reason="the RaTEScore package is not installed")
def test_equals_the_ratescore_package(rate_ner_dir, rate_embed_dir, monkeypatch) -> None:
    import RaTEScore.score as package_score
    from RaTEScore import RaTEScore

    # medspaCy's PyRuSH splitter is the documented deviation: give the package mrg's sentences
    def split(texts):
        sentences, starts = [], []
        for text in texts:
            for index, sentence in enumerate(ratescore.split_sentences(text)):
                sentences.append(sentence)
                starts.append(1 if index == 0 else 0)
        return sentences, starts

    monkeypatch.setattr(package_score, "sentence_split", split)
    keep = [i for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES, strict=True)) if p.strip() and r.strip()]
    preds, refs = [PREDICTIONS[i] for i in keep], [REFERENCES[i] for i in keep]
    theirs = RaTEScore(bert_model=str(rate_ner_dir), eval_model=str(rate_embed_dir), use_gpu=False,
                       batch_size=3).compute_score(preds, refs)
    ours = ratescore.score(preds, refs, _options(rate_ner_dir, rate_embed_dir, 5))
    assert np.allclose(ours.items["ratescore"], theirs, atol=1e-5)
