"""``mrg.checkpoint``: layout, pointers, resolution, pruning, compatibility checks and RNG states."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mrg.checkpoint import (
    capture_rng_state,
    check_config_compatible,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_config,
    load_torch_state,
    load_trainable_weights,
    parse_step,
    prune_checkpoints,
    read_pointer,
    remove_staging_dirs,
    resolve_checkpoint,
    restore_rng_state,
    staging_dir,
    step_dir_name,
    write_checkpoint_files,
    write_pointer,
)
from mrg.config import load_config
from mrg.errors import CheckpointError

ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "mrg" / "configs" / "accelerate"


def _save(run_dir: Path, step: int, **meta) -> Path:
    stage = staging_dir(run_dir, step)
    write_checkpoint_files(stage, weights={"w": torch.full((2, 3), float(step))}, training_state={"optimizer": {}},
                           rng_states=[capture_rng_state()], cfg=load_config(None))
    return commit_checkpoint(stage, run_dir, step, {"step": step, **meta})


def test_step_names_sort_and_parse() -> None:
    assert step_dir_name(400) == "step-000400" and parse_step("step-000400") == 400
    assert parse_step("step-1234567") == 1234567 and parse_step("best") is None and parse_step(".tmp-step-000001") is None


def test_saved_checkpoint_round_trips_with_weights_only_loading(tmp_path: Path) -> None:
    step_dir = _save(tmp_path, 3)
    assert sorted(p.name for p in step_dir.iterdir()) == ["config.yaml", "meta.json", "optimizer.pt", "rng.pt", "trainable.safetensors"]
    assert torch.equal(load_trainable_weights(step_dir)["w"], torch.full((2, 3), 3.0))
    assert load_torch_state(step_dir / "rng.pt")["ranks"][0]["torch"].dtype == torch.uint8
    assert load_checkpoint_config(step_dir) == load_config(None)
    assert not list(tmp_path.glob(".tmp-*"))


def test_only_complete_step_folders_count(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    _save(tmp_path, 10)
    (tmp_path / "step-000012").mkdir()  # no meta.json: an interrupted copy
    staging_dir(tmp_path, 14)  # an interrupted save
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000010"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000010"
    assert remove_staging_dirs(tmp_path) == [tmp_path / ".tmp-step-000014"]
    with pytest.raises(CheckpointError, match="incomplete checkpoint \\(no meta.json"):
        resolve_checkpoint(tmp_path / "step-000012")


def test_commit_replaces_a_step_folder_of_an_abandoned_branch(tmp_path: Path) -> None:
    _save(tmp_path, 4)
    _save(tmp_path, 4, note="second")
    assert json.loads((tmp_path / "step-000004" / "meta.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004"]


@pytest.mark.parametrize("symlinks", [True, False], ids=["symlink", "pointer-file"])
def test_pointers_and_resolution(tmp_path: Path, monkeypatch, symlinks) -> None:
    if not symlinks:
        def no_symlink(*args, **kwargs):
            raise OSError("symlinks not supported here")

        monkeypatch.setattr(os, "symlink", no_symlink)
    for step in (2, 4, 6):
        _save(tmp_path, step)
    (tmp_path / "config.yaml").write_text("{}")
    write_pointer(tmp_path, "last", tmp_path / "step-000006")
    assert resolve_checkpoint(tmp_path) == tmp_path / "step-000006"  # no best yet: last
    write_pointer(tmp_path, "best", tmp_path / "step-000002")
    write_pointer(tmp_path, "best", tmp_path / "step-000004")  # replaced atomically
    assert (tmp_path / "best").is_symlink() == symlinks
    assert read_pointer(tmp_path, "best") == tmp_path / "step-000004"
    assert resolve_checkpoint(tmp_path) == tmp_path / "step-000004"  # a run folder means its best
    assert resolve_checkpoint(tmp_path, prefer="last") == tmp_path / "step-000006"
    assert resolve_checkpoint(tmp_path / "best") == tmp_path / "step-000004"
    assert resolve_checkpoint(tmp_path / "last") == tmp_path / "step-000006"
    assert resolve_checkpoint(tmp_path / "step-000002") == tmp_path / "step-000002"


def test_resolution_errors_say_what_to_pass(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    with pytest.raises(CheckpointError, match=r"no 'best' checkpoint in this run \(no validation has run yet\); complete checkpoints: step-000002"):
        resolve_checkpoint(tmp_path / "best")
    with pytest.raises(CheckpointError, match="checkpoint not found; pass RUN_DIR, RUN_DIR/best"):
        resolve_checkpoint(tmp_path / "elsewhere" / "step-000001")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint or run folder"):
        resolve_checkpoint(tmp_path / "empty")
    write_pointer(tmp_path, "last", tmp_path / "step-000002")
    import shutil

    shutil.rmtree(tmp_path / "step-000002")
    with pytest.raises(CheckpointError, match="which does not exist"):
        resolve_checkpoint(tmp_path / "last")


def test_prune_keeps_the_newest_and_the_pointed_at(tmp_path: Path) -> None:
    for step in range(1, 7):
        _save(tmp_path, step)
    write_pointer(tmp_path, "best", tmp_path / "step-000002")
    write_pointer(tmp_path, "last", tmp_path / "step-000006")
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step-000001", "step-000003", "step-000004"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000005", "step-000006"]
    assert prune_checkpoints(tmp_path, keep_last=0) == []


def test_rng_state_round_trip_restores_every_generator() -> None:
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random(), np.random.rand(), torch.rand(())  # move on
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pt"
    torch.save({"state": Path("/etc/passwd")}, path)  # an arbitrary class: weights_only loading must not import it
    with pytest.raises(CheckpointError, match="optimizer.pt: corrupt or not an mrg state file"):
        load_torch_state(path)
    with pytest.raises(CheckpointError, match="missing; copy the whole step folder"):
        load_torch_state(tmp_path / "rng.pt")


def test_corrupt_weights_and_config_name_the_file(tmp_path: Path) -> None:
    step_dir = _save(tmp_path, 2)
    (step_dir / "trainable.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="trainable.safetensors: corrupt or truncated"):
        load_trainable_weights(step_dir)
    (step_dir / "config.yaml").write_text("model: {promptbook: {num_tokkens: 3}}")
    with pytest.raises(CheckpointError, match="config.yaml: does not match this version of mrg"):
        load_checkpoint_config(step_dir)


def test_architecture_differences_are_errors_others_warnings(tmp_path: Path) -> None:
    saved = load_config("tiny")
    with pytest.raises(CheckpointError) as err:
        check_config_compatible(saved, load_config("tiny", ["model.promptbook.book_size=6", "model.encoder.trainable=lora"]), tmp_path)
    assert "model.encoder.trainable: checkpoint 'full', now 'lora'" in str(err.value)
    assert "model.promptbook.book_size: checkpoint 4, now 6" in str(err.value)
    warnings = check_config_compatible(saved, load_config("tiny", ["train.lr=0.01", "model.llm.gradient_checkpointing=true"]), tmp_path)
    assert any("train.lr differs" in w and "will not reproduce" in w for w in warnings)
    assert any(w.startswith("model.llm.gradient_checkpointing differs") for w in warnings)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2"])
def test_accelerate_configs_pass_accelerates_own_launch_validation(name) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#") and "accelerate launch --config_file mrg/configs/accelerate/" in text  # launch line
    assert yaml.safe_load(text)["num_processes"] >= 2
    load_config_from_file(str(path))  # unknown top-level keys raise here
    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "-m", "mrg", "train"]))
    if name == "ddp":
        assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    elif name == "fsdp":
        fsdp = yaml.safe_load(text)["fsdp_config"]
        assert args.use_fsdp and str(args.fsdp_version) == "2" and set(fsdp) <= known
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    else:
        deepspeed = yaml.safe_load(text)["deepspeed_config"]
        assert args.use_deepspeed and int(args.zero_stage) == 2 and set(deepspeed) <= known
        assert deepspeed["gradient_accumulation_steps"] == 1  # = train.grad_accum_steps of the presets


@pytest.mark.parametrize(("stage", "method"), [(1, "mrg-llm"), (2, "two-stage")])
def test_a_0_1_checkpoint_config_loads_as_a_method(tmp_path: Path, stage: int, method: str) -> None:
    """mrg 0.1.0 wrote model.stage; it became the two-stage method (a stage-2 run trained every part)."""
    import yaml

    from mrg.checkpoint import checkpoint_stage, load_checkpoint_config
    from mrg.config import config_to_dict, load_config

    data = config_to_dict(load_config("tiny"))
    del data["model"]["method"], data["method"], data["stages"]
    data["model"]["stage"] = stage
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    cfg = load_checkpoint_config(tmp_path)
    assert cfg.model.method == method
    if stage == 2:
        assert cfg.method.finetune_also == ["encoder", "projector", "promptbook"]
        assert checkpoint_stage({}, cfg) == "finetune"
