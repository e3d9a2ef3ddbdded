"""RadGraph: words, rewards by hand, loading a folder or a .tar.gz, batching, cache, and the radgraph package."""

from __future__ import annotations

import importlib.util
import json
import tarfile

import numpy as np
import pytest

from mrg.metrics.model_based import ModelMetricOptions, radgraph
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES


def test_words_follow_the_package_preprocessing() -> None:
    assert radgraph.words_of("No effusion/pneumothorax.", "radgraph") == ["No", "effusion", "/", "pneumothorax", "."]
    assert radgraph.words_of("", "radgraph") == ["None"]
    assert radgraph.words_of("Tube (5cm).", "radgraph-xl") == ["Tube", "(", "5cm", ")", "."]


def _ann(*entities):
    return {"entities": {str(i + 1): {"tokens": t, "label": lab, "relations": rels}
                         for i, (t, lab, rels) in enumerate(entities)}}


def test_rewards_by_hand() -> None:
    hyp = _ann(("effusion", "OBS-DP", [["located_at", "2"]]), ("pleural", "ANAT-DP", []))
    ref = _ann(("effusion", "OBS-DP", []), ("pleural", "ANAT-DP", []), ("left", "ANAT-DP", []))
    scores = radgraph.pair_scores("a", "b", hyp, ref)
    assert scores["radgraph_f1_simple"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    # partial: hyp {(effusion, OBS-DP, True), (pleural, ANAT-DP)}; ref has the plain effusion: 1 of 2, 1 of 3
    assert scores["radgraph_f1_partial"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert scores["radgraph_relation_f1"] == 0.0 and scores["radgraph_entity_f1"] == scores["radgraph_f1_simple"]
    assert scores["radgraph_combined"] == pytest.approx(scores["radgraph_entity_f1"] / 2)
    assert radgraph.pair_scores("", "b", hyp, ref)["radgraph_f1_simple"] == 0.0  # an empty text scores 0
    assert radgraph.pair_scores("a", "b", _ann(), ref)["radgraph_f1_partial"] == 0.0


def test_folder_and_tarball_give_the_same_numbers_and_the_cache_is_reused(radgraph_dir, tmp_path, cache_dir) -> None:
    archive = tmp_path / "radgraph.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(radgraph_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(radgraph_dir)), recursive=False)
    folder = radgraph.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(radgraph_dir), "cpu", 4, cache_dir))
    packed = radgraph.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(archive), "cpu", 4, str(tmp_path / "c2")))
    assert folder.corpus == packed.corpus
    assert 0.0 < folder.corpus["radgraph_f1_simple"] < 1.0  # the random model finds entities
    again = radgraph.score(PREDICTIONS, REFERENCES, ModelMetricOptions(str(radgraph_dir), "cpu", 4, cache_dir))
    assert again.items == folder.items and again.info["texts_computed"] == 0


def test_batch_size_does_not_change_the_annotations(radgraph_dir) -> None:
    one = radgraph.RadGraphScorer(ModelMetricOptions(str(radgraph_dir), "cpu", 1, "")).annotations(PREDICTIONS)
    seven = radgraph.RadGraphScorer(ModelMetricOptions(str(radgraph_dir), "cpu", 7, "")).annotations(PREDICTIONS)
    assert one == seven


def test_long_reports_are_folded_into_segments(radgraph_dir) -> None:
    scorer = radgraph.RadGraphScorer(ModelMetricOptions(str(radgraph_dir), "cpu", 2, ""))
    long = " ".join(["small left pleural effusion"] * 12)  # > max_length (24) wordpieces
    annotation = scorer.annotations([long])[0]
    assert annotation["entities"]
    model = scorer._model
    assert model is not None and len(model._segments(model._pieces(long.split())[0])) > 1


def _package_model(radgraph_dir, tmp_path):
    """The same weights written by the package's own DyGIE++ classes (their state dict has every module)."""
    import torch
    from dotmap import DotMap
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    target = tmp_path / "pkg" / "radgraph"
    target.mkdir(parents=True)
    config = json.loads((radgraph_dir / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(config))
    import shutil

    shutil.copytree(radgraph_dir / "vocabulary", target / "vocabulary")
    bert = config["model"]["embedder"]["token_embedders"]["bert"]
    embedder = text_field_embedders.BasicTextFieldEmbedder({"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(
        model_name=bert["model_name"], max_length=bert["max_length"])})
    model_cfg = DotMap(config["model"])
    for name in ["type", "embedder", "initializer", "module_initializer"]:
        del model_cfg[name]
    model = dygie.DyGIE(vocab=Vocabulary.from_files(str(target / "vocabulary")), embedder=embedder, **model_cfg)
    ours = torch.load(radgraph_dir / "weights.th", weights_only=True)
    state = model.state_dict()
    shared = [k for k in state if k in ours and state[k].shape == ours[k].shape]
    assert len(shared) > 40
    state.update({k: ours[k] for k in shared})
    model.load_state_dict(state)
    torch.save(model.state_dict(), target / "weights.th")
    return target.parent


@pytest.mark.skipif(importlib.util.find_spec("radgraph") is None, reason="the radgraph package is not installed (optional)")
def test_equals_the_radgraph_package(radgraph_dir, tmp_path, monkeypatch) -> None:
    from transformers import PreTrainedTokenizerBase

    if not hasattr(PreTrainedTokenizerBase, "encode_plus"):
        # transformers 5 removed the two calls radgraph's allennlp makes; give them their transformers 4 meaning
        monkeypatch.setattr(PreTrainedTokenizerBase, "encode_plus", lambda self, *a, **k: self(*a, **k), raising=False)
        monkeypatch.setattr(PreTrainedTokenizerBase, "build_inputs_with_special_tokens",
                            lambda self, ids, ids2=None: [self.cls_token_id, *ids, self.sep_token_id], raising=False)
    from radgraph import F1RadGraph

    root = _package_model(radgraph_dir, tmp_path)
    long = " ".join(["small left pleural effusion, no pneumothorax."] * 6)  # folded: > 24 wordpieces
    preds, refs = [*PREDICTIONS, long], [*REFERENCES, "no pneumothorax"]
    package = F1RadGraph(reward_level="all", model_type="radgraph", model_cache_dir=str(root))
    mean_reward, rewards, hyp_annotations, ref_annotations = package(refs=refs, hyps=preds)
    ours = radgraph.score(preds, refs, ModelMetricOptions(str(root / "radgraph"), "cpu", 3, ""))
    assert np.allclose(ours.items["radgraph_f1_simple"], rewards[0])
    assert np.allclose(ours.items["radgraph_f1_partial"], rewards[1])
    assert np.allclose(ours.items["radgraph_f1_complete"], rewards[2])
    assert ours.corpus["radgraph_f1_partial"] == pytest.approx(mean_reward[1])
    # the annotations themselves, for the pairs the package annotates (it skips pairs with an empty text)
    scorer = radgraph.RadGraphScorer(ModelMetricOptions(str(root / "radgraph"), "cpu", 3, ""))
    kept = [i for i, (p, r) in enumerate(zip(preds, refs, strict=True)) if p and r]
    mine = scorer.annotations([preds[i] for i in kept])

    def strip(annotation):
        return {k: {f: v[f] for f in ("tokens", "label", "start_ix", "end_ix", "relations")}
                for k, v in annotation["entities"].items()}

    assert [strip(a) for a in mine] == [strip(a) for a in hyp_annotations]
    assert sum(len(a["entities"]) for a in mine) > 0 and any(
        e["relations"] for a in mine for e in a["entities"].values())
