"""``mrg analyze prompts``: what the soft tokens encode, group by group.

For each soft-token group the method declares (``visual``, ``prompt``, ...):

* **nearest words**: the LLM vocabulary tokens nearest by cosine to each soft token (over the input-embedding
  table), and how near the nearest one is, against two baselines: a word's nearest *other* word, and random
  Gaussian directions (in high dimension these sit near no word);
* **norms** against the distribution of the LLM's word-embedding norms;
* **similarity across studies vs label overlap**: the cosine of two studies' centred soft tokens (the mean over
  studies subtracted, so what is shared by every study does not dominate) against the Jaccard overlap of the
  positive CheXpert labels of their reference reports, with Pearson and Spearman correlations over all pairs;
* **effective rank** (Roy & Vetterli 2007: exp of the entropy of the normalised singular values) and the PCA
  spectrum of the group's tokens (centred);
* for ``promptbook-wise``: the mixing weights over the book (mean weight and arg-max usage per entry, the entropy
  per study) overall and by finding.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mrg.analysis import png
from mrg.data.chexpert import OBSERVATIONS, POSITIVE

TOP_K = 5
EXAMPLE_STUDIES = 3
EXAMPLE_TOKENS = 8
WORD_SAMPLE = 2000


# ------------------------------------------------------------------------------------------------ measures


@torch.no_grad()
def nearest_tokens(tokens: torch.Tensor, table: torch.Tensor, k: int = TOP_K, *, chunk: int = 1024,
                   exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``table`` (V, D) nearest by cosine to each of ``tokens`` (N, D): (N, k) cosines and ids.

    ``exclude_self``: ``tokens`` are rows of ``table`` in order (token i is row i) and a row is not its own neighbour.
    """
    table_n = F.normalize(table.float(), dim=-1)  # (V, D)
    values, indices = [], []
    for start in range(0, tokens.shape[0], chunk):
        sims = F.normalize(tokens[start : start + chunk].float(), dim=-1) @ table_n.T  # (n, V)
        if exclude_self:
            rows = torch.arange(sims.shape[0])
            sims[rows, rows + start] = -math.inf
        top = sims.topk(min(k, table.shape[0]), dim=-1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def quantiles(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """min, 5 %, median, 95 %, max and the mean of ``values``."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {}
    q = np.quantile(array, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {"min": float(q[0]), "p5": float(q[1]), "median": float(q[2]), "p95": float(q[3]), "max": float(q[4]),
            "mean": float(array.mean())}


def spectrum(matrix: torch.Tensor, top: int = 16) -> dict[str, Any]:
    """Effective rank and PCA explained-variance ratios of the rows of ``matrix`` (N, D), centred."""
    centred = matrix.double() - matrix.double().mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)  # (min(N, D),)
    total = float(singular.sum())
    if total <= 0:
        return {"effective_rank": 0.0, "explained_variance": [], "rows": int(matrix.shape[0])}
    p = singular / singular.sum()
    p = p[p > 0]
    variance = singular**2 / (singular**2).sum()
    return {"effective_rank": float(torch.exp(-(p * p.log()).sum())), "rows": int(matrix.shape[0]),
            "max_rank": int(min(matrix.shape[0] - 1, matrix.shape[1])),
            "explained_variance": [float(v) for v in variance[:top]]}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2
        start = end + 1
    return ranks


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Pearson's r and Spearman's rho of paired samples (None where a side is constant or there are < 3 pairs)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return {"pearson": None, "spearman": None}
    ra, rb = _ranks(a), _ranks(b)
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": float(np.corrcoef(ra, rb)[0, 1])}


def positive_sets(labels: Sequence[dict[str, float]]) -> list[frozenset[str]]:
    return [frozenset(obs for obs in OBSERVATIONS if row.get(obs) == POSITIVE) for row in labels]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float | None:
    """|a & b| / |a | b|; None when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else None


def similarity_vs_labels(vectors: torch.Tensor, labels: Sequence[frozenset[str]]) -> dict[str, Any]:
    """Cosine of centred per-study vectors (B, F) against the Jaccard overlap of positive labels, over all pairs."""
    raw = F.normalize(vectors.double(), dim=-1)
    raw_cos = raw @ raw.T
    centred = vectors.double() - vectors.double().mean(dim=0, keepdim=True)
    upper = torch.triu_indices(len(vectors), len(vectors), offset=1)
    record: dict[str, Any] = {"pairs": int(upper.shape[1]),
                              "raw_cosine": quantiles(raw_cos[upper[0], upper[1]].numpy()) if upper.shape[1] else {}}
    scale = float(vectors.double().norm(dim=-1).mean())
    if upper.shape[1] < 3 or float(centred.norm(dim=-1).max()) <= 1e-6 * max(scale, 1e-12):
        record.update(pearson=None, spearman=None, points=[],
                      note="the tokens are (nearly) the same for every study, so they cannot track the labels")
        return record
    cos = F.normalize(centred, dim=-1) @ F.normalize(centred, dim=-1).T
    points = []
    for i, j in upper.T.tolist():
        overlap = jaccard(labels[i], labels[j])
        if overlap is not None:
            points.append((overlap, float(cos[i, j])))
    record["centred_cosine"] = quantiles([p[1] for p in points])
    record.update(correlations([p[0] for p in points], [p[1] for p in points]))
    record["points"] = points
    record["pairs_with_labels"] = len(points)
    return record


def mixing_summary(weights: torch.Tensor, labels: Sequence[frozenset[str]]) -> dict[str, Any]:
    """Book usage of promptbook-wise mixing weights (B, N): overall and by positive finding."""
    w = weights.double()
    n = w.shape[1]
    entropy = -(w.clamp_min(1e-12).log() * w).sum(dim=1)  # (B,) nats
    usage = Counter(w.argmax(dim=1).tolist())
    by_finding = {}
    for obs in OBSERVATIONS:
        rows = [i for i, found in enumerate(labels) if obs in found]
        if rows:
            by_finding[obs] = {"studies": len(rows), "mean_weights": [float(v) for v in w[rows].mean(dim=0)]}
    return {
        "book_size": n,
        "mean_weights": [float(v) for v in w.mean(dim=0)],
        "argmax_usage": [usage.get(i, 0) for i in range(n)],
        "entropy": quantiles(entropy.numpy()),
        "entropy_max": math.log(n),
        "normalised_entropy_mean": float(entropy.mean() / math.log(n)) if n > 1 else 0.0,
        "by_finding": by_finding,
    }


# ------------------------------------------------------------------------------------------------ collection


@torch.no_grad()
def collect(inputs: Any) -> dict[str, Any]:
    """Per group, the soft tokens of every study (a list of (n_i, D) float32 tensors), the reference labels and,
    for promptbook-wise models, the (B, N) mixing weights."""
    from mrg.metrics.labeler import label_reports

    names = [g.name for g in inputs.groups]
    tokens: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    ids: list[str] = []
    reports: list[str] = []
    weights: list[torch.Tensor] = []
    model = inputs.model
    for batch in inputs.batches():
        soft = model.soft_tokens(batch)
        for name in names:
            values, mask = soft[name]
            for b in range(values.shape[0]):
                row = values[b] if mask is None else values[b][mask[b]]
                tokens[name].append(row.detach().float().cpu())
        ids.extend(batch["ids"])
        reports.extend(batch.get("reports") or [""] * len(batch["ids"]))
        promptbook = getattr(model, "promptbook", None)
        if promptbook is not None and hasattr(promptbook, "mixing_weights") and "prompt" in names:
            visual, mask = model.visual_tokens(batch)
            mixed = promptbook.mixing_weights(visual, mask)
            if mixed is not None:
                weights.append(mixed.detach().float().cpu())
    return {"tokens": tokens, "ids": ids, "labels": positive_sets(label_reports(reports)),
            "mixing": torch.cat(weights) if weights else None}


def _names(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def _nearest_record(group: str, per_study: list[torch.Tensor], table: torch.Tensor, tokenizer: Any,
                    ids: Sequence[str], baselines: dict[str, Any], k: int) -> dict[str, Any]:
    stacked = torch.cat(per_study)  # (N, D)
    sims, picks = nearest_tokens(stacked, table, k)
    top1 = Counter(picks[:, 0].tolist())
    examples = []
    for study, tokens in list(zip(ids, per_study, strict=True))[:EXAMPLE_STUDIES]:
        s, p = nearest_tokens(tokens[:EXAMPLE_TOKENS], table, k)
        examples.append({"id": study, "tokens": [
            {"index": i, "nearest": [{"token": t, "cosine": round(float(c), 4)} for t, c in zip(_names(tokenizer, row), cs, strict=True)]}
            for i, (row, cs) in enumerate(zip(p.tolist(), s.tolist(), strict=True))]})
    record: dict[str, Any] = {
        "tokens": int(stacked.shape[0]),
        "top1_cosine": quantiles(sims[:, 0].numpy()),
        "baselines": baselines,
        "frequent_nearest": [{"token": _names(tokenizer, [i])[0], "count": c} for i, c in top1.most_common(15)],
        "examples": examples,
    }
    if group == "prompt":  # the prompt's positions are comparable across studies: their mean prompt
        mean = torch.stack(per_study).mean(dim=0)  # (L, D)
        s, p = nearest_tokens(mean, table, k)
        record["mean_prompt"] = [{"index": i, "nearest": [{"token": t, "cosine": round(float(c), 4)}
                                                          for t, c in zip(_names(tokenizer, row), cs, strict=True)]}
                                 for i, (row, cs) in enumerate(zip(p.tolist(), s.tolist(), strict=True))]
    return record


def word_baselines(table: torch.Tensor, count: int, seed: int = 0) -> dict[str, Any]:
    """Top-1 cosine of sampled words to their nearest other word, and of random Gaussian directions to any word."""
    generator = torch.Generator().manual_seed(seed)
    sample = min(WORD_SAMPLE, table.shape[0])
    rows = torch.randperm(table.shape[0], generator=generator)[:sample].sort().values
    sims = F.normalize(table[rows].float(), dim=-1) @ F.normalize(table.float(), dim=-1).T  # (S, V)
    sims[torch.arange(sample), rows] = -math.inf
    random_dirs = torch.randn(max(1, min(count, WORD_SAMPLE)), table.shape[1], generator=generator)
    random_top, _ = nearest_tokens(random_dirs, table, 1)
    return {"word_to_nearest_other_word": quantiles(sims.max(dim=1).values.numpy()),
            "random_direction": quantiles(random_top[:, 0].numpy()), "sampled_words": sample}


def analyze_prompts(inputs: Any, out_dir: Path, *, top_k: int = TOP_K) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The ``prompts`` section of ``analysis.json`` and its figures (written to ``out_dir``)."""
    collected = collect(inputs)
    model = inputs.model
    table = model.llm.model.get_input_embeddings().weight.detach().float().cpu()  # (V, D)
    word_norms = table.norm(dim=-1)
    groups: dict[str, Any] = {}
    figures: list[dict[str, str]] = []
    norm_samples = {"LLM word embeddings": word_norms.tolist()}
    spectra, scatter = {}, {}
    for group in inputs.groups:
        per_study = collected["tokens"][group.name]
        stacked = torch.cat(per_study)
        norms = stacked.norm(dim=-1)
        baselines = word_baselines(table, stacked.shape[0])
        vectors = torch.stack([t.mean(dim=0) for t in per_study]) if group.name == "visual" else \
            torch.stack([t.flatten() for t in per_study])
        similarity = similarity_vs_labels(vectors, collected["labels"])
        scatter[group.name] = similarity.pop("points")
        record = {
            "summary": group.summary,
            "nearest": _nearest_record(group.name, per_study, table, model.tokenizer, collected["ids"], baselines, top_k),
            "norms": quantiles(norms.numpy()),
            "outside_word_norm_range": float(((norms < word_norms.min()) | (norms > word_norms.max())).float().mean()),
            "similarity_vs_labels": similarity,
            "spectrum": spectrum(stacked),
            "per_study_spectrum": spectrum(vectors),
        }
        groups[group.name] = record
        norm_samples[f"{group.name} tokens"] = norms.tolist()
        spectra[group.name] = record["spectrum"]["explained_variance"]
    record = {"groups": groups, "word_norms": quantiles(word_norms.numpy()), "vocabulary": int(table.shape[0])}
    if collected["mixing"] is not None:
        record["mixing"] = mixing_summary(collected["mixing"], collected["labels"])
    figures += _prompt_figures(out_dir, norm_samples, spectra, scatter, record.get("mixing"))
    return record, figures


def _prompt_figures(out_dir: Path, norms: dict[str, list[float]], spectra: dict[str, list[float]],
                    scatter: dict[str, list[tuple[float, float]]], mixing: dict[str, Any] | None) -> list[dict[str, str]]:
    figures = []
    png.histograms(out_dir / "prompts-norms.png", "Soft-token norms vs the LLM's word-embedding norms", norms, x_label="L2 norm")
    figures.append({"file": "prompts-norms.png", "title": "Norms of soft tokens and of word embeddings"})
    series = {name: [(i + 1.0, v) for i, v in enumerate(values)] for name, values in spectra.items()}
    png.lines(out_dir / "prompts-spectrum.png", "PCA spectrum of each group's tokens (centred)", series,
              x_label="principal component", y_label="explained variance ratio", y_range=(0.0, 1.0))
    figures.append({"file": "prompts-spectrum.png", "title": "PCA spectrum (explained variance per component)"})
    if any(scatter.values()):
        png.scatter(out_dir / "prompts-similarity.png", "Study-pair similarity of soft tokens vs label overlap",
                    {k: v for k, v in scatter.items() if v}, x_label="Jaccard overlap of positive CheXpert labels",
                    y_label="cosine of centred tokens")
        figures.append({"file": "prompts-similarity.png", "title": "Similarity of two studies' soft tokens vs their label overlap"})
    if mixing is not None and mixing["by_finding"]:
        names = list(mixing["by_finding"])
        values = np.array([mixing["by_finding"][n]["mean_weights"] for n in names] + [mixing["mean_weights"]])
        labels = [f"{n} ({mixing['by_finding'][n]['studies']})" for n in names] + ["all studies"]
        png.matrix(out_dir / "prompts-mixing.png", "Promptbook mixing weights by finding", values, row_label="finding (studies)",
                   col_label="book entry", row_names=labels)
        figures.append({"file": "prompts-mixing.png", "title": "Mean promptbook mixing weight per book entry, by finding"})
    return figures
