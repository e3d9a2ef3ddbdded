"""mrg's CheXpert-style report labeler: 14 observations, each 1.0 / 0.0 / -1.0 or blank, in pure Python.

The CheXpert labeler (Irvin et al., 2019) cannot run offline: it parses every sentence with the BLLIP
parser and Stanford CoreNLP, both fetched at run time. This module keeps its pipeline and its
aggregation rules and replaces the dependency-graph patterns with NegEx-style cue scopes over the text.
It is written here (no code from the original), labels a few thousand reports a second on one
core, and never calls itself CheXbert or the CheXpert labeler: results carry ``LABELER_NAME`` and
``LABELER_VERSION``.

The pipeline, one rule family per step (``docs/labeler.md`` has examples of each):

1. **Clean** like CheXpert's loader: lower-case, ``and/or`` -> ``or``, ``x/y`` between letters -> ``x or y``,
   ``..`` -> ``.``, a space after every ``,`` and ``.``, whitespace collapsed.
2. **Split sentences** at ``.``, ``?`` and ``!`` followed by a space (not after ``vs.``, ``e.g.``, ``dr.``).
3. **Find mentions** with one combined regex per observation (:mod:`mrg.metrics.labeler_lexicon`); a mention
   that overlaps an *unmention* of the same observation is dropped ("pericardial effusion" is not a
   pleural effusion, "granuloma projecting over the heart" is not about the heart's size).
4. **Classify each mention** by the cues of its sentence, in CheXpert's order, first hit wins:
   pre-negation uncertainty ("cannot exclude X", "no new X"), negation ("no X", "X has resolved",
   "normal X", "X is not enlarged"), post-negation uncertainty ("may represent X", "X versus Y",
   "stable cardiomediastinal silhouette"), hedged phrases ("vascular congestion"), otherwise positive.
   A cue reaches a mention *forward* (cue first) across a list ("no effusion, pneumothorax or
   consolidation") but not across a terminator ("but", "which", "with", ";") or a finite verb; *backward*
   (cue after the mention) across at most one finite verb ("heart size and vascularity are normal").
   A sentence that starts ``findings: no`` or ``impression: no`` negates all its mentions (NegBio).
5. **Aggregate** exactly as CheXpert's aggregator: mention labels 0 / -1 / 1; No Finding is 1 unless a
   positive or uncertain mention of any category other than Support Devices exists (the "other finding"
   stems count), otherwise blank, never 0 or -1; a positive or uncertain mention whose text is exactly
   ``chf`` or ``heart failure`` adds an uncertain Cardiomegaly mention; several mentions resolve as
   {0, -1} -> -1 (checked first, so {0, -1, 1} -> -1, the original's quirk), {0, 1} -> 1, {-1, 1} -> 1;
   no mention -> blank.
"""

from __future__ import annotations

import csv
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrg.data.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from mrg.errors import DataError, MetricError
from mrg.files import atomic_write
from mrg.metrics import labeler_lexicon as lex

LABELER_NAME = "mrg-chexpert-rules"
# Bump whenever a rule or phrase changes, so stored labels record which rules made them.
LABELER_VERSION = "1.1"

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
CARDIOMEGALY = "Cardiomegaly"

# ---------------------------------------------------------------------------------------------------
# Compiled once at import
# ---------------------------------------------------------------------------------------------------



def _anchored_alternation(phrases: Sequence[str]) -> str:
    # Every phrase starts at a word boundary; one leading \b lets the regex engine skip ahead quickly.
    for phrase in phrases:
        if not phrase.startswith(r"\b"):
            raise ValueError(f"labeler phrase {phrase!r} must start with \\b")
    return r"\b(?:" + "|".join(phrase[2:] for phrase in phrases) + ")"


