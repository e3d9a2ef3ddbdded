"""BERTScore as RadCliQ-v1 and ReXrank compute it: distilroberta-base, layer 5, no idf, baseline-rescaled.

A re-implementation of ``bert-score`` 0.3.13 (``BERTScorer(model_type="distilroberta-base", lang="en",
rescale_with_baseline=True, idf=False)``, the call in rajpurkarlab/CXR-Report-Metric ``run_eval.py``):

* tokens: the stripped text, with a leading space for byte-level BPE tokenizers (RoBERTa, GPT-2; what
  bert-score's ``add_prefix_space=True`` does with the slow tokenizer it loads), special tokens added,
  cut to ``model_max_length``; an empty text is ``<s></s>``;
* embeddings: the output of layer 5 (bert-score's ``model2layers["distilroberta-base"]``), i.e. the
  encoder truncated to 5 layers, for each distinct text;
* greedy matching on cosine similarity; every token weighs 1 except ``<s>`` and ``</s>`` (weight 0);
  P = mean over prediction tokens of the best cosine, R likewise over reference tokens, F = 2PR/(P+R)
  (NaN -> 0); a text of only special tokens gives P = R = 0;
* rescaling: ``(x - b) / (1 - b)`` with bert-score's baseline for distilroberta-base layer 5 (P 0.84732,
  R 0.84759504, F 0.8473319, ``rescale_baseline/en/distilroberta-base.tsv``), F with its own baseline.

Deviation: the best cosine of a token is taken over the other text's real tokens only. bert-score pads a
batch and multiplies the similarity matrix by the mask, so a padded position's 0 can win when all of a
token's cosines are negative, which makes its number depend on the batch; mrg's does not.

bert-score 0.3.13 itself gives different numbers under transformers 5: the fast RoBERTa tokenizer ignores
``add_prefix_space`` passed to ``encode``, so every text's first word is tokenized without its space.
"""

from __future__ import annotations

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
    implementation_info,
    mean,
    resolve_device,
    text_key,
    weights_sha256,
)
from mrg.metrics.model_based.encoders import load_encoder, load_tokenizer, model_files, model_folder, pad_batch

OPTION = "eval.weights.bertscore"
DEFAULT_WEIGHTS = HubFile("distilbert/distilroberta-base")
LAYER = 5
# bert-score 0.3.13 rescale_baseline/en/distilroberta-base.tsv, row LAYER 5: P, R, F.
BASELINE = (0.84732, 0.84759504, 0.8473319)

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("bertscore", "BERTScore F1", True,
               "BERTScore F1, distilroberta-base layer 5, baseline-rescaled (RadCliQ-v1 / ReXrank)"),
    MetricInfo("bertscore_precision", "BERTScore P", True, "BERTScore precision, same model and rescaling"),
    MetricInfo("bertscore_recall", "BERTScore R", True, "BERTScore recall, same model and rescaling"),
)

_BYTE_LEVEL = ("RobertaTokenizer", "RobertaTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast")


def is_byte_level(tokenizer: Any) -> bool:
    return any(cls.__name__ in _BYTE_LEVEL for cls in type(tokenizer).__mro__)


def encode(tokenizer: Any, text: str) -> list[int]:
    """bert-score's ``sent_encode`` with the slow-tokenizer semantics of ``add_prefix_space=True``."""
    text = text.strip()
    if not text:
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]
    if is_byte_level(tokenizer):
        text = " " + text
    limit = tokenizer.model_max_length if tokenizer.model_max_length and tokenizer.model_max_length < 1e6 else 512
    return list(tokenizer.encode(text, add_special_tokens=True, max_length=limit, truncation=True))


class LayerEncoder:
    """The encoder cut to ``LAYER`` layers (bert-score's ``get_model``) on a device."""

    def __init__(self, folder: Path, device: Any, option: str = OPTION) -> None:
        import torch

        self.tokenizer = load_tokenizer(folder, option)
        model = load_encoder(folder, option)
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if layers is None:
            raise MetricError(f"{option}: {folder}: not a BERT/RoBERTa-style encoder (no encoder.layer); pass distilroberta-base")
        if len(layers) < LAYER:
            raise MetricError(f"{option}: {folder}: the model has {len(layers)} layers; BERTScore uses layer {LAYER}")
        model.encoder.layer = torch.nn.ModuleList(list(layers)[:LAYER])
        self.model = model.to(device)
        self.device = device
        self._torch = torch

    def __call__(self, texts: list[str]) -> list[tuple[list[int], np.ndarray]]:
        torch = self._torch
        ids = [encode(self.tokenizer, text) for text in texts]
        input_ids, mask = pad_batch(ids, self.tokenizer.pad_token_id)
        with torch.inference_mode():
            hidden = self.model(input_ids.to(self.device), attention_mask=mask.to(self.device))[0].float()
        hidden = hidden.cpu().numpy()  # (batch, width, dim)
        return [(seq, hidden[i, : len(seq)]) for i, seq in enumerate(ids)]


