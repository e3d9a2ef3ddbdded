"""BLEU, ROUGE-L and CIDEr-D: parity with the pycocoevalcap scorers on generated corpora, and the quirks kept."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from mrg.errors import MetricError
from mrg.metrics.nlg import bleu_from_stats, lcs_length, score_nlg

TOL = 1e-9


def coco_scores(predictions: list[str], references: list[list[str]]) -> dict:
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    cider, cider_items = Cider().compute_score(gts, res)
    return {
        "bleu": bleu,
        "bleu_items": np.asarray(bleu_items).T,
        "rouge": rouge,
        "rouge_items": rouge_items,
        "cider": cider,
        "cider_items": cider_items,
    }


def assert_parity(predictions: list[str], references: list[list[str]]) -> None:
    ours = score_nlg(predictions, references)
    theirs = coco_scores(predictions, references)
    np.testing.assert_allclose(ours.bleu, theirs["bleu"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.bleu_items, theirs["bleu_items"], rtol=0, atol=TOL)
    assert ours.rouge_l == pytest.approx(theirs["rouge"], abs=TOL)
    np.testing.assert_allclose(ours.rouge_l_items, theirs["rouge_items"], rtol=0, atol=TOL)
    assert ours.cider == pytest.approx(theirs["cider"], abs=TOL)
    np.testing.assert_allclose(ours.cider_items, theirs["cider_items"], rtol=0, atol=TOL)


def test_parity_on_multi_sentence_corpus(corpus) -> None:
    preds, refs = corpus(300)
    assert_parity(preds, [[r] for r in refs])


def test_parity_with_empty_and_short_predictions(corpus_rng: random.Random, report_maker) -> None:
    refs = [[report_maker(corpus_rng)] for _ in range(60)]
    preds = [report_maker(corpus_rng) for _ in range(60)]
    preds[3] = ""
    preds[10] = "."
    preds[11] = "the"
    preds[20] = "lungs clear"
    assert_parity(preds, refs)


def test_parity_with_punctuation_unicode_and_odd_spacing(corpus_rng: random.Random, report_maker) -> None:
    preds = [
        "Heart: normal; lungs -- clear!!! (no effusion) ...",
        "the µ-lesion — ½ cm , naïve café .",
        "double  spaced   text . with  gaps",
        " leading and trailing spaces ",
        "tabs\tand\nnewlines inside",
        "“quoted” ‘text’ … done",
    ]
    refs = [
        ["heart : normal ; lungs - clear ! no effusion ."],
        ["the µ-lesion — ½ cm , naive cafe ."],
        ["double spaced text . with gaps"],
        ["leading and trailing spaces"],
        ["tabs and newlines inside"],
        ["quoted text done"],
    ]
    preds += [report_maker(corpus_rng) for _ in range(20)]
    refs += [[report_maker(corpus_rng)] for _ in range(20)]
    assert_parity(preds, refs)


def test_parity_with_repeated_words() -> None:
    preds = ["no no no no no no", "the the the heart heart", "effusion effusion . effusion effusion ."]
    refs = [["no effusion no pneumothorax no no"], ["the heart the heart is normal"], ["effusion ."]]
    assert_parity(preds, refs)


def test_parity_with_several_references(corpus_rng: random.Random, report_maker) -> None:
    preds = [report_maker(corpus_rng) for _ in range(80)]
    refs = [[report_maker(corpus_rng) for _ in range(corpus_rng.randint(1, 4))] for _ in range(80)]
    # a candidate equally close to two reference lengths: BLEU takes the shorter one
    preds[0] = "a b c d e"
    refs[0] = ["a b c", "a b c d e f g"]
    assert_parity(preds, refs)


def test_single_item_cider_is_zero_as_in_pycocoevalcap() -> None:
    scores = score_nlg(["the lungs are clear ."], [["the lungs are clear ."]])
    assert scores.cider == 0.0
    assert scores.bleu[3] == pytest.approx(1.0, abs=1e-6)
    assert_parity(["the lungs are clear ."], [["the lungs are clear ."]])


def test_cider_depends_on_the_evaluated_set(corpus_rng: random.Random, report_maker) -> None:
    refs = [[report_maker(corpus_rng)] for _ in range(200)]
    preds = [report_maker(corpus_rng) for _ in range(200)]
    full = score_nlg(preds, refs)
    subset = score_nlg(preds[:20], refs[:20])
    assert subset.cider != pytest.approx(float(np.mean(full.cider_items[:20])), abs=1e-3)


def test_bleu_statistics_sum_to_the_corpus_score(corpus_rng: random.Random, report_maker) -> None:
    refs = [[report_maker(corpus_rng)] for _ in range(50)]
    preds = [report_maker(corpus_rng) for _ in range(50)]
    scores = score_nlg(preds, refs)
    np.testing.assert_allclose(bleu_from_stats(scores.bleu_stats.sum(axis=0)), scores.bleu, atol=1e-12)
    # a resample given as multiplicities equals scoring the resampled list
    rng = np.random.default_rng(0)
    draw = rng.integers(0, 50, size=50)
    weights = np.bincount(draw, minlength=50).astype(float)
    resampled = score_nlg([preds[i] for i in draw], [refs[i] for i in draw])
    np.testing.assert_allclose(bleu_from_stats(weights @ scores.bleu_stats), resampled.bleu, atol=1e-12)
    assert scores.cider_stats.corpus_score(weights) == pytest.approx(resampled.cider, abs=1e-9)


def test_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(7)

    def reference_lcs(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        return table[-1][-1]

    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == reference_lcs(a, b)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(MetricError, match="pair up"):
        score_nlg(["a"], [["a"], ["b"]])
    with pytest.raises(MetricError, match="non-empty list"):
        score_nlg(["a"], [[]])


def test_empty_corpus_scores_zero() -> None:
    scores = score_nlg([], [])
    assert scores.as_dict()["cider"] == 0.0


def test_parity_when_the_vocabulary_is_too_large_to_pack(monkeypatch: pytest.MonkeyPatch, corpus) -> None:
    import mrg.metrics.nlg as nlg

    preds, refs = corpus(120)
    references = [[r] for r in refs]
    references[3].append("a second reference . with other words")
    packed = score_nlg(preds, references)
    monkeypatch.setattr(nlg, "PACKED_VOCAB_LIMIT", 2)  # forces the dictionary path
    unpacked = score_nlg(preds, references)
    assert unpacked.as_dict() == pytest.approx(packed.as_dict(), abs=1e-12)
    assert_parity(preds, references)
