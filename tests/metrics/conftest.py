"""Fixtures for the metric tests: generated corpora and one warm METEOR JVM per test session.

Helper modules may add their own fixtures at the end of this file; keep each block small.
"""

from __future__ import annotations

import random
import shutil

import pytest

# Radiology-like sentences (R2Gen-cleaned style) that generated corpora are drawn from.
SENTENCES = (
    "the heart size is normal",
    "the lungs are clear",
    "no pleural effusion or pneumothorax",
    "the cardiomediastinal silhouette is within normal limits",
    "there is no focal consolidation",
    "mild degenerative changes of the thoracic spine",
    "no acute osseous abnormality",
    "there is mild cardiomegaly",
    "small left pleural effusion",
    "stable appearance of the chest",
    "low lung volumes with bibasilar atelectasis",
    "no evidence of pulmonary edema",
)
SUBSTITUTES = ("mild", "no", "large", "right", "left", "stable", "new", "unchanged", "the", "is")


def make_report(rng: random.Random, sentences: int | None = None, joiner: str = " . ") -> str:
    """A report of 1-5 sentences, with a few words substituted so predictions differ from references."""
    count = sentences if sentences is not None else rng.randint(1, 5)
    words = joiner.join(rng.choice(SENTENCES) for _ in range(count)).split(" ")
    for _ in range(rng.randint(0, 3)):
        words[rng.randrange(len(words))] = rng.choice(SUBSTITUTES)
    return " ".join(words) + " ."


@pytest.fixture
def corpus_rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def report_maker():
    """``make_report(rng, sentences=None)``: a radiology-like report of 1-5 sentences."""
    return make_report


@pytest.fixture
def corpus(corpus_rng: random.Random, report_maker):
    """``corpus(n, sentences=None) -> (predictions, references)`` with one reference per item."""

    def _corpus(n: int, sentences: int | None = None) -> tuple[list[str], list[str]]:
        refs = [report_maker(corpus_rng, sentences) for _ in range(n)]
        preds = [report_maker(corpus_rng, sentences) for _ in range(n)]
        return preds, refs

    return _corpus


@pytest.fixture(scope="session")
def java_available() -> bool:
    return shutil.which("java") is not None


@pytest.fixture(scope="session")
def meteor_scorer():
    """The process-wide METEOR scorer, started once per test session (the JVM takes about 10 s to load)."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime on PATH")
    from mrg.metrics.meteor import get_meteor

    scorer = get_meteor()
    scorer.jvms = 2  # the parity tests (150+ items) exercise two parallel JVMs, whatever the machine
    scorer.parallel_from = 100
    scorer.start(scorer.parallel_from)
    yield scorer


@pytest.fixture(scope="session")
def coco_meteor():
    """pycocoevalcap's own Meteor, for parity checks (one JVM per test session)."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime on PATH")
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()
