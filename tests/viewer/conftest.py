"""Fixtures for the HTML report: hand-written run, evaluation and dataset folders, and an HTML tree parser.

The folders follow the formats of ``mrg train`` (``mrg/trainer.py``, ``mrg/checkpoint.py``), ``mrg generate``
(the predictions' ``.meta.json`` sidecar) and ``mrg evaluate`` (``mrg/evaluate.py``): small, but with every
field the report reads. ``tests/viewer/test_html.py`` also builds them with the real commands once.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mrg.data.chexpert import OBSERVATIONS
from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset
from mrg.metrics.labeler import label_reports

# (reference, prediction): pairs chosen so some labels agree and some disagree; one holds HTML specials.
PAIRS: list[tuple[str, str]] = [
    ("The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
     "The heart is normal in size. The lungs are clear. No pleural effusion."),
    ("The heart is enlarged. Small bilateral pleural effusions.",
     "The heart is normal in size. Small left pleural effusion."),
    ("Right lower lobe consolidation, possible pneumonia. No pneumothorax.",
     "Right lower lobe consolidation. No pneumothorax."),
    ("Left apical pneumothorax. Heart size is normal.",
     "The lungs are clear. Heart size is normal."),
    ("Cardiomegaly with mild pulmonary edema. Small right effusion.",
     "Cardiomegaly with mild pulmonary edema. Small right effusion."),
    ("Pacemaker in place. Heart size <b>normal</b> & lungs \"clear\"; no focal 'opacity'.",
     "Pacemaker in place <script>alert(1)</script>. Heart size normal & lungs clear."),
]
TRAIN_STEPS = 40
VAL_STEPS = (10, 20, 30, 40)
BEST_STEP = 30
METRICS = {
    "bleu_1": 0.4123, "bleu_2": 0.2711, "bleu_3": 0.1902, "bleu_4": 0.1377, "meteor": 0.1688, "rouge_l": 0.3621,
    "cider": 0.4410, "ce_precision": 0.6123, "ce_recall": 0.5541, "ce_f1": 0.5817, "ce_macro_precision": 0.31,
    "ce_macro_recall": 0.28, "ce_macro_f1": 0.29, "ce5_micro_precision": 0.66, "ce5_micro_recall": 0.6,
    "ce5_micro_f1": 0.628, "ce_example_precision": 0.51, "ce_example_recall": 0.47, "ce_example_f1": 0.48,
}


# ------------------------------------------------------------------------------------------- folders


def _radiograph(seed: int, size: tuple[int, int] = (120, 100)) -> Image.Image:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    body = np.exp(-(((xx - w / 2) / (w / 2.6)) ** 2)) * 200
    lungs = 90 * (np.exp(-(((xx - w * 0.32) / (w / 9)) ** 2 + ((yy - h / 2) / (h / 3.5)) ** 2))
                  + np.exp(-(((xx - w * 0.68) / (w / 9)) ** 2 + ((yy - h / 2) / (h / 3.5)) ** 2)))
    pixels = np.clip(body - lungs + rng.normal(0, 6, size), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def make_dataset(root: Path, pairs: list[tuple[str, str]] = PAIRS, *, views: int = 2) -> Path:
    """A prepared dataset (``mrg.data.prepared`` format) whose test split holds one study per pair."""
    prepare_output_dir(root, {"kind": "report-test"}, force=False)
    studies = []
    for index, (reference, _) in enumerate(pairs):
        study_id = f"CXR{index + 1:04d}"
        paths = []
        for view in range(views):
            rel = f"images/{study_id}/{view}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _radiograph(index * 10 + view).save(root / rel)
            paths.append(rel)
        studies.append(Study(id=study_id, split="test", report=reference, image_paths=paths))
    write_prepared_dataset(root, studies, source={"kind": "report-test"}, protocol={"name": "test"}, normalize="none")
    return root


def _label_cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def make_eval(
    root: Path,
    dataset: Path | None,
    pairs: list[tuple[str, str]] = PAIRS,
    *,
    labels: bool = True,
    bootstrap: bool = True,
    record_predictions: bool = True,
    sidecar: bool = True,
    texts_in_per_sample: bool = True,
    compare: bool = False,
) -> Path:
    """An ``mrg evaluate`` folder: metrics.json, per_sample.csv, metrics.md, plus the predictions it scored."""
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"CXR{i + 1:04d}" for i in range(len(pairs))]
    predictions = root.parent / f"{root.name}-predictions.jsonl"
    with open(predictions, "w", encoding="utf-8") as handle:
        for item_id, (reference, prediction) in zip(ids, pairs, strict=True):
            handle.write(json.dumps({"id": item_id, "prediction": prediction, "reference": reference}) + "\n")
    if sidecar and dataset is not None:
        meta = {"predictions": predictions.name, "num_reports": len(pairs), "checkpoint": "/runs/tiny/step-000030",
                "step": BEST_STEP, "generate": {"strategy": "beam", "num_beams": 3, "max_new_tokens": 40},
                "input": {"data": str(dataset), "split": "test", "normalize": "none"},
                "model": {"encoder": "random:vit", "llm": "random:llama"}}
        (predictions.parent / (predictions.name + ".meta.json")).write_text(json.dumps(meta), encoding="utf-8")

    record: dict[str, Any] = dict(METRICS)
    record["protocol"] = {
        "name": "r2gen", "normalization": "R2Gen cleaner 'r2gen-iu' on both sides", "normalize_mode": "r2gen-iu",
        "tokenization": "whitespace split (no PTB tokenizer)", "num_items": len(pairs), "references_per_item": 1,
        "ref_max_tokens": None, "truncated_references": 0, "empty_predictions": 0,
        "labeler": {"name": "mrg-chexpert-rules", "version": "1.0", "labelled_text": "the texts as scored"},
        "deviations": ["none: R2Gen's protocol <exactly> & fully"],
    }
    record["inputs"] = {"predictions": str(predictions) if record_predictions else "/nowhere/predictions.jsonl",
                        "predictions_format": "jsonl", "predictions_sha256": "ab" * 32,
                        "references": f"{predictions} ('reference' fields)", "references_format": "embedded"}
    if bootstrap:
        record["bootstrap"] = {
            "resamples": 200, "seed": 0, "confidence": 0.95, "method": "percentile bootstrap over items",
            "intervals": {k: {"low": v * 0.9, "high": v * 1.1, "std": v * 0.05} for k, v in METRICS.items()},
        }
    if compare:  # mrg evaluate --compare base.jsonl: A is this system, B the baseline
        tests = {k: {"a": v, "b": v / 2, "delta": v / 2, "p_value": 0.01 if k.startswith("bleu") else 0.4,
                     "ci_low": v / 4 - 0.2, "ci_high": v * 0.75} for k, v in METRICS.items()}
        record["compare"] = {"predictions": "base <1>.jsonl", "predictions_sha256": "cd" * 32, "resamples": 500,
                             "seed": 0, "confidence": 0.95, "b_metrics": {k: v / 2 for k, v in METRICS.items()},
                             "metrics": tests}
    record["timings"] = {"total_s": 1.5}
    record["provenance"] = {"mrg_version": "0.1.0", "git": "abc123", "time": "2025-01-01T00:00:00Z"}
    (root / "metrics.json").write_text(json.dumps(record, indent=2), encoding="utf-8")

    pred_labels = label_reports([p for _, p in pairs])
    ref_labels = label_reports([r for r, _ in pairs])
    header = ["id"] + (["prediction", "reference"] if texts_in_per_sample else []) + ["empty_prediction", "bleu_1",
              "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "ce_tp", "ce_fp", "ce_fn", "ce_example_f1"]
    if labels:
        header += [f"pred_{o}" for o in OBSERVATIONS] + [f"ref_{o}" for o in OBSERVATIONS]
    with open(root / "per_sample.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for i, (item_id, (reference, prediction)) in enumerate(zip(ids, pairs, strict=True)):
            row: list[Any] = [item_id] + ([prediction, reference] if texts_in_per_sample else [])
            row += [0, 0.5 - i * 0.05, 0.4 - i * 0.05, 0.3 - i * 0.04, 0.2 - i * 0.03, 0.25, 0.4 - i * 0.02,
                    1.2 - i * 0.2, 1, 0, i % 2, round(1 - i / 10, 3)]
            if labels:
                row += [_label_cell(pred_labels[i].get(o)) for o in OBSERVATIONS]
                row += [_label_cell(ref_labels[i].get(o)) for o in OBSERVATIONS]
            writer.writerow(row)
    (root / "metrics.md").write_text("# metrics\n", encoding="utf-8")
    return root


def loss_at(step: int) -> float:
    return 3.0 * math.exp(-step / 15) + 0.5


def make_run(root: Path, dataset: Path | None, pairs: list[tuple[str, str]] = PAIRS, *, symlinks: bool = True) -> Path:
    """A ``mrg train`` folder: config.yaml, metrics.csv, val_metrics.jsonl, val predictions, checkpoints, pointers."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(
        f"data:\n  root: {dataset or 'data/missing'}\n  normalize: auto\nmodel:\n  encoder:\n    name_or_path: random:vit\n"
        "  promptbook:\n    mode: promptbook-wise\n  llm:\n    name_or_path: random:llama\n"
        "train:\n  lr: 0.001\n  micro_batch_size: 8\n  grad_accum_steps: 1\n  precision: fp32\n  seed: 42\n"
        "  select:\n    bleu_4: 0.5\n    cider: 0.5\n",
        encoding="utf-8",
    )
    with open(root / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "name", "value", "time"])
        for step in range(1, TRAIN_STEPS + 1):
            lr = 1e-3 * min(1.0, step / 5) * (0.5 * (1 + math.cos(math.pi * step / TRAIN_STEPS)))
            for name, value in (("train/loss", loss_at(step)), ("train/lr", lr), ("train/grad_norm", 1.0 / step),
                                ("train/epoch", step // 20), ("train/samples_per_s", 40.0 + step % 3),
                                ("train/tokens_per_s", 900.0)):
                writer.writerow([step, name, repr(float(value)), f"{1.7e9 + step:.3f}"])
            if step in VAL_STEPS:
                writer.writerow([step, "val/bleu_4", 0.05 + step / 400, f"{1.7e9 + step:.3f}"])
    os.makedirs(root / "val", exist_ok=True)
    with open(root / "val_metrics.jsonl", "w", encoding="utf-8") as handle:
        for step in VAL_STEPS:
            bleu_4 = 0.05 + step / 400 - (0.05 if step == 40 else 0)
            cider = 0.1 + step / 100 - (0.2 if step == 40 else 0)
            record = {"step": step, "epoch": step // 20, "metrics": {"bleu_4": bleu_4, "cider": cider, "rouge_l": 0.2 + step / 500},
                      "score": 0.5 * bleu_4 + 0.5 * cider, "num_studies": len(pairs),
                      "predictions": f"val/step-{step:06d}.jsonl", "time": "2025-01-01T00:00:00Z"}
            handle.write(json.dumps(record) + "\n")
            with open(root / record["predictions"], "w", encoding="utf-8") as preds:
                for i, (reference, prediction) in enumerate(pairs):
                    preds.write(json.dumps({"id": f"CXR{i + 1:04d}", "prediction": prediction, "reference": reference}) + "\n")
    for step in (30, 40):
        step_dir = root / f"step-{step:06d}"
        step_dir.mkdir()
        meta = {"step": step, "epoch": step // 20, "total_steps": TRAIN_STEPS, "num_processes": 1,
                "best": {"step": BEST_STEP, "score": 0.5, "dir": f"step-{BEST_STEP:06d}"}}
        (step_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for name, step in (("best", BEST_STEP), ("last", 40)):
        if symlinks:
            os.symlink(f"step-{step:06d}", root / name, target_is_directory=True)
        else:
            (root / name).write_text(f"step-{step:06d}\n", encoding="utf-8")
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def eval_dir(tmp_path: Path, dataset_dir: Path) -> Path:
    return make_eval(tmp_path / "eval", dataset_dir)


@pytest.fixture
def run_dir(tmp_path: Path, dataset_dir: Path) -> Path:
    return make_run(tmp_path / "run", dataset_dir)


# ------------------------------------------------------------------------------------------ parsing

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    """An element of the parsed page."""

    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = None

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Any:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n for n in self.iter()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}> in the page"
        return found[0]


class TreeBuilder(HTMLParser):
    """A tolerant tree builder on ``html.parser`` (the standard library); records unbalanced end tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.unbalanced: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), parent=self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), parent=self.stack[-1])
        self.stack[-1].children.append(node)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self.stack[-1].tag != tag:
            self.unbalanced.append(tag)
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(path: Path) -> tuple[Node, TreeBuilder]:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    return builder.root, builder
