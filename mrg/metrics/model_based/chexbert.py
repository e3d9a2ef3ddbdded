"""CheXbert F1 (14 and 5 observations, micro and macro) and SembScore, from one CheXbert forward pass per text.

CheXbert (Smit et al. 2020) is BERT-base with 14 linear heads on the final [CLS] state: 13 heads with the
classes blank / positive / negative / uncertain and a two-class head (blank / positive) for No Finding.
This module re-implements the labeller of ``f1chexbert`` 0.0.2 (``F1CheXbert.get_label``) and the
embedding of rajpurkarlab/CXR-Report-Metric (``CheXbert/src/encode.py``), which the field's numbers come
from; the package itself does not run under transformers 5 (it calls ``encode_plus``).

* Text preparation (both references): strip, newlines to spaces, runs of whitespace to one space;
  WordPiece tokens, ``[CLS] tokens [SEP]``, cut to 512 ids (``[:511] + [SEP]``); an empty report is
  ``[CLS] [SEP]``.
* Labels: argmax per head. ``chexbert_f1_*`` follow f1chexbert's "rrg" mode: positive **and uncertain**
  count as positive, negative and blank as negative; ``classification_report`` "micro avg" / "macro avg"
  over the 14 observations (CheXbert order) and over the 5 (Cardiomegaly, Edema, Consolidation,
  Atelectasis, Pleural Effusion). ``chexbert_uneg_f1_*`` map uncertain to negative (LLaVA-Rad's
  "Micro-F1-14", without "+"). ``chexbert_accuracy_5`` is f1chexbert's exact-match accuracy on the 5.
  Macro means include observations that never occur (their F1 is 0), as sklearn computes them.
* SembScore (CXR-Report-Metric ``add_semb_col``): cosine similarity of the final-layer [CLS] vectors of
  prediction and reference, mean over pairs.

The reports are batched (padding + attention mask) where f1chexbert runs one report at a time; the two
agree to float rounding (tested against the package where it can run).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mrg.errors import MetricError
from mrg.metrics.model_based.base import (
    CachedRunner,
    FamilyResult,
    HubFile,
    MetricInfo,
    ModelMetricOptions,
    TextCache,
    cache_root_for,
    check_batch_size,
    check_pairs,
    fetch_from_hub,
    hub_offline,
    implementation_info,
    mean,
    pack_array,
    resolve_device,
    resolve_weights,
    unpack_array,
    weights_sha256,
)
from mrg.metrics.model_based.encoders import has_tokenizer, load_tokenizer, pad_batch

OPTION = "eval.weights.chexbert"
DEFAULT_WEIGHTS = HubFile("StanfordAIMI/RRG_scorers", "chexbert.pth")
TOKENIZER_HUB = HubFile("google-bert/bert-base-uncased")
MAX_IDS = 512

# CheXbert's head order (f1chexbert ``target_names``).
CONDITIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices", "No Finding",
)
# head class index -> CheXpert label value (None = blank); the No Finding head has only blank / positive.
_CLASS_VALUE = {0: None, 1: 1.0, 2: 0.0, 3: -1.0}

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("chexbert_f1_micro_14", "CheXbert micro-F1 (14)", True,
               "micro F1 over the 14 CheXbert observations, uncertain as positive (f1chexbert)"),
    MetricInfo("chexbert_f1_macro_14", "CheXbert macro-F1 (14)", True,
               "macro F1 over the 14 observations, uncertain as positive (f1chexbert)"),
    MetricInfo("chexbert_f1_micro_5", "CheXbert micro-F1 (5)", True,
               "micro F1 over the 5 common observations, uncertain as positive (f1chexbert)"),
    MetricInfo("chexbert_f1_macro_5", "CheXbert macro-F1 (5)", True,
               "macro F1 over the 5 common observations, uncertain as positive (f1chexbert)"),
    MetricInfo("chexbert_uneg_f1_micro_14", "CheXbert micro-F1 (14, unc. neg.)", True,
               "micro F1 over the 14 observations, uncertain as negative (LLaVA-Rad Micro-F1-14)"),
    MetricInfo("chexbert_uneg_f1_macro_14", "CheXbert macro-F1 (14, unc. neg.)", True,
               "macro F1 over the 14 observations, uncertain as negative"),
    MetricInfo("chexbert_uneg_f1_micro_5", "CheXbert micro-F1 (5, unc. neg.)", True,
               "micro F1 over the 5 observations, uncertain as negative (LLaVA-Rad Micro-F1-5)"),
    MetricInfo("chexbert_uneg_f1_macro_5", "CheXbert macro-F1 (5, unc. neg.)", True,
               "macro F1 over the 5 observations, uncertain as negative"),
    MetricInfo("chexbert_accuracy_5", "CheXbert accuracy (5)", True,
               "share of reports whose 5 labels all match the reference's (f1chexbert accuracy)"),
    MetricInfo("semb_score", "SembScore", True,
               "cosine similarity of CheXbert [CLS] embeddings of prediction and reference (CXR-Report-Metric)"),
)

# clinical_efficacy key -> our key
_CE_KEYS = {
    "ce_upos_micro_f1": "chexbert_f1_micro_14",
    "ce_upos_macro_f1": "chexbert_f1_macro_14",
    "ce5_upos_micro_f1": "chexbert_f1_micro_5",
    "ce5_upos_macro_f1": "chexbert_f1_macro_5",
    "ce_f1": "chexbert_uneg_f1_micro_14",
    "ce_macro_f1": "chexbert_uneg_f1_macro_14",
    "ce5_micro_f1": "chexbert_uneg_f1_micro_5",
    "ce5_macro_f1": "chexbert_uneg_f1_macro_5",
}


def prepare_text(text: str) -> str:
    """f1chexbert's / CheXbert's cleaning: strip, newlines to spaces, whitespace runs to one space, strip."""
    text = text.strip().replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip()


def encode(tokenizer: Any, text: str) -> list[int]:
    """``[CLS] wordpieces [SEP]`` cut to 512 ids, as CheXbert's ``tokenize``; ``[CLS] [SEP]`` when empty."""
    tokens = tokenizer.tokenize(prepare_text(text))
    if not tokens:
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]
    ids = [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(tokens), tokenizer.sep_token_id]
    if len(ids) > MAX_IDS:
        ids = ids[: MAX_IDS - 1] + [tokenizer.sep_token_id]
    return ids


