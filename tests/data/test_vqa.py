"""``mrg prepare vqa``: questions derived from labels and reports, the public-format importers, split safety."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset
from mrg.data.vqa import QUESTIONS_NAME, TaskMixture, derive_study_questions, load_vqa_set, normalize_answer
from mrg.data.vqa_import import import_questions, prepare_vqa
from mrg.errors import DataError


def _study(sid: str = "s1", split: str = "train", report: str = "", labels: dict | None = None, **extra) -> Study:
    return Study(id=sid, split=split, report=report or "Normal.", image_paths=[f"images/{sid}/0.png"], labels=labels,
                 extra=extra)


def _by_type(questions) -> dict[str, list]:
    out: dict[str, list] = {}
    for q in questions:
        out.setdefault(q.question_type, []).append(q)
    return out


def test_presence_answers_follow_labels_and_uncertain_mentions_are_skipped_by_default() -> None:
    study = _study(report="Large left pleural effusion. Possible pneumothorax. No consolidation.",
                   labels={"Pleural Effusion": 1.0, "Pneumothorax": -1.0, "Consolidation": 0.0})
    presence = {q.subject: q.answer for q in _by_type(derive_study_questions(study))["presence"]}
    assert presence == {"Pleural Effusion": "yes", "Consolidation": "no"}  # hedged pneumothorax left out
    assert all(q.closed for q in _by_type(derive_study_questions(study))["presence"])
    as_yes = {q.subject: q.answer for q in _by_type(derive_study_questions(study, uncertain="yes"))["presence"]}
    assert as_yes["Pneumothorax"] == "yes"
    with pytest.raises(DataError, match="--uncertain"):
        derive_study_questions(study, uncertain="maybe")


def test_side_severity_normal_and_abnormality_come_from_the_report() -> None:
    study = _study(report="Heart size is mildly enlarged. Large left pleural effusion. No pneumothorax.",
                   labels={"Cardiomegaly": 1.0, "Pleural Effusion": 1.0, "Pneumothorax": 0.0})
    types = _by_type(derive_study_questions(study))
    assert [q.answer for q in types["side"]] == ["left"]  # cardiomegaly has no side
    assert {q.subject: q.answer for q in types["severity"]} == {"Cardiomegaly": "mild", "Pleural Effusion": "large"}
    assert [q.answer for q in types["normal"]] == ["no"]
    assert [q.answer for q in types["abnormality"]] == ["cardiomegaly, pleural effusion"]
    assert not types["side"][0].closed
    normal = _by_type(derive_study_questions(_study(labels={"No Finding": 1.0, "Pneumothorax": 0.0})))
    assert [q.answer for q in normal["normal"]] == ["yes"] and [q.answer for q in normal["abnormality"]] == ["none"]


def test_phrasings_vary_between_studies_and_are_seeded() -> None:
    labels = {"Pleural Effusion": 1.0}
    texts = {derive_study_questions(_study(f"s{i}", labels=labels))[0].question for i in range(40)}
    assert len(texts) >= 3
    again = {derive_study_questions(_study(f"s{i}", labels=labels))[0].question for i in range(40)}
    assert texts == again


def _dataset(root: Path, studies: list[Study]) -> Path:
    prepare_output_dir(root, {"kind": "test"}, force=True)
    write_prepared_dataset(root, studies, source={"kind": "test"}, protocol={}, normalize="none", check_images=False)
    return root


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    studies = [_study(f"{split}-{i}", split, "Small right pleural effusion.", {"Pleural Effusion": 1.0, "Edema": 0.0},
                      study_id=f"{100 + n * 10 + i}")
               for n, split in enumerate(("train", "val", "test")) for i in range(3)]
    return _dataset(tmp_path / "data", studies)


def test_prepare_keeps_each_study_split_and_is_idempotent(tmp_path: Path, labelled: Path, run_cli) -> None:
    out = tmp_path / "vqa"
    result = run_cli("prepare", "vqa", "--from", labelled, "--out", out)
    assert result.exit_code == 0, result.stdout
    vqa = load_vqa_set(out)
    assert vqa.images_root == labelled.resolve()
    assert all(q.split == q.study_id.split("-")[0] for q in vqa.questions)
    first = (out / QUESTIONS_NAME).read_bytes()
    again = run_cli("prepare", "vqa", "--from", labelled, "--out", out)
    assert again.exit_code == 0 and "already prepared" in again.stdout
    assert run_cli("prepare", "vqa", "--from", labelled, "--out", out, "--force").exit_code == 0
    assert (out / QUESTIONS_NAME).read_bytes() == first
    other = run_cli("prepare", "vqa", "--from", labelled, "--out", out, "--uncertain", "yes")
    assert other.exit_code == 1 and "another source" in other.stdout + other.stderr


# ------------------------------------------------------------------------------------------ importers


def _write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_vqa_rad_import(tmp_path: Path) -> None:
    rows = [{"qid": 1, "image_name": "synpic1.jpg", "image_organ": "CHEST", "answer": "Yes", "answer_type": "CLOSED",
             "question_type": "PRES", "question": "Is there a pneumothorax?", "phrase_type": "freeform"},
            {"qid": 2, "image_name": "synpic1.jpg", "image_organ": "CHEST", "answer": "right", "answer_type": "OPEN",
             "question_type": "POS, PRES", "question": "Where is it?", "phrase_type": "test_freeform"}]
    questions, _ = import_questions("vqa-rad", _write_json(tmp_path / "rad.json", rows), studies=None, images=tmp_path)
    assert [(q.split, q.closed, q.question_type, q.answer) for q in questions] == [
        ("train", True, "pres", "Yes"), ("test", False, "pos", "right")]
    assert questions[0].image_paths == ["synpic1.jpg"]


def test_slake_import_reads_split_files_and_keeps_english(tmp_path: Path) -> None:
    entry = {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Is the lung healthy?", "answer": "No",
             "q_lang": "en", "location": "Lung", "modality": "X-Ray", "answer_type": "CLOSED", "base_type": "vqa",
             "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": 7}
    folder = tmp_path / "slake"
    folder.mkdir()
    _write_json(folder / "train.json", [entry, entry | {"qid": 8, "q_lang": "zh"}])
    _write_json(folder / "validate.json", [entry | {"qid": 9}])
    questions, _ = import_questions("slake", folder, studies=None, images=tmp_path)
    assert [(q.id, q.split, q.question_type) for q in questions] == [("slake:7", "train", "abnormality"),
                                                                      ("slake:9", "val", "abnormality")]


def _diff_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_mimic_diff_vqa_import_links_studies_and_leaves_out_difference_questions(tmp_path: Path, labelled: Path) -> None:
    rows = [{"study_id": "100", "subject_id": "1", "ref_id": "", "question_type": "presence",
             "question": "is there effusion?", "answer": "yes", "split": "train"},
            {"study_id": "120", "subject_id": "1", "ref_id": "100", "question_type": "difference",
             "question": "what has changed?", "answer": "nothing", "split": "test"}]
    record = prepare_vqa(tmp_path / "out", data=labelled, fmt="mimic-diff-vqa", import_path=_diff_csv(tmp_path / "q.csv", rows))
    assert record["counts"] == {"train": 1, "val": 0, "test": 0} and record["skipped"] == {"difference": 1}
    (question,) = load_vqa_set(tmp_path / "out").questions
    assert question.study_id == "train-0" and question.closed and question.image_paths == ["images/train-0/0.png"]


def test_prepare_refuses_questions_outside_their_study_split_or_the_source(tmp_path: Path, labelled: Path) -> None:
    leak = [{"study_id": "100", "subject_id": "1", "ref_id": "", "question_type": "presence",
             "question": "is there effusion?", "answer": "yes", "split": "test"}]
    with pytest.raises(DataError, match="split test but its study train-0 is in split train"):
        prepare_vqa(tmp_path / "a", data=labelled, fmt="mimic-diff-vqa", import_path=_diff_csv(tmp_path / "a.csv", leak))
    assert not (tmp_path / "a" / QUESTIONS_NAME).exists()
    unknown = [leak[0] | {"study_id": "999", "split": "train"}]
    with pytest.raises(DataError, match="study 999, which the --from dataset does not have"):
        prepare_vqa(tmp_path / "b", data=labelled, fmt="mimic-diff-vqa", import_path=_diff_csv(tmp_path / "b.csv", unknown))


def test_mimic_ext_vqa_import(tmp_path: Path, labelled: Path) -> None:
    entry = {"idx": "q1", "subject_id": "1", "study_id": "110", "image_id": "d1", "image_path": "p1/x.jpg",
             "semantic_type": "query", "content_type": "attribute", "template": "...", "question": "what is seen?",
             "answer": ["effusion", "edema"]}
    folder = tmp_path / "ext"
    folder.mkdir()
    _write_json(folder / "valid.json", [entry, entry | {"idx": "q2", "semantic_type": "verify", "answer": ["yes"]}])
    questions, _ = import_questions("mimic-ext-vqa", folder, studies=load_vqa_studies(labelled), images=None)
    assert [(q.split, q.study_id, q.closed, q.answer) for q in questions] == [
        ("val", "val-0", False, "effusion, edema"), ("val", "val-0", True, "yes")]


def load_vqa_studies(root: Path) -> list[Study]:
    from mrg.data.prepared import load_prepared_dataset

    return load_prepared_dataset(root).studies


@pytest.mark.parametrize(("fmt", "name", "content", "field"), [
    ("vqa-rad", "rad.json", [{"qid": 1, "image_name": "a.jpg", "answer": "yes"}], "question"),
    ("slake", "train.json", [{"qid": 1, "img_name": "a.jpg", "question": "q?", "answer": "a"}], "answer_type"),
    ("mimic-ext-vqa", "test.json", [{"study_id": "100", "question": "q?", "answer": ["a"]}], "semantic_type"),
    ("mimic-diff-vqa", "q.csv", "study_id,question,answer\n100,q?,yes\n", "question_type"),
])
def test_a_wrong_schema_is_a_one_line_error_naming_file_and_field(tmp_path: Path, labelled: Path, run_cli, fmt, name,
                                                                  content, field) -> None:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    result = run_cli("prepare", "vqa", "--format", fmt, "--import", path, "--from", labelled, "--images", tmp_path,
                     "--out", tmp_path / "out")
    message = (result.stdout + result.stderr).strip()
    assert result.exit_code == 1 and "Traceback" not in message
    assert str(path) in message.replace("\n", "") and f"'{field}'" in message
    assert len(message.splitlines()) <= 3  # one line, wrapped by the terminal width at most


def test_normalize_answer_and_task_mixture_weights() -> None:
    assert normalize_answer(" Yes. ") == "yes" and normalize_answer("Left,  Right!") == "left, right"
    mixture = TaskMixture({"report": list(range(10)), "vqa": list(range(100, 104))}, {"report": 0.5, "vqa": 2.0})
    tasks = [task for task, _ in mixture.index]
    assert tasks.count("report") == 5 and tasks.count("vqa") == 8
    assert sorted(mixture[i] for i in range(len(mixture)) if mixture.index[i][0] == "vqa") == [100, 100, 101, 101, 102,
                                                                                               102, 103, 103]
    assert mixture.normalize is None  # its report task (a list here) has no cleaning mode

    class Reports(list):
        normalize = "r2gen-iu"

    assert TaskMixture({"report": Reports(range(4)), "vqa": [1]}, {"report": 1.0, "vqa": 1.0}).normalize == "r2gen-iu"
    assert TaskMixture({"vqa": [1]}, {"vqa": 1.0}).normalize is None
