"""RaTEScore (Zhao et al. 2024, arXiv 2406.16845): entity-aware similarity of two radiology reports.

A re-implementation of the ``RaTEScore`` package 0.6.0 (``RaTEScore().compute_score(candidates,
references)``; the package itself imports medspaCy, which pulls spaCy and downgrades numpy):

1. sentences: each report is split into sentences; a sentence with no word or under 3 characters is
   dropped (``utils.sentence_split``);
2. NER (``score.run_ner``): every sentence is tokenized alone (``max_length=512``, truncated) and run
   through a token-classification model (default ``Angelakeke/RaTE-NER-Deberta``); the label of a token
   is the argmax of its logits; labels are ``O`` or ``B-``/``I-`` of ABNORMALITY, NON-ABNORMALITY,
   DISEASE, NON-DISEASE, ANATOMY;
3. entity spans: ``utils.post_process``'s state machine over (token, label), reproduced with its quirks
   (see :func:`entity_spans`); an entity's text is ``tokenizer.convert_tokens_to_string`` of its tokens;
   a report's entities are those of all its sentences, in order;
4. embeddings (``score.process_embedding``): each entity text, tokenized with ``max_length=30``
   (truncated), through a text encoder (default ``FremyCompany/BioLORD-2023-C``); its vector is the
   final-layer state of the first token ([CLS] / ``<s>``), not a mean pooling;
5. matching (``utils.compute``): for every entity of side A, the most cosine-similar entity of side B
   (``topk(1)``); its score is ``cos * w(type_A, type_B) * n`` with ``w`` the affinity matrix ("long",
   the package default, :data:`AFFINITY_LONG`) and ``n`` = ``neg_weight`` when the two types are a
   negation pair (:data:`NEG_PAIRS`) else 1; A's score is ``sum(cos * w * n) / sum(w)`` (0 when the sum
   of weights is 0);
6. per pair: P = score(reference -> candidate), R = score(candidate -> reference), RaTEScore =
   2PR / (P + R) (0 when P + R = 0); **0.5** when either report has no entity; the corpus number is the
   mean over pairs.

Deviations, all in places where the package depends on things mrg cannot or should not reproduce:

* sentence splitting: the package uses medspaCy's PyRuSH rules; mrg splits at line breaks and after
  ``.``, ``?`` or ``!`` followed by white space (:func:`split_sentences`). Sentences are tokenized one by
  one in both, so only entities that a split would cut differ;
* a report without sentences (empty) gets no entities, so its pair scores 0.5. The package drops such a
  report from its list, which shifts every later report onto the wrong partner;
* the state machine looks at the label of the next *non-padding* token; the package reads the padded
  batch row, which differs only for a tokenizer that ends a sentence without ``[SEP]``;
* entity texts are deduplicated and embedded in batches across reports (the package embeds each report's
  entities as one batch); the first token's vector does not depend on the padding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrg.errors import ConfigError, MetricError
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
    pack_array,
    resolve_device,
    unpack_array,
    weights_sha256,
)
from mrg.metrics.model_based.encoders import load_model, load_tokenizer, model_files, model_folder

OPTION = "eval.weights.ratescore"
NER_OPTION = "eval.weights.ratescore_ner"
EMBED_OPTION = "eval.weights.ratescore_embed"
DEFAULT_NER = HubFile("Angelakeke/RaTE-NER-Deberta")
DEFAULT_EMBED = HubFile("FremyCompany/BioLORD-2023-C")
NER_MAX_LENGTH = 512
EMBED_MAX_LENGTH = 30
EMPTY_SCORE = 0.5
"""The score of a pair where either report has no entity (the package's choice)."""
TYPES = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")

# RaTEScore 0.6.0 scorer.py DEFAULT_MATRIX_LONG: weight of (type of an entity, type of its best match).
AFFINITY_LONG: dict[str, float] = {
    "abnormality_abnormality": 0.4276119164393705, "abnormality_anatomy": 0.6240929990607657,
    "abnormality_disease": 0.0034478181112993847, "abnormality_non-abnormality": 0.5431049700217344,
    "abnormality_non-disease": 0.27005425386213877, "anatomy_abnormality": 0.7487824274337533,
    "anatomy_anatomy": 0.2856134859160784, "anatomy_disease": 0.4592143222158069,
    "anatomy_non-abnormality": 0.02097055139911715, "anatomy_non-disease": 0.00013736314126696204,
    "disease_abnormality": 0.8396510075734789, "disease_anatomy": 0.9950209388542061,
    "disease_disease": 0.8460555030578727, "disease_non-abnormality": 0.9820689020512646,
    "disease_non-disease": 0.3789136708096537, "non-abnormality_abnormality": 0.16546764653692908,
    "non-abnormality_anatomy": 0.018670610691852826, "non-abnormality_disease": 0.719397354576018,
    "non-abnormality_non-abnormality": 0.0009357166071730684, "non-abnormality_non-disease": 0.0927333564267591,
    "non-disease_abnormality": 0.7759420231214385, "non-disease_anatomy": 0.1839139293714062,
    "non-disease_disease": 0.10073046076318157, "non-disease_non-abnormality": 0.03860183811876373,
    "non-disease_non-disease": 0.34065681486566446, "neg_weight": 0.8716553966489615,
}
# utils.compute neg_class: (type of an entity, type of its best match) pairs that contradict each other.
NEG_PAIRS = frozenset({
    ("NON-DISEASE", "DISEASE"), ("NON-ABNORMALITY", "ABNORMALITY"), ("DISEASE", "NON-DISEASE"),
    ("ABNORMALITY", "NON-ABNORMALITY"), ("NON-DISEASE", "ABNORMALITY"), ("NON-ABNORMALITY", "DISEASE"),
    ("DISEASE", "NON-ABNORMALITY"), ("ABNORMALITY", "NON-DISEASE"),
})

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("ratescore", "RaTEScore", True,
               "RaTEScore 0.6.0: NER entities + BioLORD [CLS] embeddings, affinity-weighted matching, F (ReXrank)"),
)


