"""The ``trrg`` method end to end through the CLI on tiny random models: both stages, validation, generate, init checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import training_fixtures
from tests.training_fixtures import tiny_overrides, trainable_weights

model_cache = training_fixtures.model_cache

# reports with positive and negative CheXpert findings, so zero-shot AUROC is defined; the image tells the kind
FINDING_REPORTS = [
    "The heart is enlarged, consistent with cardiomegaly. No pleural effusion.",
    "There is a large right pleural effusion. The heart size is normal.",
    "The lungs are clear. No pneumothorax. No pleural effusion.",
    "There is a right pneumothorax. The heart is enlarged.",
]


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train, 8 val and 5 test studies of two 64 px views; a bright band's position tells the report."""
    import numpy as np
    from PIL import Image

    from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset

    root = tmp_path_factory.mktemp("trrg") / "data"
    source = {"kind": "test-fixture"}
    prepare_output_dir(root, source, force=True)
    studies = []
    for split, count in {"train": 16, "val": 8, "test": 5}.items():
        for number in range(count):
            sid, kind = f"{split}-{number:03d}", number % len(FINDING_REPORTS)
            rng = np.random.default_rng(number + 100 * len(split))
            paths = []
            for view in range(2):
                pixels = rng.integers(0, 60, size=(64, 64), dtype=np.uint8)
                pixels[:, kind * 16 : (kind + 1) * 16] += 150
                rel = f"images/{sid}/{view}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode="L").save(root / rel)
                paths.append(rel)
            studies.append(Study(id=sid, split=split, report=FINDING_REPORTS[kind], image_paths=paths))
    write_prepared_dataset(root, studies, source=source, protocol={"name": "fixture"}, normalize="r2gen-iu")
    return root


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_trrg_trains_both_stages_validates_pretrain_by_retrieval_and_generates(run_cli, tmp_path: Path, synthetic_data,
                                                                               model_cache) -> None:
    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data, "train.max_steps=2", "stages.pretrain.train.val_every=0")
    result = run_cli("train", "--method", "trrg", "--config", "trrg-tiny", "--out", run, *overrides)
    assert result.exit_code == 0, result.output
    assert "stage pretrain of trrg" in result.stdout and "stage finetune of trrg" in result.stdout
    records = [json.loads(line) for line in (run / "pretrain" / "val_metrics.jsonl").read_text().splitlines()]
    metrics = records[-1]["metrics"]
    for name in ("recall_at_1", "recall_at_5", "recall_at_10", "zero_shot_auroc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert records[-1]["score"] == metrics["zero_shot_auroc"]  # the method's default selection in pretrain
    pretrain = trainable_weights(run / "pretrain" / "step-000002")
    assert {n.split(".")[0] for n in pretrain} == {"encoder", "text_encoder", "head"}
    finetune = trainable_weights(run / "finetune" / "step-000002")
    # the pretrain weights are part of finetune's state; the frozen text encoder and head keep their values
    assert all(torch.equal(pretrain[n], finetune[n]) for n in pretrain if not n.startswith("encoder."))
    assert {"clues", "clue_projector", "interaction", "projector", "promptbook"} <= {n.split(".")[0] for n in finetune}
    assert not any(n.startswith("llm.") for n in finetune)

    out = tmp_path / "test.jsonl"
    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i:03d}" for i in range(5)]
    meta = json.loads(out.with_name("test.jsonl.meta.json").read_text())
    assert meta["model"]["stage"] == "finetune"


def test_a_mismatched_pretrain_checkpoint_is_refused_naming_the_fields(run_cli, tmp_path: Path, synthetic_data,
                                                                       model_cache) -> None:
    overrides = tiny_overrides(synthetic_data, "train.max_steps=1")
    assert run_cli("train", "--config", "trrg-tiny", "--stage", "pretrain", "--out", tmp_path / "a",
                   *overrides).exit_code == 0
    ok = run_cli("train", "--config", "trrg-tiny", "--stage", "finetune", "--out", tmp_path / "b", *overrides,
                 f"model.init_from={tmp_path / 'a'}")
    assert ok.exit_code == 0, ok.output
    line = _one_error_line(run_cli("train", "--config", "trrg-tiny", "--stage", "finetune", "--out", tmp_path / "c",
                                   *overrides, f"model.init_from={tmp_path / 'a'}", "method.contrastive_dim=16"))
    assert "cannot initialise this stage" in line and "contrastive_dim" in line


