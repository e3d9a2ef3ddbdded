"""BLEU-1..4, ROUGE-L and CIDEr-D exactly as the pycocoevalcap 1.2 scorers compute them, in one pass.

pycocoevalcap builds every report's n-gram counts twice (once for BLEU, once for CIDEr), computes CIDEr
with a numpy call per n-gram and ROUGE-L with a quadratic Python table. Here the counts are made once and
shared, CIDEr's sums are vectorised, and the LCS uses a bit-parallel recurrence; the numbers are the same
(to 1e-9; the parity tests compare with the pycocoevalcap scorers on generated corpora).

Behaviour kept on purpose, because published numbers include it:

* BLEU: whitespace ``split()``; "closest" reference length (ties go to the shorter one); the smoothing
  constants ``tiny = 1e-15`` and ``small = 1e-9`` added to every precision; corpus level from pooled counts.
  Per-item scores are pycocoevalcap's per-image BLEU (also smoothed).
* ROUGE-L: tokens from ``split(" ")`` (so a double space makes an empty token, as in pycocoevalcap); the
  maximum precision and maximum recall over references are taken separately; F with beta = 1.2; the corpus
  value is the mean over items.
* CIDEr-D: n = 1..4, sigma = 6, clipped tf-idf, x10. Document frequencies count the items whose
  references contain an n-gram, over the references *of this call*, and ``ref_len = log(#items)``, so a
  single item always scores 0 and a subset scores differently from the full test set. The "length" in the
  Gaussian penalty is the number of bigrams (pycocoevalcap's ``if n == 1`` counts order-2 n-grams), kept.

Every result also carries per-item sufficient statistics, so a bootstrap resample or a permutation of two
systems is scored without re-tokenising (see ``mrg.metrics.stats``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from mrg.errors import MetricError

N_GRAM = 4
BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0

# Columns of the per-item BLEU statistics: testlen, reflen (closest), guess_1..4, correct_1..4.
BLEU_STAT_COLUMNS = ("testlen", "reflen", "guess_1", "guess_2", "guess_3", "guess_4",
                     "correct_1", "correct_2", "correct_3", "correct_4")


def check_pairs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Raise ``MetricError`` unless there is one prediction per item and at least one reference per item."""
    if len(predictions) != len(references):
        raise MetricError(f"{len(predictions)} predictions but {len(references)} reference lists; they must pair up")
    for index, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise MetricError(f"item {index}: references must be a non-empty list of strings")


def ngram_counts(text: str) -> list[Counter]:
    """Counts of the 1..4-grams of ``text.split()``, one Counter per order (unigrams keyed by the word)."""
    words = text.split()
    counts = [Counter(words)]
    for order in range(2, N_GRAM + 1):
        counts.append(Counter(zip(*(words[i:] for i in range(order)), strict=False)))
    return counts


# --------------------------------------------------------------------------------------------------- BLEU


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from summed per-item statistics (columns ``BLEU_STAT_COLUMNS``); works on (..., 10) arrays.

    The operations follow pycocoevalcap's ``BleuScorer.compute_score`` step by step (cumulative product of the
    smoothed precisions, k-th root, brevity penalty from the smoothed length ratio).
    """
    stats = np.asarray(stats, dtype=np.float64)
    testlen, reflen = stats[..., 0], stats[..., 1]
    guess, correct = stats[..., 2:6], stats[..., 6:10]
    out = np.empty(stats.shape[:-1] + (N_GRAM,), dtype=np.float64)
    product = np.ones(stats.shape[:-1], dtype=np.float64)
    for k in range(N_GRAM):
        product = product * ((correct[..., k] + BLEU_TINY) / (guess[..., k] + BLEU_SMALL))
        out[..., k] = product ** (1.0 / (k + 1))
    ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
    with np.errstate(over="ignore", divide="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return out * penalty[..., None]


# ------------------------------------------------------------------------------------------------ ROUGE-L


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, exact)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        match = masks.get(token)
        if match:
            low = row & match
            row = ((row + low) | (row - low)) & full
    return len(a) - row.bit_count()


def rouge_l_item(hypothesis: str, references: Sequence[str]) -> float:
    """pycocoevalcap's ``Rouge.calc_score`` for one item."""
    candidate = hypothesis.split(" ")
    best_precision = best_recall = 0.0
    for reference in references:
        tokens = reference.split(" ")
        lcs = lcs_length(tokens, candidate)
        best_precision = max(best_precision, lcs / float(len(candidate)))
        best_recall = max(best_recall, lcs / float(len(tokens)))
    if best_precision != 0 and best_recall != 0:
        beta2 = ROUGE_BETA**2
        return ((1 + beta2) * best_precision * best_recall) / float(best_recall + beta2 * best_precision)
    return 0.0


