"""``mrg analyze attention``: where the LLM looks while it writes a report.

Reports are generated greedily (beam search keeps several hypotheses whose attention would have to be picked
from; greedy has one), with the run's ``generate.max_new_tokens``, ``min_new_tokens`` and
``repetition_penalty``, and the frozen LLM in eager attention (SDPA cannot return its weights). For every
generated token (the step whose query position predicts it) the attention weights of each layer and head are
summed over the key positions of each input group (``mrg.model.report_model.INPUT_GROUPS``: the template's
instruction text, the visual tokens, the customised prompt, the tokens generated so far), so the masses of one
query sum to 1 over the groups. They are averaged over every generated token of the analysed studies: per layer
and head, per position in the report and per generated token (by its text).

Heat maps: for chosen studies, the attention on each visual token (averaged over layers, heads and generated
tokens) laid out on the encoder's patch grid (a leading CLS token dropped) and drawn over the image the model saw.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrg.analysis import png
from mrg.errors import ConfigError

GROUPS = ("instruction", "visual", "clues", "prompt", "generated")
"""The groups whose attention mass is reported (``clues`` only for a model that has clue tokens, e.g. TRRG)."""
TOP_TOKENS = 20


def group_masses(attention: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Sum attention over the key positions of each group.

    Args:
        attention: (B, L, H, K) weights of one query per study, per layer and head, over K keys.
        codes: (B, K) the group code of each key.
        num_codes: how many codes exist.

    Returns:
        (B, L, H, num_codes) masses.
    """
    onehot = torch.nn.functional.one_hot(codes, num_codes).to(attention.dtype)  # (B, K, G)
    return torch.einsum("blhk,bkg->blhg", attention, onehot)


def patch_grid(count: int) -> tuple[int, int, int] | None:
    """(skip, rows, cols) laying ``count`` tokens of one view on a square grid (skip 1: a leading CLS token)."""
    for skip in (0, 1):
        side = math.isqrt(count - skip) if count > skip else 0
        if side > 0 and side * side == count - skip:
            return skip, side, side
    return None


class _Totals:
    """Running sums of the masses over generated tokens."""

    def __init__(self, layers: int, heads: int, num_codes: int) -> None:
        self.by_head = torch.zeros(layers, heads, num_codes, dtype=torch.float64)
        self.by_step: dict[int, torch.Tensor] = defaultdict(lambda: torch.zeros(num_codes, dtype=torch.float64))
        self.step_counts: dict[int, int] = defaultdict(int)
        self.by_token: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(num_codes, dtype=torch.float64))
        self.token_counts: dict[str, int] = defaultdict(int)
        self.count = 0
        self.max_error = 0.0
        self.present: set[int] = set()
        """The input-group codes some input position had."""


def _generate(model: Any, batch: dict[str, Any], gen: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    from transformers import GenerationConfig

    visual, token_mask = model.visual_tokens(batch)
    prompt = model.promptbook(visual, token_mask)
    embeds, mask, _, _ = model.assemble(visual, token_mask, prompt, left_pad=True)
    codes = model.input_groups(visual, token_mask, left_pad=True)  # (B, T)
    config = GenerationConfig(max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens,
                              repetition_penalty=gen.repetition_penalty, eos_token_id=model.eos_token_ids,
                              pad_token_id=model.tokenizer.pad_token_id, num_beams=1, do_sample=False, use_cache=True,
                              no_repeat_ngram_size=0, output_attentions=True, return_dict_in_generate=True)
    with warnings.catch_warnings():  # as mrg generate: the repetition penalty sees only generated tokens, on purpose
        warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
        out = model.llm.model.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config)
    return out, codes, visual, token_mask


