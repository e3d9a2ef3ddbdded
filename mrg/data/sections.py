"""Splitting MIMIC-CXR free-text reports into sections, with the semantics of MIT-LCP's section parser.

MIMIC-CXR reports are plain text in which every line starts with a space, de-identified spans read
``___`` and a ``FINAL REPORT`` line comes first::

                                     FINAL REPORT
     EXAMINATION:  CHEST (PA AND LAT)
     ...
     FINDINGS:
     <BLANKLINE>
     The lungs are clear ...

MIT-LCP publishes the parser that produced the official sectioned reports (``mimic_cxr_sectioned.csv``,
the input of the CheXpert/NegBio labels). This module reproduces its behaviour, written from a description
of it (MIT-LCP/mimic-cxr ``txt/section_parser.py`` and ``create_section_files.py``, MIT licence):

* A header is a newline, one space, a run of upper-case letters, spaces and ``()/,-``, a colon and one
  whitespace character. Text before the first header is the ``preamble``; a report without any header is
  one ``full report`` section.
* After a header, the search for the next header resumes at the first newline after it, so a header on
  the same line as the previous one (or on the line right after a header that ends in a newline) is part
  of the previous section's text. This is a quirk of the reference parser, kept for fidelity.
* Header names are lower-cased and mapped to a canonical name through a table of synonyms and
  misspellings (``conclusion`` -> impression, ``findings/impression`` -> impression, ``finidngs`` ->
  findings, ...). A name not in the table that contains ``impression``, ``findings``, ``history``,
  ``comparison`` or ``addendum`` becomes that name (checked in that order); one that describes the views
  (``chest``, ``portable``, ``pa and lateral`` ...) becomes findings; any other name is kept.
* Empty findings and impression sections are dropped. When a report then has neither, the text after the
  first blank line (``"\\n \\n"``) of its last section becomes a ``last_paragraph`` section.
* Where a type occurs several times, the *last* one wins. Section texts are stripped of surrounding
  whitespace and otherwise kept exactly (inner newlines, leading spaces and ``___`` included).

Deviation: MIT-LCP also applies a hand-made table of per-study overrides (about 50 studies whose
sections it picks by character offsets, or skips). That table is keyed on MIMIC study ids, which mrg
may not ship, so those studies go through the automatic rules above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

HEADER_PATTERN = re.compile(r"\n ([A-Z ()/,-]+):\s")
"""A section header: newline, one space, upper-case words (with ``()/,-``), a colon, one whitespace char."""

PARAGRAPH_BREAK = "\n \n"
"""A blank line in MIMIC's line format (every line, even an empty one, starts with a space)."""

PREAMBLE = "preamble"
FULL_REPORT = "full report"
LAST_PARAGRAPH = "last_paragraph"

# Canonical name -> the header spellings (lower-case) that mean it, as found in the MIMIC-CXR reports.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "preamble": ("preamble",),
    "impression": (
        "impression", "conclusion", "findings and impression", "findings/impression", "findings/ impression",
        "impresson", "imprression", "imoression", "impressoin", "imprssion", "impresion", "imperssion",
        "mpression", "impession",
        # The reference table maps this truncated spelling to impression (not indication); kept for fidelity.
        "ndication",
    ),
    "findings": (
        "findings", "finding", "findins", "findindgs", "findgings", "findngs", "findnings", "finidngs",
        "chest, two views", "reference findings",
    ),
    "comparison": (
        "comparison", "comparisons", "reference exam", "comparison exam", "comparison film", "comparision",
        "comparsion", "comparrison", "comparisions",
    ),
    "indication": ("indication", "reason for examination", "reason for exam", "clinical indication", "idication"),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "examination": ("examination", "exam", "type of examination"),
    "technique": ("technique",),
    "notification": ("notification",),
    "recommendations": ("recommendations", "recommendation", "recommendation(s)"),
    "addendum": ("addendum",),
    "date": ("date",),
    "comment": ("comment",),
    "wet read": ("wet read", "wetread"),
}
_CANONICAL: dict[str, str] = {spelling: name for name, spellings in _SYNONYMS.items() for spelling in spellings}

