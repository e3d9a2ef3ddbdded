"""Report-generation methods: a prepared dataset's studies as training data, report tokens in the batches.

``ReportMethod`` gives a method the datasets (``mrg.data.dataset.ReportDataset`` of the train and val
splits, normalised for its encoder) and the collate step (``ReportCollator``: report ids from the
dataset's ``mrg prepare tokenize`` cache when it was made with the model's tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrg.config import RunConfig
from mrg.errors import DataError, MrgError
from mrg.methods.base import Collate, Method, SoftTokenGroup, Stage
from mrg.metrics.registry import REPORT_GENERATION

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset


class ReportMethod(Method):
    """A method whose model is a report generator over a prepared dataset (images + reports)."""

    def check(self, cfg: RunConfig) -> list[str]:
        """A ``vqa``-only run has no report validation: it must turn validation off."""
        if "report" not in cfg.data.tasks and cfg.train.val_every != -1:
            return ["'data.tasks' has no report task, so there is nothing to validate by report generation; set "
                    "train.val_every=-1 (answers are scored by 'mrg answer')"]
        return []

    def datasets(self, cfg: RunConfig, stage: Stage, model: nn.Module, splits: Sequence[str]) -> dict[str, Dataset]:
        """Report studies of ``splits``; for a report-writing stage with ``data.tasks`` other than report alone, the
        train split mixes the tasks by weight (``mrg.data.vqa.TaskMixture``); val stays report generation when
        report is a task, else the val questions."""
        from mrg.data.dataset import dataset_from_config
        from mrg.data.prepared import load_prepared_dataset

        # Fidelity to the protocol: model selection must never see the test split.
        assert "test" not in splits, "training and validation never read the test split"
        prepared = load_prepared_dataset(cfg.data.root)
        settings = getattr(model, "image_settings", None)
        tasks = dict(cfg.data.tasks)
        if not stage.generates_reports or stage.task != REPORT_GENERATION or tasks == {"report": 1.0}:
            return {split: dataset_from_config(cfg, split, image_settings=settings, prepared=prepared) for split in splits}
        from mrg.data.vqa import TaskMixture, load_vqa_set

        vqa = load_vqa_set(cfg.data.vqa_root) if "vqa" in tasks else None
        out: dict[str, Dataset] = {}
        for split in splits:
            parts: dict[str, Dataset] = {}
            if "report" in tasks:
                parts["report"] = dataset_from_config(cfg, split, image_settings=settings, prepared=prepared)
            if vqa is not None and (split == "train" or "report" not in tasks):
                parts["vqa"] = self.question_dataset(cfg, stage, model, vqa.split(split), vqa.images_root,
                                                     augment=cfg.data.augment and split == "train")
            if split == "train":
                out[split] = TaskMixture(parts, tasks, seed=cfg.train.seed)
            else:
                out[split] = parts["report"] if "report" in parts else parts["vqa"]
        return out

    def question_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, questions: Sequence[Any],
                         images_root: Path, *, augment: bool = False, answers: bool = True) -> Dataset:
        """Questions (``mrg.data.vqa.Question``) as inputs: with their answers for the ``vqa`` task, without
        (``answers=False``) for ``mrg answer``."""
        from mrg.data.vqa import VQADataset

        if not questions:
            raise DataError(f"{cfg.data.vqa_root or images_root}: no questions in this split")
        settings = getattr(model, "image_settings", None)
        return VQADataset(questions, images_root, image_size=cfg.data.image_size, max_views=cfg.data.max_views,
                          augment=augment, answers=answers, **(settings.kwargs() if settings is not None else {}))

    def split_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, split: str) -> Dataset:
        from mrg.data.dataset import dataset_from_config

        return dataset_from_config(cfg, split, image_settings=getattr(model, "image_settings", None), augment=False)

    def image_dataset(self, cfg: RunConfig, stage: Stage, model: nn.Module, studies: Sequence[Sequence[Path]],
                      ids: Sequence[str]) -> Dataset:
        from mrg.data.dataset import ImageFileDataset

        settings = getattr(model, "image_settings", None)
        return ImageFileDataset(studies, image_size=cfg.data.image_size, max_views=cfg.data.max_views, ids=ids,
                                **(settings.kwargs() if settings is not None else {}))

    def collate(self, cfg: RunConfig, stage: Stage, model: nn.Module, *, data_root: str | Path | None = None) -> Collate:
        """Studies + report tokens; ids from the dataset's ``mrg prepare tokenize`` cache when it matches."""
        from mrg.data.dataset import ReportCollator

        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            from mrg.data.dataset import collate_studies

            return collate_studies
        token_ids = _cached_token_ids(cfg, tokenizer, data_root)
        return ReportCollator(tokenizer, cfg.model.max_report_tokens, token_ids)


def report_model_groups(cfg: RunConfig) -> list[SoftTokenGroup]:
    """The soft tokens of ``mrg.model.report_model.ReportModel``: visual tokens (unless ``model.visual_tokens`` is off)
    and the customised prompt (unless ``model.promptbook.mode`` is ``none``)."""
    groups = []
    if cfg.model.visual_tokens:
        groups.append(SoftTokenGroup("visual", "projected visual tokens (soft visual prompts)"))
    if cfg.model.promptbook.mode != "none":
        groups.append(SoftTokenGroup("prompt", f"{cfg.model.promptbook.mode} prompt tokens"))
    return groups


def _cached_token_ids(cfg: RunConfig, tokenizer: Any, data_root: str | Path | None) -> dict[str, list[int]] | None:
    """Training ids from the ``mrg prepare tokenize`` cache, when it matches the tokenizer and the cleaning."""
    from mrg.data.prepared import load_prepared_dataset
    from mrg.data.tokenize import find_token_cache, training_token_ids

    root = Path(data_root or cfg.data.root)
    try:
        prepared = load_prepared_dataset(root)
    except MrgError:
        return None
    if cfg.data.normalize not in ("auto", prepared.normalize):
        return None  # the cache holds report_clean, cleaned with the dataset's own mode
    cache = find_token_cache(root, tokenizer)
    return training_token_ids(cache, tokenizer) if cache is not None else None

