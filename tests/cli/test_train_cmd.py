"""``mrg train``: the command end to end on the tiny preset, resume, bad input, and a 2-process run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import training_fixtures
from tests.training_fixtures import tiny_overrides, trainable_weights

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_train_prints_the_summary_and_resumes(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    run = tmp_path / "run"
    result = run_cli("train", "--config", "tiny", "--out", run, *tiny_overrides(synthetic_data, "train.max_steps=2"))
    assert result.exit_code == 0, result.output
    for expected in ("parameters", "trainable 64.8K", "frozen", "optimizer state", "MiB",
                     "effective batch  4 micro x 1 accumulation x 1 processes = 4", "train 16 studies",
                     "step 1/2", "samples/s", "tokens/s"):
        assert expected in result.stdout, expected
    assert f"last{run / 'step-000002'}" in "".join(result.stdout.split())  # the table may wrap the path
    assert (run / "step-000002" / "trainable.safetensors").is_file() and (run / "last").exists()

    result = run_cli("train", "--config", "tiny", "--out", run, "--resume", "auto",
                     *tiny_overrides(synthetic_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stdout and "(step 2)" in result.stdout
    assert "step 3/3" in result.stdout and "step 1/3" not in result.stdout
    assert "train.max_steps differs from the checkpoint: 2 there, 3 now" in result.stderr


def test_bad_input_is_one_line(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    line = _one_error_line(run_cli("train", "--config", "tinny", "--out", tmp_path / "r"))
    assert line.startswith("error: --config tinny: unknown preset. Did you mean 'tiny'?")
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "r", "train.lrr=1"))
    assert "unknown config key 'train.lrr'" in line and "Did you mean 'lr'" in line
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "r", "--resume", tmp_path / "nothing",
                                   *tiny_overrides(synthetic_data)))
    assert "checkpoint not found" in line and not (tmp_path / "r").exists()

    run = tmp_path / "run"
    assert run_cli("train", "--config", "tiny", "--out", run, *tiny_overrides(synthetic_data, "train.max_steps=1")).exit_code == 0
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", run, *tiny_overrides(synthetic_data, "train.max_steps=1")))
    assert "already holds checkpoints (newest step-000001); pass --resume auto" in line
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", run, "--resume", "auto",
                                   *tiny_overrides(synthetic_data, "train.max_steps=2", "model.promptbook.num_tokens=2")))
    assert "was made with another model configuration (model.promptbook.num_tokens: checkpoint 4, now 2)" in line
    assert [p.name for p in run.glob("step-*")] == ["step-000001"]  # nothing was written by the refused runs

    (run / "step-000001" / "optimizer.pt").write_bytes(b"not a torch file")
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", run, "--resume", "auto",
                                   *tiny_overrides(synthetic_data, "train.max_steps=2")))
    assert "step-000001/optimizer.pt: corrupt or not an mrg state file" in line


def _loss_rows(run: Path) -> list[tuple[int, float]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(handle) if r["name"] == "train/loss"]


@pytest.mark.slow
def test_two_processes_match_one_process_and_write_each_file_once(tmp_path: Path, synthetic_data, model_cache) -> None:
    """2 processes x micro-batch 4 (gloo, CPU) against 1 process x micro-batch 4 x accumulation 2: the same global batches."""
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    overrides = tiny_overrides(synthetic_data, "train.max_steps=4", "train.val_every=2", "train.sanity_val_batches=1")
    env = {**os.environ, "MRG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    driver = str(REPO / "tests" / "training_fixtures.py")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", driver, str(tmp_path / "two"), *overrides],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, driver, str(tmp_path / "one"), *overrides, "train.grad_accum_steps=2"],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]

    assert "2 x cpu (MULTI_CPU)" in two.stdout and two.stdout.count("mrg train ->") == 1  # printed by process 0 only
    losses_two, losses_one = _loss_rows(tmp_path / "two"), _loss_rows(tmp_path / "one")
    assert [s for s, _ in losses_two] == [1, 2, 3, 4]  # one row per step: written once
    assert [v for _, v in losses_two] == pytest.approx([v for _, v in losses_one], rel=1e-4)
    a, b = trainable_weights(tmp_path / "two" / "step-000004"), trainable_weights(tmp_path / "one" / "step-000004")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    with open(tmp_path / "two" / "metrics.csv", newline="") as handle:
        keys = [(r["step"], r["name"]) for r in csv.DictReader(handle)]
    assert len(keys) == len(set(keys))
    assert [json.loads(x)["step"] for x in (tmp_path / "two" / "val_metrics.jsonl").read_text().splitlines()] == [2, 4]
    ids = [json.loads(x)["id"] for x in (tmp_path / "two" / "val" / "step-000004.jsonl").read_text().splitlines()]
    assert ids == [f"val-{i:03d}" for i in range(6)]  # every val study exactly once, in order
    meta = json.loads((tmp_path / "two" / "step-000004" / "meta.json").read_text())
    assert meta["num_processes"] == 2 and len(torch.load(tmp_path / "two" / "step-000004" / "rng.pt")["ranks"]) == 2

    # generation under 2 processes: an uneven split (5 test studies), every study once, as in one process
    gen_env = {**env, "MRG_CACHE_DIR": os.environ["MRG_CACHE_DIR"]}
    two_gen = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "mrg", "generate", "--checkpoint",
                              str(tmp_path / "two"), "--split", "test", "--out", str(tmp_path / "two.jsonl")],
                             capture_output=True, text=True, env=gen_env, timeout=600, check=False)
    assert two_gen.returncode == 0, two_gen.stderr[-3000:]
    one_gen = subprocess.run([sys.executable, "-m", "mrg", "generate", "--checkpoint", str(tmp_path / "two"), "--split",
                              "test", "--out", str(tmp_path / "one.jsonl")],
                             capture_output=True, text=True, env=gen_env, timeout=600, check=False)
    assert one_gen.returncode == 0, one_gen.stderr[-3000:]
    rows_two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    rows_one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows_two] == [f"test-{i:03d}" for i in range(5)]
    assert rows_two == rows_one


def test_two_stage_runs_its_stages_in_sub_folders_and_generate_takes_the_last(run_cli, tmp_path: Path, synthetic_data,
                                                                              model_cache) -> None:
    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data, "train.max_steps=2")
    result = run_cli("train", "--method", "two-stage", "--config", "two-stage-tiny", "--out", run, *overrides)
    assert result.exit_code == 0, result.output
    assert "stage align of two-stage" in result.stdout and "stage finetune of two-stage" in result.stdout
    assert json.loads((run / "run.json").read_text())["stages"] == ["align", "finetune"]
    for stage in ("align", "finetune"):
        meta = json.loads((run / stage / "last" / "meta.json").read_text())
        assert (meta["method"], meta["stage"], meta["finished"]) == ("two-stage", stage, True)
    saved = trainable_weights(run / "finetune" / "step-000002")
    assert any(".lora_" in n for n in saved) and not any(n.startswith("llm.") and ".lora_" not in n for n in saved)

    again = run_cli("train", "--config", "two-stage-tiny", "--out", run, *overrides)  # both finished: nothing to do
    assert again.exit_code == 0 and "stage align: finished before" in again.stdout, again.output
    assert "stage finetune: finished before" in again.stdout and "step 1/2" not in again.stdout
    line = _one_error_line(run_cli("train", "--config", "two-stage-tiny", "--stage", "finetune", "--out", run, *overrides))
    assert "finetune already holds checkpoints" in line and "--resume auto" in line
    line = _one_error_line(run_cli("train", "--config", "two-stage-tiny", "--stage", "fine", "--out", run, *overrides))
    assert "--stage fine: method two-stage has no such stage" in line and "Did you mean 'finetune'" in line
    line = _one_error_line(run_cli("train", "--config", "tiny", "--out", run, *overrides))
    assert "holds a two-stage run; choose another --out for mrg-llm" in line

    out = tmp_path / "test.jsonl"
    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads(out.with_name("test.jsonl.meta.json").read_text())
    assert meta["model"]["stage"] == "finetune" and "finetune" in meta["checkpoint"]


def test_a_stage_can_start_from_another_runs_checkpoint(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    overrides = tiny_overrides(synthetic_data, "train.max_steps=2")
    assert run_cli("train", "--config", "two-stage-tiny", "--stage", "align", "--out", tmp_path / "a", *overrides).exit_code == 0
    result = run_cli("train", "--config", "two-stage-tiny", "--stage", "finetune", "--out", tmp_path / "b", *overrides,
                     f"model.init_from={tmp_path / 'a'}")
    assert result.exit_code == 0, result.output
    align = trainable_weights(tmp_path / "a" / "align" / "step-000002")
    encoder = [n for n in align if n.startswith("encoder.")]
    finetune = trainable_weights(tmp_path / "b" / "finetune" / "step-000002")
    assert all(torch.equal(align[n], finetune[n]) for n in encoder)  # carried over, frozen in finetune
    # a checkpoint of another architecture is refused, naming the fields that differ
    line = _one_error_line(run_cli("train", "--config", "two-stage-tiny", "--stage", "finetune", "--out", tmp_path / "c",
                                   *overrides, f"model.init_from={tmp_path / 'a'}", "model.projector.kind=mlp"))
    assert "cannot initialise this stage" in line and "model.projector.kind: checkpoint 'linear', now 'mlp'" in line
    assert not (tmp_path / "c" / "finetune").exists()