# ------------------------------------------------------------------------------------------------ CIDEr-D


@dataclass
class CiderStats:
    """Everything CIDEr-D needs, as flat arrays, so any re-weighting of the items is a few ``bincount`` calls.

    Rows are (item, reference) pairs. For every row and n-gram order the three sums of CIDEr's cosine are
    linear in the squared idf of each n-gram: clipped dot product ``min(h, r) * r``, hypothesis norm ``h^2``
    and reference norm ``r^2`` (tf counts; idf >= 0 always, so ``min(h*idf, r*idf) = min(h, r)*idf``).
    """

    num_items: int
    num_ngrams: int
    row_item: np.ndarray
    """(rows,) the item of each (item, reference) row."""
    refs_per_item: np.ndarray
    """(items,) number of references of each item."""
    df_item: np.ndarray
    df_gram: np.ndarray
    """(entries,) one entry per (item, n-gram in any of its references): document-frequency incidence."""
    ref_slot: np.ndarray
    ref_gram: np.ndarray
    ref_value: np.ndarray
    """Reference squared counts ``r^2``: slot = row * 4 + order."""
    dot_value: np.ndarray
    """Clipped products ``min(h, r) * r`` on the same entries as ``ref_*`` (0 where the hypothesis lacks the n-gram)."""
    hyp_slot: np.ndarray
    hyp_gram: np.ndarray
    hyp_value: np.ndarray
    """Hypothesis squared counts: slot = item * 4 + order."""
    penalty: np.ndarray
    """(rows,) the Gaussian length penalty exp(-delta^2 / (2 sigma^2)) of each row."""

    def document_frequency(self, item_weights: np.ndarray | None = None) -> np.ndarray:
        """Per n-gram, the (weighted) number of items whose references contain it."""
        weights = None if item_weights is None else item_weights[self.df_item]
        return np.bincount(self.df_gram, weights=weights, minlength=self.num_ngrams).astype(np.float64)

    def item_scores(self, df: np.ndarray, num_docs: float) -> np.ndarray:
        """Per-item CIDEr-D given document frequencies ``df`` and the number of documents (for ``ref_len``)."""
        ref_len = math.log(float(num_docs)) if num_docs > 0 else 0.0
        idf = ref_len - np.log(np.maximum(1.0, df))
        idf2 = idf * idf
        rows = len(self.row_item)
        slots = rows * N_GRAM
        ref_idf2 = idf2[self.ref_gram]
        dot = np.bincount(self.ref_slot, weights=self.dot_value * ref_idf2, minlength=slots)
        ref_norm = np.sqrt(np.bincount(self.ref_slot, weights=self.ref_value * ref_idf2, minlength=slots))
        hyp_norm = np.sqrt(
            np.bincount(self.hyp_slot, weights=self.hyp_value * idf2[self.hyp_gram], minlength=self.num_items * N_GRAM)
        )
        hyp_norm_rows = hyp_norm.reshape(self.num_items, N_GRAM)[self.row_item].reshape(-1)
        denominator = hyp_norm_rows * ref_norm
        nonzero = (hyp_norm_rows != 0) & (ref_norm != 0)
        similarity = np.where(nonzero, dot / np.where(nonzero, denominator, 1.0), dot)
        similarity = similarity.reshape(rows, N_GRAM) * self.penalty[:, None]
        per_row = similarity.mean(axis=1)
        per_item = np.bincount(self.row_item, weights=per_row, minlength=self.num_items)
        return per_item / self.refs_per_item * 10.0

    def corpus_score(self, item_weights: np.ndarray | None = None) -> float:
        """CIDEr-D of the (re-weighted) test set; weights are item multiplicities, e.g. from a bootstrap draw.

        Scoring a resample as its own test set recomputes document frequencies on the resample's references
        (an item drawn twice counts twice) and uses ``ref_len = log(resample size)``.
        """
        if item_weights is None:
            return float(np.mean(self.item_scores(self.document_frequency(), self.num_items)))
        total = float(item_weights.sum())
        scores = self.item_scores(self.document_frequency(item_weights), total)
        return float(np.dot(item_weights, scores) / total)


