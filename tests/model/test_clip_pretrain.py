"""TRRG's pretrain model on tiny random encoders, and its validation measures against hand-worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from mrg.errors import DataError
from mrg.model.clip_pretrain import ContrastivePretrainModel, auroc, per_class_auroc, recall_at_k


def _model() -> ContrastivePretrainModel:
    from mrg.model.encoder import VisualEncoder, load_backbone
    from mrg.model.random_models import resolve_model_path
    from mrg.model.text_encoder import TextEncoder

    torch.manual_seed(0)
    encoder = VisualEncoder(load_backbone(resolve_model_path("random:vit")))
    return ContrastivePretrainModel(encoder, TextEncoder("random:bert"), dim=16)


def test_pretrain_loss_backpropagates_into_both_encoders() -> None:
    model = _model()
    batch = {"pixel_values": torch.randn(2, 1, 3, 64, 64), "view_mask": torch.ones(2, 1, dtype=torch.bool),
             "reports": ["The heart is enlarged. No effusion.", "Lungs are clear."]}
    out = model(batch)
    assert out.num_target_tokens == 3 and math.isfinite(out.loss.item())
    out.loss.backward()
    for prefix in ("encoder.", "text_encoder.", "head."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), prefix
    scores = model.zero_shot_scores(batch, ["Cardiomegaly", "Pleural Effusion"])
    assert scores.shape == (2, 2) and bool(((scores > 0) & (scores < 1)).all())


def test_reports_without_sentences_are_refused() -> None:
    model = _model()
    with pytest.raises(DataError, match="no report of the batch has a sentence"):
        model.sentences(["", " . "])


def test_recall_at_k_by_hand() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.1], [0.0, 1.0], [0.7, 0.7]])
    positives = torch.tensor([[False, False, True], [False, True, False]])
    # image 0 ranks sentences 0, 2, 1: its positive is 2nd; image 1 ranks 1 first
    assert recall_at_k(image, text, positives, ks=(1, 2)) == {"recall_at_1": 0.5, "recall_at_2": 1.0}


def test_auroc_by_hand_and_per_class() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    positive = torch.tensor([False, False, True, True])
    assert auroc(scores, positive) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == pytest.approx(0.5)
    labels = torch.tensor([[0.0, 1.0], [0.0, float("nan")], [1.0, 1.0], [1.0, 1.0]])
    out = per_class_auroc(torch.stack([scores, scores], dim=1), labels, ["A", "B"])
    assert out == {"zero_shot_auroc/A": pytest.approx(0.75), "zero_shot_auroc": pytest.approx(0.75)}  # B: one outcome


def test_no_finding_is_derived_from_the_pathology_classes() -> None:
    from mrg.model.clip_pretrain import derive_no_finding

    classes = ["Edema", "No Finding", "Support Devices", "Pneumonia"]
    probs = torch.tensor([[0.5, 0.9, 0.7, 0.2], [0.0, 0.1, 1.0, 0.0]])
    out = derive_no_finding(probs, classes)
    # P(no pathology) = (1 - 0.5)(1 - 0.2) = 0.4; Support Devices is not a pathology, so row 2 is 1.0
    assert out[:, 1].tolist() == pytest.approx([0.4, 1.0])
    assert torch.equal(out[:, [0, 2, 3]], probs[:, [0, 2, 3]]) and probs[0, 1] == pytest.approx(0.9)
    assert torch.equal(derive_no_finding(probs[:, :1], ["Edema"]), probs[:, :1])  # no No Finding column
    only = torch.tensor([[0.3, 0.6]])
    assert torch.equal(derive_no_finding(only, ["No Finding", "Support Devices"]), only)  # no pathology perceived


def test_zero_shot_scores_follow_the_no_finding_option() -> None:
    model = _model().eval()
    batch = {"pixel_values": torch.randn(2, 1, 3, 64, 64), "view_mask": torch.ones(2, 1, dtype=torch.bool)}
    classes = ["Edema", "No Finding", "Pneumonia"]
    derived = model.zero_shot_scores(batch, classes)
    assert derived[:, 1].tolist() == pytest.approx(((1 - derived[:, 0]) * (1 - derived[:, 2])).tolist())
    model.no_finding = "prompt"
    prompt = model.zero_shot_scores(batch, classes)
    assert torch.equal(prompt[:, [0, 2]], derived[:, [0, 2]])
    assert not torch.allclose(prompt[:, 1], derived[:, 1])
