"""METEOR: identical to pycocoevalcap's wrapper, sanitised input, warm JVM, watchdog, clear errors."""

from __future__ import annotations

import os
import random
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from mrg.errors import MetricError
from mrg.metrics.meteor import MeteorScorer, aggregable, meteor_from_stats, sanitize


def coco_meteor_score(coco, predictions: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    return coco.compute_score(gts, res)


@pytest.mark.java
def test_identical_to_pycocoevalcap(meteor_scorer, coco_meteor, corpus_rng: random.Random, report_maker) -> None:
    preds = [report_maker(corpus_rng) for _ in range(150)]
    refs = [[report_maker(corpus_rng) for _ in range(1 + (i % 7 == 0))] for i in range(150)]
    preds[0] = ""
    preds[1] = "Heart: normal; lungs -- clear!!! (no effusion) ..."
    refs[1] = ["heart normal . lungs clear . no effusion ."]
    preds[2] = "the µ-lesion — ½ cm , naïve café ."
    preds[3] = "double  spaced   words  "
    ours = meteor_scorer.score(preds, refs)
    assert len(meteor_scorer.pids) == 2  # the 150 items were split between two JVMs
    theirs, theirs_items = coco_meteor_score(coco_meteor, preds, refs)
    assert ours.score == theirs
    assert ours.item_scores.tolist() == list(theirs_items)
    assert ours.item_scores[0] == 0.0


@pytest.mark.java
def test_newlines_and_separators_are_sanitised_on_both_sides(meteor_scorer, coco_meteor) -> None:
    preds = ["the heart is normal .\nthe lungs are clear .", "no effusion ||| no pneumothorax", "mild\r\ncardiomegaly"]
    refs = [["the heart size is normal .\n\nlungs clear ."], ["no pleural effusion |||or pneumothorax"], ["mild cardiomegaly"]]
    ours = meteor_scorer.score(preds, refs)
    clean_preds = [sanitize(p) for p in preds]
    clean_refs = [[sanitize(r) for r in rs] for rs in refs]
    assert "\n" not in clean_refs[0][0] and "|||" not in clean_refs[1][0]
    theirs, _ = coco_meteor_score(coco_meteor, clean_preds, clean_refs)
    assert ours.score == theirs


@pytest.mark.java
def test_r2gen_protocol_equals_pycocoevalcap_on_already_clean_text(meteor_scorer, coco_meteor,
                                                                     corpus_rng: random.Random, report_maker) -> None:
    from mrg.config import EvalConfig
    from mrg.evaluate import prepare_texts, score_texts

    # report_maker's texts are R2Gen-clean (lower-case, " . " between sentences); some generations are empty
    preds = ["" if i % 4 == 0 else report_maker(corpus_rng) for i in range(60)]
    refs = [[report_maker(corpus_rng)] for _ in range(60)]
    prepared = prepare_texts(preds, refs, "r2gen", "r2gen-iu", None)
    assert prepared.predictions == preds and prepared.references == refs
    ours = score_texts(prepared, EvalConfig(clinical=False), meteor_scorer)
    theirs, theirs_items = coco_meteor_score(coco_meteor, preds, refs)
    assert ours.metrics["meteor"] == pytest.approx(theirs, abs=1e-6)
    assert ours.items["meteor"] == pytest.approx(list(theirs_items), abs=1e-6)
    assert all(ours.items["meteor"][i] == 0.0 for i in range(0, 60, 4))


@pytest.mark.java
def test_python_aggregation_equals_the_jar(meteor_scorer, corpus_rng: random.Random, report_maker) -> None:
    preds = [report_maker(corpus_rng) for _ in range(120)]
    refs = [[report_maker(corpus_rng)] for _ in range(120)]
    preds[5] = refs[5][0]  # a perfect match: its chunk is not pooled
    preds[6] = ""
    result = meteor_scorer.score(preds, refs)
    np.testing.assert_allclose(meteor_from_stats(result.stats), result.item_scores, rtol=0, atol=1e-12)
    assert meteor_from_stats(aggregable(result.stats).sum(axis=0)) == pytest.approx(result.score, abs=1e-12)
    # a resample scored through the jar equals the numpy aggregation of its statistics
    draw = np.random.default_rng(3).integers(0, 120, size=40)
    resampled = meteor_scorer.score([preds[i] for i in draw], [refs[i] for i in draw])
    weights = np.bincount(draw, minlength=120).astype(float)
    assert meteor_from_stats(weights @ aggregable(result.stats)) == pytest.approx(resampled.score, abs=1e-12)


@pytest.mark.java
def test_a_killed_jvm_is_restarted_and_the_call_still_answers(meteor_scorer, corpus_rng, report_maker) -> None:
    preds = [report_maker(corpus_rng, 5) for _ in range(1500)]
    refs = [[report_maker(corpus_rng, 5)] for _ in range(1500)]
    meteor_scorer.score(["warm"], [["warm"]])  # make sure the JVM is loaded, so the kill lands mid-call
    restarts = meteor_scorer.restarts
    others = meteor_scorer.pids[1:]
    future = meteor_scorer.submit(preds, refs)
    time.sleep(0.3)
    assert not future.done()
    os.kill(meteor_scorer.pid, signal.SIGKILL)
    result = future.result(timeout=240)
    assert meteor_scorer.restarts == restarts + 1
    assert set(others) <= set(meteor_scorer.pids)  # the healthy JVMs were kept warm
    assert len(result.item_scores) == 1500
    assert meteor_from_stats(aggregable(result.stats).sum(axis=0)) == pytest.approx(result.score, abs=1e-12)
    uninterrupted = meteor_scorer.score(preds, refs)  # never a wrong score: the retried call equals a clean one
    assert result.score == uninterrupted.score
    assert result.item_scores.tolist() == uninterrupted.item_scores.tolist()


def _fake_java(folder: Path, body: str) -> None:
    script = folder / "java"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_a_stuck_jvm_is_killed_by_the_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path, "exec /bin/sleep 600")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    scorer = MeteorScorer(timeout=0.5, retries=1)
    started = time.monotonic()
    future = scorer.submit(["a b"], [["a b"]])
    with pytest.raises(MetricError, match=r"failed 2 times: did not finish loading within 0\.5 s"):
        future.result(timeout=30)
    assert time.monotonic() - started < 20
    assert scorer.restarts == 1
    assert scorer.pid is None  # nothing left running


