"""The VQA section of ``mrg report``: scores per type beside the baselines, examples with image and truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mrg.data.vqa import Question, write_questions
from mrg.metrics.vqa import evaluate_answers
from mrg.viewer import build_report


def test_answers_folder_gets_a_vqa_section_with_examples(tmp_path: Path) -> None:
    images = tmp_path / "data"
    (images / "images").mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 120, dtype=np.uint8), mode="L").save(images / "images" / "a.png")
    questions = [Question(f"q{i}", "s1", split, ["images/a.png"], "Is there <edema>?", answer, "presence", True, "derived",
                          "Edema") for i, (split, answer) in enumerate([("train", "no"), ("train", "no"), ("test", "yes"),
                                                                         ("test", "no")])]
    vqa = tmp_path / "vqa"
    vqa.mkdir()
    write_questions(vqa, questions, source={"kind": "test"}, images_root=images)
    out = tmp_path / "answers"
    out.mkdir()
    answers = out / "test_answers.jsonl"
    rows = [{"id": q.id, "study_id": q.study_id, "question": q.question, "prediction": "yes", "image_paths": q.image_paths,
             "answer": q.answer, "question_type": q.question_type, "closed": True, "subject": q.subject}
            for q in questions if q.split == "test"]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    answers.with_name(answers.name + ".meta.json").write_text(json.dumps({"input": {"data": str(vqa)}}), encoding="utf-8")
    evaluate_answers(answers, vqa, resamples=20)
    result = build_report([out], tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert result.answers == 1 and 'id="vqa-1"' in page and "Visual question answering" in page
    assert "Is there &lt;edema&gt;?" in page and "<edema>" not in page  # escaped
    assert page.count("data:image/jpeg;base64") == 2  # both examples show their image
    assert "<td>50.0" in page  # the model: 1 of 2 right; the majority baseline ("no" from training) also 50.0
    assert 'class="ok"' in page and 'class="wrong"' in page
