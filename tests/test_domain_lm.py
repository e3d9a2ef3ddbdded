"""mrg train-lm: a small causal LM that follows the report model's layout and uses its context."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from mrg.config import LMConfig
from mrg.data.prepared import Study, prepare_output_dir, write_prepared_dataset
from mrg.domain_lm import CONTEXT_TAGS, build_sequences, context_tags, train_report_lm
from mrg.errors import DataError, OutputDirError

REPORTS = {
    "normal": "The heart is normal in size. The lungs are clear. No pleural effusion.",
    "cardio": "The heart is enlarged. The lungs are clear. No pleural effusion.",
    "effusion": "The heart is normal in size. Small left pleural effusion.",
}
TINY = LMConfig(steps=60, hidden_size=32, intermediate_size=64, num_heads=2, batch_size=16, vocab_size=300, lr=1e-2)


def make_dataset(root: Path, n: int = 200, seed: int = 0) -> Path:
    prepare_output_dir(root, {"kind": "lm-test"}, force=False)
    rng = random.Random(seed)
    studies = []
    for i in range(n):
        rel = f"images/s{i}/0.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(root / rel)
        report = REPORTS[rng.choice(list(REPORTS))]
        studies.append(Study(id=f"s{i}", split="train" if i < n * 0.8 else "test", report=report, image_paths=[rel]))
    write_prepared_dataset(root, studies, source={"kind": "lm-test"}, protocol={}, normalize="r2gen-iu")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("lm")
    data = make_dataset(base / "data")
    return data, train_report_lm(data, base / "lm", TINY)


def test_context_tags() -> None:
    assert context_tags({"Cardiomegaly": 1.0, "Pleural Effusion": -1.0, "Edema": 0.0}) == [
        "<Cardiomegaly>",
        "<Pleural_Effusion?>",
    ]
    assert "<No_Finding>" in CONTEXT_TAGS


def test_output_loads_as_a_hub_model_and_uses_context(trained) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, result = trained
    record = result.record
    model = AutoModelForCausalLM.from_pretrained(result.out_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token
    assert all(tokenizer.convert_tokens_to_ids(t) != tokenizer.unk_token_id for t in CONTEXT_TAGS)
    assert model.config.vocab_size == len(tokenizer)
    assert record["final_train_loss"] < record["loss_curve"][0]
    # the whole point: reports are more predictable with the findings in front of them
    assert record["heldout_loss_with_context"] < record["heldout_loss_without_context"]
    assert (result.out_dir / "lm.json").is_file()
    assert result.out_dir.stat().st_mode & 0o055, "the LM folder must not be private to its creator"


def test_sequences_put_context_at_the_image_slot(trained) -> None:
    from transformers import AutoTokenizer

    from mrg.model.llm import build_template

    _, result = trained
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    template = build_template(tokenizer, instruction=TINY.instruction, chat_template="r2gengpt", position="after-image",
                              has_prompt=True, model_name="x")
    seqs = build_sequences(tokenizer, template, ["the heart is enlarged ."], [["<Cardiomegaly>"]], 60)
    text = tokenizer.decode(seqs.inputs[0])
    assert text.startswith("<s>Human: <Img><Cardiomegaly></Img> Generate")
    assert text.endswith("Assistant:the heart is enlarged .</s>")
    target = [t for t in seqs.labels[0] if t != -100]
    assert tokenizer.decode(target) == "the heart is enlarged .</s>"


def test_report_model_builds_on_the_trained_lm(trained) -> None:
    from mrg.config import load_config
    from tests.builders import build_model, with_tokens

    data, result = trained
    cfg = load_config("tiny", [f"data.root={data}", f"model.llm.name_or_path={result.out_dir}"])
    model = build_model(cfg)
    batch = {
        "pixel_values": torch.zeros(2, 1, 3, 64, 64),
        "view_mask": torch.ones(2, 1, dtype=torch.bool),
        "reports": ["the heart is enlarged .", "the lungs are clear ."],
    }
    out = model(with_tokens(model, batch))
    assert torch.isfinite(out.loss)


def test_rerun_skips_and_foreign_folder_is_refused(trained, tmp_path: Path) -> None:
    data, result = trained
    again = train_report_lm(data, result.out_dir, TINY)
    assert again.skipped
    with pytest.raises(OutputDirError, match="other data or settings"):
        train_report_lm(data, result.out_dir, LMConfig(steps=5))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(OutputDirError, match="not empty"):
        train_report_lm(data, foreign, TINY)


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        train_report_lm(tmp_path / "nope", tmp_path / "lm", TINY)


def test_cli_bad_override(run_cli, tmp_path: Path) -> None:
    result = run_cli("train-lm", "--data", tmp_path, "--out", tmp_path / "lm", "stepz=3")
    assert result.exit_code == 1
    assert "Did you mean 'steps'" in result.stderr


def test_training_questions_join_the_lm_in_the_vqa_layout(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mrg.data.vqa import Question, write_questions
    from mrg.domain_lm import qa_sequences
    from mrg.model.llm import build_template

    data = make_dataset(tmp_path / "data", n=60)
    questions = [Question(f"q{i}", f"s{i}", "train", [], "Is there a pleural effusion?", "Yes" if i % 2 else "No",
                          "presence", True, "derived") for i in range(40)]
    write_questions(tmp_path / "vqa", questions, source={"kind": "t"}, images_root=data)
    with pytest.raises(DataError, match="none of its training questions"):
        other = tmp_path / "other"
        write_questions(other, [Question("x", "nope", "train", [], "q?", "no", "presence", True, "d")],
                        source={"kind": "t"}, images_root=data)
        train_report_lm(data, tmp_path / "bad", LMConfig(steps=2, vqa_root=str(other)))
    result = train_report_lm(data, tmp_path / "lm", LMConfig(**{**TINY.__dict__, "vqa_root": str(tmp_path / "vqa")}))
    tokenizer = AutoTokenizer.from_pretrained(result.out_dir)
    template = build_template(tokenizer, instruction=TINY.instruction, chat_template="r2gengpt", position="after-image",
                              has_prompt=True, model_name="x")
    seqs = qa_sequences(tokenizer, template, [("Is there a pleural effusion?", "yes")], [["<Cardiomegaly>"]])
    text = tokenizer.decode(seqs.inputs[0])
    assert text.startswith("<s>Human: <Img><Cardiomegaly></Img>")
    assert text.endswith("Assistant:Question: Is there a pleural effusion? Answer:yes</s>")
    assert tokenizer.decode([t for t in seqs.labels[0] if t != -100]) == "yes</s>"  # loss on the answer only
