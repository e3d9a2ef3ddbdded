"""The Analysis section of the report: what ``mrg analyze`` found, its key numbers and its PNG figures inline.

One section per analysis folder (``mrg.viewer.inputs.AnalysisFolder``): for ``prompts`` a table per soft-token
group (nearest-word cosine against its baselines, norms against the word embeddings, effective rank, how the
similarity of two studies' tokens tracks their label overlap), the words nearest the mean prompt and the
promptbook usage; for ``attention`` the mass on each input group and the generated tokens that look at the image
most. The figures are embedded as base64 PNG (the page's policy allows ``data:`` images only). ``docs/analysis.md``
explains how to read each figure.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from mrg.viewer.charts import format_number
from mrg.viewer.inputs import AnalysisFolder

TITLES = {"prompts": "Soft tokens", "attention": "Attention"}


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    return format_number(round(float(value), digits))


def _inputs_line(section: dict[str, Any]) -> str:
    inputs = section.get("inputs") or {}
    parts = [f"method {inputs.get('method')} (stage {inputs.get('stage')})", f"step {inputs.get('step')}",
             f"{inputs.get('num_studies')} studies of the {inputs.get('split')} split of {inputs.get('data')}"]
    return f'<p class="meta">{escape(", ".join(str(p) for p in parts))}; checkpoint {escape(str(inputs.get("checkpoint")))}</p>'


def _table(head: list[str], rows: list[list[str]], caption: str) -> str:
    header = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="metrics"><caption>{escape(caption)}</caption><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _group_rows(section: dict[str, Any]) -> list[list[str]]:
    rows = []
    word_norm = (section.get("word_norms") or {}).get("median")
    for name, g in (section.get("groups") or {}).items():
        nearest, similarity = g.get("nearest") or {}, g.get("similarity_vs_labels") or {}
        baselines = nearest.get("baselines") or {}
        spectrum, per_study = g.get("spectrum") or {}, g.get("per_study_spectrum") or {}
        if similarity.get("pearson") is None:
            tracks = escape(similarity.get("note") or "–")
        else:
            tracks = (f"r {_num(similarity['pearson'])}, rho {_num(similarity.get('spearman'))} "
                      f"({similarity.get('pairs_with_labels')} pairs)")
        rows.append([
            escape(name),
            str(nearest.get("tokens", "–")),
            f"{_num((nearest.get('top1_cosine') or {}).get('median'))} (words {_num((baselines.get('word_to_nearest_other_word') or {}).get('median'))}, "
            f"random {_num((baselines.get('random_direction') or {}).get('median'))})",
            f"{_num((g.get('norms') or {}).get('median'))} (words {_num(word_norm)}); {_num(100 * g.get('outside_word_norm_range', 0), 1)} % outside",
            f"{_num(spectrum.get('effective_rank'), 2)} of {spectrum.get('max_rank', '–')}; per study {_num(per_study.get('effective_rank'), 2)}",
            tracks,
        ])
    return rows


def _nearest_words(section: dict[str, Any]) -> str:
    prompt = (section.get("groups") or {}).get("prompt") or {}
    mean = (prompt.get("nearest") or {}).get("mean_prompt")
    if not mean:
        return ""
    items = "".join(
        f"<li>token {t['index']}: " + ", ".join(f"<code>{escape(n['token'])}</code> {_num(n['cosine'])}" for n in t["nearest"]) + "</li>"
        for t in mean
    )
    return f"<h4>Words nearest the mean prompt (cosine)</h4><ul class=\"notes\">{items}</ul>"


def _mixing(section: dict[str, Any]) -> str:
    mixing = section.get("mixing")
    if not mixing:
        return ""
    usage = ", ".join(str(c) for c in mixing.get("argmax_usage", []))
    return (f"<p>Promptbook: {mixing.get('book_size')} entries; entropy of the mixing weights "
            f"{_num(100 * mixing.get('normalised_entropy_mean', 0), 1)} % of the maximum (100 %: uniform mixing); "
            f"studies whose largest weight is each entry: {escape(usage)}.</p>")


def _prompts_body(section: dict[str, Any]) -> str:
    head = ["group", "tokens", "nearest-word cosine, median", "norm, median", "effective rank",
            "similarity vs label overlap"]
    return _table(head, _group_rows(section), "Soft-token groups") + _nearest_words(section) + _mixing(section)


def _attention_body(section: dict[str, Any]) -> str:
    overall = section.get("overall") or {}
    rows = [[escape(g), _num(v, 4)] for g, v in overall.items()]
    parts = [f"<p>{escape(str(section.get('decoding', '')))}. {escape(str(section.get('implementation_note', '')))}; "
             f"{section.get('generated_tokens')} generated tokens.</p>",
             _table(["input group", "attention mass"], rows, "Mean attention mass per generated token (layers and heads averaged)")]
    tokens = sorted(section.get("by_token") or [], key=lambda t: -float(t.get("visual", 0)))[:10]
    if tokens:
        parts.append(_table(["generated token", "count", "visual", "prompt", "instruction", "generated"],
                            [[f"<code>{escape(t['token'])}</code>", str(t["count"]),
                              *(_num(t.get(g), 4) for g in ("visual", "prompt", "instruction", "generated"))] for t in tokens],
                            "Frequent generated tokens that look at the image most"))
    parts += [f'<p class="note">{escape(n)}</p>' for n in section.get("notes") or []]
    return "".join(parts)


def _figures(folder: AnalysisFolder, section: dict[str, Any]) -> str:
    items = []
    for figure in section.get("figures") or []:
        data = folder.figures.get(str(figure.get("file")))
        if data is None:
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        title = escape(str(figure.get("title", figure.get("file"))))
        items.append(f'<figure class="analysis-figure"><img src="{uri}" alt="{title}" loading="lazy"><figcaption>{title}</figcaption></figure>')
    return f'<div class="charts">{"".join(items)}</div>' if items else ""


def analysis_section(folder: AnalysisFolder, index: int) -> str:
    """The ``<section>`` of one analysis folder (anchor ``analysis-INDEX``)."""
    parts = [f'<section id="analysis-{index}"><h2>Analysis: {escape(folder.name)}</h2>',
             '<p class="meta">How to read each figure: docs/analysis.md of mrg.</p>']
    for kind in ("prompts", "attention"):
        section = folder.analyses.get(kind)
        if section is None:
            continue
        body = _prompts_body(section) if kind == "prompts" else _attention_body(section)
        parts += [f"<h3>{TITLES[kind]}</h3>", _inputs_line(section), body, _figures(folder, section)]
    parts += [f'<p class="note">{escape(n)}</p>' for n in folder.notes]
    parts.append("</section>")
    return "".join(parts)
