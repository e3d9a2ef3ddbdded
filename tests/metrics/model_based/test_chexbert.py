"""CheXbert F1 and SembScore: loading chexbert.pth, batching, determinism, cache, and f1chexbert's numbers."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from mrg.metrics.model_based import ModelMetricOptions, chexbert
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES


def _options(folder, cache_dir, batch_size: int = 4) -> ModelMetricOptions:
    return ModelMetricOptions(str(folder / "chexbert.pth"), "cpu", batch_size, cache_dir)


def test_scores_from_a_local_checkpoint(chexbert_dir, cache_dir) -> None:
    result = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, cache_dir))
    assert list(result.corpus) == [m.name for m in chexbert.METRICS]
    assert all(0.0 <= v <= 1.0 or math.isclose(v, 1.0) for k, v in result.corpus.items() if k != "semb_score")
    assert len(result.items["semb_score"]) == len(PREDICTIONS)
    assert result.items["semb_score"][0] == pytest.approx(result.items["semb_score"][8])  # same pair twice
    assert -1.0 <= result.corpus["semb_score"] < 1.0  # the random model tells the reports apart
    assert result.info["weights_sha256"] and result.info["device"] == "cpu"
    assert result.info["texts_computed"] == len(set(PREDICTIONS) | set(REFERENCES))


def test_a_folder_with_chexbert_pth_is_accepted(chexbert_dir, cache_dir) -> None:
    by_file = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, ""))
    by_folder = chexbert.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(chexbert_dir), "cpu", 4, ""))
    assert by_file.corpus == by_folder.corpus


def test_batch_size_does_not_change_the_numbers(chexbert_dir) -> None:
    one = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, "", batch_size=1))
    seven = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, "", batch_size=7))
    assert {k: v for k, v in one.corpus.items() if k != "semb_score"} == {
        k: v for k, v in seven.corpus.items() if k != "semb_score"}
    assert np.allclose(one.items["semb_score"], seven.items["semb_score"], atol=1e-5)


def test_two_runs_are_equal_and_the_second_computes_nothing(chexbert_dir, cache_dir, monkeypatch) -> None:
    calls = []
    original = chexbert.CheXbert.__call__

    def counting(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(chexbert.CheXbert, "__call__", counting)
    first = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, cache_dir))
    assert sum(calls) == len(set(PREDICTIONS) | set(REFERENCES))
    second = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, cache_dir))
    assert first.corpus == second.corpus and first.items == second.items
    assert sum(calls) == len(set(PREDICTIONS) | set(REFERENCES))  # no new model call
    assert second.info["texts_computed"] == 0 and second.info["texts_cached"] == first.info["texts_computed"]
    uncached = chexbert.score(PREDICTIONS, REFERENCES, _options(chexbert_dir, ""))
    assert uncached.corpus == first.corpus


def test_label_mapping_follows_chexbert_classes() -> None:
    classes = [0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert chexbert.label_dict(classes) == {
        "Cardiomegaly": 1.0, "Lung Opacity": 0.0, "Lung Lesion": -1.0, "Support Devices": 1.0, "No Finding": 1.0}


def test_encoding_cleans_whitespace_and_cuts_at_512(chexbert_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(chexbert_dir))
    assert chexbert.encode(tokenizer, "  the lungs\n\nare   clear ") == chexbert.encode(tokenizer, "the lungs are clear")
    assert chexbert.encode(tokenizer, "   ") == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    long = chexbert.encode(tokenizer, "effusion " * 700)
    assert len(long) == 512 and long[-1] == tokenizer.sep_token_id


def test_a_checkpoint_without_heads_is_refused(chexbert_dir, tmp_path) -> None:
    import shutil

    import torch

    from mrg.errors import MetricError

    broken = tmp_path / "broken"
    shutil.copytree(chexbert_dir, broken)
    state = torch.load(broken / "chexbert.pth", weights_only=True)
    del state["model_state_dict"]["module.linear_heads.13.weight"]
    torch.save(state, broken / "chexbert.pth")
    with pytest.raises(MetricError, match="linear head 13 is missing"):
        chexbert.score(["a"], ["b"], ModelMetricOptions(str(broken / "chexbert.pth"), "cpu", 4, ""))


@pytest.mark.skipif(importlib.util.find_spec("f1chexbert") is None, reason="f1chexbert is not installed (optional)")
def test_equals_f1chexbert_on_the_same_checkpoint(chexbert_dir, monkeypatch) -> None:
    import f1chexbert.f1chexbert as package
    import torch
    from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

    # f1chexbert hard-codes bert-base-uncased and its cache folder: point both at the local files.
    local = str(chexbert_dir)
    monkeypatch.setattr(package, "CACHE_DIR", local)
    monkeypatch.setattr(package, "BertTokenizer", type("LocalTokenizer", (), {
        "from_pretrained": staticmethod(lambda name, *a, **k: AutoTokenizer.from_pretrained(local))}))
    monkeypatch.setattr(package, "AutoConfig", type("LocalConfig", (), {
        "from_pretrained": staticmethod(lambda name, *a, **k: AutoConfig.from_pretrained(local))}))
    if not hasattr(PreTrainedTokenizerBase, "encode_plus"):
        # removed in transformers 5; f1chexbert calls encode_plus(list of wordpieces), which transformers 4
        # answers with [CLS] + their ids + [SEP]
        def encode_plus(self, tokens, **kwargs):
            return {"input_ids": [self.cls_token_id, *self.convert_tokens_to_ids(tokens), self.sep_token_id]}

        monkeypatch.setattr(PreTrainedTokenizerBase, "encode_plus", encode_plus, raising=False)
    reference = package.F1CheXbert(device="cpu")
    # F1CheXbert.forward's own arithmetic, line by line (its per-element accuracy step fails on current
    # scikit-learn, so forward() itself cannot be called): labels from the package's get_label
    from sklearn.metrics import accuracy_score, classification_report

    refs = [reference.get_label(text.strip()) for text in REFERENCES]
    hyps = [reference.get_label(text.strip()) for text in PREDICTIONS]
    refs5 = [np.array(r)[reference.target_names_5_index] for r in refs]
    hyps5 = [np.array(h)[reference.target_names_5_index] for h in hyps]
    accuracy = accuracy_score(y_true=refs5, y_pred=hyps5)
    report14 = classification_report(refs, hyps, target_names=reference.target_names, output_dict=True)
    report5 = classification_report(refs5, hyps5, target_names=reference.target_names_5, output_dict=True)
    ours = chexbert.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(chexbert_dir / "chexbert.pth"), "cpu", 3, ""))
    assert ours.corpus["chexbert_f1_micro_14"] == pytest.approx(report14["micro avg"]["f1-score"], abs=1e-12)
    assert ours.corpus["chexbert_f1_macro_14"] == pytest.approx(report14["macro avg"]["f1-score"], abs=1e-12)
    assert ours.corpus["chexbert_f1_micro_5"] == pytest.approx(report5["micro avg"]["f1-score"], abs=1e-12)
    assert ours.corpus["chexbert_f1_macro_5"] == pytest.approx(report5["macro avg"]["f1-score"], abs=1e-12)
    assert ours.corpus["chexbert_accuracy_5"] == pytest.approx(accuracy, abs=1e-12)
    # SembScore: CXR-Report-Metric's cosine of the final [CLS] states, one report at a time
    bert = reference.model.bert

    def cls(text: str) -> np.ndarray:
        ids = package.tokenize(__import__("pandas").Series([text]), reference.tokenizer)[0]
        with torch.no_grad():
            return bert(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)))[0][0, 0].numpy()

    expected = [float(chexbert.cosine(cls(p)[None], cls(r)[None])[0]) for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    assert np.allclose(ours.items["semb_score"], expected, atol=1e-5)
