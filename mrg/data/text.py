"""Report text normalisation: the single cleaner used for training targets and metric references.

``normalize_report(text, "r2gen-iu")`` and ``normalize_report(text, "r2gen-mimic")`` reproduce R2Gen's
``clean_report_iu_xray`` and ``clean_report_mimic_cxr`` exactly, quirks included, because every
published IU X-ray / MIMIC-CXR number was computed on text cleaned that way:

* list numbers: every ``"1. "`` is deleted (also inside "11. "), ``2.``-``5.`` become sentence breaks,
  6 and above survive;
* sentences are split on ``". "`` and joined with ``" . "`` plus a final ``" ."``;
* per sentence, ``" / \\ '`` are deleted without a space ("and/or" -> "andor") and the character class
  ``[.,?;*!%^&_+():-\\[\\]{}]`` is deleted. Its ``:-\\[`` is a *range* (``:`` to ``[``), so ``< = > @`` and
  upper-case letters also go, while the hyphen itself is kept ("x-xxxx" stays);
* empty sentences are kept (R2Gen's filter compares a string with a list), giving runs like ``". ."``.

``"none"`` returns the text unchanged.
"""

from __future__ import annotations

import re
from typing import Literal

NormalizeMode = Literal["r2gen-iu", "r2gen-mimic", "none"]
NORMALIZE_MODES: tuple[str, ...] = ("r2gen-iu", "r2gen-mimic", "none")

# R2Gen's sentence-level character class, kept byte-for-byte (the ':-\[' range is deliberate fidelity).
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _remove_list_numbers(text: str) -> str:
    text = text.replace("1. ", "")
    for n in "2345":
        text = text.replace(f". {n}. ", ". ")
    for n in "2345":
        text = text.replace(f" {n}. ", ". ")
    return text


def _clean_sentence(sentence: str) -> str:
    sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
    return _R2GEN_STRIP.sub("", sentence)


def _join(sentences: list[str]) -> str:
    return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def _repeat_replace(text: str, old: str, new: str, times: int) -> str:
    for _ in range(times):
        text = text.replace(old, new)
    return text


def clean_report_iu_xray(text: str) -> str:
    """R2Gen's IU X-ray cleaning (``clean_report_iu_xray``), quirks included."""
    text = _repeat_replace(text, "..", ".", 3)
    text = _remove_list_numbers(text)
    return _join(text.strip().lower().split(". "))


def clean_report_mimic_cxr(text: str) -> str:
    """R2Gen's MIMIC-CXR cleaning (``clean_report_mimic_cxr``), quirks included."""
    text = text.replace("\n", " ")
    text = _repeat_replace(text, "__", "_", 7)
    text = _repeat_replace(text, "  ", " ", 6)
    text = _repeat_replace(text, "..", ".", 8)
    text = _remove_list_numbers(text)
    return _join(text.strip().lower().split(". "))


def normalize_report(text: str | None, mode: str = "r2gen-iu") -> str:
    """Normalise one report.

    Args:
        text: the raw report (None is treated as empty).
        mode: ``r2gen-iu``, ``r2gen-mimic`` (R2Gen's cleaners, exactly) or ``none`` (unchanged).

    Returns:
        The cleaned text.

    Raises:
        ValueError: for an unknown mode (callers validate user input before this point).
    """
    text = text or ""
    if mode == "r2gen-iu":
        return clean_report_iu_xray(text)
    if mode == "r2gen-mimic":
        return clean_report_mimic_cxr(text)
    if mode == "none":
        return text
    raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {', '.join(NORMALIZE_MODES)}")


R2GEN_CLEANERS: tuple[str, ...] = ("r2gen-iu", "r2gen-mimic")
"""The cleaners of the r2gen evaluation protocol (``eval.normalize`` chooses among them)."""


def resolve_cleaning(setting: str, dataset_mode: str | None, *, cleaner_only: bool = False) -> str:
    """The one place a cleaning setting is resolved: ``data.normalize`` (training targets) and ``eval.normalize``.

    Args:
        setting: ``auto`` or a mode of ``NORMALIZE_MODES``.
        dataset_mode: the mode the prepared dataset recorded (``prepare.json``), if known.
        cleaner_only: the r2gen protocol needs a cleaner, so ``none`` or an unknown dataset falls back to
            ``r2gen-iu`` (R2Gen's own default).
    """
    if setting != "auto":
        return setting
    allowed = R2GEN_CLEANERS if cleaner_only else NORMALIZE_MODES
    if dataset_mode in allowed:
        return dataset_mode  # type: ignore[return-value]
    return "r2gen-iu" if cleaner_only else "none"
