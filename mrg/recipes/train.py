"""``mrg train`` as a recipe: ``TrainRecipe(cfg, run_dir).setup()`` then ``.run()`` trains every stage of a method.

Features:
    - any registered method (``model.method``; ``mrg methods``): its stages run in order, each in its own
      stage folder (the run folder itself for single-stage methods), each resumable; without a stage asked
      for, finished stages are skipped; a stage that ``starts_from`` another is initialised from that stage's
      ``best`` checkpoint (else ``last``);
    - CPU, one GPU, several GPUs and several nodes through accelerate (DDP; FSDP and DeepSpeed ZeRO configs in
      ``mrg/configs/accelerate/``); fp32, bf16 or fp16 (``train.precision``);
    - AdamW without weight decay on biases, norms and prompt tokens; linear warm-up, then cosine decay to
      ``train.min_lr``; gradient accumulation and clipping (``mrg.optim``);
    - validation on the validation split (optionally a fixed seeded subset) by the stage's task, the best
      checkpoint chosen by ``train.select``; the test split is never read here;
    - checkpoints with the trained weights, optimizer, scheduler, RNG and data position (``mrg.checkpoint``);
      ``resume="auto"`` continues an interrupted run and reproduces the uninterrupted one.

Raises (from ``setup`` / ``run``):
    ConfigError: inconsistent settings (e.g. fewer training studies than one effective batch).
    CheckpointError: a resume or initialising checkpoint is missing, damaged or from another model configuration.
    OutputDirError: a stage folder holds checkpoints and no ``resume`` was asked for.
    TrainingError: the loss became NaN or infinite (the last good checkpoint is kept).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mrg.checkpoint import (
    Checkpointer,
    ResumePoint,
    check_config_compatible,
    find_resume_point,
    is_finished,
    load_checkpoint_config,
    load_torch_state,
    load_trainable_weights,
    load_training_state,
    pointer_target,
    read_pointer,
    remove_staging_dirs,
    resolve_checkpoint,
    resolve_init_weights,
    restore_pointers,
    restore_rng_state,
)
from mrg.config import RunConfig, save_config, stage_config
from mrg.console import console, info, make_progress, warn
from mrg.distributed import make_accelerator
from mrg.errors import CheckpointError, ConfigError, OutputDirError, TrainingError
from mrg.files import read_json, write_json_atomic
from mrg.methods import Method, Stage, get_method
from mrg.metrics.registry import REPORT_GENERATION
from mrg.model.trainable import key_problem, matches, stage_model
from mrg.optim import build_optimizer, build_scheduler
from mrg.provenance import provenance, utc_now
from mrg.runs import (
    CONFIG_NAME,
    METRICS_CSV_NAME,
    PROVENANCE_NAME,
    RNG_NAME,
    is_run_folder,
    read_run_record,
    stage_dir,
    write_run_record,
)
from mrg.trackers import CSVTracker
from mrg.trainer import EpochBatches, Hooks, LoopPlan, LoopStart, fit
from mrg.validation import GenerationValidation, Scorer, ValidationRecorder, val_subset

if TYPE_CHECKING:
    from accelerate import Accelerator

TRAIN_SPLITS = ("train", "val")
"""The only splits training reads; the test split is for ``mrg generate`` + ``mrg evaluate`` alone."""


@dataclass
class StageResult:
    """What training one stage did."""

    stage: str
    run_dir: Path
    """The stage folder."""
    step: int
    """Optimizer steps done in total (including those before a resume)."""
    epoch: int
    total_steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_score: float | None
    best_metrics: dict[str, float] | None
    resumed_from: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False
    """The stage was finished before this call and was not trained again."""


@dataclass
class RunResult:
    """What ``mrg train`` did, stage by stage."""

    run_dir: Path
    method: str
    stages: list[StageResult]

    @property
    def last(self) -> StageResult:
        return self.stages[-1]


def train(cfg: RunConfig, run_dir: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None = None,
          stage: str | None = None, scorer: Scorer | None = None) -> RunResult:
    """Train the method of ``cfg`` into ``run_dir``: ``TrainRecipe(...).setup()`` then ``.run()``.

    Args:
        resume: None for new stages; ``"auto"`` to continue each stage from its newest complete checkpoint; or a
            checkpoint path (step folder, pointer, stage or run folder) for the stage it belongs to.
        stage: train only this stage (default: every stage not finished yet, in order).
        scorer: the validation scorer of report-generation stages (default: ``mrg evaluate``'s, built on process 0).
    """
    recipe = TrainRecipe(cfg, run_dir, resume=resume, stage=stage, scorer=scorer)
    recipe.setup()
    return recipe.run()


class TrainRecipe:
    """Plans which stages of the method run, then trains them one after the other."""

    def __init__(self, cfg: RunConfig, run_dir: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None = None,
                 stage: str | None = None, scorer: Scorer | None = None) -> None:
        self.cfg, self.run_dir, self.resume, self.stage_name, self.scorer = cfg, Path(run_dir), resume, stage, scorer
        self.method: Method = get_method(cfg.model.method, option="model.method")
        self.plan: list[Stage] = []

    def setup(self) -> None:
        """Check the run folder against the method and decide which stages run."""
        method = self.method
        check_output_dir(self.run_dir)
        record = read_run_record(self.run_dir)
        if record is not None and record.get("method") != method.name:
            raise OutputDirError(f"--out {self.run_dir}: holds a {record.get('method')} run; choose another --out for "
                                 f"{method.name}")
        if not method.multi_stage and record is not None:
            raise OutputDirError(f"--out {self.run_dir}: holds a multi-stage run; choose another --out")
        if method.multi_stage and record is None and is_run_folder(self.run_dir):
            raise OutputDirError(f"--out {self.run_dir}: holds a single-stage run; choose another --out for {method.name}")
        stage_name = self.stage_name or self._stage_of_resume_path()
        if stage_name is not None:
            self.plan = [method.stage(stage_name)]
        else:
            self.plan = list(method.stages)

    def _stage_of_resume_path(self) -> str | None:
        """The stage a resume checkpoint path belongs to, for a multi-stage run resumed by path."""
        if self.resume is None or str(self.resume) == "auto" or not self.method.multi_stage:
            return None
        step_dir = resolve_checkpoint(self.resume, prefer="last").resolve()
        for stage in self.method.stages:
            if (self.run_dir / stage.name).resolve() in step_dir.parents:
                return stage.name
        raise ConfigError(f"--resume {self.resume}: not a checkpoint of a stage of {self.run_dir}; add --stage")

    def run(self) -> RunResult:
        results = []
        multi = self.method.multi_stage
        if multi and _is_main():
            self._write_run_record()
        for stage in self.plan:
            folder = stage_dir(self.run_dir, stage.name, multi_stage=multi)
            cfg = stage_config(self.cfg, stage.name)
            may_skip = (self.stage_name is None and len(self.plan) > 1) or str(self.resume) == "auto"
            if may_skip and finished_with_schedule(folder, cfg):
                info(f"stage {stage.name}: finished before (last checkpoint {read_pointer(folder, 'last')}); skipped")
                results.append(_finished_result(stage, folder))
                continue
            if multi:
                info(f"stage {stage.name} of {self.method.name}: {stage.summary}")
            recipe = StageRecipe(self.method, stage, cfg, folder,
                                 resume=self.resume, scorer=self.scorer, init_from=self._init_source(stage))
            recipe.setup()
            results.append(recipe.run())
        return RunResult(self.run_dir, self.method.name, results)

    def _init_source(self, stage: Stage) -> Path | None:
        """The checkpoint that initialises ``stage`` when it starts afresh: ``model.init_from``, else its earlier stage."""
        cfg = stage_config(self.cfg, stage.name)
        if cfg.model.init_from:
            return Path(cfg.model.init_from)
        if stage.starts_from is None:
            return None
        earlier = stage_dir(self.run_dir, stage.starts_from, multi_stage=True)
        if pointer_target(earlier, "best") is None and pointer_target(earlier, "last") is None:
            raise CheckpointError(
                f"stage {stage.name} starts from stage {stage.starts_from}, but {earlier} has no checkpoint; train it "
                f"first ('mrg train --method {self.method.name} --stage {stage.starts_from} --out {self.run_dir}'), "
                "or point model.init_from at another run's checkpoint"
            )
        return earlier

    def _write_run_record(self) -> None:
        record = read_run_record(self.run_dir) or {"method": self.method.name, "created": utc_now()}
        record["stages"] = [s.name for s in self.method.stages]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_record(self.run_dir, record)


def check_output_dir(run_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, or where a folder cannot be made, before anything is built.

    Raises:
        OutputDirError: naming the path and the reason.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputDirError(f"--out {run_dir}: exists and is not a folder; choose another --out")
    parent = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise OutputDirError(f"--out {run_dir}: {parent} is not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {run_dir}: {parent} is not writable; choose another --out or fix its permissions")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".mrg-write-test-", dir=parent))
    except OSError as err:
        raise OutputDirError(f"--out {run_dir}: cannot create folders under {parent} ({err.strerror}); "
                             "choose another --out") from None
    probe.rmdir()


def finished_with_schedule(folder: Path, cfg: RunConfig) -> bool:
    """A stage folder whose last checkpoint is its final step under the same schedule (``train.epochs``,
    ``train.max_steps``) as ``cfg``: training it again would do nothing. A longer schedule is not finished."""
    if not is_finished(folder):
        return False
    last = pointer_target(folder, "last")
    try:
        done = load_checkpoint_config(last)  # type: ignore[arg-type]
    except CheckpointError:
        return False
    return (done.train.epochs, done.train.max_steps) == (cfg.train.epochs, cfg.train.max_steps)


def _is_main() -> bool:
    from mrg.console import is_main_process

    return is_main_process()


def _finished_result(stage: Stage, folder: Path) -> StageResult:
    last = pointer_target(folder, "last")
    meta = read_json(last / "meta.json") if last is not None else {}
    best = meta.get("best") or {}
    return StageResult(stage.name, folder, int(meta.get("step", 0)), int(meta.get("epoch", 0)),
                       int(meta.get("total_steps", 0)), last, pointer_target(folder, "best"), best.get("score"),
                       best.get("metrics"), None, skipped=True)


class StageRecipe:
    """One stage: ``setup`` builds every object from the config, ``run`` hands them to the loop."""

    def __init__(self, method: Method, stage: Stage, cfg: RunConfig, folder: Path, *,
                 resume: str | os.PathLike[str] | None = None, scorer: Scorer | None = None,
                 init_from: Path | None = None) -> None:
        self.method, self.stage, self.cfg, self.folder = method, stage, cfg, folder
        self.resume, self.scorer, self.init_from = resume, scorer, init_from

    # ------------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Find the start, build the model, data, optimizer and schedule; write the stage folder."""
        from accelerate.utils import set_seed

        cfg, t = self.cfg, self.cfg.train
        self.validation_on = t.val_every != -1
        self.start = find_resume_point(self.folder, self.resume, cfg)
        self.accelerator = make_accelerator(
            t.precision, grad_accum_steps=t.grad_accum_steps, log_with=self._trackers(), project_dir=self.folder,
            find_unused_parameters=t.find_unused_parameters)
        set_seed(t.seed)  # the same seed on every process gives the same initial weights
        self.model = self._build_model()
        self.datasets = self.method.datasets(cfg, self.stage, self.model, TRAIN_SPLITS)
        self.collate = self.method.collate(cfg, self.stage, self.model)
        self._plan_schedule()
        self.optimizer = build_optimizer(self.model, t)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.batches.prepare(self.accelerator)
        if self.accelerator.gradient_accumulation_steps != t.grad_accum_steps:  # a DeepSpeed config overrides ours
            raise ConfigError(
                f"the DeepSpeed config accumulates {self.accelerator.gradient_accumulation_steps} micro-batches per step "
                f"but train.grad_accum_steps is {t.grad_accum_steps}; set gradient_accumulation_steps in the "
                "accelerate config to match")
        self.scheduler = build_scheduler(self.optimizer, t, self.total_steps)
        if self.start.step_dir is not None:
            load_training_state(self.accelerator, self.optimizer, self.scheduler, self.start.step_dir)
        self._write_stage_folder()

    def _trackers(self) -> list[Any]:
        trackers: list[Any] = []
        if "csv" in self.cfg.train.trackers:
            keep = self.start.step if self.start.step_dir else None
            trackers.append(CSVTracker(self.folder / METRICS_CSV_NAME, keep_until_step=keep))
        if "tensorboard" in self.cfg.train.trackers:
            trackers.append("tensorboard")
        return trackers

    def _build_model(self) -> torch.nn.Module:
        method, stage, cfg = self.method, self.stage, self.cfg
        model = stage_model(method, cfg, stage)
        if self.start.step_dir is not None:
            model.load_trainable_state_dict(load_trainable_weights(self.start.step_dir), strict=True)
        elif self.init_from is not None:
            load_initial_weights(model, self.init_from, method.init_patterns(cfg, stage), cfg)
        return model

    def _plan_schedule(self) -> None:
        cfg, t, world = self.cfg, self.cfg.train, self.accelerator.num_processes
        train_set, val_set = self.datasets["train"], self.datasets["val"]
        items_per_step = t.micro_batch_size * t.grad_accum_steps * world
        self.batches = EpochBatches(train_set, self.collate, micro_batch_size=t.micro_batch_size,
                                    items_per_step=items_per_step, seed=t.seed, num_workers=cfg.data.num_workers)
        self.steps_per_epoch = self.batches.steps_per_epoch
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"the train split of {cfg.data.root} has {len(train_set)} studies, fewer than one effective batch "  # type: ignore[arg-type]
                f"({t.micro_batch_size} x {t.grad_accum_steps} x {world} processes = {items_per_step}); "
                f"lower train.micro_batch_size or train.grad_accum_steps")
        self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.steps_per_epoch
        if self.validation_on and len(val_set) == 0:  # type: ignore[arg-type]
            raise ConfigError(f"the val split of {cfg.data.root} is empty; set train.val_every=-1 to train without validation")
        self.val_indices = val_subset(len(val_set), t.val_subset, t.seed)  # type: ignore[arg-type]
        self.batches_per_epoch = self.steps_per_epoch * t.grad_accum_steps  # micro-batches per process

    def _write_stage_folder(self) -> None:
        """Everything is checked: only now does the stage folder get written (on the main process)."""
        if self.accelerator.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_staging_dirs(self.folder)
            save_config(self.cfg, self.folder / CONFIG_NAME)
            _write_provenance(self.folder, self.start, self.method, self.stage, self.init_from)
            if self.start.step_dir is not None and self.start.step_dir.parent.resolve() == self.folder.resolve():
                restore_pointers(self.folder, self.start)
            init_kwargs = {"tensorboard": {"purge_step": self.start.step + 1}} if self.start.step_dir else {}
            self.accelerator.init_trackers("tensorboard", init_kwargs=init_kwargs)
            print_summary(self)
        self.accelerator.wait_for_everyone()

    # -------------------------------------------------------------------------------------------- run

    def run(self) -> StageResult:
        """Validate once for sanity, restore the RNG of a resumed run, and run the loop to the last step."""
        cfg, t, acc = self.cfg, self.cfg.train, self.accelerator
        progress = make_progress()
        validate = self._validation(progress) if self.validation_on else None
        checkpointer = Checkpointer(
            acc, self.model, self.optimizer, self.scheduler, self.folder, cfg, batches_per_epoch=self.batches_per_epoch,
            total_steps=self.total_steps, best=self.start.meta.get("best"),
            record={"method": self.method.name, "stage": self.stage.name, "steps_per_epoch": self.steps_per_epoch,
                    "micro_batch_size": t.micro_batch_size, "grad_accum_steps": t.grad_accum_steps, "seed": t.seed,
                    "llm": cfg.model.llm.name_or_path,
                    # so a prompt written later (mrg synthesize) is cleaned as the training reports were
                    "report_cleaning": getattr(self.datasets["train"], "normalize", None)})
        hooks = Hooks(validate=validate or _no_validation, save=checkpointer,
                      non_finite=lambda loss, norm, step, epoch: non_finite_error(loss, norm, step, epoch, self.folder, cfg),
                      log=lambda values, step: acc.log(values, step=step))
        plan = LoopPlan(total_steps=self.total_steps, batches_per_epoch=self.batches_per_epoch,
                        items_per_micro_batch=t.micro_batch_size * acc.num_processes, max_grad_norm=t.max_grad_norm,
                        check_grad_norm=t.precision != "fp16", log_every=t.log_every,
                        val_every=t.val_every if self.validation_on else -1, save_every=t.save_every)
        start = LoopStart(self.start.step, self.start.epoch, resume_skip(self.start, acc.num_processes, t))
        try:
            with progress:
                if validate is not None and self.start.step_dir is None and t.sanity_val_batches > 0:
                    validate(0, 0, sanity=True)
                if self.start.step_dir is not None:
                    ranks = load_torch_state(self.start.step_dir / RNG_NAME)["ranks"]
                    restore_rng_state(ranks[acc.process_index] if len(ranks) == acc.num_processes else ranks[0])
                loop = fit(acc, self.model, self.batches, self.optimizer, self.scheduler, plan=plan, start=start,
                           hooks=hooks, progress=progress)
        finally:
            acc.end_training()
        best = checkpointer.best
        return StageResult(self.stage.name, self.folder, loop.step, loop.epoch, self.total_steps,
                           loop.last_checkpoint or self.start.step_dir, pointer_target(self.folder, "best"),
                           best.get("score"), best.get("metrics"), self.start.step_dir, loop.history, loop.validations)

    def _validation(self, progress: Any) -> ValidationRecorder:
        """The stage's validation: the method's own, or report generation scored by ``mrg evaluate``'s scorer."""
        context = ValidationContext(self.accelerator, self.model, self.datasets["val"], self.collate, self.cfg,
                                    self.stage, self.val_indices, progress)
        validation = self.method.make_validation(context)
        if validation is None:
            if self.stage.task != REPORT_GENERATION:
                raise ConfigError(f"stage {self.stage.name} of {self.method.name} validates task {self.stage.task} "
                                  "but the method gives no validation for it; set train.val_every=-1")
            scorer = self.scorer or default_scorer(self.cfg)
            t, g = self.cfg.train, self.cfg.generate
            validation = GenerationValidation(
                self.accelerator, self.model, self.datasets["val"], self.collate, g, scorer, indices=self.val_indices,
                sanity_items=t.sanity_val_batches * g.batch_size * self.accelerator.num_processes,
                num_workers=self.cfg.data.num_workers, progress=progress)
        return ValidationRecorder(self.accelerator, validation, self.folder, self.cfg.train.select, task=self.stage.task)