def test_perceive_writes_the_chexpert_layout_and_scores_a_split(run_cli, tmp_path: Path, synthetic_data,
                                                                model_cache) -> None:
    import csv

    from mrg.data.chexpert import OBSERVATIONS
    from mrg.perceive import read_perception_csv

    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data, "train.max_steps=1", "method.classes=[Cardiomegaly,Pneumothorax,Pleural Effusion]")
    assert run_cli("train", "--config", "trrg-tiny", "--out", run, *overrides).exit_code == 0
    out = tmp_path / "p.csv"
    result = run_cli("perceive", "--checkpoint", run, "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["id", *OBSERVATIONS]
    rows = read_perception_csv(out)
    assert [r["id"] for r in rows] == [f"test-{i:03d}" for i in range(5)]
    assert all(set(r["probabilities"]) == {"Cardiomegaly", "Pneumothorax", "Pleural Effusion"} for r in rows)
    assert all(0.0 < p < 1.0 for r in rows for p in r["probabilities"].values())
    record = json.loads(out.with_name("p.csv.meta.json").read_text())
    assert record["stage"] == "finetune" and 0.0 <= record["auroc"]["zero_shot_auroc"] <= 1.0
    # mrg evaluate reads the CSV: its AUROC is the sidecar's (up to the CSV's six decimals)
    scored = run_cli("evaluate", "-p", out, "--data", synthetic_data, "--split", "test", "-o", tmp_path / "ev")
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["auroc"] == pytest.approx(record["auroc"]["zero_shot_auroc"], abs=1e-4)
    assert 0.0 <= metrics["ce_f1"] <= 1.0 and metrics["threshold"] == 0.5
    # the pretrain stage perceives the same way; image files work too
    pre = run_cli("perceive", "--checkpoint", run / "pretrain", "--images", *sorted(
        str(p) for p in (synthetic_data / "images" / "test-000").glob("*.png")), "--out", tmp_path / "i.csv")
    assert pre.exit_code == 0, pre.output
    assert len(read_perception_csv(tmp_path / "i.csv")) == 2
    line = _one_error_line(run_cli("perceive", "--checkpoint", run, "--out", tmp_path / "x.csv"))
    assert "give either --split" in line

    # what mrg demo --method trrg adds: the perceived classes per test study
    from mrg.config import load_config
    from mrg.methods import get_method

    cfg = load_config("trrg-tiny", [*overrides, "method.perceive_threshold=0.0"])
    extras = get_method("trrg").demo_extras(cfg, run, synthetic_data, tmp_path / "demo")
    assert sorted(extras["perceived"]) == [f"test-{i:03d}" for i in range(5)]
    assert all(len(v) == 3 for v in extras["perceived"].values())  # threshold 0: every perceived class
    assert extras["test_zero_shot_auroc"] == record["auroc"]["zero_shot_auroc"]
    assert extras["pretrain_val"] is None  # this run never validated its pretrain stage


def test_the_ablation_benchmark_preset_loads_and_each_system_config_is_valid() -> None:
    from mrg.config import load_config
    from mrg.recipes.benchmark import load_bench

    bench = load_bench("trrg-ablations")
    assert [s.name for s in bench.systems][-1] == bench.config.reference == "MRG-LLM promptbook-wise"
    configs = {s.name: load_config(s.config, list(s.overrides)) for s in bench.systems}
    assert configs["TRRG without clue injection"].method.clue_select == "none"
    assert configs["TRRG without clue interaction"].method.interaction == "none"
    assert configs["TRRG"].model.method == "trrg" and configs["MRG-LLM promptbook-wise"].model.method == "mrg-llm"


def test_mrg_methods_lists_trrg_with_its_stages(run_cli) -> None:
    data = json.loads(run_cli("methods", "--json").stdout)
    trrg = next(m for m in data if m["name"] == "trrg")
    assert [s["name"] for s in trrg["stages"]] == ["pretrain", "finetune"]
    assert trrg["stages"][0]["task"] == "retrieval" and trrg["stages"][1]["starts_from"] == "pretrain"
    assert {"trrg-tiny", "trrg-demo", "trrg-iu-xray", "trrg-mimic-cxr"} <= set(trrg["presets"])
    assert "clue_select" in trrg["options"] and "negated_sentences" in trrg["options"]


def test_a_finetune_stage_config_with_report_selection_reloads(tmp_path: Path) -> None:
    """The stage folder's config.yaml holds finetune's train.select (report metrics), which pretrain's retrieval
    validation cannot produce; reloading it (mrg generate) must not re-check the other stage against it."""
    from mrg.checkpoint import load_checkpoint_config
    from mrg.config import load_config, save_config, stage_config

    cfg = load_config("trrg-tiny", ["train.val_every=0"])
    assert stage_config(cfg, "pretrain").train.select == {"zero_shot_auroc": 1.0}
    finetune = stage_config(cfg, "finetune")
    assert "zero_shot_auroc" not in finetune.train.select
    save_config(finetune, tmp_path / "config.yaml")
    assert load_checkpoint_config(tmp_path) == finetune
    from mrg.generate import generation_config

    assert generation_config(finetune, ["generate.num_beams=1"]).generate.num_beams == 1


def _pairwise_auroc(scores: list[float], positive: list[bool]) -> float:
    """AUROC by counting (positive, negative) pairs: 1 where the positive scores higher, 1/2 for a tie."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def test_mrg_evaluate_scores_a_label_probability_csv_against_the_split(run_cli, tmp_path: Path, synthetic_data) -> None:
    """A hand-written perception CSV: per-class AUROC and thresholded CE against the split's labelled reports."""
    from mrg.data.chexpert import OBSERVATIONS
    from mrg.data.prepared import load_prepared_dataset
    from mrg.metrics.labeler import label_reports
    from mrg.perceive import write_perception_csv

    studies = load_prepared_dataset(synthetic_data).split("test")
    refs = label_reports([s.report for s in studies])
    probs = {"Cardiomegaly": [0.9, 0.2, 0.1, 0.6, 0.4], "Pleural Effusion": [0.3, 0.8, 0.3, 0.1, 0.7],
             "Pneumothorax": [0.5, 0.5, 0.2, 0.5, 0.1]}
    rows = [{"id": s.id, "probabilities": {c: v[i] for c, v in probs.items()}} for i, s in enumerate(studies)]
    write_perception_csv(tmp_path / "p.csv", rows)
    result = run_cli("evaluate", "-p", tmp_path / "p.csv", "--data", synthetic_data, "--split", "test",
                     "--threshold", "0.35", "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert "label probabilities" in result.stdout
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["threshold"] == 0.35 and record["protocol"]["name"] == "label-probabilities"
    expected = {}
    for name, scores in probs.items():
        positive = [r.get(name) == 1.0 for r in refs]
        if 0 < sum(positive) < len(positive):
            expected[name] = _pairwise_auroc(scores, positive)
    assert len(expected) >= 2, "the fixture's test reports must give some classes both outcomes"
    assert {k for k in record if k.startswith("auroc/")} == {f"auroc/{n}" for n in expected}
    for name, value in expected.items():
        assert record[f"auroc/{name}"] == pytest.approx(value)
    assert record["auroc"] == pytest.approx(sum(expected.values()) / len(expected))
    # micro CE over the 14 classes: only the three predicted classes can be positive on the prediction side
    tp = sum(1 for c, v in probs.items() for i, r in enumerate(refs) if v[i] >= 0.35 and r.get(c) == 1.0)
    fp = sum(1 for c, v in probs.items() for i, r in enumerate(refs) if v[i] >= 0.35 and r.get(c) != 1.0)
    fn = sum(1 for c in OBSERVATIONS for i, r in enumerate(refs)
             if r.get(c) == 1.0 and not (c in probs and probs[c][i] >= 0.35))
    assert record["ce_precision"] == pytest.approx(tp / (tp + fp))
    assert record["ce_recall"] == pytest.approx(tp / (tp + fn))
    assert (tmp_path / "ev" / "per_sample.csv").read_text().startswith("id,No Finding p,")
    # the default threshold changes the label metrics, not the AUROC
    again = run_cli("evaluate", "-p", tmp_path / "p.csv", "--data", synthetic_data, "-o", tmp_path / "ev2")
    assert again.exit_code == 0, again.output
    other = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert other["threshold"] == 0.5 and other["auroc"] == record["auroc"]
    assert other["ce_precision"] != record["ce_precision"] or other["ce_recall"] != record["ce_recall"]
    # bad input: no references, an id the split lacks, a cell that is not a probability, a bad threshold
    assert "--data DIR" in _one_error_line(run_cli("evaluate", "-p", tmp_path / "p.csv", "-o", tmp_path / "x"))
    write_perception_csv(tmp_path / "q.csv", [*rows, {"id": "nope", "probabilities": {"Cardiomegaly": 0.5}}])
    line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "q.csv", "--data", synthetic_data, "-o", tmp_path / "x"))
    assert "'nope'" in line and "no reference" in line
    (tmp_path / "r.csv").write_text((tmp_path / "p.csv").read_text().replace("0.900000", "1.7"))
    line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "r.csv", "--data", synthetic_data, "-o", tmp_path / "x"))
    assert "r.csv:2" in line and "'Cardiomegaly'" in line and "not a probability" in line
    line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "p.csv", "--data", synthetic_data, "--threshold", "2",
                                   "-o", tmp_path / "x"))
    assert "--threshold" in line
    for extra in (["--compare", str(tmp_path / "p.csv")], ["--bootstrap", "10"]):
        line = _one_error_line(run_cli("evaluate", "-p", tmp_path / "p.csv", "--data", synthetic_data, *extra,
                                       "-o", tmp_path / "x"))
        assert extra[0] in line and "not available for a label-probability CSV" in line


