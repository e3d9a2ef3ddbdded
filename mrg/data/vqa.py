"""Visual question answering data: question-answer pairs about a study's images, written by ``mrg prepare vqa``.

A VQA folder::

    DIR/
      questions.jsonl   one question per line: id, study_id, split, image_paths (relative to images_root),
                        question, answer, question_type, closed (a yes/no question), source, subject
      vqa.json          written last: the completion stamp (source, images_root, counts per split and type)

Questions derived from a prepared dataset (``derive_questions``) use its CheXpert labels and its report:

* ``presence`` (closed): "is there X?" for every observation the report states: 1.0 -> yes, 0.0 (negated) -> no;
  an uncertain (-1.0, hedged) mention is left out by default (``uncertain="skip"``), because neither answer is
  what the report says; ``uncertain="yes"``/``"no"`` answer it that way instead. Observations the report does not
  mention are never asked about.
* ``normal`` (closed): "is this study normal?": yes when No Finding is 1.0, no when any other observation but
  Support Devices is 1.0.
* ``abnormality`` (open): "what abnormalities are seen?": the positive observations in CheXpert order
  (``none`` for a normal study).
* ``side`` (open): "which side is the X on?": left / right / bilateral, where the report's sentence about a
  positive X names exactly one side.
* ``severity`` (open): "how severe is the X?": the size or severity word (tiny, small, mild, moderate, large,
  ...) of that sentence, where it states one.

Every template has several phrasings; which one a question gets is seeded by the study, the type and the
subject, so a run is reproducible and identical files come out of a second run. A question always carries its
study's split (``check_splits`` refuses a file where it does not), so no study's questions leak across splits.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mrg.data.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from mrg.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    QUESTION_FORMAT,  # noqa: F401  (re-exported: how a question enters the prompt)
    ImageTransform,
)
from mrg.data.images import load_image
from mrg.data.prepared import SPLITS, Study
from mrg.errors import DataError, OutputDirError
from mrg.files import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from mrg.provenance import provenance

QUESTIONS_NAME = "questions.jsonl"
VQA_STAMP_NAME = "vqa.json"
QUESTION_TYPES: tuple[str, ...] = ("presence", "normal", "abnormality", "side", "severity")
"""The types ``derive_questions`` writes (imported files keep their own types)."""
UNCERTAIN_MODES = ("skip", "yes", "no")

PHRASINGS: dict[str, tuple[str, ...]] = {
    "presence": ("Is there {x}?", "Does the image show {x}?", "Is {x} present?", "Is there evidence of {x}?"),
    "normal": ("Is this chest x-ray normal?", "Is the study within normal limits?", "Is this a normal chest radiograph?"),
    "abnormality": ("What abnormalities are seen?", "Which findings does the image show?", "What is abnormal in this image?"),
    "side": ("Which side is the {x} on?", "On which side is the {x}?", "Is the {x} on the left, the right or both sides?"),
    "severity": ("How severe is the {x}?", "What is the size of the {x}?", "How large is the {x}?"),
}

# CheXpert observation -> (its name in a question, words of a report sentence about it)
_SUBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": ("enlarged cardiomediastinum", ("mediastin",)),
    "Cardiomegaly": ("cardiomegaly", ("cardiomegaly", "heart", "cardiac")),
    "Lung Lesion": ("lung lesion", ("nodule", "mass", "lesion")),
    "Lung Opacity": ("lung opacity", ("opacit", "airspace")),
    "Edema": ("edema", ("edema", "congestion")),
    "Consolidation": ("consolidation", ("consolidat",)),
    "Pneumonia": ("pneumonia", ("pneumonia",)),
    "Atelectasis": ("atelectasis", ("atelecta",)),
    "Pneumothorax": ("pneumothorax", ("pneumothora",)),
    "Pleural Effusion": ("pleural effusion", ("effusion", "costophrenic")),
    "Pleural Other": ("pleural abnormality", ("pleural thickening", "fibrosis")),
    "Fracture": ("fracture", ("fracture",)),
    "Support Devices": ("a support device", ("pacemaker", "line", "tube", "catheter", "device")),
}
_NO_SIDE = {"Cardiomegaly", "Enlarged Cardiomediastinum", "Support Devices"}
_NEGATION = re.compile(r"\b(no|not|negative|without|free of|normal|clear|resolved)\b")
_SEVERITY = ("tiny", "trace", "minimal", "small", "mild", "moderate", "large", "severe", "marked", "massive")


@dataclass
class Question:
    """One question about a study's images."""

    id: str
    study_id: str
    split: str
    image_paths: list[str]
    """Image files relative to the folder's ``images_root`` (``vqa.json``)."""
    question: str
    answer: str
    question_type: str
    closed: bool
    """A yes/no question (scored by accuracy); open questions are scored by exact match and token F1."""
    source: str
    subject: str = ""
    """What the question is about (a CheXpert observation), when it is about one."""
    extra: dict[str, Any] = field(default_factory=dict)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed (commas kept: they separate list answers), spaces collapsed."""
    text = re.sub(r"[^\w\s,]", " ", str(text).lower())
    text = re.sub(r"\s*,\s*", ", ", text)
    return " ".join(text.split()).strip(" ,")


# ------------------------------------------------------------------------------------------- deriving


def _sentences(report: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.;])\s+|\n+", report) if s.strip()]


def _finding_sentence(report: str, observation: str) -> str | None:
    """The first sentence of ``report`` that mentions ``observation`` without negating it."""
    words = _SUBJECTS[observation][1]
    for sentence in _sentences(report):
        if any(w in sentence for w in words) and not _NEGATION.search(sentence):
            return sentence
    return None


def _side(sentence: str) -> str | None:
    if re.search(r"\b(bilateral|both)\b", sentence):
        return "bilateral"
    sides = set(re.findall(r"\b(left|right)\b", sentence))
    return sides.pop() if len(sides) == 1 else None


def _severity(sentence: str) -> str | None:
    found = [w for w in _SEVERITY if re.search(rf"\b{w}(ly)?\b", sentence)]  # "mildly enlarged" -> mild
    return found[0] if len(found) == 1 else None


class _Maker:
    """Builds the questions of one study with seeded phrasings."""

    def __init__(self, study: Study, seed: int, source: str) -> None:
        self.study, self.seed, self.source = study, seed, source
        self.out: list[Question] = []

    def add(self, qtype: str, answer: str, *, subject: str = "", name: str = "") -> None:
        rng = random.Random(f"{self.seed}:{self.study.id}:{qtype}:{subject}")
        text = rng.choice(PHRASINGS[qtype]).format(x=name)
        slug = re.sub(r"\W+", "_", subject.lower()).strip("_")
        qid = f"{self.study.id}:{qtype}" + (f":{slug}" if slug else "")
        self.out.append(Question(qid, self.study.id, self.study.split, list(self.study.image_paths), text, answer, qtype,
                                 answer in ("yes", "no") and qtype in ("presence", "normal"), self.source, subject))


def derive_study_questions(study: Study, *, seed: int = 0, uncertain: str = "skip") -> list[Question]:
    """The questions of one study from its labels and report (the module docstring lists the types)."""
    if uncertain not in UNCERTAIN_MODES:
        raise DataError(f"--uncertain {uncertain}: must be one of {', '.join(UNCERTAIN_MODES)}")
    labels = study.labels or {}
    maker = _Maker(study, seed, "derived")
    positive = [o for o in OBSERVATIONS if labels.get(o) == POSITIVE and o != "No Finding"]
    for obs in OBSERVATIONS:
        if obs == "No Finding" or obs not in labels:
            continue
        value = labels[obs]
        answer = {POSITIVE: "yes", NEGATIVE: "no"}.get(value, uncertain if value == UNCERTAIN else "skip")
        if answer != "skip":
            maker.add("presence", answer, subject=obs, name=_SUBJECTS[obs][0])
    abnormal = [o for o in positive if o != "Support Devices"]
    if labels.get("No Finding") == POSITIVE or abnormal:
        maker.add("normal", "no" if abnormal else "yes")
        maker.add("abnormality", ", ".join(_SUBJECTS[o][0] for o in abnormal) if abnormal else "none")
    for obs in abnormal:
        sentence = _finding_sentence(study.report, obs)
        if sentence is None:
            continue
        side = None if obs in _NO_SIDE else _side(sentence)
        if side:
            maker.add("side", side, subject=obs, name=_SUBJECTS[obs][0])
        severity = _severity(sentence)
        if severity:
            maker.add("severity", severity, subject=obs, name=_SUBJECTS[obs][0])
    return maker.out


def derive_questions(studies: Iterable[Study], *, seed: int = 0, uncertain: str = "skip") -> list[Question]:
    """Questions for every study, in study order (each with its study's split and images)."""
    return [q for study in studies for q in derive_study_questions(study, seed=seed, uncertain=uncertain)]


# -------------------------------------------------------------------------------------------- writing


def check_splits(questions: Sequence[Question], studies: Sequence[Study] | None, *, where: str) -> None:
    """Refuse questions about studies that are not in ``studies`` or whose split differs from their study's.

    Raises:
        DataError: naming the first such question, its study and both splits.
    """
    seen: set[str] = set()
    for q in questions:
        if q.split not in SPLITS:
            raise DataError(f"{where}: question {q.id}: split {q.split!r} is not one of {', '.join(SPLITS)}")
        if q.id in seen:
            raise DataError(f"{where}: question id {q.id} appears twice; ids must be unique")
        seen.add(q.id)
    if studies is None:
        return
    split_of = {s.id: s.split for s in studies}
    for q in questions:
        if q.study_id not in split_of:
            raise DataError(f"{where}: question {q.id} is about study {q.study_id}, which the source dataset does not "
                            "have; questions are written only for the source's studies")
        if split_of[q.study_id] != q.split:
            raise DataError(f"{where}: question {q.id} is in split {q.split} but its study {q.study_id} is in split "
                            f"{split_of[q.study_id]} of the source dataset; questions follow their study's split, so "
                            "fix the split or leave the question out")


def claim_vqa_dir(out_dir: Path, source: dict[str, Any], *, force: bool) -> bool:
    """Check ``out_dir`` for ``mrg prepare vqa``; True when it already holds these questions (nothing to do).

    Raises:
        OutputDirError: it is a file, holds other files, or questions from another source (without ``force``).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"--out {out_dir}: exists and is not a directory; choose another --out")
    stamp = out_dir / VQA_STAMP_NAME
    if stamp.is_file():
        previous = read_json(stamp).get("source")
        if previous == source and not force:
            return True
        if previous != source and not force:
            raise OutputDirError(f"--out {out_dir}: holds questions from another source ({previous}); choose another "
                                 "--out, or pass --force to replace them")
        stamp.unlink()
    elif out_dir.is_dir() and any(p.name != QUESTIONS_NAME for p in out_dir.iterdir()):
        raise OutputDirError(f"--out {out_dir}: directory is not empty and was not made by 'mrg prepare vqa'; "
                             "choose an empty or new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return False


def write_questions(out_dir: Path, questions: Sequence[Question], *, source: dict[str, Any], images_root: Path,
                    skipped: dict[str, int] | None = None) -> dict[str, Any]:
    """Write ``questions.jsonl``, then the ``vqa.json`` stamp (last); returns the stamp."""
    write_jsonl_atomic(out_dir / QUESTIONS_NAME, (asdict(q) for q in questions))
    counts = Counter(q.split for q in questions)
    by_type: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for q in questions:
        by_type[q.split][q.question_type] = by_type[q.split].get(q.question_type, 0) + 1
    record = {
        "source": source,
        "images_root": str(Path(images_root).resolve()),
        "counts": {split: counts.get(split, 0) for split in SPLITS},
        "types": by_type,
        "closed": sum(q.closed for q in questions),
        "skipped": skipped or {},
        "provenance": provenance(),
    }
    write_json_atomic(out_dir / VQA_STAMP_NAME, record)
    return record


# -------------------------------------------------------------------------------------------- reading


@dataclass
class VQASet:
    """A folder written by ``mrg prepare vqa``."""

    root: Path
    info: dict[str, Any]
    questions: list[Question]

    @property
    def images_root(self) -> Path:
        return Path(self.info["images_root"])

    def split(self, name: str) -> list[Question]:
        if name not in SPLITS:
            raise DataError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        return [q for q in self.questions if q.split == name]


def load_vqa_set(root: str | Path) -> VQASet:
    """Load a ``mrg prepare vqa`` folder.

    Raises:
        DataError: the folder, its stamp or a question's fields are missing.
    """
    root = Path(root)
    if not (root / VQA_STAMP_NAME).is_file():
        raise DataError(f"{root}: no {VQA_STAMP_NAME}; create the questions with 'mrg prepare vqa --from DATA --out {root}'")
    info = read_json(root / VQA_STAMP_NAME)
    known = set(Question.__dataclass_fields__)
    questions = []
    for lineno, row in enumerate(read_jsonl(root / QUESTIONS_NAME), start=1):
        missing = {"id", "study_id", "split", "image_paths", "question", "answer", "question_type", "closed"} - set(row)
        if missing:
            raise DataError(f"{root / QUESTIONS_NAME}:{lineno}: missing keys {sorted(missing)}")
        questions.append(Question(**{k: v for k, v in row.items() if k in known} | {"source": row.get("source", "")}))
    return VQASet(root, info, questions)


class VQADataset(Dataset):
    """Questions of one split as ``{"id", "pixel_values" (V, C, H, W), "question", "answer"}`` items.

    ``answer`` (left out with ``answers=False``) is the normalised truth (``normalize_answer``), the training target; the collate step puts the
    question after the prompt and trains on the answer only (``mrg.data.dataset.ReportCollator``).
    """

    def __init__(self, questions: Sequence[Question], images_root: Path, *, image_size: int, max_views: int,
                 augment: bool = False, answers: bool = True, image_mean: Sequence[float] = IMAGENET_MEAN,
                 image_std: Sequence[float] = IMAGENET_STD, num_channels: int = 3) -> None:
        self.questions = list(questions)
        self.answers = answers
        """False: items without ``answer``, so the collate step lays out questions for answering."""
        self.root = Path(images_root)
        self.max_views = max_views
        self.transform = ImageTransform(image_size, image_mean=image_mean, image_std=image_std,
                                        num_channels=num_channels, augment=augment)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        q = self.questions[index]
        views = [self.transform(load_image(self.root / rel)) for rel in q.image_paths[: self.max_views]]
        item = {"id": q.id, "pixel_values": torch.stack(views), "question": q.question}
        return item | {"answer": normalize_answer(q.answer)} if self.answers else item


class TaskMixture(Dataset):
    """Several tasks' datasets as one training set, each task's items repeated or subsampled by its weight.

    Per epoch, task ``t`` contributes ``round(weight_t * len(dataset_t))`` items: weight 1 each item once, 2 each
    twice, 0.5 a seeded half. The trainer shuffles the whole, so batches mix the tasks.
    """

    def __init__(self, datasets: dict[str, Dataset], weights: dict[str, float], *, seed: int = 0) -> None:
        self.datasets = datasets
        self.index: list[tuple[str, int]] = []
        rng = random.Random(seed)
        for task, dataset in datasets.items():
            size = len(dataset)  # type: ignore[arg-type]
            wanted = round(weights[task] * size)
            whole, rest = divmod(wanted, size) if size else (0, 0)
            picks = list(range(size)) * whole + sorted(rng.sample(range(size), rest))
            self.index += [(task, i) for i in picks]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def normalize(self) -> str | None:
        """The cleaning mode of the report task's targets (None without a report task), as ``ReportDataset``'s."""
        return getattr(self.datasets.get("report"), "normalize", None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        task, item = self.index[index]
        return self.datasets[task][item]
