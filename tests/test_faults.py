"""Runs, configs and training under faults: one-line errors for bad input, nothing half-written, and a run killed
with SIGKILL that resumes to the uninterrupted run's weights, bit for bit. (docs/reliability.md lists every case.)"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests import training_fixtures
from tests.training_fixtures import tiny_overrides, trainable_weights

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache
REPO = Path(__file__).resolve().parents[1]


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------------------------------ config


def test_yaml_syntax_error_names_line_and_column(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-4\n  epochs: [1, 2\n")
    line = _one_line(run_cli("train", "--config", bad, "--out", tmp_path / "run"))
    assert f"{bad}: invalid YAML at line 4, column 1" in line and not (tmp_path / "run").exists()


def test_config_problems_come_in_one_message(run_cli, tmp_path: Path) -> None:
    line = _one_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "run", "train.lrr=1", "train.epochs=many",
                             "model.promptbook.num_tokens=0"))
    assert "unknown config key 'train.lrr'" in line and "Did you mean 'lr'" in line
    assert "'train.epochs' must be int, got 'many'" in line and "'model.promptbook.num_tokens' must be at least 1" in line
    line = _one_line(run_cli("train", "--config", tmp_path / "missing.yaml", "--out", tmp_path / "run"))
    assert "missing.yaml: file not found" in line


# -------------------------------------------------------------------------------------------- runs


def test_out_that_is_a_file_or_not_creatable_is_refused(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    (tmp_path / "file").write_text("x")
    line = _one_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "file", *tiny_overrides(synthetic_data)))
    assert "--out" in line and "exists and is not a folder" in line
    line = _one_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "file" / "run", *tiny_overrides(synthetic_data)))
    assert "is not a folder" in line
    line = _one_line(run_cli("train", "--config", "tiny", "--out", "/proc/mrg-run", *tiny_overrides(synthetic_data)))
    assert "--out /proc/mrg-run: cannot create folders under /proc" in line


def test_data_folder_without_its_completion_stamp(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "prepare.json").unlink()
    line = _one_line(run_cli("train", "--config", "tiny", "--out", tmp_path / "run", *tiny_overrides(data)))
    assert f"{data}: no prepare.json" in line and not (tmp_path / "run").exists()


class _Boom:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("target", ["optimizer.pt", "rng.pt", "trainable.safetensors"])
def test_a_pickle_disguised_as_a_checkpoint_never_executes(run_cli, tmp_path: Path, synthetic_data, model_cache,
                                                           target: str) -> None:
    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data, "train.max_steps=1")
    assert run_cli("train", "--config", "tiny", "--out", run, *overrides).exit_code == 0
    marker = tmp_path / "pwned"
    (run / "step-000001" / target).write_bytes(pickle.dumps(_Boom(marker)))
    line = _one_line(run_cli("train", "--config", "tiny", "--out", run, "--resume", "auto",
                             *tiny_overrides(synthetic_data, "train.max_steps=2")))
    assert target in line and "step-000001" in line
    assert not marker.exists()  # the payload never ran


def test_a_checkpoint_of_another_shape_names_the_tensor(run_cli, tmp_path: Path, synthetic_data, model_cache) -> None:
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    assert run_cli("train", "--config", "tiny", "--out", run, *tiny_overrides(synthetic_data, "train.max_steps=1")).exit_code == 0
    path = run / "step-000001" / "trainable.safetensors"
    state = load_file(str(path))
    state["projector.proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(path))
    line = _one_line(run_cli("train", "--config", "tiny", "--out", run, "--resume", "auto",
                             *tiny_overrides(synthetic_data, "train.max_steps=2")))
    assert "projector.proj.weight has shape (3, 3)" in line


# ------------------------------------------------------------------------------------------ kill -9


@pytest.mark.slow
def test_sigkill_during_training_then_resume_auto_equals_the_uninterrupted_run(tmp_path: Path, synthetic_data,
                                                                                model_cache) -> None:
    env = {**os.environ, "MRG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    overrides = tiny_overrides(synthetic_data, "train.max_steps=8", "train.save_every=1", "train.keep_last=0",
                               "train.epochs=3")

    def train(run: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "mrg", "train", "--config", "tiny", "--out", str(run), *overrides,
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = train(tmp_path / "a")
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-2000:]

    victim = train(tmp_path / "b")
    deadline = time.monotonic() + 600
    while not (tmp_path / "b" / "step-000003" / "meta.json").is_file():  # killed mid-run, after a few checkpoints
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert not (tmp_path / "b" / "step-000008").exists()

    resumed = train(tmp_path / "b", "--resume", "auto")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    a, b = trainable_weights(tmp_path / "a" / "step-000008"), trainable_weights(tmp_path / "b" / "step-000008")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit on the CPU
    assert not list((tmp_path / "b").glob(".tmp-step-*"))  # an interrupted save is cleaned up