def test_mrg_analyze_reads_trrg_visual_clue_and_prompt_tokens(run_cli, tmp_path: Path, synthetic_data,
                                                              model_cache) -> None:
    """A finetune run has three soft-token groups (clues labelled apart from the visual tokens); pretrain has none."""
    from mrg.analysis import analyze
    from mrg.analysis.attention import GROUPS
    from mrg.model.report_model import INPUT_GROUPS

    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data, "train.max_steps=1", "generate.max_new_tokens=4",
                               "method.clue_select=top-k", "method.clue_top_k=3")
    assert run_cli("train", "--config", "trrg-tiny", "--out", run, *overrides).exit_code == 0
    out = tmp_path / "analysis"
    analyze("prompts", run, out=out, split="test", limit=3)
    analyze("attention", run, out=out, split="test", limit=3, maps=1)
    record = json.loads((out / "analysis.json").read_text())
    prompts, attention = record["analyses"]["prompts"], record["analyses"]["attention"]
    assert list(prompts["groups"]) == ["visual", "clues", "prompt"]
    assert prompts["groups"]["clues"]["nearest"]["tokens"] == 3 * 3  # 3 studies x top-3 clues
    assert set(attention["by_layer"]) == set(GROUPS) and attention["overall"]["clues"] > 0
    for layer in range(len(attention["by_layer"]["visual"])):
        assert sum(v[layer] for v in attention["by_layer"].values()) == pytest.approx(1.0, abs=1e-5)
    # the input positions: the last K' of the image segment are the clues, the visual tokens keep their count
    from mrg.analysis.inputs import load_inputs

    inputs = load_inputs(run, split="test", limit=2)
    batch = next(inputs.batches())
    with torch.no_grad():
        visual, mask, clues = inputs.model.visual_and_clue_tokens(batch)
        codes = inputs.model.input_groups(*inputs.model.visual_tokens(batch), left_pad=True)
    assert clues.shape[1] == inputs.model.num_clue_tokens == 3
    assert (codes == INPUT_GROUPS.index("clues")).sum(dim=1).tolist() == [3, 3]
    real_visual = visual.shape[1] if mask is None else mask.sum(dim=1).tolist()
    assert (codes == INPUT_GROUPS.index("visual")).sum(dim=1).tolist() == (
        [real_visual] * 2 if isinstance(real_visual, int) else real_visual)
    # the pretrain stage feeds no LLM: one line that names the stage to analyze instead
    line = _one_error_line(run_cli("analyze", "prompts", "--checkpoint", run / "pretrain", "--out", tmp_path / "a"))
    assert "stage pretrain" in line and "has no soft tokens" in line and "stage finetune has some" in line
