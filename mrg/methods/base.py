"""What a method is: named stages, what each trains, the data it reads, and how its model is built.

A method is one module in ``mrg/methods/`` (or a plugin) with one subclass of ``Method``, registered with
``mrg.methods.register_method``. The recipe (``mrg.recipes.train``), ``mrg generate`` and the other
commands only call the hooks below, so adding a method needs no edit of the loop, the CLI, generate or
evaluate (``docs/architecture.md`` walks through it)::

    class MyMethod(ReportMethod):   # mrg.methods.report
        name = "my-method"
        summary = "visual tokens through a gated projector"
        stages = (Stage("train", "train the encoder and projector", trains=("encoder.*", "projector.*")),)

        def build_model(self, cfg, stage):
            ...

A report-generation method subclasses ``mrg.methods.report.ReportMethod``, which supplies the data and
batches of a prepared dataset. Hooks, all with defaults except ``build_model``: ``check`` (cross-field config problems), ``trainable_patterns``
(what trains in a stage, beyond the stage's declaration), ``datasets`` and ``collate`` (what a stage reads),
``make_validation`` (how a stage is validated), ``frozen_patterns`` (what must never train),
``soft_token_groups`` (the learned soft tokens the LLM reads, for ``mrg analyze``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mrg.config import PRESET_DIR, MethodOptions, RunConfig
from mrg.errors import ConfigError
from mrg.metrics.registry import REPORT_GENERATION, suggest

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset

Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One named stage of a method."""

    name: str
    summary: str
    trains: tuple[str, ...]
    """Parameter-name patterns (``fnmatch``) that train in this stage; the method may narrow them per config."""
    loss: str = "next-token cross-entropy on the report tokens and EOS"
    data: str = "train split (image + report); validation on the val split"
    starts_from: str | None = None
    """The earlier stage whose trained weights initialise this one (its ``best`` checkpoint, else ``last``)."""
    carries: tuple[str, ...] = ()
    """Patterns of the weights taken from ``starts_from`` (or ``model.init_from``); empty: every trained weight."""
    task: str = REPORT_GENERATION
    """The validation task (``mrg.metrics.registry``): which metrics ``train.select`` may weigh."""
    generates_reports: bool = True
    """Whether ``mrg generate`` can write reports from this stage's checkpoints."""

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SOFT_TOKEN_GROUP_NAMES = ("visual", "prompt", "clues")
"""The soft-token groups ``mrg analyze`` knows, in the order it reports them."""


@dataclass(frozen=True)
class SoftTokenGroup:
    """Learned tokens a method feeds the LLM through ``inputs_embeds`` (analysed by ``mrg analyze``)."""

    name: str
    """``visual`` (projected image tokens), ``prompt`` (customised prompts) or ``clues``."""
    summary: str
    """What the tokens are, in a few words (shown in ``analysis.json`` and the page)."""


