"""The training loop and the train recipe: mechanics on the toy method (fast), acceptance runs with the tiny preset."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from mrg.checkpoint import list_checkpoints, read_pointer
from mrg.distributed import shard_range
from mrg.errors import CheckpointError, ConfigError, OutputDirError, TrainingError
from mrg.optim import build_optimizer, lr_factor
from mrg.recipes.train import StageResult, non_finite_error, train
from mrg.trainer import EpochSampler
from tests import training_fixtures
from tests.toy_method import ToyReportModel
from tests.training_fixtures import overlap_scorer, tiny_overrides, toy_config, trainable_weights

# fixtures shared with the checkpoint, generate and CLI tests
toy_training = training_fixtures.toy_training
synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache

# ----------------------------------------------------------------------------------------- pieces


def test_lr_schedule_warms_up_linearly_then_decays_to_min_lr() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.01) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert lr_factor(20, warmup_steps=4, total_steps=20, min_ratio=0.01) == pytest.approx(0.01)
    assert lr_factor(12, warmup_steps=4, total_steps=20, min_ratio=0.0) == pytest.approx(0.5)  # half-way


def test_epoch_sampler_is_a_seeded_permutation_per_epoch() -> None:
    sampler = EpochSampler(10, 8, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 8 and len(set(first)) == 8
    assert list(EpochSampler(10, 8, seed=3)) == first  # no global state involved
    torch.manual_seed(123)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_optimizer_skips_weight_decay_on_biases_norms_and_prompts() -> None:
    model = ToyReportModel()
    model.frozen.requires_grad_(False)
    cfg = toy_config("train.weight_decay=0.1")
    optimizer = build_optimizer(model, cfg.train)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert groups[0.0] == {"encoder.bias", "norm.weight", "norm.bias", "prompt", "head.bias"}
    assert groups[0.1] == {"encoder.weight", "head.weight"}
    assert not any(n.startswith("frozen") for g in groups.values() for n in g)


def test_shard_range_covers_every_item_once() -> None:
    for n in (0, 1, 5, 7, 16):
        for world in (1, 2, 3):
            covered = [i for rank in range(world) for i in shard_range(n, rank, world)]
            assert covered == list(range(n))


# ------------------------------------------------------------------------------------ toy runs


def _toy_fit(run_dir: Path, *overrides: str, resume: str | None = None) -> StageResult:
    return train(toy_config(*overrides), run_dir, resume=resume, scorer=overlap_scorer).last


def test_fit_writes_the_run_layout(tmp_path: Path, toy_training) -> None:
    run = tmp_path / "run"
    result = _toy_fit(run, "train.max_steps=6", "train.val_every=3", "train.keep_last=0", "train.trackers=[csv,tensorboard]")
    assert result.step == 6 and [r["step"] for r in result.validations] == [3, 6]
    assert [p.name for p in list_checkpoints(run)] == ["step-000003", "step-000006"]
    step_dir = run / "step-000006"
    assert sorted(p.name for p in step_dir.iterdir()) == sorted(
        ["trainable.safetensors", "optimizer.pt", "rng.pt", "config.yaml", "meta.json"]
    )
    meta = json.loads((step_dir / "meta.json").read_text())
    assert meta["step"] == 6 and meta["seed"] == 42 and meta["num_processes"] == 1
    assert (meta["epoch"], meta["batch_in_epoch"]) == (0, 6)  # 16 studies / batch 2 = 8 steps per epoch
    assert set(meta["metrics"]) == {"bleu_4", "cider"} and meta["provenance"]["mrg_version"]
    assert read_pointer(run, "last") == step_dir
    assert read_pointer(run, "best") == run / f"step-{result.best_metrics and meta['best']['step']:06d}"
    assert (run / "config.yaml").is_file() and (run / "provenance.json").is_file()
    # validation: metrics lines and predictions for every val study, once each
    lines = [json.loads(x) for x in (run / "val_metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    predictions = [json.loads(x) for x in (run / "val/step-000003.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"toy-{1000 + i:04d}" for i in range(7)]
    assert all(set(p) == {"id", "prediction", "reference"} for p in predictions)
    # step metrics: one loss row per step in metrics.csv, TensorBoard events written
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["value"]) for r in rows if r["name"] == "train/loss"]
    assert losses == pytest.approx([h["loss"] for h in result.history])
    assert {r["name"] for r in rows} >= {"train/lr", "train/samples_per_s", "train/tokens_per_s", "val/bleu_4", "val/score"}
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_holds_only_the_trainable_weights(tmp_path: Path, toy_training) -> None:
    _toy_fit(tmp_path / "run", "train.max_steps=2")
    model = toy_training.models[0]
    saved = trainable_weights(tmp_path / "run" / "step-000002")
    assert not any(name.startswith("frozen.") for name in saved)
    assert set(saved) == {n for n, _ in model.trainable_named_parameters()}
    trainable_bytes = sum(p.numel() * p.element_size() for _, p in model.trainable_named_parameters())
    frozen_bytes = sum(p.numel() * p.element_size() for p in model.frozen.parameters())
    size = (tmp_path / "run" / "step-000002" / "trainable.safetensors").stat().st_size
    assert trainable_bytes <= size < trainable_bytes + 4096 < frozen_bytes


def test_loss_falls_on_the_toy_task(tmp_path: Path, toy_training) -> None:
    result = _toy_fit(tmp_path / "run", "train.epochs=3")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def _crash_after_save(monkeypatch: pytest.MonkeyPatch, at_step: int):
    """Simulate a crash (a killed job) right after the checkpoint of ``at_step`` is written; returns the undo."""
    import mrg.checkpoint as checkpoint

    real_commit = checkpoint.commit_checkpoint

    def commit(stage, run_dir, step, meta):
        final = real_commit(stage, run_dir, step, meta)
        if step == at_step:
            raise KeyboardInterrupt(f"killed after step {step}")
        return final

    monkeypatch.setattr(checkpoint, "commit_checkpoint", commit)
    return lambda: monkeypatch.setattr(checkpoint, "commit_checkpoint", real_commit)


def _metrics_rows(run: Path) -> list[tuple[str, str, str]]:
    """The rows of metrics.csv that do not depend on timing."""
    with open(run / "metrics.csv", newline="") as handle:
        return [(r["step"], r["name"], r["value"]) for r in csv.DictReader(handle) if not r["name"].endswith("_per_s")]


@pytest.mark.parametrize(
    ("crash_step", "extra"),
    [
        (3, ()),
        (8, ()),
        (3, ("train.grad_accum_steps=2",)),
        pytest.param(5, ("data.augment=true", "data.num_workers=2"), marks=pytest.mark.slow),
    ],
    ids=["mid-epoch", "end-of-epoch", "mid-epoch-accumulating", "mid-epoch-augmenting-workers"],
)
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, toy_training, monkeypatch, crash_step, extra) -> None:
    # 16 studies, batch 2: 8 steps per epoch (4 with accumulation 2); 2 epochs; dropout on, so RNG state matters
    overrides = ("train.epochs=2", "train.save_every=1", "train.val_every=2", *extra)
    reference = _toy_fit(tmp_path / "a", *overrides)

    restore = _crash_after_save(monkeypatch, crash_step)
    with pytest.raises(KeyboardInterrupt):
        _toy_fit(tmp_path / "b", *overrides)
    restore()
    resumed = _toy_fit(tmp_path / "b", *overrides, resume="auto")

    assert resumed.resumed_from == tmp_path / "b" / f"step-{crash_step:06d}"
    assert [h["step"] for h in resumed.history] == list(range(crash_step + 1, reference.step + 1))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history[crash_step:]]
    last_a, last_b = trainable_weights(reference.last_checkpoint), trainable_weights(resumed.last_checkpoint)
    assert reference.last_checkpoint.name == resumed.last_checkpoint.name
    assert last_a.keys() == last_b.keys()
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    # the files the runs leave match too (the interrupted run's rows after the resumed step are dropped)
    assert _metrics_rows(tmp_path / "a") == _metrics_rows(tmp_path / "b")
    strip = [{k: v for k, v in json.loads(x).items() if k != "time"} for x in (tmp_path / "a" / "val_metrics.jsonl").read_text().splitlines()]
    strip_b = [{k: v for k, v in json.loads(x).items() if k != "time"} for x in (tmp_path / "b" / "val_metrics.jsonl").read_text().splitlines()]
    assert strip == strip_b
    assert read_pointer(tmp_path / "a", "best").name == read_pointer(tmp_path / "b", "best").name


def test_resume_after_a_crash_between_checkpoints(tmp_path: Path, toy_training) -> None:
    overrides = ("train.max_steps=7", "train.save_every=3")
    reference = _toy_fit(tmp_path / "a", *overrides)
    # crash inside step 5 (forward call 5): steps 4-5 are lost and redone from the step-3 checkpoint
    with pytest.raises(RuntimeError, match="simulated crash"):
        _toy_fit(tmp_path / "b", *overrides, "method.crash_at_call=4")
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-000003"]
    resumed = _toy_fit(tmp_path / "b", *overrides, resume="auto")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history[3:]]
    a, b = trainable_weights(tmp_path / "a" / "step-000007"), trainable_weights(tmp_path / "b" / "step-000007")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_matches_a_larger_micro_batch(tmp_path: Path, toy_training) -> None:
    big = _toy_fit(tmp_path / "big", "train.micro_batch_size=4", "train.max_steps=4", "method.dropout=0")
    accumulated = _toy_fit(tmp_path / "acc", "train.micro_batch_size=2", "train.grad_accum_steps=2", "train.max_steps=4",
                           "method.dropout=0")
    assert [h["loss"] for h in big.history] == pytest.approx([h["loss"] for h in accumulated.history], rel=1e-5)
    a, b = trainable_weights(big.last_checkpoint), trainable_weights(accumulated.last_checkpoint)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_keep_last_prunes_old_checkpoints_but_never_best(tmp_path: Path, toy_training, monkeypatch) -> None:
    scores = iter([0.9, 0.1, 0.2, 0.3, 0.4])  # the first validation stays the best

    def scorer(predictions, references):
        value = next(scores)
        return {"bleu_4": value, "cider": value}

    result = train(toy_config("train.max_steps=5", "train.val_every=1", "train.keep_last=2"), tmp_path / "run",
                   scorer=scorer).last
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000001", "step-000004", "step-000005"]
    assert result.best_checkpoint == tmp_path / "run" / "step-000001"
    assert result.best_score == pytest.approx(0.9)
    assert read_pointer(tmp_path / "run", "last").name == "step-000005"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, toy_training) -> None:
    with pytest.raises(TrainingError) as err:  # the loss of step 5 is NaN
        _toy_fit(tmp_path / "run", "train.max_steps=8", "train.save_every=2", "method.nan_after_calls=4")
    message = str(err.value)
    assert "loss is nan at step 5" in message
    assert "train.lr" in message and "check the data" in message
    assert str(tmp_path / "run" / "step-000004") in message
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000002", "step-000004"]
    weights = trainable_weights(tmp_path / "run" / "step-000004")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_fp16_nan_message_suggests_bf16(tmp_path: Path, toy_training) -> None:
    cfg = toy_config("train.precision=fp16")
    message = str(non_finite_error(float("inf"), 1.0, 3, 0, tmp_path, cfg))
    assert "bf16 or fp32 instead of fp16" in message and "no checkpoint was saved yet" in message


def test_sanity_validation_checks_the_selection_metrics_before_training(tmp_path: Path, toy_training) -> None:
    with pytest.raises(ConfigError, match="train.select uses rouge_l, which the validation does not return"):
        train(toy_config("train.val_every=2", "train.sanity_val_batches=1", "train.select={rouge_l: 1.0}"),
              tmp_path / "run", scorer=overlap_scorer)
    assert toy_training.models[0].forward_calls == 0  # failed before the first training step
    assert not list_checkpoints(tmp_path / "run")


def test_selection_metrics_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"'train.select' names 'blue_4', which is not a registered metric. Did you mean 'bleu_4'"):
        toy_config("train.val_every=2", "train.select={blue_4: 1.0}")
    toy_config("train.val_every=-1", "train.select={blue_4: 1.0}")  # no validation: the rule is never used


def test_val_subset_is_fixed_and_seeded(tmp_path: Path, toy_training) -> None:
    result = _toy_fit(tmp_path / "run", "train.max_steps=2", "train.val_every=1", "train.val_subset=4")
    ids = [[json.loads(x)["id"] for x in (tmp_path / "run" / f"val/step-{s:06d}.jsonl").read_text().splitlines()] for s in (1, 2)]
    assert ids[0] == ids[1] and len(ids[0]) == 4 and ids[0] == sorted(ids[0])
    assert all(r["num_studies"] == 4 for r in result.validations)


def test_too_few_training_studies_for_one_batch(tmp_path: Path, toy_training) -> None:
    with pytest.raises(ConfigError, match=r"3 studies, fewer than one effective batch \(2 x 2 x 1 processes = 4\)"):
        _toy_fit(tmp_path / "run", "train.grad_accum_steps=2", "method.num_train=3")
    assert not (tmp_path / "run").exists()  # a refused run writes nothing


def test_a_new_run_refuses_a_folder_with_checkpoints(tmp_path: Path, toy_training) -> None:
    _toy_fit(tmp_path / "run", "train.max_steps=2")
    with pytest.raises(OutputDirError, match="--resume auto"):
        _toy_fit(tmp_path / "run", "train.max_steps=2")


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path: Path, toy_training) -> None:
    result = _toy_fit(tmp_path / "run", "train.max_steps=2", resume="auto")
    assert result.resumed_from is None and result.step == 2


def test_resume_can_extend_a_finished_run(tmp_path: Path, toy_training, capsys) -> None:
    _toy_fit(tmp_path / "run", "train.max_steps=4")
    result = _toy_fit(tmp_path / "run", "train.max_steps=6", resume="auto")
    assert [h["step"] for h in result.history] == [5, 6]
    assert "train.max_steps differs from the checkpoint: 4 there, 6 now" in capsys.readouterr().err


def test_resume_with_another_model_config_names_the_fields(tmp_path: Path, toy_training) -> None:
    _toy_fit(tmp_path / "run", "train.max_steps=2")
    with pytest.raises(CheckpointError) as err:
        _toy_fit(tmp_path / "run", "train.max_steps=4", "model.promptbook.num_tokens=16", "model.projector.kind=mlp",
                 resume="auto")
    message = str(err.value)
    assert "model.promptbook.num_tokens: checkpoint 8, now 16" in message
    assert "model.projector.kind: checkpoint 'linear', now 'mlp'" in message
    assert "step-000002" in message


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resume_from_a_damaged_checkpoint_names_the_file(tmp_path: Path, toy_training, damage) -> None:
    _toy_fit(tmp_path / "run", "train.max_steps=2")
    weights = tmp_path / "run" / "step-000002" / "trainable.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError) as err:
        _toy_fit(tmp_path / "run", "train.max_steps=4", resume="auto")
    assert str(weights) in str(err.value) or ("trainable.safetensors" in str(err.value) and "step-000002" in str(err.value))


def test_an_interrupted_save_leaves_no_step_folder(tmp_path: Path, toy_training, monkeypatch) -> None:
    import mrg.checkpoint as checkpoint

    real_write = checkpoint.write_checkpoint_files

    def write(stage, **kwargs):
        real_write(stage, **kwargs)
        if stage.name.endswith("000004"):
            raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(checkpoint, "write_checkpoint_files", write)
    with pytest.raises(KeyboardInterrupt):
        _toy_fit(tmp_path / "run", "train.max_steps=6", "train.save_every=2")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000002"]
    assert (tmp_path / "run" / ".tmp-step-000004").is_dir()  # incomplete, never mistaken for a checkpoint
    monkeypatch.setattr(checkpoint, "write_checkpoint_files", real_write)
    result = _toy_fit(tmp_path / "run", "train.max_steps=6", "train.save_every=2", resume="auto")
    assert result.resumed_from.name == "step-000002"
    assert not (tmp_path / "run" / ".tmp-step-000004").exists()


def test_training_never_reads_the_test_split(tmp_path: Path, toy_training) -> None:
    from mrg.methods import get_method

    _toy_fit(tmp_path / "run", "train.max_steps=2", "train.val_every=1")
    assert set(toy_training.splits_built) == {"train", "val"}
    method = get_method("mrg-llm")
    with pytest.raises(AssertionError, match="never read the test split"):
        method.datasets(toy_config(), method.stages[0], None, ("train", "test"))


def test_step_losses_are_finite_and_lr_follows_the_schedule(tmp_path: Path, toy_training) -> None:
    result = _toy_fit(tmp_path / "run", "train.max_steps=6", "train.warmup_steps=2")
    lrs = [h["lr"] for h in result.history]
    expected = [0.05 * lr_factor(s, warmup_steps=2, total_steps=6, min_ratio=0.001 / 0.05) for s in range(6)]
    assert lrs == pytest.approx(expected)
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in result.history)


# ------------------------------------------------------------------------- tiny preset (real model)

overfit_data = training_fixtures.overfit_data

VARIANTS = {
    "promptbook-wise": [],
    "prompt-wise": ["model.promptbook.mode=prompt-wise"],
    "static": ["model.promptbook.mode=static"],
    "no-prompt": ["model.promptbook.mode=none"],
    "frozen-encoder": ["model.encoder.trainable=frozen"],
    "lora-encoder": ["model.encoder.trainable=lora"],
    "mlp-concat": ["model.projector.kind=mlp", "model.encoder.views=concat"],
    "swin": ["model.encoder.name_or_path=random:swin"],
}


@pytest.mark.parametrize(
    "variant", [v if v == "promptbook-wise" else pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS]
)
def test_every_variant_trains_and_its_loss_falls(tmp_path: Path, overfit_data, model_cache, variant) -> None:
    from mrg.config import load_config

    cfg = load_config("tiny", tiny_overrides(overfit_data, "train.max_steps=5", "train.lr=3e-3", *VARIANTS[variant]))
    result = train(cfg, tmp_path / "run").last
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.3, losses  # the same 4 studies every step: the loss must fall clearly


@pytest.mark.slow
def test_two_stage_runs_align_then_finetune_and_finetune_trains_only_lora(tmp_path: Path, overfit_data, model_cache) -> None:
    from mrg.config import load_config

    cfg = load_config("two-stage-tiny", tiny_overrides(overfit_data, "train.max_steps=3", "train.lr=3e-3"))
    result = train(cfg, tmp_path / "run")
    assert [s.stage for s in result.stages] == ["align", "finetune"]
    align, finetune = result.stages
    assert align.run_dir == tmp_path / "run" / "align" and finetune.run_dir == tmp_path / "run" / "finetune"
    align_saved, saved = trainable_weights(align.last_checkpoint), trainable_weights(finetune.last_checkpoint)
    assert any(n.startswith("encoder.") for n in align_saved) and not any("lora_" in n for n in align_saved)
    # finetune starts where align ended: its first loss is below align's first one
    assert finetune.history[0]["loss"] < align.history[0]["loss"]
    # what trained in finetune: the LLM's adapters and the projector (method.finetune_also); the encoder is kept
    changed = {n for n in align_saved if not torch.equal(align_saved[n], saved[n])}
    assert changed and all(n.startswith("projector.") for n in changed)
    assert any(n.startswith("llm.") and "lora_" in n for n in saved)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in saved)  # the LLM's own weights never train
    # a second call skips both finished stages
    again = train(cfg, tmp_path / "run", resume="auto")
    assert all(s.skipped for s in again.stages)


def test_tiny_run_validates_selects_and_never_reads_the_test_split(tmp_path: Path, synthetic_data, model_cache,
                                                                   monkeypatch) -> None:
    from mrg.config import load_config
    from mrg.data.prepared import PreparedDataset

    splits_read = []
    real_split = PreparedDataset.split
    monkeypatch.setattr(PreparedDataset, "split", lambda self, name: splits_read.append(name) or real_split(self, name))
    cfg = load_config("tiny", tiny_overrides(synthetic_data, "train.max_steps=4", "train.val_every=2",
                                             "train.sanity_val_batches=1", "train.keep_last=1"))
    result = train(cfg, tmp_path / "run", scorer=overlap_scorer).last
    assert set(splits_read) == {"train", "val"}
    assert [r["step"] for r in result.validations] == [2, 4]
    assert result.best_checkpoint is not None and result.best_checkpoint.parent == tmp_path / "run"
    predictions = (tmp_path / "run" / "val" / "step-000004.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in predictions] == [f"val-{i:03d}" for i in range(6)]
    # the frozen LLM and backbone buffers never reach a checkpoint: its size is that of the trainable tensors
    saved = trainable_weights(result.last_checkpoint)
    assert not any(name.startswith("llm.") for name in saved)
    size = (result.last_checkpoint / "trainable.safetensors").stat().st_size
    assert size < sum(t.numel() * t.element_size() for t in saved.values()) + 16_384