def greedy_match(hyp_ids: list[int], hyp: np.ndarray, ref_ids: list[int], ref: np.ndarray,
                 special: set[int]) -> tuple[float, float, float]:
    """Raw (P, R, F) of one pair from token embeddings (float32 throughout, as bert-score)."""
    if len(hyp_ids) == 2 or len(ref_ids) == 2:  # only <s></s>: bert-score sets P = R = 0
        return 0.0, 0.0, 0.0
    h = hyp / np.linalg.norm(hyp, axis=1, keepdims=True)
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    sim = h @ r.T  # (hyp tokens, ref tokens)
    wh = np.array([0.0 if t in special else 1.0 for t in hyp_ids], dtype=np.float32)
    wr = np.array([0.0 if t in special else 1.0 for t in ref_ids], dtype=np.float32)
    precision = float((sim.max(axis=1) * (wh / wh.sum())).sum(dtype=np.float32))
    recall = float((sim.max(axis=0) * (wr / wr.sum())).sum(dtype=np.float32))
    total = np.float32(precision + recall)
    f = float(np.float32(2 * precision * recall) / total) if total else 0.0
    return precision, recall, 0.0 if np.isnan(f) else f


def rescale(values: tuple[float, float, float]) -> tuple[float, float, float]:
    base = np.asarray(BASELINE, dtype=np.float32)
    out = (np.asarray(values, dtype=np.float32) - base) / (np.float32(1) - base)
    return float(out[0]), float(out[1]), float(out[2])


class BertScorer:
    """distilroberta-base loaded once; per-pair scores cached by (prediction, reference)."""

    def __init__(self, options: ModelMetricOptions, option: str = OPTION) -> None:
        self.folder, self.named = model_folder(option, options.weights, DEFAULT_WEIGHTS, "distilroberta-base")
        root = cache_root_for(options)
        self.sha = weights_sha256(model_files(self.folder), root)
        self.device = resolve_device(options.device)
        self.batch_size = check_batch_size(options.batch_size)
        self.option = option
        # The number depends on both texts, so the cache holds pairs; embeddings are shared within a run.
        self.cache = TextCache(root, "bertscore", "pairs", self.sha, variant=f"layer={LAYER}|rescale={BASELINE}")
        self._encoder: LayerEncoder | None = None
        self.calls = 0
        self.computed_pairs = 0
        self.cached_pairs = 0

    def _embed(self, texts: list[str]) -> list[Any]:
        if self._encoder is None:
            self._encoder = LayerEncoder(self.folder, self.device, self.option)
        self.calls += 1
        return self._encoder(texts)

    def pairs(self, predictions: list[str], references: list[str]) -> list[tuple[float, float, float]]:
        """Rescaled (P, R, F) per pair."""
        keys = [text_key(text_key(p) + text_key(r)) for p, r in zip(predictions, references, strict=True)]
        missing = {k: (p, r) for k, p, r in zip(keys, predictions, references, strict=True) if self.cache.get(k) is None}
        self.cached_pairs = len(set(keys)) - len(missing)
        if missing:
            texts = sorted({t for pair in missing.values() for t in pair}, key=lambda t: (-len(t), t))
            embedded: dict[str, Any] = {}
            scratch = CachedRunner(TextCache(None, "", "", ""), self._embed, self.batch_size)
            for text, value in zip(texts, scratch.run(texts), strict=True):
                embedded[text] = value
            special = {self._encoder.tokenizer.cls_token_id, self._encoder.tokenizer.sep_token_id}  # type: ignore[union-attr]
            for key, (p, r) in missing.items():
                (hyp_ids, hyp), (ref_ids, ref) = embedded[p], embedded[r]
                self.cache.put(key, list(rescale(greedy_match(hyp_ids, hyp, ref_ids, ref, special))))
            self.cache.flush()
            self.computed_pairs = len(missing)
        return [tuple(self.cache.get(k)) for k in keys]  # type: ignore[misc]

    def info(self) -> dict[str, Any]:
        return {
            "weights": self.named,
            "weights_sha256": self.sha,
            "implementation": implementation_info("bert-score", "0.3.13 (distilroberta-base, layer 5, idf off, rescaled)"),
            "device": str(self.device),
            "pairs_computed": self.computed_pairs,
            "pairs_cached": self.cached_pairs,
        }


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """Rescaled BERTScore P, R and F1 (mean over pairs) of predictions against references."""
    check_pairs("bertscore", predictions, references)
    scorer = BertScorer(options)
    return score_with(scorer, predictions, references)


def score_with(scorer: BertScorer, predictions: list[str], references: list[str]) -> FamilyResult:
    triples = scorer.pairs(list(predictions), list(references))
    p, r, f = ([t[i] for t in triples] for i in range(3))
    corpus = {"bertscore": mean(f), "bertscore_precision": mean(p), "bertscore_recall": mean(r)}
    return FamilyResult(corpus, {"bertscore": f, "bertscore_precision": p, "bertscore_recall": r}, scorer.info())
