"""Benchmark ``mrg evaluate`` against METEOR alone and against pycocoevalcap's scorers called one after another.

Generates a synthetic test set shaped like MIMIC-CXR's (3,858 pairs of about 50 words, R2Gen-cleaned
sentences joined by " . ", candidates made from the reference by replacing sentences and words), then
measures, each in a fresh process so every JVM starts cold:

1. METEOR alone: mrg's METEOR scorer (JVM start, paraphrase load, scoring) on the cleaned texts;
2. pycocoevalcap: ``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()`` one after another, as R2Gen's loop does;
3. the whole ``mrg evaluate`` command (r2gen protocol, METEOR, clinical efficacy, all files written);
4. two evaluations in one process (``run_evaluation`` on system A, then on system B: other predictions
   for the same references, as the next validation of a training run), and whether the Python metrics
   really overlap METEOR under the GIL (Python metrics alone, METEOR alone and both together, warm).

Targets: (3) <= 1.15 x (1); (2) >= 1.3 x (3); first evaluation >= 3 x the second.

    python benchmarks/bench_evaluate.py [--items 3858] [--jvms 0]

The numbers depend on machine load (printed at start and end); compare runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "the heart size is normal", "the heart is mildly enlarged", "the lungs are clear",
    "there is no focal consolidation", "no pleural effusion or pneumothorax is seen",
    "the cardiomediastinal silhouette is within normal limits", "there is mild pulmonary vascular congestion",
    "small bilateral pleural effusions are present", "there is a small left pleural effusion",
    "bibasilar atelectasis is noted", "no acute osseous abnormality", "degenerative changes of the thoracic spine",
    "the mediastinal contours are unremarkable", "there is no pneumothorax", "the aorta is tortuous",
    "a right internal jugular catheter terminates in the svc", "an endotracheal tube is in standard position",
    "there is mild interstitial edema", "patchy opacity in the right lower lobe may represent pneumonia",
    "the hilar contours are normal", "no evidence of free air under the diaphragm", "the osseous structures are intact",
    "surgical clips are noted in the right upper quadrant", "there is elevation of the right hemidiaphragm",
    "low lung volumes accentuate the bronchovascular markings", "stable appearance of the chest compared to prior",
]
SUBSTITUTES = ["mild", "moderate", "no", "small", "large", "left", "right", "stable", "new", "unchanged", "is", "the"]


def make_corpus(items: int, seed: int = 0, system: int = 0) -> tuple[list[str], list[str]]:
    """R2Gen-style references of ~50 words and candidates that share part of their content.

    ``system`` changes the candidates only (the references depend on ``seed`` alone).
    """
    rng = random.Random(seed)
    noise = random.Random(f"{seed}-{system}")
    refs, preds = [], []
    for _ in range(items):
        ref_sents = rng.sample(SENTENCES, 8)
        pred_sents = [s if noise.random() < 0.7 else noise.choice(SENTENCES) for s in ref_sents]
        if noise.random() < 0.3:
            noise.shuffle(pred_sents)
        words = " . ".join(pred_sents).split()
        for _ in range(noise.randint(0, 5)):
            words[noise.randrange(len(words))] = noise.choice(SUBSTITUTES)
        refs.append(" . ".join(ref_sents) + " .")
        preds.append(" ".join(words) + " .")
    return preds, refs


def _load(corpus: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    return [r["prediction"] for r in rows], [r["reference"] for r in rows]


def _cleaned(corpus: Path) -> tuple[list[str], list[str]]:
    from mrg.data.text import normalize_report

    preds, refs = _load(corpus)

    def clean(text: str) -> str:
        return " ".join(normalize_report(text, "r2gen-iu").split())

    return [clean(p) for p in preds], [clean(r) for r in refs]


# ------------------------------------------------------------------------------------ helper processes


def mode_meteor_alone(corpus: Path, jvms: int) -> dict:
    from mrg.metrics.meteor import MeteorScorer, default_jvms

    started = time.perf_counter()
    preds, refs = _cleaned(corpus)
    scorer = MeteorScorer(jvms=jvms or default_jvms())
    scorer.start()
    result = scorer.score(preds, [[r] for r in refs])
    return {"meteor": result.score, "in_process_s": time.perf_counter() - started, "jvms": scorer.jvms}


def mode_coco(corpus: Path, jvms: int) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    started = time.perf_counter()
    preds, refs = _cleaned(corpus)
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    out, steps = {}, {}
    for name, scorer in (("bleu", Bleu(4)), ("meteor", None), ("rouge_l", Rouge()), ("cider", Cider())):
        t0 = time.perf_counter()
        if name == "bleu":
            score, _ = scorer.compute_score(gts, res, verbose=0)
            out.update({f"bleu_{k + 1}": score[k] for k in range(4)})
        elif name == "meteor":
            out["meteor"], _ = Meteor().compute_score(gts, res)  # constructed here, as R2Gen's loop does
        else:
            out[name], _ = scorer.compute_score(gts, res)
        steps[f"{name}_s"] = time.perf_counter() - t0
    return {**{k: float(v) for k, v in out.items()}, **steps, "in_process_s": time.perf_counter() - started}


def mode_twice(corpus: Path, jvms: int) -> dict:
    from mrg import evaluate
    from mrg.config import EvalConfig
    from mrg.evaluate import _start_meteor, prepare_texts, run_evaluation, score_texts

    cfg = EvalConfig(meteor_jvms=jvms)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, path in (("first", corpus), ("second", corpus.with_name("corpus_b.jsonl"))):
            t0 = time.perf_counter()
            run_evaluation(path, Path(folder) / name, cfg)
            out[f"{name}_s"] = time.perf_counter() - t0
    # GIL check, everything warm: Python metrics alone, METEOR alone, both together
    preds, refs = _load(corpus)
    prepared = prepare_texts(preds, [[r] for r in refs], "r2gen", "r2gen-iu", None)
    meteor = _start_meteor(cfg)
    evaluate._LABELS.clear()  # label every text again, as a first evaluation does
    t0 = time.perf_counter()
    score_texts(prepared, cfg, None)
    out["python_metrics_alone_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    meteor.score(prepared.predictions, prepared.references)
    out["meteor_alone_warm_s"] = time.perf_counter() - t0
    evaluate._LABELS.clear()
    t0 = time.perf_counter()
    score_texts(prepared, cfg, meteor)
    out["both_warm_s"] = time.perf_counter() - t0
    return out


MODES = {"meteor-alone": mode_meteor_alone, "coco": mode_coco, "twice": mode_twice}


CPU: dict[str, float] = {}
"""CPU seconds (user + system, the process and every JVM it started) of each measured command."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], name: str) -> tuple[float, str]:
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    CPU[name] = _children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} failed:\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout


def _helper(mode: str, corpus: Path, jvms: int) -> tuple[float, dict]:
    wall, stdout = _run([sys.executable, __file__, "--mode", mode, "--corpus", str(corpus), "--jvms", str(jvms)], mode)
    return wall, json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3858)
    parser.add_argument("--jvms", type=int, default=0, help="eval.meteor_jvms (0: automatic)")
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(MODES[args.mode](args.corpus, args.jvms)))
        return

    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.jsonl"
        for system, path in ((0, corpus), (1, corpus.with_name("corpus_b.jsonl"))):
            preds, refs = make_corpus(args.items, system=system)
            path.write_text("".join(json.dumps({"id": f"s{i}", "prediction": p, "reference": r}) + "\n"
                                    for i, (p, r) in enumerate(zip(preds, refs, strict=True))))
        words = sum(len(r.split()) for r in refs) / len(refs)
        print(f"corpus: {args.items} pairs, {words:.1f} words per reference")

        meteor_wall, meteor_info = _helper("meteor-alone", corpus, args.jvms)
        coco_wall, coco = _helper("coco", corpus, args.jvms)
        mrg_cmd = [str(Path(sys.executable).parent / "mrg"), "evaluate", "-p", str(corpus), "-o", str(Path(folder) / "out")]
        if args.jvms:
            mrg_cmd.append(f"eval.meteor_jvms={args.jvms}")
        evaluate_wall, _ = _run(mrg_cmd, "evaluate")
        record = json.loads((Path(folder) / "out" / "metrics.json").read_text())
        twice_wall, twice = _helper("twice", corpus, args.jvms)

    keys = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]
    worst = max(abs(record[k] - coco[k]) for k in keys)
    print("scores (mrg evaluate): " + ", ".join(f"{k} {record[k]:.4f}" for k in keys))
    print(f"largest difference from pycocoevalcap on the same strings: {worst:.2e}"
          f" (METEOR equal: {record['meteor'] == coco['meteor']})")
    print()
    print(f"METEOR JVMs used by mrg: {meteor_info['jvms']}")
    print(f"(1) METEOR alone (mrg scorer, cold, whole process):    {meteor_wall:7.2f} s  (CPU {CPU['meteor-alone']:.1f} s)")
    print(f"(2) pycocoevalcap Bleu, Meteor, Rouge, Cider in turn:  {coco_wall:7.2f} s  (CPU {CPU['coco']:.1f} s; "
          f"(bleu {coco['bleu_s']:.2f}, meteor {coco['meteor_s']:.2f}, rouge {coco['rouge_l_s']:.2f}, "
          f"cider {coco['cider_s']:.2f})")
    print(f"(3) mrg evaluate, whole command:                       {evaluate_wall:7.2f} s  (CPU {CPU['evaluate']:.1f} s; "
          f"inside: {json.dumps(record['timings'])})")
    print(f"(4) run_evaluation twice in one process (A, then B):   first {twice['first_s']:.2f} s, "
          f"second {twice['second_s']:.2f} s")
    python_s, meteor_s, both_s = twice["python_metrics_alone_s"], twice["meteor_alone_warm_s"], twice["both_warm_s"]
    overlap = (python_s + meteor_s - both_s) / python_s if python_s > 0 else float("nan")
    print(f"    warm: Python metrics alone {python_s:.2f} s, METEOR alone {meteor_s:.2f} s, together {both_s:.2f} s "
          f"-> {100 * overlap:.0f}% of the Python work hidden behind METEOR")
    print()
    print(f"mrg evaluate / METEOR alone:      {evaluate_wall / meteor_wall:5.2f}  (target <= 1.15)")
    print(f"pycocoevalcap / mrg evaluate:     {coco_wall / evaluate_wall:5.2f}  (target >= 1.3)")
    print(f"first / second evaluation:        {twice['first_s'] / twice['second_s']:5.2f}  (target >= 3)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