class CheXbert:
    """The CheXbert labeller: BERT + 14 heads, loaded from a ``chexbert.pth`` state dict (``weights_only``)."""

    def __init__(self, checkpoint: Path, tokenizer_dir: Path, device: Any) -> None:
        import torch
        from transformers import BertConfig, BertModel

        state = _read_checkpoint(checkpoint)
        bert_state = OrderedDict((k[len("bert."):], v) for k, v in state.items() if k.startswith("bert."))
        config_file = checkpoint.parent / "config.json"
        config = BertConfig.from_json_file(str(config_file)) if config_file.is_file() else _infer_config(bert_state)
        self.bert = BertModel(config)
        bert_state.pop("embeddings.position_ids", None)
        missing, unexpected = self.bert.load_state_dict(bert_state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise MetricError(
                f"{OPTION}: {checkpoint}: not a CheXbert checkpoint for this BERT config (missing {missing[:3]}, "
                f"unexpected {list(unexpected)[:3]}); pass chexbert.pth from {DEFAULT_WEIGHTS.repo}"
            )
        heads = []
        for index in range(len(CONDITIONS)):
            weight, bias = state.get(f"linear_heads.{index}.weight"), state.get(f"linear_heads.{index}.bias")
            if weight is None or bias is None:
                raise MetricError(
                    f"{OPTION}: {checkpoint}: linear head {index} is missing; this is not a CheXbert checkpoint"
                )
            heads.append((weight.float(), bias.float()))
        self.heads = [(w.to(device), b.to(device)) for w, b in heads]
        self.bert.to(device).eval()
        self.device = device
        self.tokenizer = load_tokenizer(tokenizer_dir, OPTION)
        self._torch = torch

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: the 14 head classes ``c`` and the final [CLS] vector ``e`` (base64 float32)."""
        torch = self._torch
        ids = [encode(self.tokenizer, text) for text in texts]
        input_ids, mask = pad_batch(ids, self.tokenizer.pad_token_id)
        with torch.inference_mode():
            hidden = self.bert(input_ids.to(self.device), attention_mask=mask.to(self.device))[0]
            cls = hidden[:, 0, :].float()  # (batch, hidden)
            classes = torch.stack([(cls @ w.T + b).argmax(dim=1) for w, b in self.heads], dim=1)  # (batch, 14)
        cls_np, classes_np = cls.cpu().numpy(), classes.cpu().numpy()
        return [{"c": [int(x) for x in classes_np[i]], "e": pack_array(cls_np[i])} for i in range(len(texts))]


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle errors, truncation, wrong format
        raise MetricError(
            f"{OPTION}: {path}: cannot read the checkpoint ({type(err).__name__}); expected chexbert.pth "
            f"(a torch state dict) from {DEFAULT_WEIGHTS.repo}"
        ) from None
    state = raw.get("model_state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise MetricError(f"{OPTION}: {path}: not a state dict; expected chexbert.pth from {DEFAULT_WEIGHTS.repo}")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())


def _infer_config(bert_state: dict[str, Any]) -> Any:
    """BERT's config from the tensor shapes (heads: hidden / 64, as in every BERT release)."""
    from transformers import BertConfig

    try:
        vocab, hidden = bert_state["embeddings.word_embeddings.weight"].shape
        positions = bert_state["embeddings.position_embeddings.weight"].shape[0]
        types = bert_state["embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = bert_state["encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise MetricError(f"{OPTION}: the checkpoint has no {err.args[0]!r}; this is not a CheXbert checkpoint") from None
    layers = len({k.split(".")[2] for k in bert_state if k.startswith("encoder.layer.")})
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), intermediate_size=intermediate,
                      max_position_embeddings=positions, type_vocab_size=types)