def _no_validation(step: int, epoch: int) -> dict[str, Any]:  # pragma: no cover - the loop never calls it
    raise AssertionError("validation is off (train.val_every=-1)")


@dataclass
class ValidationContext:
    """What a method's ``make_validation`` gets to build its stage's validation."""

    accelerator: Accelerator
    model: torch.nn.Module
    dataset: Any
    collate: Any
    cfg: RunConfig
    stage: Stage
    indices: list[int]
    progress: Any


def default_scorer(cfg: RunConfig) -> Scorer:
    """``mrg evaluate``'s scorer with the references' cleaning mode; processes other than 0 never score."""
    from mrg.console import is_main_process
    from mrg.data.prepared import load_prepared_dataset
    from mrg.data.text import resolve_cleaning
    from mrg.evaluate import make_scorer

    if not is_main_process():
        return _scored_on_process_zero
    dataset_mode = load_prepared_dataset(cfg.data.root).normalize
    return make_scorer(cfg.eval, resolve_cleaning(cfg.data.normalize, dataset_mode))


def _scored_on_process_zero(predictions: list[str], references: list[str]) -> dict[str, float]:
    raise RuntimeError("validation is scored on process 0 only")  # pragma: no cover - never called there


# ------------------------------------------------------------------------------------------- helpers