class Method:
    """A registered method: its stages, config, presets and the hooks the recipes call."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str] = ""
    """Where the method comes from (arXiv id, venue)."""
    stages: ClassVar[tuple[Stage, ...]]
    options: ClassVar[type[MethodOptions]] = MethodOptions
    """The dataclass of the ``method`` section (the method's own settings)."""
    config_defaults: ClassVar[dict[str, Any]] = {}
    """A partial config (nested mapping) applied beneath presets and overrides, e.g. stage defaults."""
    demo_preset: ClassVar[str | None] = None
    """The preset ``mrg demo --method NAME`` trains (``data.root`` and ``model.llm.name_or_path`` are filled in)."""
    architecture_options: ClassVar[tuple[str, ...]] = ()
    """``method.*`` keys that decide which weights exist (must match between stages and on resume)."""

    @property
    def multi_stage(self) -> bool:
        return len(self.stages) > 1

    def stage(self, name: str, *, option: str = "--stage") -> Stage:
        """The stage ``name``.

        Raises:
            ConfigError: unknown stage, with suggestions.
        """
        names = [s.name for s in self.stages]
        if name not in names:
            raise ConfigError(f"{option} {name}: method {self.name} has no such stage (stages: {', '.join(names)})."
                              + suggest(name, names))
        return next(s for s in self.stages if s.name == name)

    def presets(self) -> list[str]:
        """The shipped presets (``mrg/configs/*.yaml``) whose ``model.method`` is this method."""
        import yaml

        found = []
        for path in sorted(PRESET_DIR.glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            method = (data.get("model") or {}).get("method", "mrg-llm") if isinstance(data, dict) else None
            if method == self.name:
                found.append(path.stem)
        return found

    def describe(self) -> dict[str, Any]:
        """What ``mrg methods --json`` prints for this method."""
        options = [f.name for f in dataclasses.fields(self.options)]
        return {"name": self.name, "summary": self.summary, "paper": self.paper,
                "stages": [s.describe() for s in self.stages], "presets": self.presets(), "options": options}

    # ----------------------------------------------------------------------------------------- hooks

    def check(self, cfg: RunConfig) -> list[str]:
        """Cross-field problems of ``cfg`` for this method (none by default)."""
        return []

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        """What trains in ``stage`` under ``cfg``: the stage's declaration unless the method narrows it."""
        return list(stage.trains)

    def never_trains(self, name: str) -> bool:
        """Whether parameter ``name`` must never train (a guard against a wrong declaration); e.g. a frozen LLM."""
        return False

    def never_trains_under(self, cfg: RunConfig) -> Callable[[str], bool]:
        """The ``never_trains`` guard under ``cfg``: the same unless an option of the method lifts part of it
        (e.g. ``mavilt``'s ``method.train_llm``)."""
        return self.never_trains

    def kept_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        """Weights that belong to ``stage``'s trained state without training in it: those its ``starts_from``
        chain trained (as far as each stage ``carries`` them). Checkpoints of the stage hold them."""
        if stage.starts_from is None:
            return []
        earlier = self.stage(stage.starts_from)
        patterns = self.trainable_patterns(cfg, earlier) + self.kept_patterns(cfg, earlier)
        return [p for p in patterns if not stage.carries or p in stage.carries]

    def init_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        """What an initialising checkpoint (``starts_from``'s, or ``model.init_from``) provides for ``stage``."""
        if stage.starts_from is not None:
            return self.kept_patterns(cfg, stage)
        patterns = self.trainable_patterns(cfg, stage)
        return [p for p in patterns if not stage.carries or p in stage.carries]

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        """The model of ``stage``, every parameter trainable (the recipe applies ``trainable_patterns``)."""
        raise NotImplementedError

    def datasets(self, cfg: RunConfig, stage: Stage, model: nn.Module, splits: Sequence[str]) -> dict[str, Dataset]:
        """The datasets of ``splits`` for ``stage`` (the test split is never asked for in training)."""
        raise NotImplementedError

    def split_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, split: str) -> Dataset:
        """One split as inputs for inference (``mrg generate`` and the other commands; the test split too)."""
        raise NotImplementedError

    def image_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, studies: Sequence[Sequence[Path]],
                      ids: Sequence[str]) -> Dataset:
        """Image files (one list per study) as inputs for inference."""
        raise NotImplementedError

    def question_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, questions: Sequence[Any],
                         images_root: Path, *, augment: bool = False, answers: bool = True) -> Dataset:
        """Visual questions (``mrg.data.vqa.Question``) as inputs (the ``vqa`` task, ``mrg answer``)."""
        raise ConfigError(f"method {self.name} does not answer questions (it has no LLM input for them)")

    def collate(self, cfg: RunConfig, stage: Stage, model: nn.Module, *, data_root: str | Path | None = None) -> Collate:
        """The collate function of ``stage``'s batches."""
        raise NotImplementedError

    def demo_overrides(self, data_dir: Path, out_dir: Path, *, fast: bool) -> list[str]:
        """Config overrides ``mrg demo`` adds to ``demo_preset`` after preparing what the method needs first
        (e.g. MAViLT's image tokenizer, trained here); none by default."""
        return []

    def demo_extras(self, cfg: RunConfig, run_dir: Path, data_dir: Path, out_dir: Path) -> dict[str, Any]:
        """What ``mrg demo`` adds for this method after scoring its reports (recorded in ``demo.json``).

        Keys the demo also puts on its HTML page: ``perceived_csv`` (a label-probability CSV, ``mrg perceive``'s
        layout: a "perceived" column per study) and ``perceive_threshold`` (P from which a class is listed)."""
        return {}

    def soft_token_groups(self, cfg: RunConfig, stage: Stage) -> list[SoftTokenGroup]:
        """The soft-token groups ``stage``'s model feeds its LLM under ``cfg`` (none by default).

        Each name must be one its model's ``soft_tokens(batch)`` returns (``ReportModel.soft_tokens``) and labels in
        ``input_groups`` (``mrg.model.report_model.INPUT_GROUPS``).
        """
        return []

    def make_validation(self, context: Any) -> Any:
        """The validation of a stage (``mrg.validation``); None lets the recipe use report generation."""
        return None