def resolve(options: ModelMetricOptions, option: str = OPTION) -> tuple[Path, Path, str]:
    """(checkpoint file, tokenizer folder, how the user named the weights)."""
    path, named = resolve_weights(option, options.weights, DEFAULT_WEIGHTS, "chexbert.pth", "/path/to/chexbert.pth")
    if path.is_dir():
        candidates = [path / "chexbert.pth"] if (path / "chexbert.pth").is_file() else sorted(path.glob("*.pth"))
        if len(candidates) != 1:
            raise MetricError(
                f"{option}={named}: expected chexbert.pth in the folder; download it from the hub repository "
                f"{DEFAULT_WEIGHTS.repo} (file chexbert.pth)"
            )
        path = candidates[0]
    if has_tokenizer(path.parent):
        return path, path.parent, named
    try:
        tokenizer_dir = fetch_from_hub(option, TOKENIZER_HUB, "the bert-base-uncased tokenizer", "/path/to/folder")
    except MetricError:
        state = "offline" if hub_offline() else "not in the hub cache"
        raise MetricError(
            f"{option}: CheXbert's tokenizer was not found ({state}); put bert-base-uncased's vocab.txt (hub "
            f"repository {TOKENIZER_HUB.repo}) beside {path.name}, in {path.parent}"
        ) from None
    return path, tokenizer_dir, named


def label_dict(classes: list[int]) -> dict[str, float]:
    """CheXbert head classes -> CheXpert-style labels (1.0 / 0.0 / -1.0; blank omitted) by observation name."""
    labels: dict[str, float] = {}
    for name, cls in zip(CONDITIONS, classes, strict=True):
        value = _CLASS_VALUE[cls]
        if value is not None:
            labels[name] = value
    return labels


class ChexbertScorer:
    """Loads CheXbert once and serves cached per-text outputs (also used by RadCliQ)."""

    def __init__(self, options: ModelMetricOptions, option: str = OPTION) -> None:
        self.options = options
        self.checkpoint, self.tokenizer_dir, self.named = resolve(options, option)
        root = cache_root_for(options)
        tokenizer_files = [p for p in self.tokenizer_dir.iterdir() if p.is_file() and p.suffix in (".json", ".txt")]
        config = [self.checkpoint.parent / "config.json"] if (self.checkpoint.parent / "config.json").is_file() else []
        self.sha = weights_sha256([self.checkpoint, *config, *tokenizer_files], root)
        self.device = resolve_device(options.device)
        self._model: CheXbert | None = None
        self.runner = CachedRunner(
            TextCache(root, "chexbert", "chexbert", self.sha, variant=f"max_ids={MAX_IDS}"),
            self._compute, check_batch_size(options.batch_size),
        )

    def _compute(self, texts: list[str]) -> list[Any]:
        if self._model is None:
            self._model = CheXbert(self.checkpoint, self.tokenizer_dir, self.device)
        return self._model(texts)

    def outputs(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        values = self.runner.run(texts)
        classes = [value["c"] for value in values]
        embeddings = np.stack([unpack_array(value["e"]) for value in values])  # (n, hidden)
        return classes, embeddings

    def info(self) -> dict[str, Any]:
        return {
            "weights": self.named,
            "weights_sha256": self.sha,
            "implementation": implementation_info("f1chexbert", "0.0.2 / CXR-Report-Metric encode.py"),
            "device": str(self.device),
            "texts_computed": self.runner.computed,
            "texts_cached": self.runner.cached,
        }


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (CXR-Report-Metric: (a*b).sum() / (|a| |b|), in float32)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return (a32 * b32).sum(axis=1) / (np.linalg.norm(a32, axis=1) * np.linalg.norm(b32, axis=1))


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """CheXbert F1 scores and SembScore of predictions against references."""
    check_pairs("chexbert", predictions, references)
    scorer = ChexbertScorer(options)
    return score_with(scorer, predictions, references)


def score_with(scorer: ChexbertScorer, predictions: list[str], references: list[str]) -> FamilyResult:
    from mrg.metrics.clinical import clinical_efficacy

    classes, embeddings = scorer.outputs(list(predictions) + list(references))
    n = len(predictions)
    pred_labels = [label_dict(c) for c in classes[:n]]
    ref_labels = [label_dict(c) for c in classes[n:]]
    ce = clinical_efficacy(pred_labels, ref_labels)
    corpus = {ours: ce[theirs] for theirs, ours in _CE_KEYS.items()}
    five = [CONDITIONS.index(name) for name in ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis",
                                                 "Pleural Effusion")]
    def positive5(c: list[int]) -> tuple[bool, ...]:
        return tuple(c[i] in (1, 3) for i in five)

    exact5 = [float(positive5(p) == positive5(r)) for p, r in zip(classes[:n], classes[n:], strict=True)]
    semb = [float(x) for x in cosine(embeddings[:n], embeddings[n:])]
    corpus["chexbert_accuracy_5"] = mean(exact5)
    corpus["semb_score"] = mean(semb)
    ordered = {m.name: corpus[m.name] for m in METRICS}
    return FamilyResult(ordered, {"chexbert_accuracy_5": exact5, "semb_score": semb}, scorer.info())