def test_a_jvm_that_cannot_start_reports_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path, "echo 'Error: Could not reserve enough space for object heap' >&2; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with MeteorScorer(timeout=10) as scorer, pytest.raises(MetricError) as info:
        scorer.score(["a"], [["a"]])
    message = str(info.value)
    assert "exited (code 1)" in message and "Could not reserve enough space" in message
    assert "\n" not in message


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MetricError, match="install a Java runtime, e.g. 'apt-get install default-jre-headless'.*--no-meteor"):
        MeteorScorer().score(["a"], [["a"]])


def test_sanitize() -> None:
    assert sanitize(" a\n\nb\t c ||| d|||e \r\n") == "a b c de"
    assert sanitize("||||||") == ""
    assert "|||" not in sanitize("|" * 7 + "x" + "|" * 5)


def test_empty_input_needs_no_jvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = MeteorScorer().score([], [])
    assert result.score == 0.0 and result.stats.shape == (0, 23)


def test_numpy_aggregation_of_a_hand_computed_segment() -> None:
    # "lungs are clear" against "the lungs are clear ." -- statistics as the jar returns them
    stats = np.array([3, 5, 1, 3, 2, 2, 1, 1] + [0] * 12 + [1, 3, 3], dtype=float)
    p = (2 * 0.75 + 1 * 0.25) / (0.75 * 2 + 0.25 * 1)
    r = (2 * 0.75 + 1 * 0.25) / (0.75 * 2 + 0.25 * 3)
    f_mean = 1 / (0.15 / p + 0.85 / r)
    expected = f_mean * (1 - 0.6 * (1 / 3) ** 0.2)
    assert meteor_from_stats(stats) == pytest.approx(expected, abs=1e-12)
    assert meteor_from_stats(stats) == pytest.approx(0.41706729202379667, abs=1e-12)


