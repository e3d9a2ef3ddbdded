"""MAViLT's report-to-CXR synthesis against the mean image, on the demo's synthetic set (issue 12 acceptance).

Reuses a ``mrg demo --method mavilt`` folder (its prepared data, LM and image tokenizer), trains MAViLT from
scratch with the given budget and direction weights, draws every test report as an image (``mrg synthesize``)
and scores the folder with ``mrg evaluate --images`` (clinical consistency, FID, MS-SSIM beside the mean-image
and nearest-real baselines). Prints the table and the timings.

    MRG_NO_PROGRESS=1 python benchmarks/bench_mavilt_synthesis.py --demo runs/demo-mavilt --out /tmp/bench_mavilt
        [--pretrain-steps 600] [--finetune-steps 100] [--image-weight 1.0] [--top-k 32] [--cfg-scale 1.0]
        [--temperature 1.0] [--set method.lora=true ...]

``--pretrain-steps 200 --finetune-steps 50 --image-weight 0.5`` is the fast demo's own budget. The preset
``mavilt-demo`` fine-tunes the whole (tiny) LLM (``method.train_llm: true``); ``--set method.train_llm=false`` trains
the new vocabulary rows only, ``--set method.train_llm=false --set method.lora=true`` LoRA adapters instead. The
printed table ends with the paired comparison against each baseline (delta, 95% CI, p).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a 'mrg demo --method mavilt' output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vq", type=Path, default=None, help="an image tokenizer run (default: the demo's vq/)")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--image-weight", type=float, default=1.0, help="method.directions report-to-image weight")
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a further config override, e.g. method.lora=true (repeatable)")
    args = parser.parse_args()

    from mrg.config import load_config
    from mrg.data.prepared import load_prepared_dataset
    from mrg.metrics.synthesis import render_synthesis_markdown, run_synthesis_evaluation
    from mrg.recipes.train import train
    from mrg.synthesize import Prompt, synthesize

    data, lm, vq = args.demo / "data", args.demo / "lm", args.vq or args.demo / "vq"
    for path in (data, lm, vq):
        if not path.is_dir():
            raise SystemExit(f"--demo {args.demo}: no {path.name}/ folder; run 'mrg demo --method mavilt --out DIR' first")
    cfg = load_config("mavilt-demo", [
        f"data.root={data}", f"model.llm.name_or_path={lm}", f"method.vq={vq}", f"train.seed={args.seed}",
        f"train.max_steps={args.pretrain_steps}", f"stages.finetune.train.max_steps={args.finetune_steps}",
        f"method.directions={{image-to-report: 1.0, report-to-image: {args.image_weight}}}", *args.overrides,
    ])
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    run = args.out / "run"
    train(cfg, run, resume="auto")
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    test = load_prepared_dataset(data).split("test")
    synthesize(run, [Prompt(s.id, s.report, s.id) for s in test], args.out / "images", seed=args.seed,
               top_k=args.top_k, cfg_scale=args.cfg_scale, temperature=args.temperature)
    seconds["synthesize"] = time.perf_counter() - start

    start = time.perf_counter()
    record = run_synthesis_evaluation(args.out / "images", data, args.out / "eval")
    seconds["evaluate"] = time.perf_counter() - start

    # ceilings: the real test images at the tokenizer's size, and through the tokenizer and back
    start = time.perf_counter()
    ceilings = {name: run_synthesis_evaluation(folder, data, args.out / f"eval-{folder.name}")
                for name, folder in _ceiling_folders(vq, data, test, args.out).items()}
    seconds["ceilings"] = time.perf_counter() - start

    print(f"pretrain {args.pretrain_steps} steps, finetune {args.finetune_steps}, report-to-image weight "
          f"{args.image_weight}, top-k {args.top_k}, cfg-scale {args.cfg_scale}, temperature {args.temperature}, "
          f"seed {args.seed}, overrides {args.overrides}; "
          f"{len(test)} test reports")
    print(render_synthesis_markdown(record))
    paired = record["paired"]["mean_image"]
    verdict = ("beats it (paired p < 0.05)" if paired["delta"] > 0 and paired["p_value"] < 0.05
               else "above it, not significantly" if paired["delta"] > 0 else "does not beat it")
    print(f"consistency F1 {record['consistency_f1']:.4f} vs mean image "
          f"{record['columns']['mean_image']['consistency_f1']:.4f}: {verdict} (p = {paired['p_value']:.3f}; pool "
          "several seeds with benchmarks/bench_synthesis_seeds.py)")
    for name, ceiling in ceilings.items():
        print(f"{name}: consistency F1 {ceiling['consistency_f1']:.4f}, macro {ceiling['consistency_macro_f1']:.4f}, "
              f"FID {ceiling['fid']:.2f}, MS-SSIM {ceiling['ms_ssim']:.4f}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


def _ceiling_folders(vq_run: Path, data: Path, test: list, out: Path) -> dict[str, Path]:
    """Two folders in the synthesized layout: each test study's real first view resized to the tokenizer's size,
    and the same image encoded and decoded by the tokenizer; the prompt is the study's own report."""
    import torch
    from PIL import Image

    from mrg.files import write_json_atomic
    from mrg.methods.mavilt import reconstruct_studies
    from mrg.recipes.vq import load_vq_checkpoint

    vq, _, _ = load_vq_checkpoint(vq_run)
    size = vq.eval().cfg.image_size
    small, recon = out / "real-small", out / "reconstructed"
    small.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        reconstruct_studies(vq, data, test, recon)
    for study in test:
        Image.open(data / study.image_paths[0]).convert("L").resize((size, size)).save(small / f"{study.id}.png")
        for folder in (small, recon):
            write_json_atomic(folder / f"{study.id}.json", {"id": study.id, "prompt": study.report,
                                                            "study_id": study.id, "seed": 0})
    return {f"real at {size} px": small, "reconstructed by the tokenizer": recon}


if __name__ == "__main__":
    main()