@dataclass
class _Flat:
    """The n-gram counts of a list of texts as flat arrays: entry -> (text, order, n-gram id, count)."""

    text: np.ndarray
    order: np.ndarray
    gram: np.ndarray
    count: np.ndarray


def _flatten(counts: list[list[Counter]], intern: dict[object, int]) -> _Flat:
    # One dict for all orders: a unigram key is a str and an n-gram a tuple of length n, so keys never collide.
    setdefault = intern.setdefault
    text: list[int] = []
    order: list[int] = []
    gram: list[int] = []
    count: list[int] = []
    for index, per_order in enumerate(counts):
        for k, counter in enumerate(per_order):
            size = len(counter)
            if not size:
                continue
            gram.extend([setdefault(g, len(intern)) for g in counter])
            count.extend(counter.values())
            text.extend([index] * size)
            order.extend([k] * size)
    return _Flat(
        text=np.asarray(text, dtype=np.int64),
        order=np.asarray(order, dtype=np.int64),
        gram=np.asarray(gram, dtype=np.int64),
        count=np.asarray(count, dtype=np.float64),
    )


PACKED_VOCAB_LIMIT = 55_000
"""Largest vocabulary whose 4-grams fit in one int64 (55,000 ** 4 < 2 ** 63); beyond it dictionaries count."""


def _packed_counts(hyp_texts: list[str], ref_texts: list[str]) -> tuple[_Flat, _Flat, int] | None:
    """n-gram counts of both sides with numpy: word ids packed into one integer per n-gram, sorted, run-length.

    Returns None when the vocabulary is too large to pack (the caller falls back to dictionaries).
    """
    sides = [[t.split() for t in hyp_texts], [t.split() for t in ref_texts]]
    words = dict.fromkeys(chain.from_iterable(chain.from_iterable(sides)))
    vocab = {word: index for index, word in enumerate(words, start=1)}  # 0 is never a word: orders differ
    base = len(vocab) + 1
    if base > PACKED_VOCAB_LIMIT:
        return None
    lookup = vocab.__getitem__
    per_side = []
    for tokens in sides:
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total = int(lengths.sum())
        ids = np.fromiter(map(lookup, chain.from_iterable(tokens)), dtype=np.int64, count=total)
        text = np.repeat(np.arange(len(tokens), dtype=np.int64), lengths)
        remaining = np.repeat(lengths, lengths) - (np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        orders = []
        for order in range(1, N_GRAM + 1):
            start = np.nonzero(remaining >= order)[0]
            key = ids[start].copy()
            for k in range(1, order):
                key += ids[start + k] * base**k
            orders.append((text[start], key))
        per_side.append(orders)
    # n-gram ids shared by both sides: the rank of each packed key among all keys of its order
    flats: list[dict[str, list[np.ndarray]]] = [{"text": [], "order": [], "gram": [], "count": []} for _ in sides]
    offset = 0
    for order in range(N_GRAM):
        keys = np.concatenate([per_side[0][order][1], per_side[1][order][1]])
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        split = len(per_side[0][order][1])
        for side, gram_index in ((0, inverse[:split]), (1, inverse[split:])):
            text = per_side[side][order][0]
            if len(text) == 0:
                continue
            sort = np.lexsort((gram_index, text))
            text_sorted, gram_sorted = text[sort], gram_index[sort]
            boundary = np.ones(len(sort), dtype=bool)
            boundary[1:] = (text_sorted[1:] != text_sorted[:-1]) | (gram_sorted[1:] != gram_sorted[:-1])
            first = np.nonzero(boundary)[0]
            counts = np.diff(np.append(first, len(sort)))
            flats[side]["text"].append(text_sorted[first])
            flats[side]["order"].append(np.full(len(first), order, dtype=np.int64))
            flats[side]["gram"].append(gram_sorted[first] + offset)
            flats[side]["count"].append(counts.astype(np.float64))
        offset += len(unique_keys)

    def build(parts: dict[str, list[np.ndarray]]) -> _Flat:
        def cat(name: str, dtype: type) -> np.ndarray:
            return np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=dtype)

        return _Flat(text=cat("text", np.int64), order=cat("order", np.int64), gram=cat("gram", np.int64),
                     count=cat("count", np.float64))

    return build(flats[0]), build(flats[1]), max(offset, 1)


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``values`` at the positions where ``keys`` (unique) equal ``queries``; 0 where a query is absent."""
    if len(keys) == 0:
        return np.zeros(len(queries), dtype=np.float64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    position = np.minimum(np.searchsorted(sorted_keys, queries), len(keys) - 1)
    found = sorted_keys[position] == queries
    return np.where(found, values[order][position], 0.0)


# ---------------------------------------------------------------------------------------------- one pass


@dataclass
class NlgScores:
    """Corpus scores, per-item scores and per-item sufficient statistics of BLEU, ROUGE-L and CIDEr-D."""

    bleu: list[float]
    """Corpus BLEU-1..4."""
    bleu_items: np.ndarray
    """(items, 4) pycocoevalcap's per-image BLEU-1..4."""
    bleu_stats: np.ndarray
    """(items, 10) per-item counts (``BLEU_STAT_COLUMNS``); corpus BLEU = ``bleu_from_stats(sum)``."""
    rouge_l: float
    rouge_l_items: np.ndarray
    cider: float
    cider_items: np.ndarray
    cider_stats: CiderStats

    def as_dict(self) -> dict[str, float]:
        """Flat metric keys as written to metrics.json."""
        out = {f"bleu_{k + 1}": float(self.bleu[k]) for k in range(N_GRAM)}
        out["rouge_l"] = float(self.rouge_l)
        out["cider"] = float(self.cider)
        return out


