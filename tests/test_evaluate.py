"""``mrg.evaluate``: input formats, joining, protocols, outputs, statistics and the trainer's scorer."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from mrg.config import EvalConfig
from mrg.data.text import normalize_report
from mrg.errors import ConfigError, DataError, MetricError
from mrg.evaluate import load_eval_set, make_scorer, prepare_texts, run_evaluation

SENTENCES = [
    "The heart size is normal.", "The lungs are clear.", "No pleural effusion or pneumothorax.",
    "There is mild cardiomegaly.", "Small left pleural effusion.", "No focal consolidation.",
    "Degenerative changes of the spine.", "Low lung volumes with bibasilar atelectasis.",
]
NO_METEOR = EvalConfig(meteor=False)
NLG_SCORES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime")


def _reports(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, rng.randint(1, 4))) for _ in range(n)]


def write_jsonl(path: Path, ids: list[str], preds: list[str], refs: list[str] | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for index, item_id in enumerate(ids):
            row = {"id": item_id, "prediction": preds[index]}
            if refs is not None:
                row["reference"] = refs[index]
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, list[str], list[str], list[str]]:
    ids = [f"study{i}" for i in range(40)]
    preds, refs = _reports(1, 40), _reports(2, 40)
    return write_jsonl(tmp_path / "preds.jsonl", ids, preds, refs), ids, preds, refs


def coco(preds: list[str], refs: list[str]) -> dict[str, float]:
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{k + 1}": bleu[k] for k in range(4)}
    out["rouge_l"] = Rouge().compute_score(gts, res)[0]
    out["cider"] = Cider().compute_score(gts, res)[0]
    return out


def r2gen_clean(text: str) -> str:
    return " ".join(normalize_report(text, "r2gen-iu").split())


# ----------------------------------------------------------------------------------------- end to end


def test_r2gen_protocol_equals_pycocoevalcap_on_cleaned_text(tmp_path: Path, pair) -> None:
    path, ids, preds, refs = pair
    report = run_evaluation(path, tmp_path / "out", NO_METEOR)
    expected = coco([r2gen_clean(p) for p in preds], [r2gen_clean(r) for r in refs])
    for key, value in expected.items():
        assert report.record[key] == pytest.approx(value, abs=1e-9), key
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"bleu_1", "bleu_4", "rouge_l", "cider", "ce_precision", "ce_recall", "ce_f1"} <= set(record)
    assert "meteor" not in record
    protocol = record["protocol"]
    assert protocol["name"] == "r2gen" and protocol["normalize_mode"] == "r2gen-iu"
    assert protocol["num_items"] == 40 and protocol["labeler"]["name"] == "mrg-chexpert-rules"
    assert any("not truncated" in note for note in protocol["deviations"])
    assert record["provenance"]["packages"]["pycocoevalcap"]
    with open(tmp_path / "out" / "per_sample.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ids
    assert rows[0]["prediction"] == r2gen_clean(preds[0])
    assert {"bleu_4", "rouge_l", "cider", "ce_tp", "pred_Cardiomegaly", "ref_Cardiomegaly"} <= set(rows[0])
    assert np.mean([float(row["rouge_l"]) for row in rows]) == pytest.approx(record["rouge_l"], abs=1e-12)
    markdown = (tmp_path / "out" / "metrics.md").read_text()
    assert "| Pleural Effusion |" in markdown and "Where this differs from R2Gen" in markdown


def test_raw_protocol_scores_texts_as_given(tmp_path: Path, pair) -> None:
    path, _, preds, refs = pair
    report = run_evaluation(path, tmp_path / "out", dataclasses.replace(NO_METEOR, protocol="raw", clinical=False))
    for key, value in coco(preds, refs).items():
        assert report.record[key] == pytest.approx(value, abs=1e-9), key
    assert not any(k.startswith("ce") for k in report.record)


@java
@pytest.mark.java
def test_coco_protocol_equals_pycocoevalcap_with_ptb(tmp_path: Path, pair) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    path, _, preds, refs = pair
    report = run_evaluation(path, tmp_path / "out", dataclasses.replace(NO_METEOR, protocol="coco", clinical=False))
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    expected = coco([res[i][0] for i in range(40)], [gts[i][0] for i in range(40)])
    for key, value in expected.items():
        assert report.record[key] == pytest.approx(value, abs=1e-9), key
    assert "PTB" in report.record["protocol"]["tokenization"]
    assert any("not comparable with R2Gen" in note for note in report.record["protocol"]["deviations"])


@java
@pytest.mark.java
def test_meteor_runs_beside_the_python_metrics_and_handles_newlines(tmp_path: Path) -> None:
    from mrg.metrics.meteor import get_meteor

    ids = ["a", "b", "c", "d"]
    preds = ["the heart is normal .\nthe lungs are clear", "no effusion ||| no pneumothorax", "", "mild cardiomegaly ."]
    refs = ["the heart size is normal .\n\nlungs clear .", "no pleural effusion |||or pneumothorax", "lungs clear .",
            "mild cardiomegaly ."]
    path = write_jsonl(tmp_path / "p.jsonl", ids, preds, refs)
    cfg = dataclasses.replace(EvalConfig(), protocol="raw")
    report = run_evaluation(path, tmp_path / "out", cfg)
    expected = get_meteor().score(preds, [[r] for r in refs])
    assert report.record["meteor"] == expected.score
    assert report.scores.items["meteor"] == expected.item_scores.tolist()
    assert report.scores.items["meteor"][2] == 0.0  # the empty prediction scores 0
    assert report.record["protocol"]["empty_predictions"] == 1
    assert any("newlines or '|||'" in note for note in report.record["protocol"]["deviations"])


# ------------------------------------------------------------------------------------------ formats


def test_r2gengpt_and_r2gen_files_give_the_same_scores(tmp_path: Path, pair) -> None:
    path, ids, preds, refs = pair
    base = run_evaluation(path, tmp_path / "jsonl", NO_METEOR).record
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "test_result.json").write_text(json.dumps({i: [p] for i, p in zip(ids, preds, strict=True)}))
    (gpt / "test_refs.json").write_text(json.dumps({i: [r] for i, r in zip(ids, refs, strict=True)}))
    from_gpt = run_evaluation(gpt / "test_result.json", tmp_path / "o1", NO_METEOR).record  # refs found beside it
    assert from_gpt["inputs"]["predictions_format"] == "r2gengpt-json"
    r2gen = tmp_path / "r2gen"
    r2gen.mkdir()
    for name, texts in (("res.csv", preds), ("gts.csv", refs)):
        with open(r2gen / name, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([[t] for t in texts])
    from_csv = run_evaluation(r2gen / "res.csv", tmp_path / "o2", NO_METEOR).record
    assert from_csv["inputs"]["references_format"] == "r2gen-csv"
    for key in ("bleu_4", "rouge_l", "cider", "ce_f1"):
        assert from_gpt[key] == base[key] and from_csv[key] == base[key]


def test_references_from_a_prepared_dataset(tmp_path: Path) -> None:
    from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset

    reports = _reports(5, 12)
    studies = [Study(id=f"s{i}", split="test" if i >= 4 else "train", report=r, image_paths=[])
               for i, r in enumerate(reports)]
    root = tmp_path / "ds"
    prepare_output_dir(root, {"kind": "unit"}, force=False)
    write_prepared_dataset(root, studies, source={"kind": "unit"}, protocol={}, normalize="r2gen-mimic", check_images=False)
    preds = _reports(6, 8)
    path = write_jsonl(tmp_path / "p.jsonl", [f"s{i}" for i in range(4, 12)], preds)
    record = run_evaluation(path, tmp_path / "out", NO_METEOR, data=root, split="test").record
    assert record["protocol"]["normalize_mode"] == "r2gen-mimic"
    assert record["inputs"]["data"] == str(root) and record["inputs"]["split"] == "test"  # mrg report reads these
    clean = [" ".join(normalize_report(t, "r2gen-mimic").split()) for t in (preds, reports[4:])[0]]
    refs = [" ".join(normalize_report(t, "r2gen-mimic").split()) for t in reports[4:]]
    assert record["bleu_4"] == pytest.approx(coco(clean, refs)["bleu_4"], abs=1e-9)
    with pytest.raises(DataError, match=r"4 references have no prediction .*'s0', 's1', 's2', 's3'"):
        load_eval_set(path, data=root, split="train")


def test_ref_max_tokens_truncates_and_is_recorded(tmp_path: Path, pair) -> None:
    path, *_ = pair
    cfg = dataclasses.replace(NO_METEOR, ref_max_tokens=5, clinical=False)
    record = run_evaluation(path, tmp_path / "out", cfg).record
    assert record["protocol"]["ref_max_tokens"] == 5 and record["protocol"]["truncated_references"] > 0
    assert any("truncated to their first 5 words" in note for note in record["protocol"]["deviations"])
    with open(tmp_path / "out" / "per_sample.csv", encoding="utf-8") as handle:
        assert all(len(row["reference"].split()) <= 5 for row in csv.DictReader(handle))


# ---------------------------------------------------------------------------------------- bad input


def _expect_data_error(tmp_path: Path, content: bytes | str, match: str, name: str = "p.jsonl", **kwargs) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=match):
        run_evaluation(path, tmp_path / "out", NO_METEOR, **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_id(tmp_path: Path) -> None:
    _expect_data_error(tmp_path, '{"id": "a", "prediction": "x", "reference": "y"}\n{"prediction": "x", "reference": "y"}\n',
                       r"p\.jsonl:2: missing or empty 'id'")


def test_duplicate_id(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"id": i, "prediction": "x", "reference": "y"}) + "\n" for i in ["a", "b", "a"])
    _expect_data_error(tmp_path, lines, r"p\.jsonl:3: duplicate id 'a' \(first on line 1\)")


def test_ids_on_one_side_only(tmp_path: Path) -> None:
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": f"r{i}", "reference": "y"}) + "\n" for i in range(10)))
    preds = "".join(json.dumps({"id": f"r{i}" if i < 3 else f"x{i}", "prediction": "y"}) + "\n" for i in range(10))
    _expect_data_error(tmp_path, preds, r"7 of 10 predictions have no reference in .*refs\.jsonl \('x3', 'x4', 'x5', "
                       r"'x6', 'x7', \.\.\.\); 7 references have no prediction", references=refs)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    _expect_data_error(tmp_path, b'{"id": "a", "prediction": "x", "reference": "y"}\n{"id": "b", "prediction": "caf\xe9"}\n',
                       r"p\.jsonl:2: not UTF-8 text \(byte 0xe9")
    _expect_data_error(tmp_path, b"heart ok\nlungs caf\xe9\n", r"res\.csv:2: not UTF-8", name="res.csv",
                       references=tmp_path / "p.jsonl")


def test_invalid_json_and_missing_reference(tmp_path: Path) -> None:
    _expect_data_error(tmp_path, '{"id": "a", "prediction": "x"\n', r"p\.jsonl:1: invalid JSON")
    _expect_data_error(tmp_path, '{"id": "a", "prediction": "x", "reference": "y"}\n{"id": "b", "prediction": "x"}\n',
                       r"p\.jsonl:2: id 'b' has no 'reference'")
    _expect_data_error(tmp_path, '{"id": "a", "prediction": null, "reference": "y"}\n', r"'prediction' must be a string")
    _expect_data_error(tmp_path, '{"id": "a", "prediction": "x", "reference": "  "}\n', r"reference of id 'a' is empty")


def test_empty_predictions_score_zero_with_a_warning(tmp_path: Path, pair, capsys) -> None:
    path, ids, preds, refs = pair
    preds = ["" if i % 4 == 0 else p for i, p in enumerate(preds)]
    write_jsonl(path, ids, preds, refs)
    report = run_evaluation(path, tmp_path / "out", dataclasses.replace(NO_METEOR, protocol="raw"))
    assert "10 of 40 predictions are empty" in capsys.readouterr().err
    assert report.record["protocol"]["empty_predictions"] == 10
    assert report.scores.items["bleu_4"][0] == pytest.approx(0.0, abs=1e-6)
    assert report.scores.items["rouge_l"][0] == 0.0 and report.scores.items["cider"][0] == 0.0


# -------------------------------------------------------------------------------- empty predictions

EMPTY_LIKE = ["", " ", "   ", "\n", "\t \r\n "]
RAW_SENTENCES = [
    "The heart size is normal.", "Lungs: clear, no effusion!", "1. No pneumothorax. 2. Stable mediastinum.",
    "Mild cardiomegaly (unchanged) ; x-XXXX noted.", "No focal consolidation... ", "Degenerative changes/spine.",
    "Small LEFT pleural effusion? Likely.", "Low lung volumes [bibasilar] atelectasis.", "T12 compression - old.",
]


@pytest.mark.parametrize("protocol", ["r2gen", "raw", pytest.param("coco", marks=[java, pytest.mark.java])])
def test_empty_and_whitespace_predictions_score_as_empty_under_every_protocol(tmp_path: Path, protocol: str) -> None:
    ids = [f"s{i}" for i in range(16)]
    refs = _reports(3, 16)
    preds = EMPTY_LIKE + _reports(4, 16)[len(EMPTY_LIKE):]
    cfg = dataclasses.replace(NO_METEOR, protocol=protocol, clinical=False)
    prepared = prepare_texts(preds, [[r] for r in refs], protocol, "r2gen-iu", None)
    assert prepared.predictions[: len(EMPTY_LIKE)] == [""] * len(EMPTY_LIKE)
    report = run_evaluation(write_jsonl(tmp_path / "p.jsonl", ids, preds, refs), tmp_path / "out", cfg)
    assert report.record["protocol"]["empty_predictions"] == len(EMPTY_LIKE)
    for index in range(len(EMPTY_LIKE)):
        for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
            assert report.scores.items[key][index] == pytest.approx(0.0, abs=1e-12), (key, index)
    # whitespace-only scores exactly like "", and the corpus is what pycocoevalcap gives with "" predictions
    as_empty = ["" if not p.strip() else p for p in preds]
    empty_run = run_evaluation(write_jsonl(tmp_path / "e.jsonl", ids, as_empty, refs), tmp_path / "out2", cfg)
    assert {k: report.record[k] for k in NLG_SCORES} == {k: empty_run.record[k] for k in NLG_SCORES}
    expected = coco(prepared.predictions, [rs[0] for rs in prepared.references])
    for key, value in expected.items():
        assert report.record[key] == pytest.approx(value, abs=1e-9), key
    all_empty = run_evaluation(write_jsonl(tmp_path / "a.jsonl", ids, [""] * 16, refs), tmp_path / "out3", cfg)
    assert all(all_empty.record[key] == pytest.approx(0.0, abs=1e-12) for key in NLG_SCORES)


def test_the_r2gen_cleaner_alone_would_score_an_empty_prediction() -> None:
    # what the fix avoids: the cleaner makes " ." of "", and that "." matches the reference's full stops
    assert normalize_report("", "r2gen-iu").split() == ["."]
    reference = r2gen_clean("The heart is normal. The lungs are clear.")
    assert coco(["."], [reference])["rouge_l"] > 0.1
    prepared = prepare_texts(["", " "], [[reference], [reference]], "r2gen", "r2gen-iu", None)
    assert prepared.predictions == ["", ""]
    assert coco(prepared.predictions, [reference, reference])["rouge_l"] == 0.0


def clean_corpus(seed: int, n: int, empty_every: int) -> tuple[list[str], list[str]]:
    """An already R2Gen-clean corpus: R2Gen-cleaned raw reports, and every ``empty_every``-th prediction empty."""
    rng = random.Random(seed)

    def raw() -> str:
        return " ".join(rng.choice(RAW_SENTENCES) for _ in range(rng.randint(1, 5)))

    refs = [r2gen_clean(raw()) for _ in range(n)]
    preds = ["" if i % empty_every == 0 else r2gen_clean(raw()) for i in range(n)]
    return preds, refs


@pytest.mark.parametrize("seed", range(6))
def test_r2gen_protocol_equals_pycocoevalcap_on_already_clean_text(seed: int) -> None:
    preds, refs = clean_corpus(seed, 30 + 7 * seed, empty_every=3 + seed % 3)
    assert "" in preds
    prepared = prepare_texts(preds, [[r] for r in refs], "r2gen", "r2gen-iu", None)
    assert prepared.predictions == preds and [rs[0] for rs in prepared.references] == refs  # nothing to change
    scorer = make_scorer(dataclasses.replace(NO_METEOR, clinical=False), "r2gen-iu")
    ours = scorer(preds, refs)
    for key, value in coco(preds, refs).items():  # pycocoevalcap called as R2Gen calls it: {i: [text]}
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_java_missing_fails_before_writing(tmp_path: Path, pair, monkeypatch: pytest.MonkeyPatch) -> None:
    import mrg.metrics.meteor as meteor_module

    path, *_ = pair
    monkeypatch.setattr(meteor_module, "_SINGLETON", None)  # a fresh scorer that has to find java
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MetricError, match="install a Java runtime.*--no-meteor"):
        run_evaluation(path, tmp_path / "out", EvalConfig())
    assert not (tmp_path / "out").exists()


def test_invalid_options() -> None:
    with pytest.raises(ConfigError, match="--ref-max-tokens"):
        make_scorer(EvalConfig(ref_max_tokens=0, meteor=False), "r2gen-iu")
    with pytest.raises(ConfigError, match="--bootstrap"):
        make_scorer(EvalConfig(bootstrap=-1, meteor=False), "r2gen-iu")


# ------------------------------------------------------------------------------------- statistics


def test_bootstrap_and_compare(tmp_path: Path, pair) -> None:
    path, ids, preds, refs = pair
    better = write_jsonl(tmp_path / "better.jsonl", ids, [r if i % 2 else p for i, (p, r) in enumerate(zip(preds, refs, strict=True))])
    cfg = dataclasses.replace(NO_METEOR, bootstrap=200, seed=3)
    record = run_evaluation(better, tmp_path / "out", cfg, references=path, compare=path).record
    intervals = record["bootstrap"]["intervals"]
    assert set(intervals) >= {"bleu_4", "rouge_l", "cider", "ce_f1"}
    for key, interval in intervals.items():
        assert interval["low"] <= record[key] + 1e-12 and record[key] <= interval["high"] + 1e-12, key
    compare = record["compare"]
    assert compare["resamples"] == 200
    assert compare["metrics"]["bleu_4"]["delta"] > 0 and compare["metrics"]["bleu_4"]["p_value"] < 0.05
    assert compare["b_metrics"]["bleu_4"] == pytest.approx(record["bleu_4"] - compare["metrics"]["bleu_4"]["delta"])
    assert "## Comparison" in (tmp_path / "out" / "metrics.md").read_text()
    again = run_evaluation(better, tmp_path / "out2", cfg, references=path, compare=path).record
    assert again["bootstrap"]["intervals"] == intervals  # seeded


def test_compare_needs_the_same_ids(tmp_path: Path, pair) -> None:
    path, ids, preds, _ = pair
    other = write_jsonl(tmp_path / "other.jsonl", ids[:-2], preds[:-2])
    with pytest.raises(DataError, match=r"--compare .*other\.jsonl: 2 ids of --predictions are missing"):
        run_evaluation(path, tmp_path / "out", NO_METEOR, compare=other)


# --------------------------------------------------------------------------------------- trainer


def test_make_scorer_matches_run_evaluation(tmp_path: Path, pair) -> None:
    path, _, preds, refs = pair
    scorer = make_scorer(NO_METEOR, "r2gen-iu")
    scores = scorer(preds, refs)
    record = run_evaluation(path, tmp_path / "out", NO_METEOR).record
    for key, value in scores.items():
        assert value == pytest.approx(record[key], abs=1e-12), key
    assert scorer([], []) == {}
    with pytest.raises(MetricError, match="2 predictions but 1 references"):
        scorer(["a", "b"], ["a"])


@java
@pytest.mark.java
def test_make_scorer_keeps_meteor_warm() -> None:
    from mrg.metrics.meteor import get_meteor

    scorer = make_scorer(EvalConfig(clinical=False), "none")
    pid = get_meteor().pid
    assert pid is not None  # started at construction, before the first call
    first = scorer(_reports(8, 20), _reports(9, 20))
    second = scorer(_reports(8, 20), _reports(9, 20))
    assert first == second and "meteor" in first
    assert get_meteor().pid == pid


def test_prepare_texts_r2gen_is_idempotent() -> None:
    once = prepare_texts(["The heart is normal. Lungs: clear."], [["No effusion."]], "r2gen", "r2gen-iu", None)
    twice = prepare_texts(once.predictions, once.references, "r2gen", "r2gen-iu", None)
    assert once.predictions == twice.predictions == ["the heart is normal . lungs clear ."]
    assert once.references == twice.references


@java
def test_make_scorer_starts_no_jvm_on_other_ranks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mrg.metrics.meteor as meteor_module

    monkeypatch.setattr(meteor_module, "_SINGLETON", None)
    monkeypatch.setenv("RANK", "1")
    make_scorer(EvalConfig(), "r2gen-iu")
    assert meteor_module._SINGLETON is not None and meteor_module._SINGLETON.pid is None
    monkeypatch.setenv("PATH", str(tmp_path))  # a missing Java still fails at once, not mid-training
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MetricError, match="needs Java"):
        make_scorer(EvalConfig(), "r2gen-iu")
