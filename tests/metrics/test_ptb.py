"""The PTB tokenizer: same output as pycocoevalcap's, never writes into site-packages, clear errors."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from mrg.errors import MetricError
from mrg.metrics.java import pycocoevalcap_file
from mrg.metrics.ptb import ptb_tokenize, ptb_tokenize_many

TEXTS = [
    "The Heart, is normal. Lungs: clear!",
    "",
    "   ",
    'µ-lesion — ½ cm "quoted" (x) naïve ... done; ok?',
    "No pneumothorax\nor effusion.",
    "Post-op changes -- stable. 1. first 2. second",
    "it's the patient's heart",
]


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime on PATH")


def _package_listing() -> set[str]:
    folder = pycocoevalcap_file("tokenizer", "stanford-corenlp-3.4.1.jar").parent
    return set(os.listdir(folder))


@needs_java
@pytest.mark.java
def test_identical_to_pycocoevalcap(corpus_rng: random.Random, report_maker) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = TEXTS + [report_maker(corpus_rng) for _ in range(30)]
    theirs = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    before = _package_listing()
    ours = ptb_tokenize(texts)
    assert _package_listing() == before
    assert ours == [theirs[i][0] for i in range(len(texts))]
    assert ours[0] == "the heart is normal lungs clear"
    assert ours[1] == ""


@needs_java
@pytest.mark.java
def test_carriage_returns_do_not_shift_captions() -> None:
    prepared, references = ptb_tokenize_many(["first\rline", "second\u2028line", "third"], ["a !", "b", "c"])
    assert prepared == ["first line", "second line", "third"]
    assert references == ["a", "b", "c"]


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MetricError, match="PTB tokenizer.*install a Java runtime"):
        ptb_tokenize(["a"])


def test_empty_input() -> None:
    assert ptb_tokenize([]) == []