@torch.no_grad()
def collect(inputs: Any, *, map_ids: set[str]) -> tuple[_Totals, dict[str, dict[str, Any]], list[str]]:
    """Masses over every generated token of the studies; the visual attention of the studies in ``map_ids``."""
    from mrg.model.report_model import INPUT_GROUPS

    model, gen = inputs.model, inputs.cfg.generate
    num_codes = len(INPUT_GROUPS)
    generated = INPUT_GROUPS.index("generated")
    stops = set(model.eos_token_ids)
    totals: _Totals | None = None
    maps: dict[str, dict[str, Any]] = {}
    texts: list[str] = []
    for batch in inputs.batches():
        out, codes, visual, token_mask = _generate(model, batch, gen)
        steps = out.sequences.shape[1]
        if not out.attentions:
            raise ConfigError("the LLM returned no attention weights; it needs attn_implementation=eager")
        layers, heads = len(out.attentions[0]), out.attentions[0][0].shape[1]
        totals = totals or _Totals(layers, heads, num_codes)
        totals.present.update(int(c) for c in codes.unique())
        rows = out.sequences.tolist()
        alive = torch.ones(len(rows), dtype=torch.bool)
        want = [b for b, sid in enumerate(batch["ids"]) if sid in map_ids]
        visual_sums = {b: torch.zeros(int((codes[b] == INPUT_GROUPS.index("visual")).sum()), dtype=torch.float64) for b in want}
        for t in range(steps):
            attn = torch.stack([layer[:, :, -1, :] for layer in out.attentions[t]], dim=1).double().cpu()  # (B, L, H, K)
            step_codes = torch.cat([codes.cpu(), torch.full((codes.shape[0], t), generated, dtype=torch.long)], dim=1)
            mass = group_masses(attn, step_codes[:, : attn.shape[-1]], num_codes)  # (B, L, H, G)
            for b in range(len(rows)):
                if not alive[b]:
                    continue
                _add(totals, mass[b], t, model.tokenizer.decode([rows[b][t]]).strip() or repr(rows[b][t]))
                if b in visual_sums:
                    keys = attn[b, :, :, : codes.shape[1]].mean(dim=(0, 1))  # (T,)
                    visual_sums[b] += keys[codes[b].cpu() == INPUT_GROUPS.index("visual")]
                if rows[b][t] in stops:
                    alive[b] = False
        texts.extend(model.decode(out.sequences))
        for b, sums in visual_sums.items():
            length = next((i + 1 for i, tok in enumerate(rows[b]) if tok in stops), steps)
            maps[batch["ids"][b]] = {"attention": (sums / length).numpy(), "image": batch["pixel_values"][b, 0].float().mean(0).cpu().numpy()}
    assert totals is not None
    return totals, maps, texts


def _add(totals: _Totals, mass: torch.Tensor, step: int, token: str) -> None:
    """Add one generated token's (L, H, G) masses."""
    totals.by_head += mass
    mean = mass.mean(dim=(0, 1))  # (G,)
    totals.by_step[step] += mean
    totals.step_counts[step] += 1
    totals.by_token[token] += mean
    totals.token_counts[token] += 1
    totals.count += 1
    totals.max_error = max(totals.max_error, float((mass.sum(dim=-1) - 1).abs().max()))


def summarise(totals: _Totals) -> dict[str, Any]:
    """The ``attention`` section of ``analysis.json`` (masses by group name)."""
    from mrg.model.report_model import INPUT_GROUPS

    index = {g: INPUT_GROUPS.index(g) for g in GROUPS if g != "clues" or INPUT_GROUPS.index(g) in totals.present}
    by_head = totals.by_head / max(1, totals.count)  # (L, H, G)
    by_layer = by_head.mean(dim=1)  # (L, G)
    overall = by_head.mean(dim=(0, 1))
    tokens = sorted(totals.token_counts, key=lambda k: -totals.token_counts[k])[:TOP_TOKENS]
    return {
        "generated_tokens": totals.count,
        "mass_sum_max_error": totals.max_error,
        "overall": {g: float(overall[i]) for g, i in index.items()},
        "by_layer": {g: [float(v) for v in by_layer[:, i]] for g, i in index.items()},
        "by_layer_head": {g: [[float(v) for v in row] for row in by_head[:, :, i]] for g, i in index.items()},
        "by_position": {g: [float(totals.by_step[s][i] / totals.step_counts[s]) for s in sorted(totals.by_step)]
                        for g, i in index.items()},
        "position_counts": [totals.step_counts[s] for s in sorted(totals.by_step)],
        "by_token": [{"token": tok, "count": totals.token_counts[tok],
                      **{g: float(totals.by_token[tok][i] / totals.token_counts[tok]) for g, i in index.items()}}
                     for tok in tokens],
    }


