"""Sentences of reports as contrastive positives, and an HF text encoder that embeds them (TRRG ``pretrain``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mrg.errors import ConfigError, DataError

NEGATED_CHOICES = ("keep", "drop", "prompt")
"""How a sentence whose every finding is negated ("no effusion.") is used.

``keep``: a positive like any other; ``drop``: left out (a statement of absence says little about what the
image shows); ``prompt``: replaced by the label prompts "no X" of the classes it negates."""


def report_sentences(report: str) -> list[str]:
    """The sentences of a report (the CheXpert labeler's cleaning and sentence splitter)."""
    from mrg.metrics.labeler import clean_report, split_sentences

    clean = clean_report(report)
    return [clean[a:b].strip() for a, b in split_sentences(clean)]


def label_prompt(name: str, positive: bool) -> str:
    """The prompt of a CheXpert class: "there is X." or "no X." (lower-case)."""
    return f"there is {name.lower()}." if positive else f"no {name.lower()}."


def positives_of(report: str, *, negated: str = "keep") -> list[str]:
    """The positive sentences of one report under the ``negated`` policy (``NEGATED_CHOICES``).

    Raises:
        ConfigError: an unknown policy.
    """
    if negated not in NEGATED_CHOICES:
        raise ConfigError(f"method.negated_sentences {negated!r}: choose one of {', '.join(NEGATED_CHOICES)}")
    from mrg.metrics.labeler import NEGATIVE, NO_FINDING, label_report

    out: list[str] = []
    for sentence in report_sentences(report):
        labels = {k: v for k, v in label_report(sentence).items() if k != NO_FINDING and v is not None}
        all_negated = bool(labels) and all(v == NEGATIVE for v in labels.values())
        if not all_negated or negated == "keep":
            out.append(sentence)
        elif negated == "prompt":
            out.extend(label_prompt(name, False) for name in labels)
    return out


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")


def _require_tokenizer_files(name_or_path: str, path: str) -> None:
    """Refuse a local folder without tokenizer files (transformers 5 would build an empty tokenizer silently)."""
    from pathlib import Path

    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"model.text_encoder.name_or_path {name_or_path}: the folder has no tokenizer "
                          f"({' or '.join(TOKENIZER_FILES[:2])}); save the tokenizer next to the model")


class TextEncoder(nn.Module):
    """A Hugging Face encoder (BERT-like) and its tokenizer; mean-pooled token states per sentence."""

    def __init__(self, name_or_path: str, *, max_length: int = 64) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from mrg.model.random_models import resolve_model_path

        path = resolve_model_path(name_or_path)
        _require_tokenizer_files(name_or_path, path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"model.text_encoder.name_or_path {name_or_path}: no tokenizer could be loaded "
                              f"({str(err).splitlines()[0]}); point it at a folder with tokenizer files") from None
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report lists the pooler, which is dropped below
        try:
            self.model = AutoModel.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(level)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # sentences are mean-pooled: a pooler would be weights without gradient
        self.max_length = max_length

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """(T, hidden) mean-pooled features of ``sentences``.

        Raises:
            DataError: no sentences at all (reports with no sentence cannot be contrasted).
        """
        if not sentences:
            raise DataError("reports: the batch holds no sentences; check that the reports are not empty")
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(device)
        hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (T, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (T, hidden)
