"""GREEN (Ostmeier et al. 2024, arXiv 2405.03595): an LLM judge counts matched findings and clinically significant errors.

A re-implementation of the ``green-score`` package 0.0.12 (``GREEN(model_name).__call__(refs, hyps)``; the
package requires Python ==3.12.1 and pulls datasets, sentence-transformers and sklearn for its summary):

1. prompt: ``utils.make_prompt(reference, candidate)``, both texts cut to their first 300 white-space
   words, verbatim (:func:`make_prompt`);
2. chat: the package's chat template (``<|user|>\\n{prompt}</s>\\n<|assistant|>\\n</s>\\n<|assistant|>\\n``
   with the tokenizer's eos), the tokenizer loaded with ``add_eos_token=True``, left padding, pad = eos;
   batches truncated to 2048 tokens;
3. generation: greedy (``do_sample=False``), ``max_length=2048`` tokens in all (prompt included), stop at
   eos; the whole sequence is decoded with ``skip_special_tokens=True`` and cleaned by
   ``utils.clean_responses`` (:func:`clean_response`: the text after the last ``<|assistant|>``, without
   ``</s>`` and ``<unk>``);
4. parsing (``GREEN.parse_error_counts``, :func:`parse_error_counts`): the text after
   ``[Clinically Significant Errors]:`` up to the next blank line; lines ``(a) ...: N.`` to ``(f)``
   (or ``(1)`` to ``(6)``) give the six counts (a later line of the same letter wins); a section starting
   with "No" or absent counts 0; ``[Matched Findings]:`` gives the number that starts its section;
5. GREEN = matched / (matched + sum of the six significant errors), **0 when matched is 0** (also when the
   output cannot be parsed: a junk answer scores 0); the corpus number is the mean over pairs.

Deviations: weights load with ``trust_remote_code=False`` (the package allows remote code); float16 on
CUDA as the package, but float32 on CPU (float16 matmuls on CPU are slow or missing); one process (the
package's multi-GPU ``torch.distributed`` split is not reproduced). The summary statistics (k-means of
error sentences) are not computed.

GPU recommended: the default judge is a 7B Llama-2; on CPU it takes minutes per report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mrg.metrics.model_based.base import (
    CachedRunner,
    FamilyResult,
    HubFile,
    MetricInfo,
    ModelMetricOptions,
    TextCache,
    cache_root_for,
    check_batch_size,
    check_pairs,
    implementation_info,
    mean,
    resolve_device,
    weights_sha256,
)
from mrg.metrics.model_based.encoders import load_model, load_tokenizer, model_files, model_folder

OPTION = "eval.weights.green"
DEFAULT_WEIGHTS = HubFile("StanfordAIMI/GREEN-radllama2-7b")
MAX_LENGTH = 2048
"""Tokens of prompt + answer (the package's ``max_length`` for truncation and generation)."""
MAX_WORDS = 300
"""White-space words kept of each report in the prompt."""

CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['from'] == 'human' %}\n{{ '<|user|>\n' + message['value'] + "
    "eos_token }}\n{% elif message['from'] == 'system' %}\n{{ '<|system|>\n' + message['value'] + eos_token }}\n"
    "{% elif message['from'] == 'gpt' %}\n{{ '<|assistant|>\n'  + message['value'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
CATEGORIES = ("Clinically Significant Errors", "Clinically Insignificant Errors", "Matched Findings")
SUB_CATEGORIES = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("green", "GREEN", True,
               "GREEN (green-score 0.0.12): matched / (matched + significant errors) by an LLM judge, mean (ReXrank)"),
)

_PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology report composed by expert radiologists.\n"
    "\n    Process Overview: You will be presented with:\n\n    1. The criteria for making a judgment.\n"
    "    2. The reference radiology report.\n    3. The candidate radiology report.\n"
    "    4. The desired format for your assessment.\n\n    1. Criteria for Judgment:\n\n"
    "    For each candidate report, determine:\n\n    The count of clinically significant errors.\n"
    "    The count of clinically insignificant errors.\n\n"
    "    Errors can fall into one of these categories:\n\n"
    "    a) False report of a finding in the candidate.\n"
    "    b) Missing a finding present in the reference.\n"
    "    c) Misidentification of a finding's anatomic location/position.\n"
    "    d) Misassessment of the severity of a finding.\n"
    "    e) Mentioning a comparison that isn't in the reference.\n"
    "    f) Omitting a comparison detailing a change from a prior study.\n"
    "    Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only the findings that appear in both reports.\n"
    "\n    2. Reference Report:\n    {reference}\n\n    3. Candidate Report:\n    {candidate}\n\n"
    "    4. Reporting Your Assessment:\n\n"
    "    Follow this specific format for your output, even if no errors are found:\n    ```\n"
    "    [Explanation]:\n    <Explanation>\n\n    [Clinically Significant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n"
    "    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
    "    [Clinically Insignificant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n"
    "    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
    "    [Matched Findings]:\n"
    "    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n    ```\n"
)