def _ngram_tables(predictions: list[str], ref_texts: list[str]) -> tuple[_Flat, _Flat, int]:
    """The 1..4-gram counts of the predictions and of every reference row, and the number of distinct n-grams."""
    packed = _packed_counts(predictions, ref_texts)
    if packed is not None:
        return packed
    # a vocabulary too large to pack 4-grams into 64 bits: count with dictionaries
    intern: dict[object, int] = {}
    hyp = _flatten([ngram_counts(text) for text in predictions], intern)
    ref = _flatten([ngram_counts(text) for text in ref_texts], intern)
    return hyp, ref, max(len(intern), 1)


def _bleu_stats(hyp: _Flat, ref: _Flat, row_item: np.ndarray, ref_key: np.ndarray, hyp_key: np.ndarray,
                hyp_slot: np.ndarray, num_items: int) -> np.ndarray:
    """BLEU's per-item lengths, guesses and clipped matches (max count over an item's references), (items, 10)."""
    num_rows = len(row_item)
    hyp_len = np.bincount(hyp.text[hyp.order == 0], weights=hyp.count[hyp.order == 0], minlength=num_items)
    row_len = np.bincount(ref.text[ref.order == 0], weights=ref.count[ref.order == 0], minlength=num_rows)
    # closest reference length, ties to the shorter: minimise (|len - hyp_len|, len) over each item's rows
    distance = np.abs(row_len - hyp_len[row_item])
    rank = np.lexsort((row_len, distance, row_item))
    first = np.ones(num_rows, dtype=bool)
    first[1:] = row_item[rank][1:] != row_item[rank][:-1]
    reflen = np.zeros(num_items, dtype=np.float64)
    reflen[row_item[rank][first]] = row_len[rank][first]
    if num_rows == num_items:
        max_keys, max_counts = ref_key, ref.count
    else:
        max_keys, inverse = np.unique(ref_key, return_inverse=True)
        max_counts = np.zeros(len(max_keys), dtype=np.float64)
        np.maximum.at(max_counts, inverse, ref.count)
    ref_max = _lookup(max_keys, max_counts, hyp_key)
    correct = np.bincount(hyp_slot, weights=np.minimum(hyp.count, ref_max), minlength=num_items * N_GRAM)
    guess = np.maximum(0.0, hyp_len[:, None] - np.arange(N_GRAM)[None, :])
    return np.column_stack([hyp_len, reflen, guess, correct.reshape(num_items, N_GRAM)])