def test_a_jvm_that_dies_mid_call_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_executable: str) -> None:
    # A stand-in for the jar that speaks its protocol; its first launch dies after answering one line.
    fake = tmp_path / "fake_meteor.py"
    fake.write_text(
        "import sys, pathlib\n"
        f"marker = pathlib.Path({str(tmp_path / 'launched')!r})\n"
        "first = not marker.exists()\n"
        "marker.touch()\n"
        "answered = 0\n"
        "for line in sys.stdin:\n"
        "    if line.startswith('SCORE'):\n"
        "        print(' '.join(['1.0'] * 23), flush=True)\n"
        "        answered += 1\n"
        "        if first and answered == 1:\n"
        "            sys.exit(3)\n"
        "    elif line.startswith('EVAL'):\n"
        "        n = line.count('|||')\n"
        "        print('\\n'.join(['0.5'] * n), flush=True)\n"
        "        print('0.25', flush=True)\n"
    )
    _fake_java(tmp_path, f'exec {python_executable} {fake} "$@"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with MeteorScorer(timeout=20, jvms=1) as scorer:
        result = scorer.submit(["a", "b", "c"], [["a"], ["b"], ["c"]]).result(timeout=60)
        assert scorer.restarts == 1
    assert result.score == 0.25 and result.item_scores.tolist() == [0.5, 0.5, 0.5]


def test_a_jvm_slow_to_load_does_not_hold_the_call_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         python_executable: str) -> None:
    # Two stand-ins for the jar: whichever starts first answers; the other never finishes "loading".
    fake = tmp_path / "fake_meteor.py"
    fake.write_text(
        "import os, sys, time\n"
        "try:\n"
        f"    os.close(os.open({str(tmp_path / 'fast')!r}, os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:\n"
        "    time.sleep(600)\n"
        "for line in sys.stdin:\n"
        "    if line.startswith('SCORE'):\n"
        "        print(' '.join(['1.0'] * 23), flush=True)\n"
        "    elif line.startswith('EVAL'):\n"
        "        print('\\n'.join(['0.5'] * line.count('|||')), flush=True)\n"
        "        print('0.25', flush=True)\n"
    )
    _fake_java(tmp_path, f'exec {python_executable} {fake} "$@"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with MeteorScorer(timeout=60, jvms=2, parallel_from=100) as scorer:
        started = time.monotonic()
        result = scorer.submit(["a"] * 200, [["a"]] * 200).result(timeout=60)
        assert time.monotonic() - started < 20
        assert result.score == 0.25 and len(result.item_scores) == 200
        assert scorer.restarts == 0 and len(scorer.pids) == 2


def test_the_second_jvm_starts_only_for_a_large_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      python_executable: str) -> None:
    fake = tmp_path / "fake_meteor.py"
    fake.write_text(
        "import sys\n"
        "for line in sys.stdin:\n"
        "    if line.startswith('SCORE'):\n"
        "        print(' '.join(['1.0'] * 23), flush=True)\n"
        "    elif line.startswith('EVAL'):\n"
        "        print('\\n'.join(['0.5'] * line.count('|||')), flush=True)\n"
        "        print('0.25', flush=True)\n"
    )
    _fake_java(tmp_path, f'exec {python_executable} {fake} "$@"')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with MeteorScorer(timeout=30, jvms=2, parallel_from=50) as scorer:
        scorer.start()
        assert len(scorer.pids) == 1
        scorer.score(["a"] * 10, [["a"]] * 10)
        first = scorer.pids
        assert len(first) == 1
        assert len(scorer.score(["a"] * 60, [["a"]] * 60).item_scores) == 60
        assert len(scorer.pids) == 2 and scorer.pids[0] == first[0]
        scorer.score(["a"] * 10, [["a"]] * 10)
        assert len(scorer.pids) == 2  # started JVMs stay warm