def load_initial_weights(model: torch.nn.Module, source: Path, patterns: list[str], cfg: RunConfig) -> None:
    """Load the weights an initialising checkpoint provides (those matching ``patterns``) into ``model``.

    Raises:
        CheckpointError: unreadable, or its tensors do not fit the model: the message names the keys and the
            configuration fields that differ between the two runs.
    """
    from safetensors.torch import load_file

    path = resolve_init_weights(source)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"model.init_from {path}: not a readable safetensors file ({err})") from None
    own = model.trainable_state_dict()
    expected = {name for name in own if matches(name, patterns)}
    offered = {name for name in state if matches(name, patterns)}
    missing, unexpected = sorted(expected - offered), sorted(offered - set(own))
    shapes = sorted(n for n in expected & offered if tuple(state[n].shape) != tuple(own[n].shape))
    differing = _differing_fields(path, cfg)
    if missing or unexpected or shapes:
        problem = key_problem(missing, unexpected) if (missing or unexpected) else f"tensors of other shapes: {', '.join(shapes[:5])}"
        raise CheckpointError(f"{path} cannot initialise this stage: {problem}; differing configuration: "
                              f"{differing or 'none recorded'}")
    if differing:
        warn(f"{path} was trained with another configuration ({differing}); its weights fit and are loaded")
    model.load_trainable_state_dict({n: state[n] for n in offered}, strict=False)


