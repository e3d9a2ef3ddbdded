"""RadGraph F1: entities and relations extracted by the RadGraph model (DyGIE++), compared per report pair.

The model is the one the ``radgraph`` package (0.1.18) downloads, ``StanfordAIMI/RRG_scorers`` file
``radgraph.tar.gz`` (or ``radgraph-xl.tar.gz``): a folder with ``config.json``, ``vocabulary/`` and
``weights.th`` (a torch state dict of DyGIE++: a BERT encoder, span width embeddings, an NER scorer and a
relation scorer). mrg runs DyGIE++'s inference itself, because radgraph 0.1.18 (and the allennlp copy
inside it) does not run under transformers 5 (it calls ``encode_plus`` and
``build_inputs_with_special_tokens``). Re-implemented from ``radgraph/dygie`` and ``radgraph/allennlp``:

1. words: ``radgraph.utils.preprocess_reports`` (``radgraph``: a space around ``/ , - : . ! ? ( )``,
   then ``split()``; ``radgraph-xl``: nltk ``wordpunct_tokenize`` plus its fix-ups); an empty report is
   the text "None"; ``/.`` and ``/?`` become ``.`` and ``?``;
2. every word is WordPiece-tokenized alone, ``[CLS] pieces [SEP]``, folded into segments of
   ``max_length`` when longer (allennlp's mismatched indexer/embedder); a word's vector is the mean of its
   pieces' final-layer vectors (zeros when it has none);
3. spans of up to ``max_span_width`` words, each ``[first word; last word; width embedding]``;
4. NER: a feed-forward scorer per span, the null label's score fixed at 0, argmax; non-null spans are
   entities;
5. relations: the ``ceil(spans_per_word * words)`` spans with the best mention score (``topk``, then in
   span order), a feed-forward scorer over ``[a; b; a*b]`` plus both mention scores, null at 0, argmax;
6. output as ``radgraph.utils.get_entity``: entities numbered from 1 in span order, each with its
   relations ``[label, object entity]`` (a relation whose object is not an entity is dropped).

Scores per pair (means over pairs):

* ``radgraph_f1_simple`` / ``_partial`` / ``_complete``: ``radgraph.rewards`` (F1RadGraph reward levels):
  entity (tokens, label); entity + "has a relation"; entity, or one item per relation
  (lower-cased tokens, label, relation, lower-cased object tokens). A pair where either text is empty or
  either side has no entity scores 0.
* ``radgraph_entity_f1``, ``radgraph_relation_f1`` and their mean ``radgraph_combined``: CXR-Report-Metric
  ``radgraph_evaluate_model.py`` (sets of (tokens, label) and of ((tokens, label), (tokens, label),
  relation); F1 0 when a side is empty) -- RadCliQ's RadGraph feature.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    implementation_info,
    mean,
    parse_hub_spec,
    resolve_device,
    resolve_weights,
    weights_sha256,
)
from mrg.metrics.model_based.encoders import has_tokenizer, load_tokenizer, pad_batch

OPTION = "eval.weights.radgraph"
DEFAULT_WEIGHTS = HubFile("StanfordAIMI/RRG_scorers", "radgraph.tar.gz")
_EMBEDDER = "_embedder.token_embedder_bert._matched_embedder.transformer_model."

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("radgraph_f1_partial", "RadGraph F1 (partial)", True,
               "F1RadGraph 'partial': entities and whether they have a relation (radgraph 0.1.18)"),
    MetricInfo("radgraph_f1_simple", "RadGraph F1 (simple)", True, "F1RadGraph 'simple': entities (tokens, label)"),
    MetricInfo("radgraph_f1_complete", "RadGraph F1 (complete)", True,
               "F1RadGraph 'complete': entities and relations with their objects"),
    MetricInfo("radgraph_entity_f1", "RadGraph entity F1", True, "CXR-Report-Metric entity F1"),
    MetricInfo("radgraph_relation_f1", "RadGraph relation F1", True, "CXR-Report-Metric relation F1"),
    MetricInfo("radgraph_combined", "RadGraph combined", True,
               "mean of entity and relation F1 (CXR-Report-Metric, the RadCliQ feature)"),
)


# ------------------------------------------------------------------------------------------- words


def radgraph_words(text: str) -> list[str]:
    """``preprocess_reports`` for model type ``radgraph``."""
    return re.sub("(?<! )(?=[/,-,:,.,!?()])|(?<=[/,-,:,.,!?()])(?! )", r" ", text).split()


def radgraph_xl_words(text: str) -> list[str]:
    """``radgraph_xl_preprocess_report`` then ``split()`` (model types ``radgraph-xl``, ``modern-radgraph-xl``)."""
    from nltk.tokenize import wordpunct_tokenize

    text = text.replace("\\n", "  ").replace("\\f", "  ").replace("\\u2122", "      ")
    text = text.replace("\n", " ").replace('\\"', "``")
    tokenized = " ".join(wordpunct_tokenize(re.sub(r"\s+", " ", text)))
    for old, new in ((").", ") ."), ("%.", "% ."), (".'", ". '"), ("%,", "% ,"), ("%)", "% )")):
        tokenized = tokenized.replace(old, new)
    return tokenized.split()


def words_of(text: str, model_type: str) -> list[str]:
    text = text or "None"  # RadGraph.forward scores an empty report as the text "None"
    words = radgraph_words(text) if model_type == "radgraph" else radgraph_xl_words(text)
    return [w[1:] if w in ("/.", "/?") else w for w in words]  # DyGIEReader._normalize_word


# ------------------------------------------------------------------------------------------- model


def _read_labels(path: Path) -> list[str]:
    lines = re.split(r"\n|\r\n", path.read_text(encoding="utf-8"))
    if lines and lines[-1] == "":
        lines = lines[:-1]
    return [line.replace("@@NEWLINE@@", "\n") for line in lines]


class _FeedForward:
    """allennlp FeedForward in eval mode: Linear then ReLU per layer (dropout is identity)."""

    def __init__(self, state: dict[str, Any], prefix: str) -> None:
        self.layers = []
        index = 0
        while f"{prefix}_linear_layers.{index}.weight" in state:
            self.layers.append((state[f"{prefix}_linear_layers.{index}.weight"], state[f"{prefix}_linear_layers.{index}.bias"]))
            index += 1
        if not self.layers:
            raise KeyError(prefix + "_linear_layers.0.weight")

    def to(self, device: Any) -> _FeedForward:
        self.layers = [(w.to(device), b.to(device)) for w, b in self.layers]
        return self

    def __call__(self, x: Any) -> Any:
        import torch

        for weight, bias in self.layers:
            x = torch.relu(torch.nn.functional.linear(x, weight, bias))
        return x


class RadGraphModel:
    """DyGIE++ inference (NER + relations) from a RadGraph model folder."""

    def __init__(self, folder: Path, device: Any, option: str = OPTION) -> None:
        import torch

        self.folder, self.device, self._torch = folder, device, torch
        transformer_name = self._read_config(folder, option)
        namespaces = sorted(p.name[: -len("__ner_labels.txt")] for p in (folder / "vocabulary").glob("*__ner_labels.txt"))
        if not namespaces:
            raise MetricError(f"{option}: {folder}/vocabulary has no *__ner_labels.txt; this is not a RadGraph model")
        self.model_type = "radgraph" if "radgraph" in namespaces else namespaces[0]
        dataset = self.model_type
        self.ner_labels = _read_labels(folder / "vocabulary" / f"{dataset}__ner_labels.txt")
        rel_file = folder / "vocabulary" / f"{dataset}__relation_labels.txt"
        self.relation_labels = _read_labels(rel_file) if rel_file.is_file() else []
        try:
            state = torch.load(str(folder / "weights.th"), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise MetricError(f"{option}: {folder}/weights.th: cannot read the state dict ({type(err).__name__})") from None

        transformer_dir = self._transformer_dir(folder, transformer_name, option)
        encoder = self._load_encoder(folder, transformer_dir, transformer_name, state, option)
        self.encoder = encoder.to(device).eval()
        self.tokenizer = load_tokenizer(transformer_dir, option)
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(probe)) if probe[i : i + len(plain)] == plain)
        self.start_ids, self.end_ids = probe[:start], probe[start + len(plain):]
        self._load_heads(folder, state, dataset, device, option)

    def _read_config(self, folder: Path, option: str) -> str:
        """Read span, length and relation settings from the AllenNLP ``config.json``; the encoder's name."""
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        try:
            reader, model_cfg = config["dataset_reader"], config["model"]
            indexer = reader["token_indexers"]["bert"]
            self.max_span_width = int(reader["max_span_width"])
            self.max_length = indexer.get("max_length")
            transformer_name = str(model_cfg["embedder"]["token_embedders"]["bert"]["model_name"])
            self.spans_per_word = float(model_cfg["modules"]["relation"]["spans_per_word"])
            loss_weights = model_cfg["loss_weights"]
            coref_prop = model_cfg["modules"].get("coref", {}).get("coref_prop", 0)
        except (KeyError, TypeError, ValueError) as err:
            raise MetricError(f"{option}: {folder}/config.json: missing or bad {err}; this is not a RadGraph model") from None
        if coref_prop:
            raise MetricError(f"{option}: {folder}: coreference propagation (coref_prop) is not supported")
        self.predict_relations = float(loss_weights.get("relation", 0)) > 0
        return transformer_name

    @staticmethod
    def _load_encoder(folder: Path, transformer_dir: Path, transformer_name: str, state: dict[str, Any],
                      option: str) -> Any:
        """The BERT encoder built from ``transformer_dir``'s config with the embedder weights of ``state``."""
        from transformers import AutoConfig, AutoModel

        encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(transformer_dir), local_files_only=True))
        enc_state = {k[len(_EMBEDDER):]: v for k, v in state.items() if k.startswith(_EMBEDDER)}
        enc_state.pop("embeddings.position_ids", None)
        missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise MetricError(f"{option}: {folder}/weights.th does not fit {transformer_name} (missing {missing[:3]}, "
                              f"unexpected {list(unexpected)[:3]})")
        return encoder

    def _load_heads(self, folder: Path, state: dict[str, Any], dataset: str, device: Any, option: str) -> None:
        """The span-width embedding, NER scorer and (when relations are predicted) pruner and relation scorer."""
        try:
            ner_ns, rel_ns = f"{dataset}__ner_labels", f"{dataset}__relation_labels"
            self.width_embedding = state["_endpoint_span_extractor._span_width_embedding.weight"].to(device)
            self.ner_ff = _FeedForward(state, f"_ner._ner_scorers.{ner_ns}.0._module.").to(device)
            self.ner_out = (state[f"_ner._ner_scorers.{ner_ns}.1._module.weight"].to(device),
                            state[f"_ner._ner_scorers.{ner_ns}.1._module.bias"].to(device))
            if self.predict_relations:
                prefix = f"_relation._mention_pruners.{rel_ns}._scorer."
                self.prune_ff = _FeedForward(state, prefix + "0._module.").to(device)
                self.prune_out = (state[prefix + "1._module.weight"].to(device), state[prefix + "1._module.bias"].to(device))
                self.rel_ff = _FeedForward(state, f"_relation._relation_feedforwards.{rel_ns}.").to(device)
                self.rel_out = (state[f"_relation._relation_scorers.{rel_ns}.weight"].to(device),
                                state[f"_relation._relation_scorers.{rel_ns}.bias"].to(device))
        except KeyError as err:
            raise MetricError(f"{option}: {folder}/weights.th has no {err.args[0]!r}; this is not a RadGraph model") from None

    @staticmethod
    def _transformer_dir(folder: Path, name: str, option: str) -> Path:
        """The encoder's config + tokenizer: ``<folder>/transformer``, a local path, or the hub cache."""
        for candidate in (folder / "transformer", Path(name).expanduser()):
            if candidate.is_dir() and (candidate / "config.json").is_file() and has_tokenizer(candidate):
                return candidate
        hub = parse_hub_spec(name)
        if hub is None:
            raise MetricError(f"{option}: {folder}/config.json names the encoder {name!r}, which is not a folder")
        try:
            return fetch_from_hub(option, HubFile(hub.repo), f"the {name} tokenizer and config", "/path/to/folder")
        except MetricError:
            raise MetricError(
                f"{option}: the RadGraph encoder's tokenizer and config ({hub.repo} on the hub) were not found; "
                f"download them (config.json, vocab.txt) into {folder / 'transformer'}"
            ) from None

    # -- forward -------------------------------------------------------------------------------

    def _pieces(self, words: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """Content wordpiece ids and, per word, its (first, last) piece index in the content (-1, -1: none)."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for word in words:
            piece_ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            if piece_ids:
                offsets.append((len(ids), len(ids) + len(piece_ids) - 1))
                ids.extend(piece_ids)
            else:
                offsets.append((-1, -1))
        return ids, offsets

    def _segments(self, ids: list[int]) -> list[list[int]]:
        """allennlp's folding: content cut into pieces of ``max_length - specials``, each wrapped."""
        if self.max_length is None:
            return [self.start_ids + ids + self.end_ids]
        step = int(self.max_length) - len(self.start_ids) - len(self.end_ids)
        chunks = [ids[i : i + step] for i in range(0, len(ids), step)] or [[]]
        return [self.start_ids + chunk + self.end_ids for chunk in chunks]

    def word_vectors(self, docs: list[list[str]]) -> list[Any]:
        """Per document: (words, hidden) word vectors, batching every segment of every document."""
        torch = self._torch
        segments: list[list[int]] = []
        owners: list[tuple[int, list[tuple[int, int]], list[int]]] = []
        for words in docs:
            ids, offsets = self._pieces(words)
            doc_segments = self._segments(ids)
            owners.append((len(segments), offsets, [len(s) for s in doc_segments]))
            segments.extend(doc_segments)
        input_ids, mask = pad_batch(segments, self.tokenizer.pad_token_id)
        with torch.inference_mode():
            hidden = self.encoder(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))[0]
        n_start, n_end = len(self.start_ids), len(self.end_ids)
        out = []
        for first, offsets, lengths in owners:
            content = torch.cat([hidden[first + k, n_start : lengths[k] - n_end] for k in range(len(lengths))], dim=0)
            vectors = torch.zeros((len(offsets), hidden.shape[-1]), dtype=hidden.dtype, device=hidden.device)
            for w, (lo, hi) in enumerate(offsets):
                if lo >= 0:
                    vectors[w] = content[lo : hi + 1].mean(dim=0)
            out.append(vectors)
        return out

    def annotate(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: ``{"entities": {...}}`` in ``radgraph`` package output form (without the text)."""
        torch = self._torch
        docs = [words_of(text, self.model_type) for text in texts]
        results = []
        with torch.inference_mode():
            for words, vectors in zip(docs, self.word_vectors(docs), strict=True):
                results.append({"entities": self._doc_entities(words, vectors)})
        return results

    def _doc_entities(self, words: list[str], vectors: Any) -> dict[str, Any]:
        torch = self._torch
        n = len(words)
        spans = [(s, e) for s in range(n) for e in range(s, min(s + self.max_span_width, n))]
        starts = torch.tensor([s for s, _ in spans], device=self.device)
        ends = torch.tensor([e for _, e in spans], device=self.device)
        span_emb = torch.cat([vectors[starts], vectors[ends], self.width_embedding[ends - starts]], dim=-1)  # (spans, d)
        ner_scores = torch.nn.functional.linear(self.ner_ff(span_emb), *self.ner_out)  # (spans, labels - 1)
        ner_scores = torch.cat([ner_scores.new_zeros((len(spans), 1)), ner_scores], dim=-1)
        ner_labels = ner_scores.max(dim=1)[1].tolist()
        entities = [(spans[i][0], spans[i][1], self.ner_labels[label]) for i, label in enumerate(ner_labels) if label != 0]
        relations: list[tuple[int, int, int, int, str]] = []
        if self.predict_relations and self.relation_labels:
            keep = min(max(math.ceil(n * self.spans_per_word), 1), len(spans))
            mention = torch.nn.functional.linear(self.prune_ff(span_emb), *self.prune_out)  # (spans, 1)
            _, top = mention.unsqueeze(0).topk(keep, 1)
            top = torch.sort(top.squeeze(-1), 1)[0][0]  # (keep,) in span order
            emb, score = span_emb[top], mention[top]  # (keep, d), (keep, 1)
            k = emb.shape[0]
            pair = torch.cat([emb.unsqueeze(1).expand(k, k, -1), emb.unsqueeze(0).expand(k, k, -1),
                              emb.unsqueeze(1) * emb.unsqueeze(0)], dim=-1)  # (k, k, 3d)
            rel = torch.nn.functional.linear(self.rel_ff(pair.reshape(k * k, -1)), *self.rel_out).view(k, k, -1)
            rel = rel + (score.unsqueeze(1) + score.unsqueeze(0))  # (k, k, labels) + s_i + s_j
            rel = torch.cat([rel.new_zeros((k, k, 1)), rel], dim=-1)
            labels = rel.max(dim=-1)[1] - 1
            top_spans = [spans[i] for i in top.tolist()]
            for i, j in (labels >= 0).nonzero(as_tuple=False).tolist():
                a, b = top_spans[i], top_spans[j]
                relations.append((a[0], a[1], b[0], b[1], self.relation_labels[int(labels[i, j])]))
        return _entity_dict(words, entities, relations)


def _entity_dict(words: list[str], entities: list[tuple[int, int, str]],
                 relations: list[tuple[int, int, int, int, str]]) -> dict[str, Any]:
    """``radgraph.utils.get_entity``."""
    spans = [[s, e] for s, e, _ in entities]
    out: dict[str, Any] = {}
    for index, (start, end, label) in enumerate(entities):
        rels = []
        for s1, e1, s2, e2, rel_label in relations:
            if [s1, e1] == [start, end] and [s2, e2] in spans:
                rels.append([rel_label, str(spans.index([s2, e2]) + 1)])
        out[str(index + 1)] = {"tokens": " ".join(words[start : end + 1]), "label": label,
                               "start_ix": start, "end_ix": end, "relations": rels}
    return out


# ------------------------------------------------------------------------------------------ scores


def _f1_sets(hyp: set[Any], ref: set[Any]) -> float:
    """The F1 of ``radgraph.rewards`` (precision over hyp, recall over ref; 0 when undefined)."""
    precision = sum(1 for x in hyp if x in ref) / len(hyp) if hyp else 0.0
    recall = sum(1 for x in ref if x in hyp) / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _simple(ann: dict[str, Any]) -> set[Any]:
    return {(e["tokens"], e["label"]) for e in ann["entities"].values()}


def _partial(ann: dict[str, Any]) -> set[Any]:
    return {(e["tokens"], e["label"], True) if e["relations"] else (e["tokens"], e["label"])
            for e in ann["entities"].values()}


def _complete(ann: dict[str, Any]) -> set[Any]:
    items: set[Any] = set()
    entities = ann["entities"]
    for e in entities.values():
        if not e["relations"]:
            items.add((e["tokens"], e["label"]))
        for rel, obj in e["relations"]:
            items.add((e["tokens"].lower(), e["label"], rel, entities[obj]["tokens"].lower()))
    return items


def _cxr_relations(ann: dict[str, Any]) -> set[Any]:
    entities = ann["entities"]
    return {((e["tokens"], e["label"]), (entities[obj]["tokens"], entities[obj]["label"]), rel)
            for e in entities.values() for rel, obj in e["relations"]}


def pair_scores(hyp_text: str, ref_text: str, hyp: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """Every RadGraph score of one (prediction, reference) pair from their annotations."""
    if len(hyp_text) == 0 or len(ref_text) == 0 or not hyp["entities"] or not ref["entities"]:
        simple = partial = complete = 0.0
    else:
        simple = _f1_sets(_simple(hyp), _simple(ref))
        partial = _f1_sets(_partial(hyp), _partial(ref))
        complete = _f1_sets(_complete(hyp), _complete(ref))
    entity = _f1_sets(_simple(hyp), _simple(ref))
    relation = _f1_sets(_cxr_relations(hyp), _cxr_relations(ref))
    return {"radgraph_f1_partial": partial, "radgraph_f1_simple": simple, "radgraph_f1_complete": complete,
            "radgraph_entity_f1": entity, "radgraph_relation_f1": relation, "radgraph_combined": (entity + relation) / 2}


# ------------------------------------------------------------------------------------------ family


def resolve(options: ModelMetricOptions, option: str = OPTION) -> tuple[Path, str]:
    """The RadGraph model folder (a .tar.gz is extracted safely into the cache) and its name."""
    path, named = resolve_weights(option, options.weights, DEFAULT_WEIGHTS, "radgraph.tar.gz", "/path/to/radgraph.tar.gz")
    if path.is_file():
        from mrg.data.archive import safe_extract
        from mrg.metrics.model_based.base import default_cache_root

        root = cache_root_for(options) or default_cache_root()
        dest = root / "radgraph-models" / weights_sha256([path], root)[:16]
        safe_extract(path, dest)
        path = dest
    for candidate in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        if (candidate / "config.json").is_file() and (candidate / "weights.th").is_file():
            return candidate, named
    raise MetricError(
        f"{option}={named}: expected a RadGraph model (config.json, vocabulary/, weights.th, as in "
        f"{DEFAULT_WEIGHTS.filename} from the hub repository {DEFAULT_WEIGHTS.repo})"
    )


class RadGraphScorer:
    """Loads the RadGraph model once and serves cached per-text annotations (also used by RadCliQ)."""

    def __init__(self, options: ModelMetricOptions, option: str = OPTION) -> None:
        self.folder, self.named = resolve(options, option)
        root = cache_root_for(options)
        files = [self.folder / "config.json", self.folder / "weights.th", *sorted((self.folder / "vocabulary").glob("*"))]
        self.sha = weights_sha256(files, root)
        self.device = resolve_device(options.device)
        self.option = option
        self._model: RadGraphModel | None = None
        self.runner = CachedRunner(TextCache(root, "radgraph", "annotations", self.sha), self._compute,
                                   check_batch_size(options.batch_size))

    def _compute(self, texts: list[str]) -> list[Any]:
        if self._model is None:
            self._model = RadGraphModel(self.folder, self.device, self.option)
        return self._model.annotate(texts)

    def annotations(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return self.runner.run(list(texts))

    def info(self) -> dict[str, Any]:
        return {
            "weights": self.named,
            "weights_sha256": self.sha,
            "implementation": implementation_info("radgraph", "0.1.18 (DyGIE++ inference, F1RadGraph rewards)"),
            "device": str(self.device),
            "texts_computed": self.runner.computed,
            "texts_cached": self.runner.cached,
        }


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """RadGraph F1 (three reward levels) and CXR-Report-Metric's entity / relation / combined F1."""
    check_pairs("radgraph", predictions, references)
    return score_with(RadGraphScorer(options), predictions, references)


def score_with(scorer: RadGraphScorer, predictions: list[str], references: list[str]) -> FamilyResult:
    annotations = scorer.annotations(list(predictions) + list(references))
    n = len(predictions)
    rows = [pair_scores(p, r, annotations[i], annotations[n + i])
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))]
    items = {m.name: [row[m.name] for row in rows] for m in METRICS}
    return FamilyResult({name: mean(values) for name, values in items.items()}, items, scorer.info())
