"""GREEN: the prompt, the answer clean-up and parser on hand-written answers, and a tiny random Llama end to end."""

from __future__ import annotations

import importlib.util

import pytest

from mrg.metrics.model_based import FAMILIES, ModelMetricOptions, green
from tests.metrics.model_based.texts import PREDICTIONS, REFERENCES

ANSWER = """
[Explanation]:
The candidate reports an effusion that the reference does not mention and misses the atelectasis.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 1. Left pleural effusion.
(b) Missing a finding present in the reference: 2. Atelectasis; edema.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 4. Wording.
(b) Missing a finding present in the reference: 0.

[Matched Findings]:
3. Cardiomegaly; no pneumothorax; lines in place.
"""


def test_prompt_holds_both_reports_cut_to_300_words() -> None:
    long = " ".join(f"w{i}" for i in range(400))
    prompt = green.make_prompt("reference  text\nhere", long)
    assert "2. Reference Report:\n    reference text here\n\n    3. Candidate Report:\n    w0 w1 " in prompt
    assert "w299\n\n    4. Reporting Your Assessment:" in prompt and "w300" not in prompt
    assert prompt.startswith("Objective: Evaluate the accuracy of a candidate radiology report")
    assert prompt.endswith("<The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n    ```\n")


def test_parser_on_a_well_formed_answer() -> None:
    total, counts = green.parse_error_counts(ANSWER, "Clinically Significant Errors")
    assert (total, counts) == (3, [1, 2, 0, 0, 0, 0])
    assert green.parse_error_counts(ANSWER, "Clinically Insignificant Errors") == (4, [4, 0, 0, 0, 0, 0])
    assert green.parse_error_counts(ANSWER, "Matched Findings") == (3, [0] * 6)
    assert green.green_of(ANSWER) == pytest.approx(3 / (3 + 3))
    assert green.error_counts(ANSWER) == [1, 2, 0, 0, 0, 0, 3]


def test_parser_variants_and_fallbacks() -> None:
    numbered = "[Clinically Significant Errors]:\n(1) False report: 2.\n(3) Location: 1.\n\n[Matched Findings]:\n1. Heart."
    assert green.parse_error_counts(numbered, "Clinically Significant Errors") == (3, [2, 0, 1, 0, 0, 0])
    assert green.green_of(numbered) == pytest.approx(1 / 4)
    none = "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\n2. Heart; lungs."
    assert green.green_of(none) == 1.0
    assert green.green_of("[Clinically Significant Errors]:\n(a) x: 1.\n\n[Matched Findings]:\n0. None.") == 0.0
    assert green.green_of("[Matched Findings]:\nNone matched") == 0.0  # no number: matched 0 -> 0
    assert green.green_of("lorem ipsum ]] [") == 0.0  # junk: the package's fallback is 0
    # a later line of the same letter wins; the count needs ": N."
    repeated = "[Clinically Significant Errors]:\n(a) x: 1.\n(a) y: 5.\n(b) z: two.\n\n[Matched Findings]:\n5. a."
    assert green.parse_error_counts(repeated, "Clinically Significant Errors") == (5, [5, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="is not one of"):
        green.parse_error_counts(ANSWER, "Errors")


def test_clean_response_keeps_the_answer_after_the_last_assistant_tag() -> None:
    prompt = green.make_prompt("a", "b")
    decoded = f"<|user|>\n{prompt}\n<|assistant|>\n\n<|assistant|>\n{ANSWER}</s><unk>"
    cleaned = green.clean_response(decoded)
    assert "Objective:" not in cleaned and "</s>" not in cleaned and "<unk>" not in cleaned
    assert green.green_of(cleaned) == pytest.approx(0.5)
    assert green.clean_up_spaces("3 . a , b ? it 's") == "3. a, b? it's"


def _short(llama_dir, extra: int = 6) -> int:
    """A generation limit a few tokens past the longest prompt of PREDICTIONS/REFERENCES (tests stay fast)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
    tokenizer.chat_template = green.CHAT_TEMPLATE
    longest = max(len(tokenizer.apply_chat_template(
        [{"from": "human", "value": green.make_prompt(r, p)}, {"from": "gpt", "value": ""}],
        tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        for p, r in zip(PREDICTIONS, REFERENCES, strict=True))
    return longest + extra


def test_tiny_llama_runs_deterministically_and_junk_scores_zero(llama_dir, cache_dir, monkeypatch) -> None:
    monkeypatch.setattr(green, "MAX_LENGTH", _short(llama_dir))
    preds, refs = PREDICTIONS[:4], REFERENCES[:4]
    scorer = green.GreenScorer(ModelMetricOptions(str(llama_dir), "cpu", 3, cache_dir))
    answers = scorer.answers(preds, refs)
    assert len(answers) == 4 and all(isinstance(a, str) and a.strip() for a in answers)
    assert all("Objective:" not in a for a in answers)  # only the generated part is kept
    again = green.GreenScorer(ModelMetricOptions(str(llama_dir), "cpu", 3, "")).answers(preds, refs)
    assert again == answers  # greedy: the same junk twice, without the cache
    result = FAMILIES["green"].score(preds, refs, ModelMetricOptions(str(llama_dir), "cpu", 3, cache_dir))
    assert result.items["green"] == [green.green_of(a) for a in answers] == [0.0] * 4
    assert result.info["pairs_computed"] == 0 and result.info["pairs_cached"] == 4
    assert "GPU is recommended" in result.info["note"] and FAMILIES["green"].gpu_recommended


@pytest.mark.skipif(importlib.util.find_spec("green_score") is None, reason="green-score is not installed (Python ==3.12.1)")
def test_parser_equals_the_green_score_package() -> None:
    from green_score.green import GREEN
    from green_score.utils import clean_responses, make_prompt

    judge = GREEN(model_name=None, cpu=True)
    answers = [ANSWER, "[Clinically Significant Errors]:\n(2) Missing: 2.\n\n[Matched Findings]:\n4. a; b.",
               "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\n2. Heart.", "junk ]] ["]
    for answer in answers:
        assert judge.compute_green(answer) == green.green_of(answer)
        assert judge.compute_error_count(answer) == green.error_counts(answer)
        decoded = f"<|user|>\n{make_prompt('a', 'b')}</s>\n<|assistant|>\n</s>\n<|assistant|>\n{answer}</s>"
        assert clean_responses(decoded) == green.clean_response(decoded)
    assert make_prompt("a b", "c") == green.make_prompt("a b", "c")