def _views_grid(inputs: Any, count: int) -> tuple[int, tuple[int, int, int] | None]:
    """Tokens per view and its patch grid."""
    encoder, data = inputs.model.encoder, inputs.cfg.data
    per_view = encoder.num_tokens(data.image_size, 1)
    return per_view, patch_grid(per_view if count % per_view == 0 else count)


def heat_maps(inputs: Any, maps: dict[str, dict[str, Any]], out_dir: Path) -> tuple[list[dict[str, str]], list[str]]:
    """One overlay PNG per chosen study (the first view)."""
    figures, notes = [], []
    for sid, item in maps.items():
        weights = item["attention"]
        per_view, grid = _views_grid(inputs, len(weights))
        if grid is None or len(weights) < per_view:
            notes.append(f"study {sid}: {len(weights)} visual tokens do not lie on a square patch grid; no heat map")
            continue
        skip, rows, cols = grid
        heat = weights[skip : skip + rows * cols].reshape(rows, cols)  # the first view's tokens
        image = item["image"]
        image = (image - image.min()) / (image.max() - image.min() + 1e-12)
        name = f"attention-map-{_safe(sid)}.png"
        png.overlay(out_dir / name, f"{sid}: attention on visual tokens ({rows}x{cols} grid, {weights.sum():.3f} of the mass)",
                    image, heat)
        figures.append({"file": name, "title": f"Study {sid}: attention on the image patches (first view)"})
    return figures, notes


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]


def analyze_attention(inputs: Any, out_dir: Path, *, map_ids: list[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The ``attention`` section of ``analysis.json`` and its figures (written to ``out_dir``)."""
    totals, maps, _ = collect(inputs, map_ids=set(map_ids))
    record = summarise(totals)
    record["decoding"] = "greedy (one hypothesis, so one attention pattern per token); generate.max_new_tokens, " \
                         "min_new_tokens and repetition_penalty of the run"
    figures = _attention_figures(record, out_dir)
    map_figures, notes = heat_maps(inputs, maps, out_dir)
    record["maps"] = [f["file"] for f in map_figures]
    record["notes"] = notes
    return record, figures + map_figures


def _attention_figures(record: dict[str, Any], out_dir: Path) -> list[dict[str, str]]:
    layers = len(record["by_layer"]["visual"])
    png.stacked_bars(out_dir / "attention-layers.png", "Attention mass on each input group, per layer",
                     [str(i) for i in range(layers)], record["by_layer"], x_label="layer", y_label="attention mass")
    figures = [{"file": "attention-layers.png", "title": "Attention mass per group and layer (mean over heads)"}]
    for group in [g for g in ("visual", "clues", "prompt") if g in record["by_layer_head"]]:
        values = np.array(record["by_layer_head"][group])
        if values.size and values.max() > 0:
            png.matrix(out_dir / f"attention-heads-{group}.png", f"Attention mass on the {group} tokens", values,
                       row_label="layer", col_label="head")
            figures.append({"file": f"attention-heads-{group}.png", "title": f"Attention mass on {group} tokens per layer and head"})
    series = {g: [(float(i), v) for i, v in enumerate(values)] for g, values in record["by_position"].items()}
    png.lines(out_dir / "attention-positions.png", "Attention mass by position in the generated report", series,
              x_label="generated token", y_label="attention mass", y_range=(0.0, 1.0))
    figures.append({"file": "attention-positions.png", "title": "Attention mass per group along the generated report"})
    return figures
