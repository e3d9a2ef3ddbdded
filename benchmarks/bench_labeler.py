"""Speed of mrg's CheXpert-style labeler on one core (target: at least 2,000 reports per second), and its load
behaviour on one long report and on many reports.

Throughput, on two corpora:
* generated: 5,000 reports of 5 to 9 sentences drawn (seeded) from a bank of hand-written report
  sentences below, about the length of IU X-ray findings + impression; always available;
* IU X-ray: the 3,800-odd real Open-i reports (findings + impression) from ../shared, when present.
Each corpus is labelled ``--repeats`` times; the best and median throughput are printed (the best is the least
disturbed by other load).

Load (skip with ``--no-load``):
* one long report of 0.25, 0.5 and 1 MB (``--mb``), in two shapes: generated sentences, and the same text with
  every period turned into a comma (one sentence of 1 MB, the worst case for cue scopes); ``label_report`` time,
  and the peak RSS a fresh process adds while labelling it;
* ``mrg label`` on CSV files of 10,000, 30,000 and 100,000 generated reports (``--load-reports``): wall time and
  peak RSS of the command (a fresh process each), and the in-process ``label_csv`` time.
Linear time shows as a constant time per MB / per report across sizes.

The process is pinned to one CPU where the OS allows it (child processes inherit the pin).

Run:  python benchmarks/bench_labeler.py [--repeats 5] [--reports 5000] [--no-load] [--mb 0.25 0.5 1]
      [--load-reports 10000 30000 100000] [--labeler-src DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _labeler_src() -> Path:
    """Where mrg is imported from: ``--labeler-src DIR`` (read before argparse, since mrg is imported below)."""
    if __name__ == "__main__" and "--labeler-src" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--labeler-src") + 1]).resolve()
    return REPO_ROOT


LABELER_SRC = _labeler_src()
if "mrg" not in sys.modules:  # a child process below may already have imported it from --labeler-src
    sys.path.insert(0, str(LABELER_SRC))

from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, label_csv, label_reports  # noqa: E402

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


def long_report(megabytes: float, one_sentence: bool, seed: int = 0) -> str:
    """About ``megabytes`` MB of generated report sentences; with ``one_sentence`` every period becomes a comma."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < megabytes * 1_000_000:
        parts.append(rng.choice(SENTENCES))
        size += len(parts[-1]) + 1
    text = " ".join(parts)
    return text.replace(".", ",") if one_sentence else text


# Run in a fresh interpreter: time label_report, then label again under tracemalloc for the memory it allocates.
_LONG_REPORT_CHILD = """
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[4])
import mrg.metrics.labeler
sys.path.insert(0, sys.argv[1])
from bench_labeler import long_report
from mrg.metrics.labeler import label_report
text = long_report(float(sys.argv[2]), sys.argv[3] == "1")
label_report(text[:2000])
started = time.perf_counter()
labels = label_report(text)
seconds = time.perf_counter() - started
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before tracemalloc adds its own bookkeeping
tracemalloc.start()
label_report(text)
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"chars": len(text), "seconds": seconds, "heap_peak": peak, "labels": len(labels),
                  "rss_kb": rss_kb}))
"""

# Run the CLI as a child of a fresh interpreter, so RUSAGE_CHILDREN is that one command's peak RSS.
_CLI_CHILD = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - started
print(json.dumps({"rc": done.returncode, "seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stderr": done.stderr[-500:]}))
"""


def _child_json(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_long_reports(sizes_mb: list[float]) -> None:
    print("\none long report: label_report time; memory it allocates (tracemalloc peak) and the process's peak RSS")
    print(f"{'shape':<14} {'MB':>5} {'seconds':>8} {'s per MB':>9} {'allocated':>10} {'per text byte':>13} {'peak RSS':>9}")
    here = str(Path(__file__).resolve().parent)
    for one_sentence in (False, True):
        for megabytes in sizes_mb:
            row = _child_json([_LONG_REPORT_CHILD, here, str(megabytes), "1" if one_sentence else "0",
                               str(LABELER_SRC)])
            mb = row["chars"] / 1e6
            print(f"{'one sentence' if one_sentence else 'sentences':<14} {mb:>5.2f} {row['seconds']:>8.3f} "
                  f"{row['seconds'] / mb:>9.3f} {row['heap_peak'] / 2**20:>7.1f} MB {row['heap_peak'] / row['chars']:>13.1f}"
                  f" {row['rss_kb'] / 1024:>6.0f} MB")


def _mrg_command() -> list[str]:
    if LABELER_SRC != REPO_ROOT:
        return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(LABELER_SRC)!r}); "
                "from mrg.cli import main; main()"]
    script = Path(sys.executable).parent / "mrg"
    if script.exists():
        return [str(script)]
    found = shutil.which("mrg")
    return [found] if found else [sys.executable, "-m", "mrg"]


def measure_many_reports(counts: list[int]) -> None:
    print("\nmrg label on N generated reports: the command's wall time and peak RSS (fresh process each), "
          "and label_csv in this process")
    print(f"{'reports':>8} {'CSV MB':>7} | {'mrg label s':>11} {'reports/s':>9} {'peak RSS':>9} | "
          f"{'label_csv s':>11} {'us/report':>9}")
    with tempfile.TemporaryDirectory(prefix="bench_labeler.") as tmp:
        for count in counts:
            source, out = Path(tmp) / f"reports_{count}.csv", Path(tmp) / f"labels_{count}.csv"
            with open(source, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                for report in generated_corpus(count, seed=count):
                    writer.writerow([report])
            cli = _child_json([_CLI_CHILD, *_mrg_command(), "label", str(source), "-o", str(out)])
            if cli["rc"] != 0:
                raise SystemExit(f"mrg label failed on {source}: {cli['stderr']}")
            started = time.perf_counter()
            label_csv(source, out)
            seconds = time.perf_counter() - started
            print(f"{count:>8} {source.stat().st_size / 1e6:>7.1f} | {cli['seconds']:>11.2f} {count / cli['seconds']:>9.0f}"
                  f" {cli['rss_kb'] / 1024:>6.0f} MB | {seconds:>11.2f} {1e6 * seconds / count:>9.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reports", type=int, default=5000, help="size of the generated corpus")
    parser.add_argument("--no-load", action="store_true", help="skip the long-report and many-reports measurements")
    parser.add_argument("--mb", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="long-report sizes in MB")
    parser.add_argument("--load-reports", type=int, nargs="+", default=[10_000, 30_000, 100_000],
                        help="report counts for mrg label")
    parser.add_argument("--labeler-src", type=Path, help="import mrg from this folder (e.g. an older commit unpacked "
                        "with 'git archive <commit> mrg | tar -x -C DIR') to measure it with this script")
    args = parser.parse_args()
    print(f"mrg from {LABELER_SRC}")
    print(f"{LABELER_NAME} {LABELER_VERSION}; Python {sys.version.split()[0]}; {pin_to_one_cpu()}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}" if hasattr(os, "getloadavg") else "")
    measure("generated", generated_corpus(args.reports), args.repeats)
    iu = iu_corpus()
    if iu is None:
        print(f"IU X-ray   skipped: {IU_TGZ} is absent (reference data lives in ../shared)")
    else:
        measure("IU X-ray", iu, args.repeats)
    if not args.no_load:
        measure_long_reports(args.mb)
        measure_many_reports(args.load_reports)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