def _cider_stats(hyp: _Flat, ref: _Flat, row_item: np.ndarray, refs_per_item: np.ndarray, ref_key: np.ndarray,
                 hyp_key: np.ndarray, hyp_slot: np.ndarray, num_items: int, num_grams: int) -> CiderStats:
    """The sparse term vectors, document-frequency keys and length penalties CIDEr-D is computed from."""
    num_rows = len(row_item)
    if num_rows == num_items:
        df_key = ref_key
    else:
        df_key = np.unique(ref_key)
    hyp_bigrams = np.bincount(hyp.text[hyp.order == 1], weights=hyp.count[hyp.order == 1], minlength=num_items)
    row_bigrams = np.bincount(ref.text[ref.order == 1], weights=ref.count[ref.order == 1], minlength=num_rows)
    delta = hyp_bigrams[row_item] - row_bigrams
    hyp_for_ref = _lookup(hyp_key, hyp.count, ref_key)
    ref_slot = ref.text * N_GRAM + ref.order
    return CiderStats(
        num_items=num_items,
        num_ngrams=num_grams,
        row_item=row_item,
        refs_per_item=refs_per_item,
        df_item=df_key // num_grams,
        df_gram=df_key % num_grams,
        ref_slot=ref_slot,
        ref_gram=ref.gram,
        ref_value=ref.count * ref.count,
        dot_value=np.minimum(hyp_for_ref, ref.count) * ref.count,
        hyp_slot=hyp_slot,
        hyp_gram=hyp.gram,
        hyp_value=hyp.count * hyp.count,
        penalty=math.e ** (-(delta**2) / (2 * CIDER_SIGMA**2)),
    )


def score_nlg(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> NlgScores:
    """BLEU-1..4, ROUGE-L and CIDEr-D of ``predictions`` against ``references`` (a list of strings per item).

    The texts are scored as given (whitespace tokens); protocol normalisation happens before this call.

    Raises:
        MetricError: the inputs do not pair up, or an item has no reference.
    """
    check_pairs(predictions, references)
    num_items = len(predictions)
    row_item_list = [item for item, refs in enumerate(references) for _ in refs]
    row_item = np.asarray(row_item_list, dtype=np.int64)
    refs_per_item = np.asarray([len(refs) for refs in references], dtype=np.float64)
    hyp, ref, num_grams = _ngram_tables(list(predictions), [text for refs in references for text in refs])
    ref_item = row_item[ref.text]
    ref_key = ref_item * num_grams + ref.gram
    hyp_key = hyp.text * num_grams + hyp.gram
    hyp_slot = hyp.text * N_GRAM + hyp.order
    bleu_stats = _bleu_stats(hyp, ref, row_item, ref_key, hyp_key, hyp_slot, num_items)
    rouge = np.asarray([rouge_l_item(p, refs) for p, refs in zip(predictions, references, strict=True)], dtype=np.float64)
    cider_stats = _cider_stats(hyp, ref, row_item, refs_per_item, ref_key, hyp_key, hyp_slot, num_items, num_grams)
    cider_items = cider_stats.item_scores(cider_stats.document_frequency(), num_items)
    return NlgScores(
        bleu=[float(v) for v in bleu_from_stats(bleu_stats.sum(axis=0))],
        bleu_items=bleu_from_stats(bleu_stats),
        bleu_stats=bleu_stats,
        rouge_l=float(np.mean(rouge)) if num_items else 0.0,
        rouge_l_items=rouge,
        cider=float(np.mean(cider_items)) if num_items else 0.0,
        cider_items=cider_items,
        cider_stats=cider_stats,
    )