def affinity(matrix: dict[str, float]) -> dict[tuple[str, str], float]:
    """The package's lookup table: ``"non-disease_anatomy"`` -> ``("NON-DISEASE", "ANATOMY")``."""
    return {(key.split("_")[0].upper(), key.split("_")[1].upper()): value for key, value in matrix.items()}


# --------------------------------------------------------------------------------------------- text

_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a report: split at line breaks and after ``.?!`` + white space; empty and < 3 chars dropped."""
    out = []
    for part in _SENTENCE_END.split(text):
        sentence = part.strip()
        if len(sentence.split()) == 0 or len(sentence) < 3:
            continue
        out.append(sentence)
    return out


def entity_spans(tokens: Sequence[str], labels: Sequence[str]) -> list[tuple[int, int, str]]:
    """``RaTEScore.utils.post_process``: (first, last, type) token spans from BIO labels, quirks included.

    Faithful to the package: ``[CLS]`` and ``[SEP]`` are skipped by name; the next token's label decides
    (B then I opens a span, B then B or O closes a one-token span, I then B or O closes the open span);
    after B then B the start is set again without clearing the end, and a span still open at the end
    reaches the token before the last only when no end was ever set.
    """
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    end: int | None = None
    kind: str | None = None
    for i, (token, label) in enumerate(zip(tokens, labels, strict=False)):
        if token in ("[CLS]", "[SEP]") or label == "O" or i >= len(labels) - 1:
            continue
        following = labels[i + 1]
        if label.startswith("B-") and following.startswith("I-"):
            start, kind = i, label[2:]
        elif label.startswith("B-") and following.startswith("B-"):
            spans.append((i, i, label[2:]))
            start, end, kind = i, i, label[2:]
        elif label.startswith("B-") and following.startswith("O"):
            spans.append((i, i, label[2:]))
            start = end = kind = None
        elif label.startswith("I-") and following.startswith("B-"):
            end = i
            if start is not None:
                spans.append((start, end, kind))  # type: ignore[arg-type]
            start, kind = i, label[2:]
        elif label.startswith("I-") and following.startswith("O"):
            end = i
            if start is not None:
                spans.append((start, end, kind))  # type: ignore[arg-type]
            start = end = kind = None
    if start is not None and end is None:
        spans.append((start, len(tokens) - 2, kind))  # type: ignore[arg-type]
    return spans


# ------------------------------------------------------------------------------------------ scoring


def directed_score(source: np.ndarray, target: np.ndarray, source_types: Sequence[str], target_types: Sequence[str],
                   table: dict[tuple[str, str], float]) -> float:
    """``RaTEScore.utils.compute``: every source entity matched to its most similar target entity.

    ``source`` (n, d) and ``target`` (m, d) are entity embeddings; returns sum(cos * w * neg) / sum(w).
    """
    import torch

    src = torch.nn.functional.normalize(torch.as_tensor(source, dtype=torch.float32), p=2, dim=1)
    dst = torch.nn.functional.normalize(torch.as_tensor(target, dtype=torch.float32), p=2, dim=1)
    neg_weight = table[("NEG", "WEIGHT")]
    total = weights = 0.0
    for row, source_type in zip(src, source_types, strict=True):
        values, indices = torch.topk(dst @ row, 1, largest=True)  # (m,) cosines -> best target
        match_type = target_types[int(indices[0])]
        weight = table[(source_type, match_type)]
        negation = neg_weight if (source_type, match_type) in NEG_PAIRS else 1
        total += float(values[0]) * weight * negation
        weights += weight
    return total / weights if weights != 0 else 0.0


def pair_score(candidate: np.ndarray, candidate_types: Sequence[str], reference: np.ndarray,
               reference_types: Sequence[str], table: dict[tuple[str, str], float]) -> float:
    """RaTEScore of one pair from its entities' embeddings (n, d) and types; 0.5 when a side has none."""
    if len(candidate_types) == 0 or len(reference_types) == 0:
        return EMPTY_SCORE
    precision = directed_score(reference, candidate, reference_types, candidate_types, table)
    recall = directed_score(candidate, reference, candidate_types, reference_types, table)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------------- models


