"""MIMIC report sectioning: header rules, name normalisation, last-wins, empty sections, the fallback.

Every report here is invented and written in MIMIC's line format (leading space per line, ``___``).
"""

from __future__ import annotations

import pytest

from mrg.data.sections import (
    extract_sections,
    normalize_section_name,
    primary_section,
    select_report,
    split_sections,
)
from tests.conftest import shared_path

HEAD = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PA AND LAT)\n \n"
    " INDICATION:  ___ year old woman with cough  // ?pneumonia\n \n"
    " TECHNIQUE:  Chest PA and lateral\n \n"
    " COMPARISON:  ___\n \n"
)


def test_standard_report_sections_are_stripped_and_keep_inner_lines() -> None:
    text = HEAD + (
        " FINDINGS: \n \n The heart is normal in size.  No effusion.\n Lungs are clear.\n \n"
        " IMPRESSION: \n \n No acute process.\n"
    )
    sections = extract_sections(text)
    assert sections == {
        "preamble": "FINAL REPORT",
        "examination": "CHEST (PA AND LAT)",
        "indication": "___ year old woman with cough  // ?pneumonia",
        "technique": "Chest PA and lateral",
        "comparison": "___",
        "findings": "The heart is normal in size.  No effusion.\n Lungs are clear.",
        "impression": "No acute process.",
    }
    assert primary_section(sections) == "No acute process."


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("FINDINGS", "findings"),
        ("FINIDNGS", "findings"),
        ("FINDING", "findings"),
        ("CONCLUSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("IMPRESSION AND RECOMMENDATIONS", "impression"),  # contains a main name
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("COMPARISONS", "comparison"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),  # describes the views
        ("PORTABLE AP UPRIGHT", "findings"),
        ("WET READ", "wet read"),
        ("NOTE", "note"),  # unknown names are kept, lower-cased
    ],
)
def test_header_names_are_normalised(header: str, name: str) -> None:
    assert normalize_section_name(header) == name
    text = f"                                 FINAL REPORT\n {header}:  Some text here.\n"
    assert extract_sections(text)[name] == "Some text here."


def test_last_section_of_a_type_wins() -> None:
    text = HEAD + (
        " FINDINGS:  Preliminary read.\n \n"
        " IMPRESSION:  First impression.\n \n"
        " FINDINGS: \n \n Final findings text.\n \n"
        " CONCLUSION:  Final conclusion.\n"
    )
    sections = extract_sections(text)
    assert sections["findings"] == "Final findings text."
    assert sections["impression"] == "Final conclusion."
    assert list(sections)[-2:] == ["findings", "impression"]


def test_empty_findings_is_dropped_and_impression_survives() -> None:
    text = HEAD + " FINDINGS: \n \n IMPRESSION: \n \n Small effusion.\n"
    sections = extract_sections(text)
    assert "findings" not in sections
    assert sections["impression"] == "Small effusion."
    assert select_report(sections, "findings") == ""
    assert select_report(sections, "findings+impression") == "Small effusion."


def test_empty_later_findings_does_not_hide_an_earlier_one() -> None:
    # empty findings/impression sections are removed before the last one is taken
    text = HEAD + " FINDINGS:  Real findings.\n \n FINDINGS: \n \n IMPRESSION:  Done.\n"
    assert extract_sections(text)["findings"] == "Real findings."


def test_last_paragraph_fallback_when_neither_findings_nor_impression() -> None:
    text = (
        "                                 FINAL REPORT\n"
        " CHEST RADIOGRAPH\n \n"
        " Heart size is normal.  Lungs are clear.\n \n"
        " No pneumothorax.\n Stable lines.\n"
    )
    parts = split_sections(text)
    assert [p.name for p in parts] == ["full report", "last_paragraph"]
    sections = extract_sections(text)
    # everything after the first blank line of the last section
    assert sections["last_paragraph"] == "Heart size is normal.  Lungs are clear.\n \n No pneumothorax.\n Stable lines."
    assert sections["full report"] == "FINAL REPORT\n CHEST RADIOGRAPH"
    assert primary_section(sections) == sections["last_paragraph"]
    assert select_report(sections, "findings") == ""


def test_fallback_uses_the_last_section_after_headers() -> None:
    text = HEAD.rstrip("\n ") + "\n \n NOTE:  Called to ___.\n \n Lungs clear.\n \n Heart normal.\n"
    sections = extract_sections(text)
    assert sections["note"] == "Called to ___."
    assert sections["last_paragraph"] == "Lungs clear.\n \n Heart normal."
    assert sections["comparison"] == "___"


def test_no_fallback_without_a_blank_line() -> None:
    text = HEAD + " NOTE:  Single paragraph only.\n"
    sections = extract_sections(text)
    assert "last_paragraph" not in sections
    assert primary_section(sections) == "___"  # comparison is the last resort, as in MIT-LCP's tools


def test_header_needs_leading_space_colon_and_upper_case() -> None:
    text = HEAD + (
        " FINDINGS: \n \n Lines: intact.  Impression: none.\n"  # mixed case 'Impression:' is not a header
        "FINDINGS:  no leading space, not a header\n"
        " IMPRESSION:  Final.\n"
    )
    sections = extract_sections(text)
    assert sections["findings"] == "Lines: intact.  Impression: none.\nFINDINGS:  no leading space, not a header"
    assert sections["impression"] == "Final."


def test_header_right_after_a_header_line_is_swallowed_like_the_reference() -> None:
    # The reference parser resumes its search after the first newline following a header, so a header on
    # the very next line after "FINDINGS:\n" (whose colon consumed the newline) stays inside the findings text.
    text = HEAD + " FINDINGS:\n IMPRESSION:  Small effusion.\n \n Other line.\n"
    sections = extract_sections(text)
    assert sections["findings"] == "IMPRESSION:  Small effusion.\n \n Other line."
    assert "impression" not in sections


def test_select_report_choices() -> None:
    sections = {"findings": "Lungs clear.", "impression": "Normal."}
    assert select_report(sections, "findings") == "Lungs clear."
    assert select_report(sections, "impression") == "Normal."
    assert select_report(sections, "findings+impression") == "Lungs clear. Normal."
    with pytest.raises(ValueError, match="unknown section"):
        select_report(sections, "history")


def test_public_example_report_from_mit_lcp() -> None:
    """The one report MIT-LCP publishes as an example (kept in ../shared, never in the repo)."""
    text = shared_path("data", "mimic_format", "example_report.txt").read_text()
    sections = extract_sections(text)
    assert sections["findings"].startswith("Cardiac size cannot be evaluated.")
    assert sections["findings"].endswith("thoracic spine")
    assert "\n right effusion is new." in sections["findings"]
    assert sections["impression"] == "Large left pleural effusion"
    assert sections["indication"].startswith("___ year old")
