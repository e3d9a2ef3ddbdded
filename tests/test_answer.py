"""The ``vqa`` training task and ``mrg answer``: question in the prompt, loss on the answer, batched answering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrg.config import load_config
from mrg.data.dataset import ReportCollator, question_tensors, task_tensors
from mrg.errors import ConfigError
from tests import training_fixtures
from tests.builders import build_model

model_cache = training_fixtures.model_cache


@pytest.fixture(scope="module")
def vqa_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 60-study synthetic dataset (64 px, one view) and its derived questions."""
    from mrg.data.sources.synthetic import prepare_synthetic
    from mrg.data.vqa_import import prepare_vqa

    root = tmp_path_factory.mktemp("vqa")
    prepare_synthetic(root / "data", n=60, seed=0, image_size=64, views=1, split=(0.6, 0.2, 0.2), normal_fraction=0.35,
                      difficulty="easy", force=False, workers=1, progress=None)
    prepare_vqa(root / "vqa", data=root / "data")
    return root / "data", root / "vqa"


def _cfg(data: Path, vqa: Path, *extra: str):
    return load_config("tiny", training_fixtures.tiny_overrides(data, f"data.vqa_root={vqa}", "data.max_views=1",
                                                                *extra))


@pytest.fixture(scope="module")
def tiny_model(vqa_data, model_cache):
    return build_model(_cfg(*vqa_data))


def test_task_tensors_train_on_the_answer_and_eos_only(tiny_model) -> None:
    tok = tiny_model.tokenizer
    items = [{"id": "q", "question": "Is there edema?", "answer": "no"}, {"id": "r", "report": "the heart is normal ."}]
    out = task_tensors(tok, items, 40, [None, None])
    answer = tok(["no"], add_special_tokens=False)["input_ids"][0]
    report = tok(["the heart is normal ."], add_special_tokens=False)["input_ids"][0]
    assert out["target_mask"][0].sum() == len(answer) + 1 and out["target_mask"][1].sum() == len(report) + 1
    assert out["num_target_tokens"] == len(answer) + len(report) + 2
    question_len = int(out["report_mask"][0].sum()) - len(answer) - 1
    assert not out["target_mask"][0, :question_len].any()  # the question is input, never a target
    assert out["report_ids"][0, question_len:question_len + len(answer)].tolist() == answer


def test_the_loss_ignores_the_question_tokens(tiny_model) -> None:
    tok = tiny_model.tokenizer
    items = [{"id": "q", "pixel_values": torch.zeros(1, 3, 64, 64), "question": "Is there edema?", "answer": "no"}]
    batch = ReportCollator(tok, 40)(items)
    visual, mask = tiny_model.visual_tokens(batch)
    prompt = tiny_model.promptbook(visual, mask)
    _, _, labels, _ = tiny_model.assemble(visual, mask, prompt, batch["report_ids"], batch["report_mask"],
                                          target_mask=batch["target_mask"])
    assert int((labels != -100).sum()) == batch["num_target_tokens"]
    loss = tiny_model(batch).loss
    assert torch.isfinite(loss)


def test_batched_answers_equal_one_at_a_time(tiny_model) -> None:
    gen = load_config("tiny", ["generate.strategy=greedy", "generate.num_beams=1", "generate.min_new_tokens=1",
                               "generate.max_new_tokens=4"]).generate
    torch.manual_seed(0)
    pixels = torch.rand(3, 1, 3, 64, 64)
    questions = ["Is there edema?", "Which side is the pleural effusion on?", "Is this chest x-ray normal?"]

    def run(rows: list[int]) -> list[str]:
        batch = {"pixel_values": pixels[rows], "view_mask": torch.ones(len(rows), 1, dtype=torch.bool),
                 **question_tensors(tiny_model.tokenizer, [questions[r] for r in rows])}
        return tiny_model.generate(batch, gen)

    tiny_model.eval()
    assert run([0, 1, 2]) == [run([i])[0] for i in range(3)]


def test_vqa_only_training_must_turn_report_validation_off(vqa_data) -> None:
    with pytest.raises(ConfigError, match="train.val_every=-1"):
        _cfg(*vqa_data, "data.tasks={vqa: 1}", "train.val_every=0")
    assert _cfg(*vqa_data, "data.tasks={vqa: 1}").data.tasks == {"vqa": 1.0}


def test_mixed_training_then_mrg_answer_scores_beside_the_baselines(tmp_path: Path, vqa_data, run_cli) -> None:
    from mrg.recipes.train import train

    data, vqa = vqa_data
    run = tmp_path / "run"
    result = train(_cfg(data, vqa, "data.tasks={report: 1, vqa: 0.5}", "train.max_steps=2"), run)
    assert result.last.step == 2
    out = tmp_path / "answers.jsonl"
    cli = run_cli("answer", "--checkpoint", run, "--data", vqa, "--split", "test", "--out", out, "--bootstrap", "50",
                  "generate.batch_size=7")
    assert cli.exit_code == 0, cli.stdout + cli.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [json.loads(line) for line in (vqa / "questions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [q["id"] for q in expected if q["split"] == "test"]
    assert all(isinstance(r["prediction"], str) and "answer" in r for r in rows)
    scores = json.loads(out.with_name(out.name + ".metrics.json").read_text())
    assert "presence" in scores["types"] and "majority" in scores["baselines"]
    assert "majority" in cli.stdout and "Closed acc" in cli.stdout
    one = run_cli("answer", "--checkpoint", run, "--image", data / rows[0]["image_paths"][0], "--question",
                  "Is there edema?", "--out", tmp_path / "one.jsonl")
    assert one.exit_code == 0 and "Is there edema? ->" in one.stdout
    bad = run_cli("answer", "--checkpoint", run, "--split", "test", "--out", tmp_path / "x.jsonl")
    assert bad.exit_code == 1 and "--data" in bad.stdout + bad.stderr


def test_data_tasks_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["data.tasks={vqa: 0, rep: 1}"])
    message = str(err.value)
    assert "'data.tasks' names 'rep', which is not a task" in message
    assert "'data.tasks.vqa' must be a positive weight" in message
    assert "'data.tasks' has vqa but 'data.vqa_root' is empty" in message


def test_trrg_trains_on_questions_and_answers_them(tmp_path: Path, vqa_data, run_cli) -> None:
    """The vqa task is the method's, not MRG-LLM's: TRRG's fine-tuning mixes it in and `mrg answer` reads its run."""
    from mrg.recipes.train import train

    data, vqa = vqa_data
    run = tmp_path / "trrg"
    cfg = load_config("trrg-tiny", training_fixtures.tiny_overrides(
        data, f"data.vqa_root={vqa}", "data.max_views=1", "data.tasks={report: 1, vqa: 1}", "train.max_steps=2",
        "stages.pretrain.train.max_steps=1"))
    train(cfg, run)
    out = tmp_path / "answers.jsonl"
    cli = run_cli("answer", "--checkpoint", run, "--data", vqa, "--split", "test", "--out", out, "--bootstrap", "20")
    assert cli.exit_code == 0, cli.stdout + cli.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(isinstance(r["prediction"], str) for r in rows)
    assert "majority" in json.loads(out.with_name(out.name + ".metrics.json").read_text())["baselines"]