class NerModel:
    """The token-classification model: reports -> ``[[entity text, type], ...]``."""

    def __init__(self, folder: Path, device: Any, batch_size: int, option: str = NER_OPTION) -> None:
        import torch
        from transformers import AutoModelForTokenClassification

        self.tokenizer = load_tokenizer(folder, option)
        self.model = load_model(folder, option, AutoModelForTokenClassification).to(device)
        self.labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        bad = sorted({v for v in self.labels.values() if v != "O" and (v[:2] not in ("B-", "I-") or v[2:] not in TYPES)})
        if bad:
            raise MetricError(f"{option}: {folder}: labels {bad[:3]} are not O or B-/I- of {', '.join(TYPES)}; "
                              f"this is not a RaTE NER model (e.g. {DEFAULT_NER.repo})")
        self.device, self.batch_size, self._torch = device, batch_size, torch

    def _sentence_entities(self, sentences: list[str]) -> list[list[list[str]]]:
        torch = self._torch
        enc = self.tokenizer(sentences, max_length=NER_MAX_LENGTH, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits  # (batch, width, labels)
        predicted = logits.argmax(dim=2).cpu()
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        out = []
        for row, length in enumerate(lengths):
            tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][row, :length].tolist())
            labels = [self.labels[int(x)] for x in predicted[row, :length]]
            out.append([[self.tokenizer.convert_tokens_to_string(tokens[s : e + 1]), kind]
                        for s, e, kind in entity_spans(tokens, labels)])
        return out

    def __call__(self, texts: list[str]) -> list[list[list[str]]]:
        owners, sentences = [], []
        for index, text in enumerate(texts):
            for sentence in split_sentences(text):
                owners.append(index)
                sentences.append(sentence)
        entities: list[list[list[str]]] = [[] for _ in texts]
        for start in range(0, len(sentences), self.batch_size):
            found = self._sentence_entities(sentences[start : start + self.batch_size])
            for owner, items in zip(owners[start : start + self.batch_size], found, strict=True):
                entities[owner].extend(items)
        return entities


class EntityEncoder:
    """The synonym encoder: entity texts -> first-token final-layer vectors (float32, base64)."""

    def __init__(self, folder: Path, device: Any, option: str = EMBED_OPTION) -> None:
        import torch
        from transformers import AutoModel

        self.tokenizer = load_tokenizer(folder, option)
        self.model = load_model(folder, option, AutoModel).to(device)
        self.device, self._torch = device, torch

    def __call__(self, texts: list[str]) -> list[str]:
        torch = self._torch
        enc = self.tokenizer(texts, truncation=True, padding=True, return_tensors="pt", max_length=EMBED_MAX_LENGTH)
        with torch.inference_mode():
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state  # (n, width, d)
        first = hidden[:, 0, :].float().cpu().numpy()  # (n, d)
        return [pack_array(vector) for vector in first]


