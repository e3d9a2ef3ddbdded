"""normalize_report reproduces R2Gen's cleaners, quirks included (../shared/research/data.md section 3)."""

from __future__ import annotations

import pytest

from mrg.data.text import normalize_report

IU_CASES = [
    ("1. No acute disease. 2. Stable cardiomegaly.", "no acute disease . stable cardiomegaly ."),
    (
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
        "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear .",
    ),
    # ".." collapses; "and/or" loses the slash without a space; the hyphen is kept; XXXX lower-cased
    ("Heart size normal.. No x-XXXX and/or effusion.", "heart size normal . no x-xxxx andor effusion ."),
    # "1. " is deleted everywhere, even inside "11. "; 6 and above survive as sentences
    ("Stable. 11. ok. 6. six", "stable . 1ok . 6 . six ."),
    # ". 3. " and " 4. " become sentence breaks
    ("A. 3. B 4. C", "a . b . c ."),
    # the character-class range ':-[' removes '<', '=', '>', '@'; digits, '#', '$', '|' stay
    ("size <5 = ok @ 3 cm #2 $ |", "size 5  ok  3 cm #2 $ | ."),
    # empty sentences are kept (R2Gen's filter never drops anything)
    ("Clear. . Normal.", "clear .  . normal ."),
    # brackets, parentheses, colons and quotes
    ('Lungs: clear (mild) [sic] "quoted" it\'s', "lungs clear mild sic quoted its ."),
    ("", " ."),
]

MIMIC_CASES = [
    (
        " FINAL REPORT\n EXAMINATION: ___\n\n FINDINGS: No pleural effusion..  1. A __ b",
        "final report examination  findings no pleural effusion . a  b .",
    ),
    ("Line one\nline two.  2. Next", "line one line two . next ."),
    ("Dots.... end", "dots . end ."),
]


@pytest.mark.parametrize(("raw", "clean"), IU_CASES)
def test_r2gen_iu(raw: str, clean: str) -> None:
    assert normalize_report(raw, "r2gen-iu") == clean


@pytest.mark.parametrize(("raw", "clean"), MIMIC_CASES)
def test_r2gen_mimic(raw: str, clean: str) -> None:
    assert normalize_report(raw, "r2gen-mimic") == clean


def test_none_keeps_text() -> None:
    text = "Heart: Normal.\n1. ok"
    assert normalize_report(text, "none") == text
    assert normalize_report(None, "none") == ""


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="r2gen-iu"):
        normalize_report("x", "r2gen")