# Names recognised inside a longer header ("impression and recommendations" -> impression), in this order.
_CONTAINED_NAMES: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

# Headers that describe the views of the study ("PA AND LATERAL VIEWS OF THE CHEST:") introduce findings.
_VIEW_PHRASES = re.compile(
    "|".join(
        re.escape(phrase)
        for phrase in (
            "chest", "portable", "pa and lateral", "lateral and pa", "ap and lateral", "lateral and ap",
            "frontal and", "two views", "frontal view", "pa view", "ap view", "one view", "lateral view",
            "bone window", "frontal upright", "frontal semi-upright", "ribs", "pa and lat",
        )
    )
)

# The section that summarises a report when one is needed (CheXpert/NegBio labelled this one).
PRIMARY_ORDER: tuple[str, ...] = ("impression", "findings", LAST_PARAGRAPH, "comparison")


@dataclass(frozen=True)
class Section:
    """One section of a report, as found in the text."""

    name: str
    """Canonical name (``findings``, ``impression``, ``preamble``, ``last_paragraph``, ...)."""
    text: str
    """The raw text between this header and the next, unstripped."""
    start: int
    """Character offset of ``text`` in the report."""


def normalize_section_name(header: str) -> str:
    """Map a header as written (``"FINDINGS/IMPRESSION"``, ``"CONCLUSION"``) to its canonical name."""
    name = header.strip().lower()
    if name in _CANONICAL:
        return _CANONICAL[name]
    for contained in _CONTAINED_NAMES:
        if contained in name:
            return contained
    if _VIEW_PHRASES.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[Section]:
    """Split a report into its sections, in order, with names normalised and the last-paragraph fallback.

    Empty findings/impression sections are already removed; other sections are kept even when empty.
    """
    match = HEADER_PATTERN.search(text)
    if match is None:
        sections = [Section(FULL_REPORT, text, 0)]
    else:
        sections = [Section(PREAMBLE, text[: match.start(1)], 0)]
        while match is not None:
            header, content_start = match.group(1), match.end()
            newline = text.find("\n", content_start)
            match = HEADER_PATTERN.search(text, newline if newline != -1 else content_start)
            content_end = match.start() if match is not None else len(text)
            sections.append(Section(normalize_section_name(header), text[content_start:content_end], content_start))

    sections = [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]

    names = {s.name for s in sections}
    if "findings" not in names and "impression" not in names:
        last = sections[-1]
        head, sep, rest = last.text.partition(PARAGRAPH_BREAK)
        if sep:
            sections[-1] = Section(last.name, head, last.start)
            sections.append(Section(LAST_PARAGRAPH, rest, last.start + len(head) + len(sep)))
    return sections


def extract_sections(text: str) -> dict[str, str]:
    """The report's sections by canonical name: the last section of each type, stripped; empty ones left out.

    Example: a report with a FINDINGS and an IMPRESSION header gives
    ``{"preamble": "FINAL REPORT ...", "findings": "...", "impression": "..."}``.
    """
    latest: dict[str, str] = {}
    for section in split_sections(text):
        latest.pop(section.name, None)  # re-insert so the dict follows the order of the winning sections
        latest[section.name] = section.text.strip()
    return {name: body for name, body in latest.items() if body}


def primary_section(sections: Mapping[str, str]) -> str:
    """The text MIT-LCP's tools treat as the report's conclusion: impression, else findings, else the last
    paragraph, else comparison (``""`` when none is present)."""
    for name in PRIMARY_ORDER:
        if sections.get(name):
            return sections[name]
    return ""


def select_report(sections: Mapping[str, str], which: str) -> str:
    """The report text for a section choice: ``findings``, ``impression`` or ``findings+impression``.

    ``findings+impression`` joins the two with one space when both are present and returns the one that is
    present otherwise. Returns ``""`` when the chosen section(s) are absent.
    """
    if which == "findings+impression":
        return " ".join(part for part in (sections.get("findings", ""), sections.get("impression", "")) if part)
    if which in ("findings", "impression"):
        return sections.get(which, "")
    raise ValueError(f"unknown section choice {which!r}; use findings, impression or findings+impression")