# A stem match is extended to the end of its word, so explain() shows "atelectasis", not "atelecta".
_MENTION_RES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (obs, re.compile(_anchored_alternation(phrases) + r"[\w-]*")) for obs, phrases in lex.MENTIONS.items()
)
_ANY_MENTION_RE = re.compile(_anchored_alternation([p for phrases in lex.MENTIONS.values() for p in phrases]))
_UNMENTION_RES: dict[str, re.Pattern[str]] = {
    obs: re.compile(_anchored_alternation(phrases)) for obs, phrases in lex.UNMENTIONS.items()
}
_HEDGED_RE = re.compile("|".join(lex.HEDGED_MENTIONS))
_CUE_RE = re.compile("|".join(f"(?P<c{i}>{cue.pattern})" for i, cue in enumerate(lex.CUES)))
_TRIGGER_RE = re.compile(r"\b(?:" + "|".join(sorted(lex.TRIGGER_WORDS, key=len, reverse=True)) + r")\b")
_CUE_BY_GROUP: dict[str, lex.Cue] = {f"c{i}": cue for i, cue in enumerate(lex.CUES)}
_TARGET_RES: dict[str, re.Pattern[str]] = {
    cue.target: re.compile(cue.target) for cue in lex.CUES if cue.target is not None
}
_BACKWARD_STOP_RES: dict[str, re.Pattern[str]] = {
    cue.backward_stop: re.compile(cue.backward_stop) for cue in lex.CUES if cue.backward_stop is not None
}
_TERMINATOR_RE = re.compile(lex.TERMINATORS)
_VERB_RE = re.compile(lex.VERBS)
_SPACE_RE = re.compile(" ")
_SECTION_NO_RE = re.compile(r"(?:findings|impression): no ")

_AND_OR_RE = re.compile(r"and/or")
_SLASH_RE = re.compile(r"(?<=[a-zA-Z])/(?=[a-zA-Z])")
# A sentence ends at . ? ! followed by a space or the end, except after a few abbreviations.
_SENTENCE_END_RE = re.compile(r"[.?!](?<!\bvs\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bdr\.)(?<!\bapprox\.)(?: |$)")

_FAMILY_LABEL = {"pre_uncertain": UNCERTAIN, "negation": NEGATIVE, "uncertain": UNCERTAIN}
_FAMILY_ORDER = ("pre_uncertain", "negation", "uncertain")


@dataclass(frozen=True)
class Mention:
    """One mention of an observation and how it was classified (what :func:`explain` returns).

    Attributes:
        observation: one of the 14 observations; ``No Finding`` for the "other finding" stems.
        text: the matched words in the cleaned report.
        start: character offset of the match in the cleaned report (``clean_report(text)``).
        end: offset one past the match.
        sentence: the sentence the mention is in (cleaned text).
        label: 1.0 positive, 0.0 negative, -1.0 uncertain.
        rule: which rule decided the label: a cue name ("no", "may represent", ...), ``"hedged phrase"``,
            ``"findings: no"``, ``"heart failure -> uncertain cardiomegaly"``, or ``"positive"``.
        cue: the cue's words in the sentence ("" for positive mentions).
    """

    observation: str
    text: str
    start: int
    end: int
    sentence: str
    label: float
    rule: str
    cue: str = ""


# ---------------------------------------------------------------------------------------------------
# Steps 1-2: cleaning and sentences
# ---------------------------------------------------------------------------------------------------


def clean_report(text: str) -> str:
    """CheXpert's report cleaning: lower-case, ``and/or`` -> ``or``, ``a/b`` -> ``a or b``, ``..`` -> ``.``,
    a space after every comma and period, whitespace collapsed to single spaces."""
    text = _AND_OR_RE.sub("or", text.lower())
    text = _SLASH_RE.sub(" or ", text)
    text = text.replace("..", ".").replace(".", ". ").replace(",", ", ")
    return " ".join(text.split())


