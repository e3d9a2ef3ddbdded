"""Answers to visual questions from a checkpoint: ``answer_questions`` for a split of a ``mrg prepare vqa`` folder
or for one image and a question.

The model is rebuilt from the checkpoint as ``mrg generate`` rebuilds it; the question follows the method's
prompt (``mrg.data.dataset.QUESTION_FORMAT``) and the answer is decoded after it, in batches (and across
processes under ``accelerate launch``, every question once). Decoding defaults for answers are greedy, at least
1 and at most 16 new tokens, no repetition penalty; ``generate.*`` overrides change them.

Output is JSON lines, one question per line in file order::

    {"id", "study_id", "question", "prediction", "answer" (the truth; data splits only), "question_type",
     "closed", "subject"}

and a sidecar ``<out>.meta.json`` (checkpoint, decoding, input, provenance).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrg.checkpoint import check_checkpoint_files, load_checkpoint_config, load_meta, resolve_checkpoint
from mrg.config import config_to_dict
from mrg.data.prepared import SPLITS
from mrg.errors import ConfigError, DataError
from mrg.files import write_json_atomic, write_jsonl_atomic
from mrg.generate import checkpoint_model, generation_config, meta_path_for
from mrg.provenance import provenance, utc_now
from mrg.runs import CONFIG_NAME, META_NAME, WEIGHTS_NAME

ANSWER_DECODING = ("generate.strategy=greedy", "generate.num_beams=1", "generate.min_new_tokens=1",
                   "generate.max_new_tokens=16", "generate.repetition_penalty=1.0")
"""Decoding for short answers, applied beneath the caller's ``generate.*`` overrides."""


@dataclass
class AnswerResult:
    """What ``answer_questions`` wrote."""

    out_path: Path
    meta_path: Path
    num_answers: int
    checkpoint: Path
    step: int
    seconds: float
    vqa_root: Path | None
    """The questions' folder (for scoring and the majority baselines), None for a single image."""


def _questions(data: str | os.PathLike[str] | None, split: str | None, image: Sequence[str | os.PathLike[str]] | None,
               question: str | None) -> tuple[list[Any], Path, dict[str, Any]]:
    """The questions to answer, the folder their image paths are relative to, and a description of the input."""
    from mrg.data.vqa import Question, load_vqa_set

    if (image is None) == (split is None):
        raise ConfigError("give either --data DIR --split S or --image FILE --question TEXT, not both or neither")
    if image is not None:
        paths = [Path(p) for p in image]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"--image {missing[0]}: file not found")
        if not question or not question.strip():
            raise ConfigError("--image needs --question TEXT")
        one = Question(paths[0].stem, paths[0].stem, "test", [str(p.resolve()) for p in paths], question.strip(), "",
                       "", False, "cli")
        return [one], Path("/"), {"images": [str(p) for p in paths], "question": question.strip()}
    if data is None:
        raise ConfigError("--split needs --data DIR (a folder written by 'mrg prepare vqa')")
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: not a split; use test, val or train")
    vqa = load_vqa_set(data)
    questions = vqa.split(split)
    if not questions:
        raise DataError(f"{data}: split {split} has no questions")
    return questions, vqa.images_root, {"data": str(data), "split": split}


def answer_questions(
    checkpoint: str | os.PathLike[str],
    *,
    out_path: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    split: str | None = None,
    image: Sequence[str | os.PathLike[str]] | None = None,
    question: str | None = None,
    overrides: Sequence[str] | None = None,
) -> AnswerResult:
    """Answer every question of a split (or one question about ``image``) and write them as JSON lines.

    Args:
        checkpoint: a run folder (best, else last), a pointer or a step folder.
        data, split: a ``mrg prepare vqa`` folder and its split; or
        image, question: image file(s) of one study and a question about it.
        overrides: ``generate.key=value`` strings over the answer decoding (``ANSWER_DECODING``).

    Raises:
        CheckpointError, ConfigError, DataError: as ``mrg generate`` (a missing input, file or split).
    """
    from mrg.distributed import make_accelerator, predict

    questions, images_root, source = _questions(data, split, image, question)
    step_dir = resolve_checkpoint(checkpoint, prefer="best")
    check_checkpoint_files(step_dir, needed=(WEIGHTS_NAME, CONFIG_NAME, META_NAME))
    meta = load_meta(step_dir)
    cfg = generation_config(load_checkpoint_config(step_dir), [*ANSWER_DECODING, *(overrides or ())])
    gen = cfg.generate
    precision = cfg.train.precision if gen.precision == "auto" else gen.precision
    accelerator = make_accelerator(precision, option="generate.precision")
    started = time.perf_counter()
    model, method, stage = checkpoint_model(step_dir, cfg, meta)
    model.to(accelerator.device)
    model.eval()
    dataset = method.question_dataset(cfg, stage, model, questions, images_root, answers=False)
    collate_fn = method.collate(cfg, stage, model)
    rows = predict(accelerator, model, dataset, collate_fn, gen, num_workers=cfg.data.num_workers if image is None else 0,
                   description="answering questions")
    seconds = time.perf_counter() - started
    out_path = Path(out_path)
    meta_path = meta_path_for(out_path)
    if accelerator.is_main_process:
        with_truth = image is None
        write_jsonl_atomic(out_path, (_row(q, r["prediction"], with_truth) for q, r in zip(questions, rows, strict=True)))
        write_json_atomic(meta_path, {
            "answers": out_path.name, "num_answers": len(rows), "checkpoint": str(step_dir.resolve()),
            "step": meta.get("step"), "generate": config_to_dict(gen) | {"precision": precision}, "input": source,
            "model": {"method": method.name, "stage": stage.name}, "num_processes": accelerator.num_processes,
            "seconds": round(seconds, 3), "created": utc_now(), "provenance": provenance(),
        })
    accelerator.wait_for_everyone()
    return AnswerResult(out_path, meta_path, len(rows), step_dir, int(meta.get("step", 0)), seconds,
                        Path(data) if image is None and data is not None else None)


def _row(question: Any, prediction: str, with_truth: bool) -> dict[str, Any]:
    from mrg.data.vqa import normalize_answer

    row = {"id": question.id, "study_id": question.study_id, "question": question.question, "prediction": prediction,
           "image_paths": question.image_paths}
    if with_truth:
        row |= {"answer": normalize_answer(question.answer), "question_type": question.question_type,
                "closed": question.closed, "subject": question.subject}
    return row
