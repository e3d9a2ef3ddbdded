"""Quality of mrg's CheXpert-style labeler against the MeSH major terms of the real IU X-ray reports.

The Open-i archive (``../shared/data/openi/NLMCXR_reports.tgz``, 3,955 XML reports) carries MeSH terms
that NLM indexers assigned by reading each report. For the CheXpert observations that MeSH names, a
report counts as positive when one of its *major* MeSH terms maps to the observation (table
``MESH_MAP`` below; the head of a term is the part before the first "/", e.g. ``Cardiomegaly/mild``).
The labeler reads FINDINGS + IMPRESSION, and its POSITIVE labels (1.0) are compared with the MeSH
positives: precision, recall and F1 per observation. A second column counts "positive or uncertain"
(1.0 or -1.0) as a hit, since MeSH indexes hedged findings ("possible infiltrate") too.

Reports without text or indexed "No Indexing" are left out. To guard against tuning the rules to this
data, the table is printed for the whole set and for its two halves, odd and even report numbers.
The IU texts stay in ../shared (CC BY-NC-ND 4.0); nothing is copied into the repository.

First, always: the synthetic dataset's reports (``mrg prepare synthetic``'s phrasing) against their true label
vectors, exact match per report, for ``--synthetic-seeds`` (a check of the rule families on plain phrasing,
not of real-world accuracy).

Run:  python benchmarks/labeler_agreement.py [--tgz PATH] [--errors OBSERVATION] [--json OUT]
Exits 0 after the synthetic check when the archive is absent (a user's clone has no ../shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mrg.data.chexpert import OBSERVATIONS  # noqa: E402
from mrg.data.sources.iu_xray import read_reports, report_text  # noqa: E402
from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, explain, label_reports  # noqa: E402

DEFAULT_TGZ = REPO_ROOT.parent / "shared" / "data" / "openi" / "NLMCXR_reports.tgz"

# observation -> (MeSH terms that make it positive, qualifiers that must NOT appear). A term matches a MeSH
# major term that equals it or starts with it followed by "/" (so "cardiac shadow/enlarged" matches
# "Cardiac Shadow/enlarged/mild" but not "Cardiac Shadow/borderline").
MESH_MAP: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "No Finding": (("normal",), frozenset()),
    # MeSH indexes an enlarged cardiac silhouette either as Cardiomegaly or as Cardiac Shadow/enlarged
    "Cardiomegaly": (("cardiomegaly", "cardiac shadow/enlarged"), frozenset()),
    # partial: MeSH usually files an enlarged cardiomediastinal silhouette under the two terms above
    "Enlarged Cardiomediastinum": (("mediastinum/prominent", "mediastinum/enlarged", "mediastinum/widened"), frozenset()),
    "Lung Lesion": (("nodule", "mass"), frozenset({"breast"})),
    "Lung Opacity": (("opacity", "airspace disease", "infiltrate", "cicatrix"), frozenset({"pleura"})),
    "Edema": (("pulmonary edema", "edema"), frozenset()),
    "Consolidation": (("consolidation",), frozenset()),
    "Pneumonia": (("pneumonia",), frozenset()),
    "Atelectasis": (("pulmonary atelectasis",), frozenset()),
    "Pneumothorax": (("pneumothorax", "hydropneumothorax", "hemopneumothorax"), frozenset()),
    "Pleural Effusion": (("pleural effusion",), frozenset()),
    # CheXpert files "fibrosis" under Pleural Other; MeSH has no single term for other pleural findings
    "Pleural Other": (("thickening/pleura", "cicatrix/pleura", "pleura", "pulmonary fibrosis", "fibrosis"), frozenset()),
    "Fracture": (("fractures, bone",), frozenset()),
    "Support Devices": (
        ("catheters, indwelling", "implanted medical device", "tube, inserted", "medical device", "stents"),
        frozenset(),
    ),
}
TARGETS = {"Cardiomegaly": 0.90, "Pleural Effusion": 0.90, "Pneumothorax": 0.90, "No Finding": 0.90}


def load_iu_reports(tgz: Path) -> list[dict]:
    """(report number, findings + impression, MeSH major terms) of every report with text and MeSH indexing."""
    rows = []
    for report in read_reports(tgz):  # mrg's Open-i parser (mrg prepare iu-xray uses the same)
        text = report_text(report, "findings+impression")
        majors = [term for term in report.mesh_major if term]
        if not text or not majors or any(term.lower() == "no indexing" for term in majors):
            continue
        rows.append({"uid": report.number, "text": text, "mesh": majors})
    return rows


def mesh_positive(terms: list[str], observation: str) -> bool:
    wanted, excluded = MESH_MAP[observation]
    for term in terms:
        parts = [part.strip().lower() for part in term.split("/")]
        normalized = "/".join(parts)
        if excluded.intersection(parts[1:]):
            continue
        if any(normalized == prefix or normalized.startswith(prefix + "/") for prefix in wanted):
            return True
    return False


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def agreement(rows: list[dict], labels: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    table = {}
    for observation in [obs for obs in OBSERVATIONS if obs in MESH_MAP]:
        counts = {"tp": 0, "fp": 0, "fn": 0, "tp_u": 0, "fp_u": 0, "fn_u": 0}
        for row, label in zip(rows, labels, strict=True):
            gold = mesh_positive(row["mesh"], observation)
            value = label.get(observation)
            pos, pos_or_unc = value == 1.0, value in (1.0, -1.0)
            counts["tp"] += gold and pos
            counts["fp"] += (not gold) and pos
            counts["fn"] += gold and not pos
            counts["tp_u"] += gold and pos_or_unc
            counts["fp_u"] += (not gold) and pos_or_unc
            counts["fn_u"] += gold and not pos_or_unc
        p, r, f = prf(counts["tp"], counts["fp"], counts["fn"])
        _, _, f_u = prf(counts["tp_u"], counts["fp_u"], counts["fn_u"])
        table[observation] = {"support": counts["tp"] + counts["fn"], "precision": p, "recall": r, "f1": f, "f1_pos_or_unc": f_u}
    return table


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'observation':<26} {'MeSH+':>6} {'P':>6} {'R':>6} {'F1':>6}  {'F1 (1 or -1)':>12}")
    for observation, row in table.items():
        target = TARGETS.get(observation)
        flag = "" if target is None else ("  target met" if row["f1"] >= target else f"  BELOW {target:.2f}")
        print(
            f"{observation:<26} {row['support']:>6} {row['precision']:>6.3f} {row['recall']:>6.3f} {row['f1']:>6.3f}"
            f"  {row['f1_pos_or_unc']:>12.3f}{flag}"
        )


def show_errors(rows: list[dict], labels: list[dict[str, float]], observation: str, limit: int) -> None:
    """Print the disagreements for one observation (on the terminal only; for developing the rules)."""
    shown = 0
    for row, label in zip(rows, labels, strict=True):
        gold = mesh_positive(row["mesh"], observation)
        pos = label.get(observation) == 1.0
        if gold == pos:
            continue
        kind = "FN" if gold else "FP"
        print(f"--- {kind} CXR{row['uid']} MeSH={row['mesh']} label={label.get(observation)}")
        print("   ", row["text"])
        for mention in explain(row["text"]):
            if mention.observation in (observation, "No Finding") or observation == "No Finding":
                if mention.label != 0.0 or mention.observation == observation:
                    print(f"      {mention.observation}: {mention.text!r} -> {mention.label} ({mention.rule}: {mention.cue!r})")
        shown += 1
        if shown >= limit:
            break


def synthetic_agreement(count: int, seeds: list[int]) -> None:
    """Print how many synthetic reports get exactly their true CheXpert-14 label vector."""
    from mrg.data.sources.synthetic import compose_report, sample_cases

    for seed in seeds:
        composed = [compose_report(case, seed) for case in sample_cases(count, seed=seed)]
        labels = label_reports([findings for findings, _, _ in composed])
        exact = sum(got == truth for (_, _, truth), got in zip(composed, labels, strict=True))
        print(f"synthetic reports, seed {seed}: {exact:,} of {count:,} labelled exactly as their true label vector")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tgz", type=Path, default=DEFAULT_TGZ, help="NLMCXR_reports.tgz (Open-i IU X-ray reports)")
    parser.add_argument("--errors", metavar="OBSERVATION", help="print the disagreements for one observation")
    parser.add_argument("--limit", type=int, default=40, help="how many disagreements --errors prints")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON here")
    parser.add_argument("--synthetic", type=int, default=5000, help="synthetic reports per seed (0 skips the check)")
    parser.add_argument("--synthetic-seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    if args.synthetic and not args.errors:
        synthetic_agreement(args.synthetic, args.synthetic_seeds)
    if not args.tgz.exists():
        print(f"skipped: {args.tgz} is absent (reference data lives in ../shared, not in the repository)")
        return 0

    rows = load_iu_reports(args.tgz)
    started = time.perf_counter()
    labels = label_reports([row["text"] for row in rows])
    seconds = time.perf_counter() - started
    print(f"{LABELER_NAME} {LABELER_VERSION} vs MeSH major terms of {len(rows)} IU X-ray reports "
          f"(findings + impression; labelled in {seconds:.2f} s)")
    print("P/R/F1 of POSITIVE labels (1.0) against MeSH presence; last column counts 1.0 or -1.0 as positive.")

    if args.errors:
        show_errors(rows, labels, args.errors, args.limit)
        return 0
    tables = {"all": agreement(rows, labels)}
    halves = {"odd": [i for i, row in enumerate(rows) if row["uid"] % 2], "even": [i for i, row in enumerate(rows) if not row["uid"] % 2]}
    for name, index in halves.items():
        tables[name] = agreement([rows[i] for i in index], [labels[i] for i in index])
    print_table(f"all {len(rows)} reports", tables["all"])
    for name, index in halves.items():
        print_table(f"{name} report numbers ({len(index)} reports)", tables[name])
    if args.json:
        args.json.write_text(json.dumps({"labeler": LABELER_NAME, "version": LABELER_VERSION, "reports": len(rows), "tables": tables}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