def _differing_fields(weights_path: Path, cfg: RunConfig) -> str:
    """The model/method fields that differ between the checkpoint's configuration and ``cfg`` (for messages)."""
    try:
        other = load_checkpoint_config(weights_path.parent)
    except CheckpointError:
        return ""
    try:
        check_config_compatible(other, cfg, weights_path.parent)
    except CheckpointError as err:
        text = str(err)
        return text[text.find("(") + 1 : text.rfind(")")] if "(" in text else text
    return ""


def _same_layout(meta: dict[str, Any], world: int, t: Any) -> bool:
    return (meta.get("num_processes"), meta.get("micro_batch_size"), meta.get("grad_accum_steps")) == (
        world, t.micro_batch_size, t.grad_accum_steps)


def resume_skip(start: ResumePoint, world: int, t: Any) -> int:
    """Micro-batches this process skips at the start of the resumed epoch."""
    if start.step_dir is None or start.batch_in_epoch == 0:
        return 0
    if _same_layout(start.meta, world, t):
        return start.batch_in_epoch
    # Another number of processes or batch size: continue after the same number of studies (approximately).
    seen = start.batch_in_epoch * int(start.meta.get("micro_batch_size", t.micro_batch_size)) * int(start.meta.get("num_processes", 1))
    skip = seen // (t.micro_batch_size * world)
    warn(
        f"resuming with {world} processes x micro batch {t.micro_batch_size} x accumulation {t.grad_accum_steps} instead of "
        f"{start.meta.get('num_processes')} x {start.meta.get('micro_batch_size')} x {start.meta.get('grad_accum_steps')}: "
        f"the data position is approximate and the run will not reproduce an uninterrupted one"
    )
    return skip - skip % t.grad_accum_steps


