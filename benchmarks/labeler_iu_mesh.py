"""mrg's labeler and a keyword baseline against the MeSH terms of the real IU X-ray reports, on a tuning half
and a held-out half, with the disagreements sorted by cause.

Reference: the Open-i archive ``../shared/data/openi/NLMCXR_reports.tgz``. NLM indexers read each report and
assigned MeSH major terms; a report is positive for an observation when one of its major terms maps to it. The
mapping is ``MESH_MAP`` in ``benchmarks/labeler_agreement.py`` (one table for both scripts; ``--show-mapping``
prints it). The labellers read FINDINGS + IMPRESSION of the 3,832 reports that have text and indexing.

Splits: reports with an odd number are the *tuning* half (the lexicon fixes of labeler 1.1 were found by
reading their disagreements only); reports with an even number are the *held-out* half (read only after the
fixes, to count what remains). Rules developed before 1.1 (labeler 1.0) were written from the whole set, so the
held-out half is held out for the 1.1 changes only.

Three labellers, each scored as positive-mention precision / recall / F1 against MeSH presence:

* ``mrg``: mrg's labeler, a label of 1.0 counts as positive (CheXpert semantics: hedged mentions are -1);
* ``mrg+u``: the same labels, 1.0 or -1.0 counts as positive (what MeSH indexing does with hedges);
* ``keyword``: ``keyword_labels`` below, a 30-line matcher (a keyword in a sentence is positive unless a
  negation word comes before it in that sentence; no uncertainty, no scopes).

``--causes`` prints, per observation, why mrg's label differs from MeSH (missed: uncertain by which cue,
negated, not mentioned; false positive: which words), counted over a half.

Run:  python benchmarks/labeler_iu_mesh.py [--tgz PATH] [--causes] [--json OUT] [--labeler-src DIR]
``--labeler-src DIR`` imports ``mrg`` from DIR instead (e.g. an older commit unpacked with
``git archive <commit> mrg | tar -x -C DIR``) to measure the labeler before a change with the same script.
Exits 0 with a "skipped:" line when the archive is absent (a user's clone has no ../shared).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TGZ = REPO_ROOT.parent / "shared" / "data" / "openi" / "NLMCXR_reports.tgz"

# The observations the issue compares, then the rest of the mapped ones.
ORDER = (
    "Atelectasis", "Lung Lesion", "Edema", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumonia",
    "Pneumothorax", "Lung Opacity", "Fracture", "Support Devices", "Pleural Other", "Enlarged Cardiomediastinum",
    "No Finding",
)

# ------------------------------------------------------------------------------------------- keyword baseline
KEYWORDS = {
    "Enlarged Cardiomediastinum": r"widen\w* (?:of the )?mediastin|mediastinal widening|enlarged cardiomediastinal",
    "Cardiomegaly": r"cardiomegaly|(?:heart|cardiac) enlargement|enlarged (?:heart|cardiac)"
                    r"|(?:heart|heart size|cardiac silhouette) (?:is |appears |remains )?(?:\w+ )?enlarged",
    "Lung Lesion": r"nodul|mass\b|masses|tumou?r|neoplasm|carcinoma",
    "Lung Opacity": r"opacit|infiltrat|air ?space disease|scar",
    "Edema": r"edema",
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia",
    "Atelectasis": r"atelecta",
    "Pneumothorax": r"pneumothora",
    "Pleural Effusion": r"effusion|pleural fluid",
    "Pleural Other": r"pleural thickening|fibrosis",
    "Fracture": r"fractur",
    "Support Devices": r"catheter|tube\b|pacemaker|picc|line\b|device|stent|lead",
}
_KEYWORD_RES = {obs: re.compile(r"\b(?:" + pattern + ")") for obs, pattern in KEYWORDS.items()}
_NEGATION_RE = re.compile(r"\b(?:no|not|without|negative for|free of|clear of|normal)\b")


def keyword_labels(text: str) -> dict[str, float]:
    """A keyword is positive unless a negation word precedes it in its sentence; No Finding if nothing is."""
    labels: dict[str, float] = {}
    for sentence in re.split(r"[.?!](?:\s|$)", text.lower()):
        for observation, regex in _KEYWORD_RES.items():
            match = regex.search(sentence)
            if match is not None and _NEGATION_RE.search(sentence, 0, match.start()) is None:
                labels[observation] = 1.0
    if not any(obs != "Support Devices" for obs in labels):
        labels["No Finding"] = 1.0
    return labels


# ------------------------------------------------------------------------------------------- scoring


def score(gold: list[bool], predicted: list[bool]) -> dict[str, float]:
    tp = sum(g and p for g, p in zip(gold, predicted, strict=True))
    fp = sum(p and not g for g, p in zip(gold, predicted, strict=True))
    fn = sum(g and not p for g, p in zip(gold, predicted, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def tables(rows, mrg_labels, keyword, mesh_positive) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for observation in ORDER:
        gold = [mesh_positive(row["mesh"], observation) for row in rows]
        out[observation] = {
            "mrg": score(gold, [label.get(observation) == 1.0 for label in mrg_labels]),
            "mrg+u": score(gold, [label.get(observation) in (1.0, -1.0) for label in mrg_labels]),
            "keyword": score(gold, [label.get(observation) == 1.0 for label in keyword]),
        }
    return out


def print_table(title: str, table: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'observation':<27}{'MeSH+':>6} | {'mrg P':>6} {'R':>6} {'F1':>6} | {'mrg+u F1':>8} | "
          f"{'keyword P':>9} {'R':>6} {'F1':>6}")
    for observation, row in table.items():
        m, u, k = row["mrg"], row["mrg+u"], row["keyword"]
        print(f"{observation:<27}{m['support']:>6} | {m['precision']:>6.3f} {m['recall']:>6.3f} {m['f1']:>6.3f} | "
              f"{u['f1']:>8.3f} | {k['precision']:>9.3f} {k['recall']:>6.3f} {k['f1']:>6.3f}")


def causes(rows, mrg_labels, explain, mesh_positive, observation: str) -> dict[str, collections.Counter]:
    """Why mrg's positive label and MeSH disagree for one observation, counted per report."""
    missed: collections.Counter = collections.Counter()
    false_positive: collections.Counter = collections.Counter()
    for row, label in zip(rows, mrg_labels, strict=True):
        gold, value = mesh_positive(row["mesh"], observation), label.get(observation)
        if gold == (value == 1.0):
            continue
        mentions = [m for m in explain(row["text"]) if m.observation == observation]
        if gold and observation == "No Finding":  # something blocked it: which words
            blockers = sorted({m.text for m in explain(row["text"])
                               if m.label != 0.0 and m.observation != "Support Devices"})
            missed["blocked by: " + ", ".join(blockers)] += 1
        elif gold:
            if value is None:
                missed["not mentioned"] += 1
            elif value == 0.0:
                missed["negated: " + "/".join(sorted({m.rule for m in mentions if m.label == 0.0}))] += 1
            else:
                rules = sorted({m.rule for m in mentions if m.label == -1.0})
                hedge = "'or'/'versus' (CheXpert: x or y)" if set(rules) <= {"or", "versus"} else "/".join(rules)
                missed["uncertain: " + hedge] += 1
        elif observation == "No Finding":  # nothing abnormal was read: name what MeSH indexed instead
            false_positive["MeSH: " + ", ".join(sorted({t.split("/")[0] for t in row["mesh"]}))] += 1
        else:
            words = sorted({m.text for m in mentions if m.label == 1.0})
            false_positive[", ".join(words)] += 1
    return {"missed": missed, "false positive": false_positive}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tgz", type=Path, default=DEFAULT_TGZ, help="NLMCXR_reports.tgz (Open-i IU X-ray reports)")
    parser.add_argument("--causes", action="store_true", help="print the causes of disagreement per observation")
    parser.add_argument("--causes-half", choices=("odd", "even", "all"), default="even",
                        help="the half the causes are counted on (default: the held-out half)")
    parser.add_argument("--top", type=int, default=6, help="how many false-positive phrasings --causes lists")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON here")
    parser.add_argument("--labeler-src", type=Path, help="import mrg from this folder instead of the repository")
    parser.add_argument("--show-mapping", action="store_true", help="print the MeSH -> CheXpert mapping and exit")
    args = parser.parse_args()

    # mrg first, so that labeler_agreement (which puts the repository on sys.path) reuses this package
    sys.path.insert(0, str(args.labeler_src.resolve() if args.labeler_src else REPO_ROOT))
    import mrg.metrics.labeler as labeler

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import labeler_agreement  # its MESH_MAP is the one documented mapping

    if args.show_mapping:
        for observation, (terms, excluded) in labeler_agreement.MESH_MAP.items():
            extra = f"  (not with: {', '.join(sorted(excluded))})" if excluded else ""
            print(f"{observation:<27} <- {' | '.join(terms)}{extra}")
        return 0
    if not args.tgz.exists():
        print(f"skipped: {args.tgz} is absent (reference data lives in ../shared, not in the repository)")
        return 0

    rows = labeler_agreement.load_iu_reports(args.tgz)
    mrg_labels = labeler.label_reports([row["text"] for row in rows])
    keyword = [keyword_labels(row["text"]) for row in rows]
    print(f"{labeler.LABELER_NAME} {labeler.LABELER_VERSION} (from {Path(labeler.__file__).parent.parent.parent}) and "
          f"a keyword baseline vs MeSH major terms of {len(rows)} IU X-ray reports (findings + impression)")
    print("P/R/F1 of positive labels against MeSH presence; mrg+u counts mrg's -1 (uncertain) as positive too.")

    halves = {
        "all": list(range(len(rows))),
        "odd": [i for i, row in enumerate(rows) if row["uid"] % 2],
        "even": [i for i, row in enumerate(rows) if not row["uid"] % 2],
    }
    titles = {"all": "all reports", "odd": "tuning half: odd report numbers", "even": "held-out half: even report numbers"}
    results = {}
    for name, index in halves.items():
        results[name] = tables([rows[i] for i in index], [mrg_labels[i] for i in index], [keyword[i] for i in index],
                               labeler_agreement.mesh_positive)
        print_table(f"{titles[name]} ({len(index)} reports)", results[name])

    if args.causes:
        index = halves[args.causes_half]
        sub_rows, sub_labels = [rows[i] for i in index], [mrg_labels[i] for i in index]
        print(f"\ncauses of disagreement, {titles[args.causes_half]} ({len(index)} reports), counted per report")
        for observation in ORDER:
            found = causes(sub_rows, sub_labels, labeler.explain, labeler_agreement.mesh_positive, observation)
            print(f"\n{observation}: missed {sum(found['missed'].values())}, "
                  f"false positive {sum(found['false positive'].values())}")
            for cause, count in found["missed"].most_common():
                print(f"  missed {count:>4}  {cause}")
            for words, count in found["false positive"].most_common(args.top):
                print(f"  false+ {count:>4}  {words}")
    if args.json:
        args.json.write_text(json.dumps({"labeler": labeler.LABELER_NAME, "version": labeler.LABELER_VERSION,
                                         "reports": len(rows), "tables": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