def split_sentences(clean: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of a cleaned report; the end includes the final period."""
    spans = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(clean):
        end = match.start() + 1
        if clean[start:end].strip(" .?!"):  # CheXpert drops empty sentences such as ". ."
            spans.append((start, end))
        start = match.end()
    if clean[start:].strip(" .?!"):
        spans.append((start, len(clean)))
    return spans


# ---------------------------------------------------------------------------------------------------
# Steps 3-4: mentions and their classification
# ---------------------------------------------------------------------------------------------------


def _count_between(positions: list[int], start: int, end: int) -> int:
    return bisect_left(positions, end) - bisect_left(positions, start)


@dataclass(frozen=True)
class _Boundaries:
    """Sorted offsets of the spaces, scope terminators and finite verbs of one cleaned report."""

    spaces: list[int]
    terminators: list[int]
    verbs: list[int]


def _covers(cue: lex.Cue, c_start: int, c_end: int, m_start: int, m_end: int, clean: str,
            bounds: _Boundaries, mention_text: str) -> bool:
    """Whether a cue at [c_start, c_end) reaches the mention at [m_start, m_end) of the same sentence."""
    if cue.target is not None and _TARGET_RES[cue.target].search(mention_text) is None:
        return False
    if c_start <= m_start and c_end >= m_end:  # the cue contains the mention: "normal in size and contour"
        return cue.direction != "forward" or c_start < m_start
    if c_start < m_start:  # the cue comes first: forward scope
        if cue.direction == "backward":
            return False
        gap_start, gap_end = min(c_end, m_start), m_start
        max_verbs = 0
        max_words = cue.max_words if cue.forward_words is None else cue.forward_words
    elif c_end > m_end and c_start >= m_start:  # the cue comes after: backward scope
        if cue.direction == "forward":
            return False
        gap_start, gap_end = m_end, max(m_end, c_start)
        max_verbs = cue.backward_verbs
        max_words = cue.max_words
    else:
        return False
    # words in the gap: one fewer than its spaces (" a b " holds 2 words); counted with bisect, not by scanning
    if max(0, _count_between(bounds.spaces, gap_start, gap_end) - 1) > max_words:
        return False
    if not cue.cross_commas and "," in clean[gap_start:gap_end].rstrip(" ,"):
        return False
    if _count_between(bounds.terminators, gap_start, gap_end):
        return False
    if (cue.backward_stop is not None and c_start > m_start
            and _BACKWARD_STOP_RES[cue.backward_stop].search(clean, gap_start, gap_end) is not None):
        return False
    return _count_between(bounds.verbs, gap_start, gap_end) <= max_verbs


# No cue reaches further than this many words, so a mention only needs the cues within that many spaces of it.
_MAX_SCOPE_WORDS = max(max(cue.max_words, cue.forward_words or 0) for cue in lex.CUES)


@dataclass
class _SentenceCues:
    """The cues of one sentence in text order (they do not overlap, so their ends are sorted too)."""

    cues: list[tuple[int, int, lex.Cue]]
    starts: list[int]
    ends: list[int]

    def near(self, m_start: int, m_end: int, spaces: list[int]) -> list[tuple[int, int, lex.Cue]]:
        """The cues that can reach the mention at [m_start, m_end): none further than the longest scope.

        A cue that ends before the (W+2)-th space left of the mention, or starts after the (W+2)-th space right
        of it, has more than W words in between (W = ``_MAX_SCOPE_WORDS``), so ``_covers`` would reject it.
        Trying only the others keeps a long sentence (a report without periods) linear, not quadratic.
        """
        reach = _MAX_SCOPE_WORDS + 2
        left = bisect_left(spaces, m_start) - reach
        right = bisect_left(spaces, m_end) + reach - 1
        low = bisect_right(self.ends, spaces[left]) if left >= 0 else 0
        high = bisect_right(self.starts, spaces[right]) if right < len(spaces) else len(self.cues)
        return self.cues[low:high]


def _classify(
    clean: str,
    s_start: int,
    m_start: int,
    m_end: int,
    cues: list[tuple[int, int, lex.Cue]],
    bounds: _Boundaries,
) -> tuple[float, str, str]:
    """(label, rule name, cue words) of the mention at [m_start, m_end) in the sentence starting at s_start."""
    mention_text = clean[m_start:m_end]
    if _SECTION_NO_RE.match(clean, s_start) is not None:
        return NEGATIVE, "findings: no", clean[s_start:s_start + 14]
    for family in _FAMILY_ORDER:
        for c_start, c_end, cue in cues:
            if cue.family == family and _covers(cue, c_start, c_end, m_start, m_end, clean, bounds, mention_text):
                return _FAMILY_LABEL[family], cue.name, clean[c_start:c_end].strip()
    if _HEDGED_RE.search(mention_text) is not None:
        return UNCERTAIN, "hedged phrase", ""
    return POSITIVE, "positive", ""


def _find_cues(clean: str) -> list[tuple[int, int, lex.Cue]]:
    """Non-overlapping cue matches, left to right (what ``_CUE_RE.finditer`` gives, found faster).

    Scanning with the combined cue pattern tries every alternative at every character; instead the
    trigger words are found first and the combined pattern is only tried where one starts.
    """
    cues = []
    pos = 0
    while True:
        trigger = _TRIGGER_RE.search(clean, pos)
        if trigger is None:
            return cues
        match = _CUE_RE.match(clean, trigger.start())
        if match is None:
            pos = trigger.end()
            continue
        cue = _CUE_BY_GROUP[match.lastgroup]  # type: ignore[index]
        if cue.family != "pseudo":
            cues.append((match.start(), match.end(), cue))
        pos = max(match.end(), trigger.start() + 1)


def _mention_spans(clean: str) -> list[tuple[int, int, str]]:
    """(start, end, observation) of every mention that no unmention phrase overlaps, in text order."""
    # One scan with all phrases finds where mentions start; each observation's regex is then tried there
    # (about twice as fast as 15 scans). Within one observation, matches do not overlap (like finditer).
    found: list[tuple[int, int, str]] = []
    last_end: dict[str, int] = {}
    # per observation, the (starts, ends) of its unmention matches: sorted and non-overlapping, so bisect finds
    # the one a mention could overlap (a report with thousands of "pericardial effusion" stays linear)
    blocked: dict[str, tuple[list[int], list[int]]] = {}
    pos = 0
    while (hit := _ANY_MENTION_RE.search(clean, pos)) is not None:
        start = hit.start()
        for observation, regex in _MENTION_RES:
            match = regex.match(clean, start)
            if match is None or start < last_end.get(observation, 0):
                continue
            end = match.end()
            if observation not in blocked:  # unmentions are only looked for once the observation is mentioned
                unmention = _UNMENTION_RES.get(observation)
                spans = [m.span() for m in unmention.finditer(clean)] if unmention is not None else []
                blocked[observation] = ([b for b, _ in spans], [e for _, e in spans])
            b_starts, b_ends = blocked[observation]
            first = bisect_right(b_ends, start)  # the first unmention that ends after the mention starts
            if first < len(b_starts) and b_starts[first] < end:
                continue
            last_end[observation] = end
            found.append((start, end, observation))
        pos = start + 1
    return found


def _cues_by_sentence(clean: str, sentence_starts: list[int]) -> dict[int, _SentenceCues]:
    """The negation and uncertainty cues of ``clean``, grouped by the index of their sentence."""
    cues_by_sentence: dict[int, _SentenceCues] = {}
    for cue_start, cue_end, cue in _find_cues(clean):
        index = bisect_left(sentence_starts, cue_start + 1) - 1
        entry = cues_by_sentence.setdefault(index, _SentenceCues([], [], []))
        entry.cues.append((cue_start, cue_end, cue))
        entry.starts.append(cue_start)
        entry.ends.append(cue_end)
    return cues_by_sentence


def _mentions(clean: str) -> list[Mention]:
    sentences = split_sentences(clean)
    if not sentences:
        return []
    sentence_starts = [start for start, _ in sentences]
    found = _mention_spans(clean)
    if not found:
        return []
    cues_by_sentence = _cues_by_sentence(clean, sentence_starts)
    bounds = _Boundaries(
        spaces=[m.start() for m in _SPACE_RE.finditer(clean)],
        terminators=[m.start() for m in _TERMINATOR_RE.finditer(clean)],
        verbs=[m.start() for m in _VERB_RE.finditer(clean)],
    )

    mentions = []
    sentence_texts: dict[int, str] = {}  # one string per sentence, shared by its mentions
    for start, end, observation in found:
        index = bisect_left(sentence_starts, start + 1) - 1
        s_start, s_end = sentences[index]
        if start >= s_end:  # inside the whitespace between two sentences: cannot happen after cleaning
            continue
        entry = cues_by_sentence.get(index)
        cues = entry.near(start, end, bounds.spaces) if entry is not None else []
        label, rule, cue_text = _classify(clean, s_start, start, end, cues, bounds)
        sentence = sentence_texts.get(index)
        if sentence is None:
            sentence = sentence_texts[index] = clean[s_start:s_end]
        mentions.append(Mention(observation, clean[start:end], start, end, sentence, label, rule, cue_text))
    return mentions


def _as_text(text: object) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise MetricError(f"a report must be text, got {type(text).__name__} {text!r:.60}")
    return text


def explain(text: str) -> list[Mention]:
    """Every mention found in a report with its label and the rule that decided it.

    Includes the "other finding" mentions (observation ``No Finding``) that block No Finding, and the
    uncertain Cardiomegaly mention that a positive or uncertain "chf"/"heart failure" adds. Offsets refer
    to ``clean_report(text)``.

    Example:
        >>> [(m.observation, m.label, m.rule) for m in explain("No effusion. Mild cardiomegaly.")]
        [('Pleural Effusion', 0.0, 'no'), ('Cardiomegaly', 1.0, 'positive')]
    """
    mentions = _mentions(clean_report(_as_text(text)))
    out: list[Mention] = []
    for mention in mentions:
        out.append(mention)
        if mention.label != NEGATIVE and mention.text in lex.HEART_FAILURE_TEXTS:
            out.append(Mention(CARDIOMEGALY, mention.text, mention.start, mention.end, mention.sentence,
                               UNCERTAIN, "heart failure -> uncertain cardiomegaly", mention.text))
    return out


# ---------------------------------------------------------------------------------------------------
# Step 5: aggregation (CheXpert's exact rules)
# ---------------------------------------------------------------------------------------------------


def resolve(labels: Sequence[float]) -> float:
    """One label from several mentions of an observation, in CheXpert's order.

    {0, -1} present -> -1 (checked first, so {0, -1, 1} also gives -1); {0, 1} -> 1; {-1, 1} -> 1; otherwise all
    labels are equal and that label is returned.
    """
    if len(labels) == 1:
        return labels[0]
    present = set(labels)
    if NEGATIVE in present and UNCERTAIN in present:
        return UNCERTAIN
    if NEGATIVE in present and POSITIVE in present:
        return POSITIVE
    if UNCERTAIN in present and POSITIVE in present:
        return POSITIVE
    return labels[0]


def aggregate(mentions: Sequence[Mention]) -> dict[str, float]:
    """Labels of one report from its classified mentions (the output of :func:`explain`).

    Only mentioned observations are keys (blank = absent). No Finding is 1.0 when no mention outside
    Support Devices is positive or uncertain, and absent otherwise.
    """
    per_observation: dict[str, list[float]] = {}
    no_finding = True
    for mention in mentions:
        if mention.observation != SUPPORT_DEVICES and mention.label != NEGATIVE:
            no_finding = False
        if mention.observation == NO_FINDING:
            continue
        per_observation.setdefault(mention.observation, []).append(mention.label)
    labels = {obs: resolve(per_observation[obs]) for obs in OBSERVATIONS if obs in per_observation}
    if no_finding:
        labels = {NO_FINDING: POSITIVE, **labels}
    return labels


def label_report(text: str) -> dict[str, float]:
    """Label one report: ``{observation: 1.0 | 0.0 | -1.0}`` for the mentioned observations, in CheXpert order.

    Example:
        >>> label_report("Heart size is normal. Small left pleural effusion, possible pneumonia.")
        {'Cardiomegaly': 0.0, 'Pneumonia': -1.0, 'Pleural Effusion': 1.0}
    """
    return aggregate(explain(text))


def label_reports(reports: Sequence[str]) -> list[dict[str, float]]:
    """Label many reports (see :func:`label_report`); a blank report gives ``{"No Finding": 1.0}`` as in CheXpert."""
    return [label_report(report) for report in reports]


# ---------------------------------------------------------------------------------------------------
# The CheXpert labeler's file formats
# ---------------------------------------------------------------------------------------------------

REPORTS_COLUMN = "Reports"


_CSV_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _csv_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings, as ``open(newline="")`` yields them, one at a time.

    ``io.StringIO(text)`` would hold a second copy of the file at 4 bytes a character (136 MB for 34 MB of
    reports); slicing one line at a time keeps the peak near the text itself.
    """
    for match in _CSV_LINE_RE.finditer(text):
        yield match.group()


def read_reports_csv(path: str | os.PathLike[str]) -> list[str]:
    """Reports from a headerless one-column CSV (the CheXpert labeler's input format), one per row.

    Blank lines are skipped, as pandas does for the original; a report that contains commas, quotes or
    newlines must be quoted (``"No effusion, no pneumothorax."``).

    Raises:
        DataError: the file is missing, not UTF-8, not valid CSV, has no reports, or a row has more than
            one column.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; expected a CSV file of reports") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8") from None
    if text.startswith("\ufeff"):  # a byte-order mark from spreadsheet programs
        text = text[1:]
    reports = []
    reader = csv.reader(_csv_lines(text))
    try:
        for row in reader:
            if not row:
                continue
            if len(row) > 1:
                raise DataError(
                    f"{path}:{reader.line_num}: found {len(row)} columns, expected one report per row; "
                    'quote reports that contain commas ("No effusion, no pneumothorax.")'
                )
            reports.append(row[0])
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({err}); check the quotes around that report") from None
    if not reports:
        raise DataError(f"{path}: no reports found; expected a headerless one-column CSV with one report per row")
    return reports


def format_label(value: float | None) -> str:
    """A label as the CheXpert labeler writes it: ``1.0``, ``0.0``, ``-1.0`` or empty for blank."""
    return "" if value is None else repr(float(value))


def write_labels_csv(path: str | os.PathLike[str], reports: Sequence[str], labels: Sequence[dict[str, float]]) -> None:
    """Write ``Reports`` plus the 14 observations in CheXpert order, atomically (the original's output format)."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([REPORTS_COLUMN, *OBSERVATIONS])
        for report, label in zip(reports, labels, strict=True):
            writer.writerow([report, *(format_label(label.get(obs)) for obs in OBSERVATIONS)])


def label_csv(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Label a CheXpert-format reports CSV and write the labelled CSV; returns the labels, one dict per report."""
    reports = read_reports_csv(in_path)
    labels = label_reports(reports)
    write_labels_csv(out_path, reports, labels)
    return labels


def label_counts(labels: Sequence[dict[str, float]]) -> dict[str, dict[str, int]]:
    """Per observation, how many reports are positive, negative, uncertain and blank."""
    names = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
    counts = {obs: {"positive": 0, "negative": 0, "uncertain": 0, "blank": 0} for obs in OBSERVATIONS}
    for label in labels:
        for obs in OBSERVATIONS:
            value = label.get(obs)
            counts[obs]["blank" if value is None else names[value]] += 1
    return counts
