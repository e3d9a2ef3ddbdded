"""``accelerate launch`` with the shipped configs on CPU: DDP over gloo matches one process; FSDP is refused clearly.

accelerate sets up FSDP (and DeepSpeed) only on GPUs: on CPU processes it would train plain data parallel under the
FSDP config's name, so mrg refuses the config there with one line naming the config that works.
"""

from __future__ import annotations

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
ACCELERATE_CONFIGS = REPO / "mrg" / "configs" / "accelerate"


def _accelerate() -> str:
    found = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(found).exists():
        pytest.skip("accelerate's launcher is not installed")
    return found


def _launch(config: str, run: Path, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MRG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([_accelerate(), "launch", "--config_file", str(ACCELERATE_CONFIGS / config), "--num_processes",
                           "2", "-m", "mrg", "train", "--config", "tiny", "--out", str(run), *overrides],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_ddp_config_on_two_cpu_processes_matches_one_process(tmp_path: Path, synthetic_data, model_cache) -> None:
    overrides = tiny_overrides(synthetic_data, "train.max_steps=2", "train.precision=fp32")
    two = _launch("ddp.yaml", tmp_path / "two", overrides)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    assert "2 x cpu (MULTI_CPU)" in two.stdout
    one = subprocess.run([sys.executable, "-m", "mrg", "train", "--config", "tiny", "--out", str(tmp_path / "one"),
                          *overrides, "train.grad_accum_steps=2"],
                         capture_output=True, text=True, env={**os.environ, "MRG_NO_PROGRESS": "1"}, timeout=600, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = trainable_weights(tmp_path / "two" / "step-000002"), trainable_weights(tmp_path / "one" / "step-000002")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the FSDP config runs FSDP")
def test_fsdp_config_on_cpu_is_accepted_by_accelerate_and_refused_by_mrg(tmp_path: Path, synthetic_data,
                                                                       model_cache) -> None:
    result = _launch("fsdp.yaml", tmp_path / "run", tiny_overrides(synthetic_data, "train.max_steps=2"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("asks for FSDP, which accelerate runs on GPUs only" in e for e in errors), result.stderr[-2000:]
    assert "mrg/configs/accelerate/ddp.yaml" in errors[0] and "Traceback (most recent call last)" not in result.stdout
    assert not (tmp_path / "run").exists()  # refused before anything was written