def non_finite_error(loss: float, grad_norm: float, step: int, epoch: int, folder: Path, cfg: RunConfig) -> TrainingError:
    last_good = read_pointer(folder, "last")
    kept = f"the last good checkpoint {last_good} is kept (continue with --resume auto)" if last_good else "no checkpoint was saved yet"
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
    fp16_hint = "train.precision=bf16 or fp32 instead of fp16, " if cfg.train.precision == "fp16" else ""
    return TrainingError(
        f"{what} at step {step} (epoch {epoch + 1}); training stopped and {kept}. Try a lower train.lr (now {cfg.train.lr:g}), "
        f"{fp16_hint}train.max_grad_norm=1.0, or check the data for empty reports and blank images"
    )


def _write_provenance(folder: Path, start: ResumePoint, method: Method, stage: Stage, init_from: Path | None) -> None:
    path = folder / PROVENANCE_NAME
    record = read_json(path) if start.step_dir is not None and path.is_file() else {
        "created": provenance(method=method.name, stage=stage.name, init_from=str(init_from) if init_from else None),
        "resumes": []}
    if start.step_dir is not None:
        record.setdefault("resumes", []).append(provenance(resumed_from=str(start.step_dir), step=start.step))
    write_json_atomic(path, record)


def _format_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def print_summary(recipe: StageRecipe) -> None:
    """The start-up table: start, processes, parameters, optimizer state, batch, data, schedule, validation."""
    from rich.table import Table

    t, acc = recipe.cfg.train, recipe.accelerator
    params = list(acc.unwrap_model(recipe.model).named_parameters())
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    frozen = sum(p.numel() for _, p in params if not p.requires_grad)
    # AdamW keeps two moments per trainable parameter, in the parameter's dtype.
    optimizer_bytes = sum(2 * p.numel() * p.element_size() for _, p in params if p.requires_grad)
    effective = t.micro_batch_size * t.grad_accum_steps * acc.num_processes
    num_train, num_val = len(recipe.datasets["train"]), len(recipe.val_indices) if recipe.validation_on else 0
    start = recipe.start
    table = Table(title=f"mrg train -> {recipe.folder}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # paths are folded, never cut
    table.add_row("method", f"{recipe.method.name}, stage {recipe.stage.name}"
                  + (f" (initialised from {recipe.init_from})" if recipe.init_from and start.step_dir is None else ""))
    table.add_row("start", f"resumed from {start.step_dir} (step {start.step})" if start.step_dir else "new run")
    table.add_row("processes", f"{acc.num_processes} x {acc.device.type} ({acc.distributed_type.value}), precision {t.precision}")
    table.add_row("parameters", f"trainable {_format_count(trainable)} ({100 * trainable / max(1, trainable + frozen):.2f}%), "
                  f"frozen {_format_count(frozen)}")
    table.add_row("optimizer state", f"{optimizer_bytes / 2**20:.1f} MiB (AdamW, 2 moments per trainable parameter)")
    table.add_row("effective batch", f"{t.micro_batch_size} micro x {t.grad_accum_steps} accumulation x "
                  f"{acc.num_processes} processes = {effective}")
    hits = getattr(recipe.collate, "token_ids", None)
    tasks = dict(recipe.cfg.data.tasks)
    items = "studies" if tasks == {"report": 1.0} else "items (" + ", ".join(f"{k} x{v:g}" for k, v in tasks.items()) + ")"
    table.add_row("data", f"train {num_train:,} {items} ({recipe.steps_per_epoch * effective:,} used per epoch), "
                  + (f"val {num_val:,}{' (fixed subset)' if t.val_subset else ''}" if recipe.validation_on else "no validation")
                  + (f"; report tokens from the 'mrg prepare tokenize' cache ({len(hits):,} studies)" if hits else ""))
    table.add_row("schedule", f"{recipe.total_steps:,} steps ({recipe.steps_per_epoch:,} per epoch), lr {t.lr:g} -> "
                  f"{t.min_lr:g}, warm-up {t.warmup_steps}")
    table.add_row("validation", "off" if not recipe.validation_on else
                  ("each epoch" if t.val_every == 0 else f"every {t.val_every} steps") + f", task {recipe.stage.task}")
    console.print(table)


__all__ = ["RunResult", "StageRecipe", "StageResult", "TrainRecipe", "TRAIN_SPLITS", "train"]
