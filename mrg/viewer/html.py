"""The report page: one self-contained HTML document (inline CSS, JS, SVG charts and ``data:`` images).

Everything a user's text can reach goes through ``html.escape``. The page declares a Content-Security-Policy
that forbids every network fetch (images only from ``data:``), so it opens the same offline, from an e-mail
attachment or a laptop in a clinic. Without JavaScript it is a readable static page with every study
row shown; with it, the per-study tables gain sorting (click a column header), a text filter, an "only
disagreements" toggle, an observation filter and pages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from importlib import resources
from typing import Any

from mrg.data.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from mrg.metrics import registry
from mrg.metrics.registry import display_name, titled
from mrg.viewer.analysis_view import analysis_section
from mrg.viewer.charts import Series, format_number, line_chart
from mrg.viewer.inputs import AnalysisFolder, EvalInputs, RunInputs
from mrg.viewer.studies import StudyRow, StudyTable
from mrg.viewer.synthesis_view import synthesis_section
from mrg.viewer.vqa_view import vqa_section

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

NLG_METRICS: tuple[tuple[str, str], ...] = titled(registry.NLG_METRICS)
HEADLINE: tuple[tuple[str, str], ...] = (
    *titled(("bleu_4", "meteor", "rouge_l", "cider")), ("ce_f1", f"{display_name('ce_f1')} (micro, 14)"))
# (definition shown, key prefix) in the order of mrg.metrics.clinical's table.
CE_FAMILIES: tuple[tuple[str, str], ...] = (
    ("14 observations, micro, uncertain = negative (R2Gen; headline)", "ce_"),
    ("14 observations, macro, uncertain = negative", "ce_macro_"),
    ("5 observations, micro, uncertain = negative", "ce5_micro_"),
    ("5 observations, macro, uncertain = negative", "ce5_macro_"),
    ("14 observations, micro, uncertain = positive", "ce_upos_micro_"),
    ("14 observations, macro, uncertain = positive", "ce_upos_macro_"),
    ("5 observations, micro, uncertain = positive", "ce5_upos_micro_"),
    ("5 observations, macro, uncertain = positive", "ce5_upos_macro_"),
    ("example-based, 14 observations (PromptMRG)", "ce_example_"),
)
PRF = ("precision", "recall", "f1")

SHORT_OBSERVATION = {
    "No Finding": "No finding",
    "Enlarged Cardiomediastinum": "Enl. cardiomed.",
    "Cardiomegaly": "Cardiomegaly",
    "Lung Lesion": "Lung lesion",
    "Lung Opacity": "Lung opacity",
    "Edema": "Edema",
    "Consolidation": "Consolidation",
    "Pneumonia": "Pneumonia",
    "Atelectasis": "Atelectasis",
    "Pneumothorax": "Pneumothorax",
    "Pleural Effusion": "Pl. effusion",
    "Pleural Other": "Pl. other",
    "Fracture": "Fracture",
    "Support Devices": "Devices",
}
_LABEL_MARK = {POSITIVE: ("pos", "+", "positive"), NEGATIVE: ("neg", "\u2212", "negative"), UNCERTAIN: ("unc", "?", "uncertain")}
_BLANK_MARK = ("blank", "\u00b7", "not mentioned")
PAGE_ROWS = 100
"""Rows per page of a per-study table (with JavaScript; without it every row shows)."""

# Validation metrics charted, in this order (a scorer without any of them: its first few metrics).
_VAL_CHARTED = ("bleu_4", "cider", "meteor", "rouge_l", "ce_f1")
# ... and the columns of the validation table (the scorer returns every CE variant too; see the evaluation).
_VAL_COLUMNS = registry.SUMMARY_METRICS
_MAX_VAL_FALLBACK = 6


def _asset(name: str) -> str:
    return resources.files("mrg.viewer").joinpath(name).read_text(encoding="utf-8")


def e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric with ``digits`` decimals; an en dash when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    return f"{value:.{digits}f}"


def _interval(ev: EvalInputs, key: str) -> str:
    pair = ev.intervals.get(key)
    return f"{pair[0]:.4f}\u2013{pair[1]:.4f}" if pair else ""


def _confidence_label(ev: EvalInputs) -> str:
    level = ev.confidence if ev.confidence is not None else 0.95
    return f"{level * 100:g}% CI" if level <= 1 else f"{level:g}% CI"


# ------------------------------------------------------------------------------------ evaluation parts


def headline_cards(ev: EvalInputs) -> str:
    """The headline numbers as cards, each with its interval when bootstrapped."""
    cards = []
    for key, title in HEADLINE:
        if key not in ev.metrics:
            continue
        ci = _interval(ev, key)
        ci_html = f'<span class="ci" title="{e(_confidence_label(ev))}">{e(ci)}</span>' if ci else ""
        cards.append(f'<div class="card"><span class="k">{e(title)}</span><span class="v">{fmt(ev.metrics[key])}</span>{ci_html}</div>')
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def nlg_table(ev: EvalInputs) -> str:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr with their intervals (a column only when any was bootstrapped)."""
    present = [(k, t) for k, t in NLG_METRICS if k in ev.metrics]
    if not present:
        return ""
    with_ci = any(k in ev.intervals for k, _ in present)
    head = "<th scope=\"col\">Metric</th><th scope=\"col\" class=\"num\">Value</th>"
    head += f'<th scope="col" class="num">{e(_confidence_label(ev))}</th>' if with_ci else ""
    body = "".join(
        f'<tr><th scope="row">{e(t)}</th><td class="num" data-key="{e(k)}">{fmt(ev.metrics[k])}</td>'
        + (f'<td class="num ci">{e(_interval(ev, k))}</td>' if with_ci else "")
        + "</tr>"
        for k, t in present
    )
    return (
        '<table class="metrics nlg"><caption>Language metrics (corpus level)</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def ce_table(ev: EvalInputs) -> str:
    """One row per clinical-efficacy definition present in metrics.json: P, R and F1, each with its interval."""
    rows = []
    for definition, prefix in CE_FAMILIES:
        keys = [f"{prefix}{m}" for m in PRF]
        if not any(k in ev.metrics for k in keys):
            continue
        cells = []
        for key in keys:
            ci = _interval(ev, key)
            ci_html = f'<span class="ci">{e(ci)}</span>' if ci else ""
            cells.append(f'<td class="num" data-key="{e(key)}">{fmt(ev.metrics.get(key))}{ci_html}</td>')
        rows.append(f'<tr><th scope="row">{e(definition)}</th>{"".join(cells)}</tr>')
    if not rows:
        return ""
    labeler = ev.labeler
    caption = "Clinical efficacy (CheXpert observations" + (f", labelled by {labeler}" if labeler else "") + ")"
    if ev.intervals:
        caption += f"; {_confidence_label(ev)} under each value"
    return (
        f'<table class="metrics ce"><caption>{e(caption)}</caption><thead><tr><th scope="col">Definition</th>'
        f'<th scope="col" class="num">Precision</th><th scope="col" class="num">Recall</th>'
        f'<th scope="col" class="num">F1</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def other_metrics_table(ev: EvalInputs) -> str:
    """Numeric values of metrics.json that no other table shows."""
    shown = {k for k, _ in NLG_METRICS} | {f"{p}{m}" for _, p in CE_FAMILIES for m in PRF}
    rest = [(k, v) for k, v in ev.metrics.items() if k not in shown]
    if not rest:
        return ""
    body = "".join(
        f'<tr><th scope="row">{e(k)}</th><td class="num">{e(format_number(v) if abs(v) >= 1 else fmt(v))}</td>'
        f'<td class="num ci">{e(_interval(ev, k))}</td></tr>'
        for k, v in rest
    )
    return (
        '<table class="metrics other"><caption>Other values in metrics.json</caption><thead><tr><th scope="col">Key</th>'
        f'<th scope="col" class="num">Value</th><th scope="col" class="num">{e(_confidence_label(ev))}</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def per_observation_table(rows: Sequence[StudyRow]) -> str:
    """Support and P/R/F1 per observation, computed from the table's labels by ``mrg.metrics.clinical``."""
    if not rows:
        return ""
    from mrg.metrics.clinical import per_observation_table as table

    body = "".join(
        f'<tr><th scope="row">{e(r["observation"])}</th>'
        + "".join(f'<td class="num">{r[k]}</td>' for k in ("support", "predicted", "tp", "fp", "fn"))
        + "".join(f'<td class="num">{fmt(float(r[k]), 3)}</td>' for k in PRF)
        + "</tr>"
        for r in table([r.pred_labels for r in rows], [r.ref_labels for r in rows])
    )
    head = "".join(
        f'<th scope="col" class="num">{h}</th>' for h in ("Support", "Predicted", "TP", "FP", "FN", "Precision", "Recall", "F1")
    )
    return (
        '<table class="metrics perobs"><caption>Per observation (uncertain = negative)</caption>'
        f'<thead><tr><th scope="col">Observation</th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, inner in value.items():
            out.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, value)]


def _value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value) or "(empty)"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def definition_list(record: dict[str, Any], css: str = "kv") -> str:
    """Nested ``record`` as a ``<dl>`` of dotted keys; each pair in a ``<div>`` so a grid can flow them."""
    items = "".join(f"<div><dt>{e(k)}</dt><dd>{e(_value_text(v))}</dd></div>" for k, v in _flatten(record))
    return f'<dl class="{css}">{items}</dl>' if items else ""


def evaluation_section(ev: EvalInputs, index: int, table: StudyTable | None) -> str:
    """The section of one evaluation folder: metrics, comparison, per-observation counts, protocol."""
    parts = [f'<section class="evaluation" id="eval-{index}" aria-labelledby="eval-{index}-h">']
    parts.append(f'<h2 id="eval-{index}-h">Evaluation <span class="src">{e(ev.root)}</span></h2>')
    parts.extend(f'<p class="note">{e(n)}</p>' for n in ev.notes)
    parts.append(headline_cards(ev))
    parts.append('<div class="tables">')
    parts.append(nlg_table(ev))
    parts.append(ce_table(ev))
    parts.append("</div>")
    parts.append(compare_table(ev))
    if table is not None and table.rows:
        parts.append(f"<details><summary>Per-observation counts ({len(table.rows)} studies)</summary>{per_observation_table(table.rows)}</details>")
    other = other_metrics_table(ev)
    if other:
        parts.append(f"<details><summary>Other values in metrics.json</summary>{other}</details>")
    summary = _protocol_summary(ev)
    if summary:
        parts.append(f"<h3>Protocol and provenance</h3>{summary}")
    deviations = ev.protocol.get("deviations")
    if isinstance(deviations, list) and deviations:
        items = "".join(f"<li>{e(d)}</li>" for d in deviations)
        parts.append(f'<div class="deviations"><strong>Deviations from R2Gen\'s protocol</strong><ul>{items}</ul></div>')
    for key, title in (("protocol", "Full protocol block"), ("inputs", "Inputs"), ("provenance", "Provenance"), ("timings", "Timings")):
        block = ev.protocol if key == "protocol" else ev.extra.get(key)
        if isinstance(block, dict) and block:
            parts.append(f"<details><summary>{e(title)}</summary>{definition_list(block)}</details>")
    if ev.generation:
        parts.append(f"<details><summary>Generation (the predictions' .meta.json)</summary>{definition_list(ev.generation)}</details>")
    parts.append("</section>")
    return "".join(p for p in parts if p)


def compare_table(ev: EvalInputs) -> str:
    """The paired test against a second system (``mrg evaluate --compare``): headline metrics, the rest folded."""
    block = ev.extra.get("compare")
    if not isinstance(block, dict) or not isinstance(block.get("metrics"), dict):
        return ""
    titles = dict(titled(registry.SUMMARY_METRICS))
    headline: list[str] = []
    others: list[str] = []
    for key, test in block["metrics"].items():
        if not isinstance(test, dict):
            continue
        p_value = test.get("p_value")
        row_class = ' class="sig"' if isinstance(p_value, (int, float)) and p_value < 0.05 else ""
        (headline if key in titles else others).append(
            f'<tr{row_class}><th scope="row">{e(titles.get(key, key))}</th>'
            + "".join(f'<td class="num">{fmt(test.get(k))}</td>' for k in ("a", "b", "delta"))
            + f'<td class="num ci">[{fmt(test.get("ci_low"))}, {fmt(test.get("ci_high"))}]</td>'
            + f'<td class="num">{fmt(p_value, 3)}</td></tr>'
        )
    if not headline and not others:
        return ""
    level = block.get("confidence", 0.95)
    ci_title = f"{float(level) * 100:g}% CI of A \u2212 B" if isinstance(level, (int, float)) else "CI"
    head = (
        '<thead><tr><th scope="col">Metric</th><th scope="col" class="num">A (this)</th><th scope="col" class="num">B</th>'
        f'<th scope="col" class="num">A \u2212 B</th><th scope="col" class="num">{e(ci_title)}</th>'
        '<th scope="col" class="num">p</th></tr></thead>'
    )
    caption = (f"Paired comparison with {block.get('predictions', 'a second system')} (B) on the same items: "
               f"{block.get('resamples', '?')} resamples, p by approximate randomisation; bold: p < 0.05")
    html = f'<table class="metrics compare"><caption>{e(caption)}</caption>{head}<tbody>{"".join(headline)}</tbody></table>'
    if others:
        html += (f"<details><summary>Paired comparison of the other {len(others)} metrics</summary>"
                 f'<table class="metrics compare">{head}<tbody>{"".join(others)}</tbody></table></details>')
    return html


def _protocol_summary(ev: EvalInputs) -> str:
    p, inputs, gen = ev.protocol, ev.extra.get("inputs") or {}, ev.generation
    items: list[tuple[str, str]] = []
    if p.get("name") or p.get("normalization"):
        items.append(("Protocol", " \u2014 ".join(str(x) for x in (p.get("name"), p.get("normalization")) if x)))
    if p.get("tokenization"):
        items.append(("Tokenization", str(p["tokenization"])))
    if p.get("num_items") is not None:
        refs = p.get("references_per_item")
        items.append(("Items", f"{p['num_items']}" + (f" ({refs} reference{'s' if refs != 1 else ''} each)" if refs else "")))
    if "ref_max_tokens" in p:
        limit = p.get("ref_max_tokens")
        items.append(("Reference truncation", "none" if limit is None else f"{limit} words ({p.get('truncated_references', '?')} truncated)"))
    if p.get("empty_predictions"):
        items.append(("Empty predictions", f"{p['empty_predictions']} (scored 0)"))
    labeler = ev.labeler
    if labeler:
        labelled = p["labeler"].get("labelled_text") if isinstance(p.get("labeler"), dict) else None
        items.append(("Labeler", labeler + (f" \u2014 {labelled}" if labelled else "")))
    boot = ev.extra.get("bootstrap")
    if isinstance(boot, dict) and boot.get("resamples"):
        level = boot.get("confidence", ev.confidence or 0.95)
        items.append(("Intervals", f"{float(level) * 100:g}% percentile bootstrap, {boot['resamples']} resamples, seed {boot.get('seed', '?')}"))
    if isinstance(inputs, dict):
        if inputs.get("predictions"):
            digest = str(inputs.get("predictions_sha256") or "")[:12]
            items.append(("Predictions", f"{inputs['predictions']}" + (f" (sha256 {digest}\u2026)" if digest else "")))
        if inputs.get("references"):
            items.append(("References", str(inputs["references"])))
    if gen.get("checkpoint"):
        items.append(("Checkpoint", f"{gen['checkpoint']}" + (f" (step {gen['step']})" if gen.get("step") is not None else "")))
    model = gen.get("model")
    if isinstance(model, dict) and model:
        items.append(("Model", ", ".join(f"{k} {v}" for k, v in model.items())))
    decoding = gen.get("generate")
    if isinstance(decoding, dict) and decoding:
        keys = ("strategy", "num_beams", "repetition_penalty", "length_penalty", "min_new_tokens", "max_new_tokens")
        items.append(("Decoding", ", ".join(f"{k} {decoding[k]}" for k in keys if k in decoding)))
    provenance = ev.extra.get("provenance")
    if isinstance(provenance, dict):
        made = ", ".join(f"{k} {provenance[k]}" for k in ("mrg_version", "git", "time") if provenance.get(k))
        if made:
            items.append(("Made by", f"mrg evaluate: {made}"))
    if not items:
        return ""
    return f'<dl class="kv summary">{"".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in items)}</dl>'


# ---------------------------------------------------------------------------------------- run parts


def _get(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _run_summary(run: RunInputs) -> str:
    record: dict[str, Any] = {}
    last = run.checkpoints[-1] if run.checkpoints else {}
    steps = run.last_step or last.get("step")
    if steps is None and run.curves:
        steps = int(max(x for pts in run.curves.values() for x, _ in pts))
    if steps is not None:
        total = last.get("total_steps")
        record["Steps"] = f"{steps}" + (f" of {total}" if total else "")
    if run.best_step is not None:
        best = run.best_validation
        score = f" (score {fmt(best['score'])})" if best and isinstance(best.get("score"), (int, float)) else ""
        record["Best checkpoint"] = f"step-{run.best_step:06d}{score}"
    select = _get(run.config, "train.select")
    if isinstance(select, dict):
        record["Selection score"] = " + ".join(f"{w:g}\u00b7{k}" for k, w in select.items())
    for dotted, title in (
        ("model.encoder.name_or_path", "Encoder"),
        ("model.promptbook.mode", "Prompts"),
        ("model.llm.name_or_path", "LLM (frozen)"),
        ("data.root", "Dataset"),
        ("train.lr", "Learning rate"),
        ("train.micro_batch_size", "Micro-batch"),
        ("train.grad_accum_steps", "Accumulation"),
        ("train.precision", "Precision"),
        ("train.seed", "Seed"),
    ):
        value = _get(run.config, dotted)
        if value is not None:
            record[title] = value
    if last.get("num_processes"):
        record["Processes"] = last["num_processes"]
    if run.checkpoints:
        record["Checkpoints kept"] = ", ".join(c["dir"] for c in run.checkpoints)
    return definition_list(record, "kv summary")


def _curve(run: RunInputs, *names: str) -> list[tuple[float, float]]:
    for name in names:
        if run.curves.get(name):
            return run.curves[name]
    return []


def run_charts(run: RunInputs, index: int) -> tuple[str, int]:
    """The training and validation charts of a run; returns the HTML and the number of charts."""
    best = run.best_step
    charts: list[str] = []
    uid = f"run{index}"
    training = (
        (("train/loss", "loss", "train_loss"), "Training loss", "loss"),
        (("train/lr", "lr", "learning_rate"), "Learning rate", "lr"),
        (("train/grad_norm", "grad_norm"), "Gradient norm (before clipping)", "norm"),
        (("train/samples_per_s", "samples_per_s"), "Throughput", "samples/s"),
        (("train/tokens_per_s", "tokens_per_s"), "Tokens per second", "tokens/s"),
    )
    for names, title, y_label in training:
        points = _curve(run, *names)
        if points:
            charts.append(line_chart([Series(title, points)], title=title, y_label=y_label, marker_x=best,
                                     marker_label="best", chart_id=f"{uid}-{names[0].replace('/', '-')}"))

    scored = [(r["step"], float(r["score"])) for r in run.validations if isinstance(r.get("score"), (int, float))]
    if not scored:
        scored = list(_curve(run, "val/score"))
    if scored:
        highlight = [(x, y) for x, y in scored if x == best]
        select = _get(run.config, "train.select")
        formula = " + ".join(f"{w:g}\u00b7{k}" for k, w in select.items()) if isinstance(select, dict) else "selection score"
        charts.append(line_chart([Series("validation score", scored, color="#000000", highlight=highlight)],
                                 title=f"Validation score ({formula})", y_label="score", marker_x=best,
                                 marker_label="best", chart_id=f"{uid}-val-score"))
    for metric, points in _pick(_validation_metrics(run), _VAL_CHARTED):
        highlight = [(x, y) for x, y in points if x == best]
        charts.append(line_chart([Series(metric, points, highlight=highlight)], title=f"Validation {metric}",
                                 y_label=metric, marker_x=best, marker_label="best", chart_id=f"{uid}-val-{metric}"))
    if not charts:
        return "", 0
    return f'<div class="charts">{"".join(charts)}</div>', len(charts)


def _validation_metrics(run: RunInputs) -> list[tuple[str, list[tuple[float, float]]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for record in run.validations:
        for key, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((record["step"], float(value)))
    if not series:  # no val_metrics.jsonl: the val/* rows of metrics.csv
        for name, points in run.curves.items():
            if name.startswith("val/") and name != "val/score":
                series[name[4:]] = list(points)
    return sorted(series.items())


def _pick(series: list[tuple[str, Any]], preferred: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The ``preferred`` entries in that order; when none is present, the first few of the others."""
    by_name = dict(series)
    chosen = [(name, by_name[name]) for name in preferred if name in by_name]
    return chosen or series[:_MAX_VAL_FALLBACK]


def validation_table(run: RunInputs) -> str:
    """One row per validation (the best marked), with the headline metrics as columns."""
    if not run.validations:
        return ""
    metrics = [k for k, _ in _pick(_validation_metrics(run), _VAL_COLUMNS)]
    head = "".join(f'<th scope="col" class="num">{e(k)}</th>' for k in ["step", "epoch", "score", *metrics])
    body = []
    for record in run.validations:
        values = record.get("metrics") or {}
        is_best = record["step"] == run.best_step
        cells = [str(record["step"]), str(record.get("epoch", "")), fmt(record.get("score"))]
        cells += [fmt(values.get(k)) if isinstance(values.get(k), (int, float)) else "\u2013" for k in metrics]
        best_mark = ' <span class="badge">best</span>' if is_best else ""
        row_class = ' class="best"' if is_best else ""
        body.append(
            f'<tr{row_class}><th scope="row" class="num">{cells[0]}{best_mark}</th>'
            + "".join(f'<td class="num">{e(c)}</td>' for c in cells[1:])
            + "</tr>"
        )
    return (
        f'<table class="metrics validations"><caption>Validations ({len(run.validations)})</caption>'
        f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def run_section(run: RunInputs, index: int) -> str:
    """The section of one training run: summary, charts, validation table and config."""
    parts = [f'<section class="run" id="run-{index}" aria-labelledby="run-{index}-h">']
    parts.append(f'<h2 id="run-{index}-h">Training run <span class="src">{e(run.root)}</span></h2>')
    parts.extend(f'<p class="note">{e(n)}</p>' for n in run.notes)
    parts.append(_run_summary(run))
    charts, _ = run_charts(run, index)
    parts.append(charts)
    table = validation_table(run)
    if table:
        parts.append(f"<details open><summary>Validation scores</summary>{table}</details>")
    if run.config_text:
        parts.append(f'<details><summary>config.yaml</summary><pre class="config">{e(run.config_text)}</pre></details>')
    parts.append("</section>")
    return "".join(p for p in parts if p)


# ------------------------------------------------------------------------------------- studies table


def _label_list(row: StudyRow, disagreements: set[str]) -> str:
    items = []
    for obs in OBSERVATIONS:
        pred, ref = row.pred_labels.get(obs), row.ref_labels.get(obs)
        if pred is None and ref is None:
            continue
        marks = []
        for side, value in (("gen", pred), ("ref", ref)):
            css, symbol, word = _LABEL_MARK.get(value, _BLANK_MARK) if value is not None else _BLANK_MARK
            marks.append(f'<span class="lv {css}" title="{side}: {word}">{symbol}</span>')
        dis = obs in disagreements
        flag = '<span class="flag" title="disagreement: positive on one side only">\u2260</span>' if dis else ""
        li_class = ' class="dis"' if dis else ""
        items.append(
            f'<li{li_class}>{flag}<span class="obs" title="{e(obs)}">{e(SHORT_OBSERVATION[obs])}</span>{"".join(marks)}</li>'
        )
    if not items:
        return '<span class="muted">none mentioned</span>'
    return f'<ul class="labels">{"".join(items)}</ul>'


def _thumbnails(row: StudyRow) -> str:
    if not row.thumbnails:
        return '<span class="noimg" role="img" aria-label="no image">no image</span>'
    parts = []
    for view, uri in enumerate(row.thumbnails, start=1):
        if uri is None:
            parts.append(f'<span class="noimg" role="img" aria-label="image {view} missing">missing</span>')
        else:
            parts.append(f'<img src="{e(uri)}" alt="study {e(row.id)}, view {view}" loading="lazy" decoding="async">')
    return "".join(parts)


def _perceived_cell(row: StudyRow, threshold: float) -> str:
    """The classes perceived at P >= ``threshold``, most probable first; every probability in the tooltip."""
    ranked = sorted(row.perceived.items(), key=lambda kv: -kv[1])
    listed = [(obs, p) for obs, p in ranked if p >= threshold]
    tooltip = "; ".join(f"{obs} {p:.2f}" for obs, p in ranked)
    items = "".join(f'<li><span class="obs" title="{e(obs)}">{e(SHORT_OBSERVATION[obs])}</span> {p:.2f}</li>'
                    for obs, p in listed)
    body = f'<ul class="labels">{items}</ul>' if items else '<span class="muted">none</span>'
    return f'<td class="lab perceived" data-v="{len(listed)}" title="{e(tooltip)}">{body}</td>'


def _perception_note(table: StudyTable) -> str:
    if table.perception_source is None:
        return ""
    return (f" Perceived: class probabilities from {table.perception_source}, listed from P \u2265 "
            f"{table.perceive_threshold:g} (all in the cell's tooltip).")


def _studies_head(table: StudyTable, with_images: bool) -> list[str]:
    """The header cells of the per-study table."""
    head = ['<th scope="col" class="num" data-type="num">#</th>', '<th scope="col" data-type="text" data-search>id</th>']
    if with_images:
        head.append('<th scope="col" class="nosort">image</th>')
    head += [
        '<th scope="col" data-type="text" data-search>generated</th>',
        '<th scope="col" data-type="text" data-search>reference</th>',
        '<th scope="col" data-type="num" title="sorted by the number of disagreements">labels gen | ref</th>',
    ]
    if table.perception_source is not None:
        head.append(f'<th scope="col" data-type="num" title="classes with P \u2265 {table.perceive_threshold:g}, '
                    f'sorted by their number">perceived (P \u2265 {table.perceive_threshold:g})</th>')
    return head + [f'<th scope="col" class="num score" data-type="num">{e(title)}</th>' for _, title in table.score_columns]


def studies_section(table: StudyTable, index: int, anchor: str) -> str:
    """The per-study table with its controls (hidden until the script reveals them)."""
    rows = table.rows
    with_images = table.images_source is not None
    options = "".join(f'<option value="{e(obs)}">{e(obs)}</option>' for obs in OBSERVATIONS)
    dis_total = sum(1 for r in rows if r.disagreements)
    page_options = "".join(f"<option{' selected' if n == PAGE_ROWS else ''}>{n}</option>" for n in sorted({25, PAGE_ROWS, 500}))
    controls = (
        f'<div class="controls" hidden data-for="studies-{index}">'
        f'<label class="search">Search <input type="search" placeholder="id or words in either report" aria-controls="studies-{index}"></label>'
        '<label class="toggle"><input type="checkbox" class="only-dis"> only disagreements</label>'
        f'<label>Observation <select class="obs-filter"><option value="">any</option>{options}</select></label>'
        f'<label>Rows <select class="page-size">{page_options}<option value="0">all</option></select></label>'
        '<span class="count" aria-live="polite"></span>'
        '<span class="pager"><button type="button" class="prev" aria-label="previous page">\u2039</button>'
        '<span class="page"></span><button type="button" class="next" aria-label="next page">\u203a</button></span>'
        "</div>"
    )
    head = _studies_head(table, with_images)
    body = []
    for number, row in enumerate(rows, start=1):
        disagreements = row.disagreements
        cells = [f'<td class="num" data-v="{number}">{number}</td>', f'<td class="id">{e(row.id)}</td>']
        if with_images:
            cells.append(f'<td class="img">{_thumbnails(row)}</td>')
        cells.append(f'<td class="txt gen">{e(row.prediction)}</td>')
        cells.append(f'<td class="txt ref">{e(row.reference)}</td>')
        cells.append(f'<td class="lab" data-v="{len(disagreements)}">{_label_list(row, set(disagreements))}</td>')
        if table.perception_source is not None:
            cells.append(_perceived_cell(row, table.perceive_threshold))
        for key, _ in table.score_columns:
            value = row.scores.get(key)
            cells.append(f'<td class="num" data-v="{"" if value is None else repr(value)}">{fmt(value, 3)}</td>')
        attrs = f' data-dis="{e("|".join(disagreements))}"' + (' class="has-dis"' if disagreements else "")
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in table.notes)
    source = f"Labels: {table.labels_source}." + _perception_note(table)
    if with_images:
        source += f" Images: {table.images_source}"
        source += f" ({table.missing_images} missing or unreadable, shown as placeholders)." if table.missing_images else "."
    legend = (
        '<p class="legend-labels"><span class="lv pos">+</span> positive <span class="lv neg">\u2212</span> negative '
        '<span class="lv unc">?</span> uncertain <span class="lv blank">\u00b7</span> not mentioned; first mark: generated, '
        'second: reference; <span class="flag">\u2260</span> positive on one side only (the headline CE rule).</p>'
    )
    return (
        f'<section class="studies-section" id="{e(anchor)}" aria-labelledby="{e(anchor)}-h">'
        f'<h2 id="{e(anchor)}-h">{e(table.title)}</h2>'
        f'<p class="sub">{len(rows)} studies, {dis_total} with at least one label disagreement. {e(source)}</p>{notes}{legend}{controls}'
        f'<div class="scroll"><table class="studies" id="studies-{index}" style="--thumb: {max(24, round(table.thumbnail_size * 2 / 3))}px">'
        f'<caption class="sr-only">{e(table.title)}</caption>'
        f'<thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div></section>'
    )


# ------------------------------------------------------------------------------------------ the page


def comparison_table(evaluations: Sequence[EvalInputs]) -> str:
    """One column per evaluation for the headline metrics (shown when more than one evaluation is given)."""
    keys = [(k, t) for k, t in titled(registry.SUMMARY_METRICS) if any(k in ev.metrics for ev in evaluations)]
    head = "".join(f'<th scope="col" class="num">{e(ev.root)}</th>' for ev in evaluations)
    body = "".join(
        f'<tr><th scope="row">{e(t)}</th>' + "".join(f'<td class="num">{fmt(ev.metrics.get(k))}</td>' for ev in evaluations) + "</tr>"
        for k, t in keys
    )
    return (
        '<section id="comparison"><h2>Comparison</h2><table class="metrics comparison">'
        f'<thead><tr><th scope="col">Metric</th>{head}</tr></thead><tbody>{body}</tbody></table></section>'
    )


# With JavaScript on, rows after the first page are hidden from the start, so the browser does not lay out
# thousands of rows that the table script hides a moment later: on 4,000 studies this took the time until the
# page is usable from 4-8 s to 1-2 s (benchmarks/bench_report.py). Without JavaScript every row shows.
_FIRST_PAGE_CSS = f"html.js table.studies:not(.ready) > tbody > tr:nth-child(n+{PAGE_ROWS + 1}) {{ display: none; }}"


def render_page(
    *,
    title: str,
    runs: Sequence[RunInputs],
    evaluations: Sequence[EvalInputs],
    tables: Sequence[tuple[StudyTable, int | None]],
    generated: str,
    version: str,
    sources: Sequence[str],
    analyses: Sequence[AnalysisFolder] = (),
    answers: Sequence[Any] = (),
    synthesis: Sequence[Any] = (),
    thumbnail_size: int = 96,
) -> str:
    """The whole document.

    Args:
        title: the page title.
        runs, evaluations: what ``mrg.viewer.inputs.discover`` read.
        tables: per-study tables, each with the index of the evaluation it belongs to (None for a run's
            validation predictions).
        generated: when the page was made (UTC, ISO 8601).
        version: the mrg version.
        sources: the folders given on the command line.
        analyses: folders written by ``mrg analyze`` (an Analysis section each).
        answers: scored ``mrg answer`` files (``mrg.viewer.vqa_view.VQAInputs``; a VQA section each).
        synthesis: synthesized folders (``mrg.viewer.synthesis_view.SynthesisInputs``; a section each, its
            thumbnails ``thumbnail_size`` pixels wide).
    """
    nav: list[tuple[str, str]] = []
    sections: list[str] = []
    if len(evaluations) > 1:
        nav.append(("comparison", "Comparison"))
        sections.append(comparison_table(evaluations))
    table_for_eval = {ev_index: table for table, ev_index in tables if ev_index is not None}
    for i, ev in enumerate(evaluations, start=1):
        nav.append((f"eval-{i}", f"Metrics{f' {i}' if len(evaluations) > 1 else ''}"))
        sections.append(evaluation_section(ev, i, table_for_eval.get(i - 1)))
    for i, run in enumerate(runs, start=1):
        nav.append((f"run-{i}", f"Training{f' {i}' if len(runs) > 1 else ''}"))
        sections.append(run_section(run, i))
    for i, (table, _) in enumerate(tables, start=1):
        anchor = f"studies-section-{i}"
        nav.append((anchor, f"Studies{f' {i}' if len(tables) > 1 else ''}"))
        sections.append(studies_section(table, i, anchor))
    for i, folder in enumerate(analyses, start=1):
        nav.append((f"analysis-{i}", f"Analysis{f' {i}' if len(analyses) > 1 else ''}"))
        sections.append(analysis_section(folder, i))
    for i, vqa in enumerate(answers, start=1):
        nav.append((f"vqa-{i}", f"VQA{f' {i}' if len(answers) > 1 else ''}"))
        sections.append(vqa_section(vqa, i))
    for i, found in enumerate(synthesis, start=1):
        nav.append((f"synthesis-{i}", f"Synthesis{f' {i}' if len(synthesis) > 1 else ''}"))
        sections.append(synthesis_section(found, i, thumbnail_size))
    nav_html = "".join(f'<a href="#{e(a)}">{e(t)}</a>' for a, t in nav)
    meta = {"generator": f"mrg {version}", "generated": generated, "sources": list(sources)}
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        f'<meta name="generator" content="mrg {e(version)}">'
        f"<title>{e(title)}</title><style>{_asset('report.css')}{_FIRST_PAGE_CSS}</style>"
        '<script>document.documentElement.classList.add("js");</script></head>'
        f'<body><header class="top"><div class="wrap"><h1>{e(title)}</h1>'
        f'<p class="meta">Made by mrg {e(version)} on {e(generated)} from {e(", ".join(sources))}</p>'
        f'<nav aria-label="sections">{nav_html}</nav></div></header>'
        f'<main class="wrap">{"".join(sections)}</main>'
        f'<footer class="wrap"><p>Self-contained page: no network access is needed or allowed. '
        f'Scores are those of the evaluation folder; labels and images are read as described in each section.</p>'
        f'<script type="application/json" id="report-meta">{_json_for_script(meta)}</script></footer>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def _json_for_script(value: Any) -> str:
    """JSON that cannot close its ``<script>`` element (``<``, ``>`` and ``&`` as unicode escapes)."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
