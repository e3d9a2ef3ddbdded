"""Proof that the prompts learn: MRG-LLM variants against baselines on the synthetic test split.

One synthetic dataset and one frozen LM (``mrg train-lm``) are shared by every run, as in ``mrg demo``.
For each seed, the report model is trained with each prompt mode, generates the test reports, and is
scored with ``mrg evaluate``'s library (METEOR left out to save time). With visual tokens in the LLM's input
the image reaches the LM directly, so two ablation rows feed it only the customised prompt: there a static
prompt could not depend on the image at all (the config refuses it), and whatever the model gets right about
the image went through the prompt-wise / promptbook-wise customisation. Baselines:

- most-frequent report: the training split's most frequent normalised report for every test study
  (the same rule as the demo; seed-independent);
- nearest neighbour: the report of the training study whose image is most similar (cosine of the
  mean-pooled encoder tokens) under the encoder trained in that seed's promptbook-wise run.

Prints one table (mean ± std over seeds) of BLEU-4, ROUGE-L, CIDEr and CE micro-F1 (14 observations)
and writes every number to OUT/results.json.

    python benchmarks/bench_learning.py --out runs/bench_learning            # 3 seeds, about 55 min on 2 cores
    python benchmarks/bench_learning.py --seeds 0 --variants promptbook-wise    # one run
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from mrg.baselines import most_frequent_report, nearest_neighbour_predictions
from mrg.config import LMConfig, build_config, load_config
from mrg.data.prepared import load_prepared_dataset
from mrg.data.sources.synthetic import prepare_synthetic
from mrg.demo import FULL
from mrg.domain_lm import train_report_lm
from mrg.evaluate import make_scorer, run_evaluation
from mrg.files import write_json_atomic, write_jsonl_atomic
from mrg.generate import generate_reports
from mrg.recipes.train import train

METRICS = [("bleu_4", "BLEU-4"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"), ("ce_f1", "CE micro-F1")]
# key (also the run folder's prefix) -> (table row, report-model overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "none": ("visual tokens, no prompt (R2GenGPT-style)", ["model.promptbook.mode=none"]),
    "static": ("MRG-LLM static prompt", ["model.promptbook.mode=static"]),
    "prompt-wise": ("MRG-LLM prompt-wise", ["model.promptbook.mode=prompt-wise"]),
    "promptbook-wise": ("MRG-LLM promptbook-wise", ["model.promptbook.mode=promptbook-wise"]),
    # ablation: the image reaches the frozen LM only through the customised prompt
    "prompt-wise-novis": ("prompt-wise, prompt only (no visual tokens)",
                          ["model.promptbook.mode=prompt-wise", "model.visual_tokens=false"]),
    "promptbook-wise-novis": ("promptbook-wise, prompt only (no visual tokens)",
                              ["model.promptbook.mode=promptbook-wise", "model.visual_tokens=false"]),
}


def evaluate(predictions: Path, out_dir: Path, data_dir: Path, eval_cfg) -> dict[str, float]:
    record = run_evaluation(predictions, out_dir, eval_cfg, data=data_dir, split="test").record
    return {key: float(record[key]) for key, _ in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_learning"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--n", type=int, default=FULL.n, help="synthetic studies (default: the demo's)")
    parser.add_argument("overrides", nargs="*", help="extra report-model overrides, e.g. train.max_steps=1000")
    args = parser.parse_args()

    out, data_dir, lm_dir = args.out, args.out / "data", args.out / "lm"
    started = time.perf_counter()
    prepare_synthetic(data_dir, n=args.n, seed=0, image_size=FULL.image_size, views=1)
    train_report_lm(data_dir, lm_dir, build_config(LMConfig, {}, list(FULL.lm_overrides)))
    base = [f"data.root={data_dir}", f"model.llm.name_or_path={lm_dir}", "eval.meteor=false", *args.overrides]
    eval_cfg = load_config("demo", base).eval
    dataset = load_prepared_dataset(data_dir)

    results: dict[str, list[dict[str, float]]] = {}
    constant = most_frequent_report(dataset.split("train"))
    baseline_path = out / "most_frequent" / "predictions.jsonl"
    write_jsonl_atomic(baseline_path, ({"id": s.id, "prediction": constant} for s in dataset.split("test")))
    results["most-frequent report"] = [evaluate(baseline_path, out / "most_frequent", data_dir, eval_cfg)]

    timings: dict[str, float] = {}
    for seed in args.seeds:
        for key in args.variants:
            name, overrides = VARIANTS[key]
            run_dir = out / f"{key}-seed{seed}"
            cfg = load_config("demo", [*base, *overrides, f"train.seed={seed}"])
            t0 = time.perf_counter()
            # validation-based selection exactly as in the demo (METEOR off: no JVM needed)
            train(cfg, run_dir, resume="auto", scorer=make_scorer(cfg.eval, dataset.normalize))
            timings[f"{key}-seed{seed}"] = time.perf_counter() - t0
            predictions = run_dir / "test_predictions.jsonl"
            generate_reports(run_dir, out_path=predictions, data_root=data_dir, split="test")
            results.setdefault(name, []).append(evaluate(predictions, run_dir / "eval", data_dir, eval_cfg))
            if key == "promptbook-wise":
                nn_path = run_dir / "nearest_neighbour.jsonl"
                write_jsonl_atomic(nn_path, nearest_neighbour_predictions(run_dir, data_dir))  # the trained encoder
                results.setdefault("nearest-neighbour report (trained encoder)", []).append(
                    evaluate(nn_path, run_dir / "eval_nn", data_dir, eval_cfg)
                )

    lines = ["| method | runs | " + " | ".join(label for _, label in METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for name, runs in results.items():
        cells = []
        for key, _ in METRICS:
            values = [r[key] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {std:.3f}")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    print(f"test studies: {len(dataset.split('test'))}; seeds {args.seeds}; total {time.perf_counter() - started:.0f} s")
    write_json_atomic(out / "results.json", {"results": results, "table": table, "seconds": timings,
                                             "args": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
