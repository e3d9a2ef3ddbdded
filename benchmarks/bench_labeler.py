"""Speed of mrg's CheXpert-style labeler on one core (target: at least 2,000 reports per second).

Two corpora:
* generated: 5,000 reports of 5 to 9 sentences drawn (seeded) from a bank of hand-written report
  sentences below, about the length of IU X-ray findings + impression; always available;
* IU X-ray: the 3,800-odd real Open-i reports (findings + impression) from ../shared, when present.

The process is pinned to one CPU where the OS allows it; each corpus is labelled ``--repeats`` times and
the best and median throughput are printed (the best is the least disturbed by other load).

Run:  python benchmarks/bench_labeler.py [--repeats 5] [--reports 5000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, label_reports  # noqa: E402

TARGET_PER_SECOND = 2000
IU_TGZ = REPO_ROOT.parent / "shared" / "data" / "openi" / "NLMCXR_reports.tgz"

SENTENCES = (
    "The heart is normal in size.",
    "Heart size is mildly enlarged.",
    "The cardiomediastinal silhouette is within normal limits for size and contour.",
    "Stable cardiomediastinal silhouette.",
    "Moderate cardiomegaly with a tortuous calcified aorta.",
    "The lungs are clear without focal consolidation, pleural effusion, or pneumothorax.",
    "No pneumothorax or pleural effusion.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Patchy opacity in the right lower lobe which may represent pneumonia.",
    "Left basilar atelectasis versus early consolidation.",
    "Mild pulmonary vascular congestion, no overt edema.",
    "Findings consistent with mild congestive heart failure.",
    "Right internal jugular catheter with tip in the mid SVC.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "A 1 cm nodule projects over the left mid lung.",
    "Calcified granuloma in the right upper lobe.",
    "Degenerative changes of the thoracic spine.",
    "Old healed left rib fractures.",
    "No acute bony abnormality.",
    "Cannot exclude a small right pleural effusion.",
    "Interval resolution of the left lower lobe pneumonia.",
    "The lungs are hyperinflated, consistent with emphysema.",
    "Low lung volumes with bibasilar scarring or atelectasis.",
    "No evidence of pneumonia.",
    "No acute cardiopulmonary abnormality.",
    "Apical pleural thickening bilaterally.",
    "The chest tube has been removed, with no residual pneumothorax.",
    "Possible small hiatal hernia.",
    "Pulmonary vascularity is within normal limits.",
    "There is no focal airspace disease to suggest pneumonia.",
)


def generated_corpus(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(5, 9))) for _ in range(count)]


def iu_corpus() -> list[str] | None:
    if not IU_TGZ.exists():
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from labeler_agreement import load_iu_reports

    return [row["text"] for row in load_iu_reports(IU_TGZ)]


def pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def measure(name: str, reports: list[str], repeats: int) -> float:
    label_reports(reports[:200])  # warm-up (regex caches, imports)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        label_reports(reports)
        rates.append(len(reports) / (time.perf_counter() - started))
    chars = sum(map(len, reports)) / len(reports)
    best, median = max(rates), statistics.median(rates)
    verdict = "meets" if best >= TARGET_PER_SECOND else "BELOW"
    print(
        f"{name:<10} {len(reports):>6} reports, {chars:5.0f} chars avg: best {best:7.0f}/s "
        f"({1e6 / best:5.0f} us/report), median {median:7.0f}/s  [{verdict} the {TARGET_PER_SECOND}/s target]"
    )
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reports", type=int, default=5000, help="size of the generated corpus")
    args = parser.parse_args()
    print(f"{LABELER_NAME} {LABELER_VERSION}; Python {sys.version.split()[0]}; {pin_to_one_cpu()}")
    measure("generated", generated_corpus(args.reports), args.repeats)
    iu = iu_corpus()
    if iu is None:
        print(f"IU X-ray   skipped: {IU_TGZ} is absent (reference data lives in ../shared)")
    else:
        measure("IU X-ray", iu, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