def component_weights(spec: str | None) -> tuple[str | None, str | None]:
    """(NER, encoder) weights from ``eval.weights.ratescore``: None, ``ner=X,embed=Y`` or a folder with ner/ embed/."""
    spec = (spec or "").strip()
    if not spec:
        return None, None
    if "=" in spec:
        parts: dict[str, str] = {}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in ("ner", "embed") or not value.strip():
                raise ConfigError(f"{OPTION}={spec}: expected ner=PATH,embed=PATH (either may be left out), e.g. "
                                  "ner=/w/RaTE-NER-Deberta,embed=/w/BioLORD-2023-C")
            parts[name.strip()] = value.strip()
        return parts.get("ner"), parts.get("embed")
    folder = Path(spec).expanduser()
    if not (folder / "ner").is_dir() or not (folder / "embed").is_dir():
        raise ConfigError(f"{OPTION}={spec}: expected a folder with ner/ and embed/ model folders, or "
                          f"ner=PATH,embed=PATH (or {NER_OPTION}=PATH and {EMBED_OPTION}=PATH)")
    return str(folder / "ner"), str(folder / "embed")


class RaTEScorer:
    """Both models, loaded on first use, with per-text entity and per-entity embedding caches."""

    def __init__(self, options: ModelMetricOptions) -> None:
        ner_spec, embed_spec = component_weights(options.weights)
        self.ner_folder, self.ner_named = model_folder(NER_OPTION, ner_spec, DEFAULT_NER, "the RaTE NER model")
        self.embed_folder, self.embed_named = model_folder(EMBED_OPTION, embed_spec, DEFAULT_EMBED,
                                                           "the BioLORD entity encoder")
        root = cache_root_for(options)
        self.ner_sha = weights_sha256(model_files(self.ner_folder), root)
        self.embed_sha = weights_sha256(model_files(self.embed_folder), root)
        self.device = resolve_device(options.device)
        self.batch_size = check_batch_size(options.batch_size)
        self._ner: NerModel | None = None
        self._encoder: EntityEncoder | None = None
        self.ner_runner = CachedRunner(TextCache(root, "ratescore", "ner", self.ner_sha,
                                                 variant=f"split=v1|max_length={NER_MAX_LENGTH}"),
                                       self._entities, self.batch_size)
        self.embed_runner = CachedRunner(TextCache(root, "ratescore", "embed", self.embed_sha,
                                                   variant=f"first-token|max_length={EMBED_MAX_LENGTH}"),
                                         self._embed, self.batch_size)

    def _entities(self, texts: list[str]) -> list[Any]:
        if self._ner is None:
            self._ner = NerModel(self.ner_folder, self.device, self.batch_size)
        return self._ner(texts)

    def _embed(self, texts: list[str]) -> list[Any]:
        if self._encoder is None:
            self._encoder = EntityEncoder(self.embed_folder, self.device)
        return self._encoder(texts)

    def entities(self, texts: Sequence[str]) -> list[list[list[str]]]:
        """Per text, its ``[entity text, type]`` list."""
        return self.ner_runner.run(list(texts))

    def embeddings(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Entity text -> its (d,) embedding."""
        distinct = list(dict.fromkeys(names))
        return {name: unpack_array(value) for name, value in zip(distinct, self.embed_runner.run(distinct), strict=True)}

    def info(self) -> dict[str, Any]:
        return {
            "weights": {"ner": self.ner_named, "embed": self.embed_named},
            "weights_sha256": {"ner": self.ner_sha, "embed": self.embed_sha},
            "implementation": implementation_info("RaTEScore", "0.6.0 (affinity matrix 'long')"),
            "device": str(self.device),
            "texts_computed": self.ner_runner.computed,
            "texts_cached": self.ner_runner.cached,
            "entities_computed": self.embed_runner.computed,
            "entities_cached": self.embed_runner.cached,
        }


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """RaTEScore per pair and its mean."""
    check_pairs("ratescore", predictions, references)
    return score_with(RaTEScorer(options), predictions, references)


def score_with(scorer: RaTEScorer, predictions: list[str], references: list[str]) -> FamilyResult:
    entities = scorer.entities(list(predictions) + list(references))
    vectors = scorer.embeddings([name for items in entities for name, _ in items])
    table = affinity(AFFINITY_LONG)
    n = len(predictions)

    def side(items: list[list[str]]) -> tuple[np.ndarray, list[str]]:
        if not items:
            return np.zeros((0, 0), dtype=np.float32), []
        return np.stack([vectors[name] for name, _ in items]), [kind for _, kind in items]  # (k, d)

    per_item = [pair_score(*side(entities[i]), *side(entities[n + i]), table) for i in range(n)]
    return FamilyResult({"ratescore": mean(per_item)}, {"ratescore": per_item}, scorer.info())
