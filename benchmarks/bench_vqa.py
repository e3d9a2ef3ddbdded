"""Visual question answering on the synthetic set in the demo's budget, against the majority-answer baselines.

The demo's data (``mrg prepare synthetic``, 2,000 studies of one 128 px view) and frozen LM (``mrg train-lm``,
500 steps), questions derived with ``mrg prepare vqa``, then a method trained on the ``vqa`` task (alone, or
mixed with report generation by ``--tasks``) with its demo preset (800 steps, batch 32; validation off), its
test answers from ``mrg answer``'s library, and the scores per question type beside the majority-answer
baseline (the most frequent training answer of the type) and the subject-majority baseline (of the type and
the observation asked about). Acceptance (issue 13): on every question type with at least 50 closed test
questions, closed accuracy above the majority baseline's.

    python benchmarks/bench_vqa.py --out /tmp/bench-vqa                        # mrg-llm, vqa only
    python benchmarks/bench_vqa.py --out /tmp/bench-vqa --method two-stage --tasks report:1,vqa:1
    python benchmarks/bench_vqa.py --out /tmp/bench-vqa --lm-questions   # the LM also reads the training questions

Everything is reused when run again into the same folder (data, LM, questions, finished runs); the numbers go
to OUT/<run>/bench_vqa.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mrg.answer import answer_questions
from mrg.cli.answer import answer_table_rows, print_answer_table
from mrg.config import LMConfig, build_config, load_config
from mrg.data.sources.synthetic import prepare_synthetic
from mrg.data.vqa_import import prepare_vqa
from mrg.demo import FULL
from mrg.domain_lm import train_report_lm
from mrg.files import write_json_atomic
from mrg.methods import get_method
from mrg.metrics.vqa import evaluate_answers
from mrg.recipes.train import train


def parse_tasks(text: str) -> dict[str, float]:
    """``report:1,vqa:1`` -> {"report": 1.0, "vqa": 1.0}."""
    return {name.strip(): float(weight) for name, weight in (part.split(":") for part in text.split(","))}


def acceptance(scores: dict, minimum: int = 50) -> list[tuple[str, int, float, float, bool]]:
    """(type, closed questions, model accuracy, majority accuracy, model > majority) for each closed type >= minimum."""
    rows = []
    for qtype, group in sorted(scores["types"].items()):
        if group["num_closed"] >= minimum:
            base = scores["baselines"]["majority"]["types"][qtype]["closed_accuracy"]
            rows.append((qtype, group["num_closed"], group["closed_accuracy"], base, group["closed_accuracy"] > base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-vqa"))
    parser.add_argument("--method", default="mrg-llm")
    parser.add_argument("--tasks", default="vqa:1", help="data.tasks weights, e.g. report:1,vqa:1")
    parser.add_argument("--steps", type=int, default=800, help="training steps (the demo preset's 800)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--lm-questions", action="store_true",
                        help="train the frozen LM on the training questions too (LMConfig.vqa_root; OUT/lm-vqa)")
    args = parser.parse_args()

    tasks = parse_tasks(args.tasks)
    data, vqa = args.out / "data", args.out / "vqa"
    lm = args.out / ("lm-vqa" if args.lm_questions else "lm")
    name = f"{args.method}-{'-'.join(f'{k}{v:g}' for k, v in tasks.items())}-{args.steps}" + ("-lmq" if args.lm_questions else "")
    run, seconds = args.out / name, {}
    started = time.perf_counter()
    prepare_synthetic(data, n=FULL.n, seed=FULL.seed, image_size=FULL.image_size, views=1)
    record = prepare_vqa(vqa, data=data)
    lm_overrides = [*FULL.lm_overrides, *([f"vqa_root={vqa}"] if args.lm_questions else [])]
    train_report_lm(data, lm, build_config(LMConfig, {}, lm_overrides))
    seconds["data_lm_questions"] = time.perf_counter() - started
    preset = get_method(args.method).demo_preset
    cfg = load_config(preset, [f"data.root={data}", f"model.llm.name_or_path={lm}", f"data.vqa_root={vqa}",
                               "data.tasks={" + ", ".join(f"{k}: {v}" for k, v in tasks.items()) + "}",
                               f"train.max_steps={args.steps}", "train.val_every=-1"])
    started = time.perf_counter()
    train(cfg, run, resume="auto")
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    result = answer_questions(run, out_path=run / "test_answers.jsonl", data=vqa, split="test")
    seconds["answer"] = time.perf_counter() - started
    scores = evaluate_answers(result.out_path, vqa, resamples=args.bootstrap)
    print(f"{args.method}, tasks {tasks}, {args.steps} steps, LM {lm}; questions: {record['counts']}")
    print_answer_table(scores)
    checks = acceptance(scores)
    for qtype, n, model, base, ok in checks:
        print(f"acceptance {qtype}: {n} closed test questions, model {100 * model:.1f}% vs majority {100 * base:.1f}% "
              f"-> {'met' if ok else 'NOT met'}")
    print("seconds:", {k: round(v, 1) for k, v in seconds.items()})
    write_json_atomic(run / "bench_vqa.json", {"method": args.method, "tasks": tasks, "steps": args.steps,
                                               "questions": record["counts"], "table": answer_table_rows(scores),
                                               "acceptance": checks, "seconds": seconds, "scores": scores})


if __name__ == "__main__":
    main()
