"""``mrg evaluate --metrics ...``: model-based families through the command (missing weights, local files, determinism)."""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = [
    ("the heart is normal in size . no pleural effusion .", "heart size is normal . no effusion ."),
    ("small left pleural effusion .", "there is a small left effusion ."),
    ("mild cardiomegaly . no pneumothorax .", "the heart is enlarged ."),
]


def _predictions(tmp_path: Path) -> Path:
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "prediction": p, "reference": r}) + "\n"
                            for i, (p, r) in enumerate(PAIRS)))
    return path


def test_missing_weights_is_one_line_naming_where_to_get_them(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("evaluate", "-p", _predictions(tmp_path), "-o", tmp_path / "eval", "--no-meteor",
                     "--metrics", "chexbert,radgraph,bertscore", f"eval.weights.radgraph={tmp_path / 'missing'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "eval.weights.chexbert" in lines[0] and "hub repository" in lines[0]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_unknown_family_suggests(run_cli, tmp_path: Path) -> None:
    result = run_cli("evaluate", "-p", _predictions(tmp_path), "-o", tmp_path / "eval", "--metrics", "chexbret")
    assert result.exit_code == 1 and "--metrics names 'chexbret'" in result.stderr and "'chexbert'" in result.stderr


def test_local_random_weights_run_and_are_deterministic(run_cli, tmp_path: Path, chexbert_dir, radgraph_dir,
                                                         bertscore_dir, cache_dir) -> None:
    args = ["evaluate", "-p", _predictions(tmp_path), "--no-meteor", "--metrics", "chexbert,radgraph,bertscore",
            f"eval.weights.chexbert={chexbert_dir}", f"eval.weights.radgraph={radgraph_dir}",
            f"eval.weights.bertscore={bertscore_dir}", "eval.device=cpu"]
    first = run_cli(*args, "-o", tmp_path / "a")
    assert first.exit_code == 0, first.output
    second = run_cli(*args, "-o", tmp_path / "b", "--bootstrap", "50")
    assert second.exit_code == 0, second.output
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    keys = [k for k in a if k.startswith(("chexbert_", "semb_", "radgraph_", "bertscore"))]
    assert {"semb_score", "bertscore"} <= set(keys) and any(k.startswith("radgraph_f1") for k in keys)
    assert all(a[k] == b[k] for k in keys)
    assert set(a["protocol"]["model_based"]) == {"chexbert", "radgraph", "bertscore"}
    assert "bertscore" in b["bootstrap"]["intervals"]  # per-item values give intervals
    assert "semb_score" in first.stdout and "bertscore" in first.stdout


def test_ratescore_and_green_through_the_command(run_cli, tmp_path: Path, rate_ner_dir, rate_embed_dir, llama_dir,
                                                 monkeypatch) -> None:
    from mrg.metrics.model_based import green

    monkeypatch.setattr(green, "MAX_LENGTH", 700)  # the tiny judge's junk needs no 2048 tokens
    args = ["evaluate", "-p", _predictions(tmp_path), "--no-meteor", "--metrics", "ratescore,green",
            f"eval.weights.ratescore_ner={rate_ner_dir}", f"eval.weights.ratescore_embed={rate_embed_dir}",
            f"eval.weights.green={llama_dir}", "eval.device=cpu"]
    first = run_cli(*args, "-o", tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "LLM judge runs on CPU" in first.stderr  # GREEN is GPU-recommended
    second = run_cli(*args, "-o", tmp_path / "b")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second.exit_code == 0 and a["ratescore"] == b["ratescore"] and a["green"] == b["green"] == 0.0
    assert 0.0 < a["ratescore"] <= 1.0
    assert a["protocol"]["model_based"]["ratescore"]["weights"] == {"ner": str(rate_ner_dir), "embed": str(rate_embed_dir)}


def test_a_misspelt_ratescore_weight_key_is_named(run_cli, tmp_path: Path) -> None:
    result = run_cli("evaluate", "-p", _predictions(tmp_path), "-o", tmp_path / "eval", "--metrics", "ratescore",
                     "eval.weights.ratescore_nerr=/x")
    assert result.exit_code == 1 and "'eval.weights.ratescore_nerr'" in result.stderr
    assert "'ratescore_ner'" in result.stderr