def make_prompt(reference: str, candidate: str, max_words: int = MAX_WORDS) -> str:
    """``green_score.utils.make_prompt``: the judge's instructions with both reports (first 300 words each)."""
    reference = " ".join(reference.split()[:max_words])
    candidate = " ".join(candidate.split()[:max_words])
    return _PROMPT.format(reference=reference, candidate=candidate)


def clean_up_spaces(text: str) -> str:
    """transformers 4's ``clean_up_tokenization`` (``decode(..., clean_up_tokenization_spaces=True)``)."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


def clean_response(response: str) -> str:
    """``green_score.utils.clean_responses`` on a decoded prompt + answer."""
    if "[Explanation]:" in response:
        if "<|assistant|>" in response:
            response = response.split("<|assistant|>")[-1]
        # The package tests `("a" or "b") in response`, i.e. only the first form.
        if "[Explanation]:\n    <Explanation>\n" in response:
            response = response.split("[Explanation]:")[1]
        else:
            response = response.split("[Explanation]:")[-1]
    if "<|assistant|>" in response:
        response = response.split("<|assistant|>")[-1]
    return response.replace("</s>", "").replace("<unk>", "")


def parse_error_counts(text: str, category: str) -> tuple[int, list[int]]:
    """``GREEN.parse_error_counts``: (total, six sub-counts) of ``category`` in a cleaned answer.

    For "Matched Findings" the total is the number that starts the section and the sub-counts are 0.
    """
    if category not in CATEGORIES:
        raise ValueError(f"category {category!r} is not one of {', '.join(CATEGORIES)}")
    found = re.search(rf"\[{category}\]:\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    sub_counts = [0] * len(SUB_CATEGORIES)
    if not found or found.group(1).startswith("No"):
        return 0, sub_counts
    section = found.group(1)
    if category == "Matched Findings":
        counts = re.findall(r"^\b\d+\b(?=\.)", section)
        return (int(counts[0]) if counts else 0), sub_counts
    prefixes = [s.split(" ", 1)[0] + " " for s in SUB_CATEGORIES]
    lines = sorted(re.findall(r"\([a-f]\) .*", section))
    if not lines:
        lines = sorted(re.findall(r"\([1-6]\) .*", section))
        prefixes = [f"({i}) " for i in range(1, len(SUB_CATEGORIES) + 1)]
    for position, prefix in enumerate(prefixes):
        for line in lines:
            if line.startswith(prefix):
                count = re.findall(r"(?<=: )\b\d+\b(?=\.)", line)
                if count:
                    sub_counts[position] = int(count[0])
    return sum(sub_counts), sub_counts


def green_of(response: str) -> float:
    """``GREEN.compute_green`` of one cleaned answer: matched / (matched + significant errors); 0 if matched is 0."""
    _, significant = parse_error_counts(response, CATEGORIES[0])
    matched, _ = parse_error_counts(response, CATEGORIES[2])
    if matched == 0:
        return 0.0
    return matched / (matched + sum(significant))


def error_counts(response: str) -> list[int]:
    """``GREEN.compute_error_count``: the six significant-error counts and the matched findings."""
    _, significant = parse_error_counts(response, CATEGORIES[0])
    matched, _ = parse_error_counts(response, CATEGORIES[2])
    return [*significant, matched]


# ------------------------------------------------------------------------------------------------ judge


class GreenJudge:
    """A causal LM and its tokenizer set up as the package does; prompts -> cleaned answers."""

    def __init__(self, folder: Any, device: Any, max_length: int = MAX_LENGTH, option: str = OPTION) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = load_tokenizer(folder, option, add_eos_token=True, use_fast=True, padding_side="left")
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.pad_token = tokenizer.eos_token
        # The package sets clean_up_tokenization_spaces=True; transformers 5 ignores it for BPE tokenizers,
        # so the clean-up of transformers 4 is applied to the decoded text instead (clean_up_spaces).
        tokenizer.clean_up_tokenization_spaces = False
        self.tokenizer = tokenizer
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.model = load_model(folder, option, AutoModelForCausalLM, dtype=self.dtype).to(device)
        self.device, self.max_length, self._torch = device, max_length, torch

    def __call__(self, prompts: list[str]) -> list[str]:
        torch = self._torch
        chats = [self.tokenizer.apply_chat_template([{"from": "human", "value": p}, {"from": "gpt", "value": ""}],
                                                    tokenize=False, add_generation_prompt=True) for p in prompts]
        enc = self.tokenizer(chats, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        with torch.inference_mode():
            outputs = self.model.generate(  # (batch, max_length or less): prompt + answer
                input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device),
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                max_length=self.max_length, do_sample=False, temperature=None, top_p=None)
        decoded = self.tokenizer.batch_decode(outputs.cpu(), skip_special_tokens=True)
        return [clean_response(clean_up_spaces(text)) for text in decoded]


class GreenScorer:
    """The judge, loaded on first use, with answers cached per (weights, prompt)."""

    def __init__(self, options: ModelMetricOptions, max_length: int | None = None) -> None:
        max_length = MAX_LENGTH if max_length is None else max_length
        self.folder, self.named = model_folder(OPTION, options.weights, DEFAULT_WEIGHTS, "the GREEN judge model")
        root = cache_root_for(options)
        self.sha = weights_sha256(model_files(self.folder), root)
        self.device = resolve_device(options.device)
        self.max_length = max_length
        self._judge: GreenJudge | None = None
        dtype = "float16" if self.device.type == "cuda" else "float32"
        self.runner = CachedRunner(TextCache(root, "green", "answers", self.sha,
                                             variant=f"greedy|max_length={max_length}|{dtype}"),
                                   self._answer, check_batch_size(options.batch_size))

    def _answer(self, prompts: list[str]) -> list[Any]:
        if self._judge is None:
            self._judge = GreenJudge(self.folder, self.device, self.max_length)
        return self._judge(prompts)

    def answers(self, predictions: Sequence[str], references: Sequence[str]) -> list[str]:
        """The judge's cleaned answer per (prediction, reference) pair."""
        return self.runner.run([make_prompt(r, p) for p, r in zip(predictions, references, strict=True)])

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "weights": self.named,
            "weights_sha256": self.sha,
            "implementation": implementation_info("green-score", f"0.0.12 (greedy, max_length {self.max_length})"),
            "device": str(self.device),
            "pairs_computed": self.runner.computed,
            "pairs_cached": self.runner.cached,
        }
        if self.device.type == "cpu":
            info["note"] = "GREEN ran on CPU; a GPU is recommended (eval.device=cuda)"
        return info


def score(predictions: list[str], references: list[str], options: ModelMetricOptions) -> FamilyResult:
    """GREEN per pair and its mean."""
    check_pairs("green", predictions, references)
    return score_with(GreenScorer(options), predictions, references)


def score_with(scorer: GreenScorer, predictions: list[str], references: list[str]) -> FamilyResult:
    per_item = [green_of(answer) for answer in scorer.answers(predictions, references)]
    return FamilyResult({"green": mean(per_item)}, {"green": per_item}, scorer.info())
