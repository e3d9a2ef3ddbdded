"""The metric registry: every number mrg reports, by name, with what it needs and how it is computed.

One table answers, for every metric key that can appear in ``metrics.json``, ``val_metrics.jsonl`` or a
leaderboard: its display name, the inputs it needs (report texts, label vectors, images, embeddings,
answers), whether higher is better, the protocol or reference implementation it follows, which
*task* produces it (``train.select`` may weigh only metrics that the stage's validation task
produces), and the *family* that computes it (BLEU-1..4, ROUGE-L and CIDEr come out of one pass, so a
family computes several metrics at once). The CLI, ``train.select`` validation, the evaluate writer, the
HTML viewer and the benchmarks read names and display names from here, never from string literals::

    from mrg.metrics.registry import get_metric, metrics_for_task
    get_metric("bleu_4").display            # 'BLEU-4'
    [m.name for m in metrics_for_task("report-generation") if m.headline]

Unknown names fail with a "did you mean" suggestion. Other modules register their own metrics
(``register_metric``), e.g. a method's validation metrics or the model-based families.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mrg.errors import ConfigError

REPORT_GENERATION = "report-generation"
"""Task of metrics computed from generated and reference reports."""
RETRIEVAL = "retrieval"
"""Task of metrics computed from image and text embeddings (contrastive pre-training)."""
VQA = "vqa"
"""Task of metrics computed from generated and reference answers."""
SYNTHESIS = "synthesis"
"""Task of metrics computed from synthesized images."""
RECONSTRUCTION = "reconstruction"
"""Task of metrics computed from reconstructed images (image tokenizers)."""
LANGUAGE_MODELING = "language-modeling"
LABEL_CLASSIFICATION = "label-classification"
"""Task of metrics computed from predicted label probabilities (``mrg evaluate`` on ``mrg perceive``'s CSV)."""
"""Task of metrics computed from held-out token likelihood."""


@dataclass(frozen=True)
class Metric:
    """One registered metric."""

    name: str
    """Key in metrics files, e.g. ``bleu_4``."""
    display: str
    """Short name for tables, e.g. ``BLEU-4``."""
    family: str
    """What computes it (several metrics can come from one pass), e.g. ``nlg``, ``meteor``, ``clinical``."""
    inputs: tuple[str, ...] = ("texts",)
    """What it needs: ``texts`` (predicted + reference reports), ``labels``, ``images``, ``embeddings``, ``answers``."""
    higher_is_better: bool = True
    protocol: str = ""
    """The definition or reference implementation it follows."""
    tasks: tuple[str, ...] = (REPORT_GENERATION,)
    headline: bool = False
    """Shown in log lines and summary tables (all metrics go to the files)."""
    description: str = ""


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to the registry (a second registration of a name needs ``replace``)."""
    if metric.name in _REGISTRY and not replace and _REGISTRY[metric.name] != metric:
        raise ValueError(f"metric {metric.name!r} is already registered by family {_REGISTRY[metric.name].family!r}")
    _REGISTRY[metric.name] = metric
    return metric


def register_metrics(metrics: Iterable[Metric], *, replace: bool = False) -> None:
    for metric in metrics:
        register_metric(metric, replace=replace)


def suggest(name: str, options: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest option names, or an empty string."""
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    return (" Did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else ""


def get_metric(name: str, *, option: str = "metric") -> Metric:
    """The registered metric ``name``.

    Raises:
        ConfigError: unknown name, with suggestions.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"{option} '{name}' is not a registered metric.{suggest(name, sorted(_REGISTRY))} "
                          f"'mrg metrics' lists them")
    return _REGISTRY[name]


def all_metrics() -> list[Metric]:
    """Every registered metric, in registration order."""
    return list(_REGISTRY.values())


def metrics_for_task(task: str) -> list[Metric]:
    """The metrics a validation of ``task`` can produce, in registration order."""
    return [m for m in _REGISTRY.values() if task in m.tasks]


def family_metrics(family: str) -> list[Metric]:
    return [m for m in _REGISTRY.values() if m.family == family]


def display_name(name: str) -> str:
    """The display name of a metric key, or the key itself for an unregistered one (e.g. a per-class column)."""
    metric = _REGISTRY.get(name)
    return metric.display if metric is not None else name


def headline_metrics(task: str = REPORT_GENERATION) -> list[str]:
    """The headline metric names of ``task`` in registration order (log lines, summary tables)."""
    return [m.name for m in metrics_for_task(task) if m.headline]


def selection_problems(select: dict[str, float], tasks: Sequence[str], *, option: str = "train.select") -> list[str]:
    """Problems with a checkpoint-selection rule: unknown metrics, metrics the stage cannot produce, bad weights."""
    problems: list[str] = []
    if not select:
        return [f"'{option}' needs at least one metric weight, e.g. {{bleu_4: 0.5, cider: 0.5}}"]
    allowed = {m.name for task in tasks for m in metrics_for_task(task)}
    for name, weight in select.items():
        if name not in _REGISTRY:
            problems.append(f"'{option}' names '{name}', which is not a registered metric.{suggest(name, sorted(allowed))}")
        elif name not in allowed:
            problems.append(f"'{option}' names '{name}', which the validation of this stage does not produce "
                            f"(task {', '.join(tasks)}); choose from {', '.join(sorted(allowed)) or 'none'}")
        if not isinstance(weight, (int, float)) or weight != weight:
            problems.append(f"'{option}.{name}' must be a number, got {weight!r}")
    return problems


# ------------------------------------------------------------------------------------------ built-ins


def _clinical_metrics() -> list[Metric]:
    """The clinical-efficacy keys of ``mrg.metrics.clinical`` (labels from mrg's CheXpert-style labeler)."""
    variants = {
        "ce": ("CE", "14 observations, uncertain as negative, micro (R2Gen compute_ce.py)"),
        "ce_macro": ("CE macro", "14 observations, uncertain as negative, macro"),
        "ce5_micro": ("CE-5 micro", "5 observations, uncertain as negative, micro"),
        "ce5_macro": ("CE-5 macro", "5 observations, uncertain as negative, macro"),
        "ce_upos_micro": ("CE upos micro", "14 observations, uncertain as positive, micro (f1chexbert's rule)"),
        "ce_upos_macro": ("CE upos macro", "14 observations, uncertain as positive, macro"),
        "ce5_upos_micro": ("CE-5 upos micro", "5 observations, uncertain as positive, micro"),
        "ce5_upos_macro": ("CE-5 upos macro", "5 observations, uncertain as positive, macro"),
        "ce_example": ("CE example", "14 observations, uncertain as negative, example-based (PromptMRG)"),
    }
    out = []
    for prefix, (display, protocol) in variants.items():
        for part, short in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
            name = f"{prefix}_{part}"
            out.append(Metric(name, f"{display} {short}", "clinical",
                              inputs=("texts", "labels"), protocol=protocol,
                              headline=name == "ce_f1",
                              description="clinical efficacy from mrg-chexpert-rules labels (not CheXbert)"))
    return out


def _reconstruction_metrics() -> list[Metric]:
    """What each validation of ``mrg train-vq`` reports (``mrg.metrics.image``)."""
    common = {"family": "reconstruction", "inputs": ("images",), "tasks": (RECONSTRUCTION,)}
    return [
        Metric("psnr", "PSNR", protocol="10 log10(1/MSE), data range 1, mean over images", headline=True, **common),
        Metric("ssim", "SSIM", protocol="Wang et al. 2004, Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03",
               headline=True, **common),
        Metric("grad_mag_error", "Grad-mag err", higher_is_better=False, headline=True,
               protocol="mean |Sobel magnitude(x) - Sobel magnitude(x_hat)|", **common),
        Metric("codebook_usage", "Code usage", protocol="share of codes chosen at least once over the val images",
               **common),
        Metric("codebook_perplexity", "Code perplexity", protocol="exp(entropy) of the code histogram", **common),
    ]


def _synthesis_metrics() -> list[Metric]:
    """What ``mrg evaluate --images`` reports for synthesized images and its baselines (``mrg.metrics.synthesis``)."""
    common = {"family": "synthesis", "tasks": (SYNTHESIS,)}
    labelled = {"inputs": ("images", "labels"), **common}
    return [
        Metric("consistency_f1", "Consistency F1", headline=True, description="do synthesized images show the "
               "findings their prompt states", protocol="a CNN trained on the real train images labels each "
               "synthesized image (P >= 0.5); micro F1 over 14 CheXpert classes against the prompt's labels "
               "(gold labels of study_id, else the labeler on the prompt)", **labelled),
        Metric("consistency_macro_f1", "Consistency macro F1", protocol="as consistency_f1, macro over the classes "
               "with a positive prompt", **labelled),
        Metric("fid", "FID", inputs=("images",), higher_is_better=False, headline=True,
               protocol="Frechet distance of Gaussian fits of real split vs synthesized features (default: the "
               "consistency classifier's penultimate layer; --encoder for any backbone)", **common),
        Metric("ms_ssim", "MS-SSIM", inputs=("images",), higher_is_better=False, headline=True,
               protocol="mean MS-SSIM over pairs of synthesized images (Wang et al. 2003, window 11 / 1.5, the scales "
               "that fit, weights renormalised); lower = more diverse", **common),
        Metric("classifier_f1", "Classifier F1 (real)", protocol="the consistency classifier's micro F1 on the real "
               "split images against their gold labels: the ceiling of consistency_f1", **labelled),
    ]


_BUILTIN = [
    Metric("bleu_1", "BLEU-1", "nlg", protocol="pycocoevalcap Bleu(4), corpus level", headline=True),
    Metric("bleu_2", "BLEU-2", "nlg", protocol="pycocoevalcap Bleu(4), corpus level"),
    Metric("bleu_3", "BLEU-3", "nlg", protocol="pycocoevalcap Bleu(4), corpus level"),
    Metric("bleu_4", "BLEU-4", "nlg", protocol="pycocoevalcap Bleu(4), corpus level", headline=True),
    Metric("meteor", "METEOR", "meteor", protocol="METEOR 1.5 jar of pycocoevalcap (-l en -norm)", headline=True),
    Metric("rouge_l", "ROUGE-L", "nlg", protocol="pycocoevalcap Rouge (LCS, beta 1.2)", headline=True),
    Metric("cider", "CIDEr", "nlg", protocol="pycocoevalcap Cider (CIDEr-D, sigma 6)", headline=True),
    *_clinical_metrics(),
    *_reconstruction_metrics(),
    *_synthesis_metrics(),
]
register_metrics(_BUILTIN)

VQA_METRICS = (
    Metric("closed_accuracy", "Closed acc", "vqa", inputs=("answers",), protocol="yes/no accuracy after normalisation",
           tasks=(VQA,), headline=True, description="share of closed (yes/no) questions answered correctly"),
    Metric("open_exact_match", "Open EM", "vqa", inputs=("answers",), protocol="exact match after normalisation",
           tasks=(VQA,), headline=True, description="share of open questions whose answer equals the truth"),
    Metric("open_token_f1", "Open F1", "vqa", inputs=("answers",), protocol="SQuAD token F1 after normalisation",
           tasks=(VQA,), headline=True, description="mean token F1 of open answers against the truth"),
)
"""Visual question answering (``mrg.metrics.vqa``; task ``vqa``): scored per question type and overall."""
register_metrics(VQA_METRICS)

NLG_METRICS: tuple[str, ...] = tuple(m.name for m in _BUILTIN if m.family in ("nlg", "meteor"))
"""The language metrics in table order: BLEU-1..4, METEOR, ROUGE-L, CIDEr."""
SUMMARY_METRICS: tuple[str, ...] = (*NLG_METRICS, "ce_precision", "ce_recall", "ce_f1")
"""What summary tables show for a report-generation evaluation (CLI, demo, HTML viewer)."""


def titled(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(name, display name) pairs for table rows."""
    return tuple((n, display_name(n)) for n in names)


# --------------------------------------------------------------------------------------- model-based

MODEL_FAMILY_NAMES: tuple[str, ...] = ("chexbert", "radgraph", "bertscore", "radcliq", "ratescore", "green")
"""The model-based families of ``mrg.metrics.model_based`` (``eval.metrics``); their metrics are registered when
that package is imported (it needs torch), family ``model:<name>``."""
COMPONENT_WEIGHT_KEYS: tuple[str, ...] = ("ratescore_ner", "ratescore_embed")
"""``eval.weights`` keys of one model of a family that has two (RaTEScore's NER model and entity encoder)."""


def model_family_problems(families: Sequence[str], weights: dict[str, str]) -> list[str]:
    """Problems with ``eval.metrics`` / ``eval.weights``: unknown family names (with suggestions)."""
    names = list(MODEL_FAMILY_NAMES)
    problems = [f"'eval.metrics' names '{f}', which is not a model-based metric family.{suggest(f, names)} "
                f"Families: {', '.join(names)}" for f in families if f not in names]
    keys = names + list(COMPONENT_WEIGHT_KEYS)
    problems += [f"'eval.weights.{k}': no model-based family is called '{k}'.{suggest(k, keys)}"
                 for k in weights if k not in keys]
    return problems
