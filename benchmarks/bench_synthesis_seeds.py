"""Synthesized images of several training seeds against the mean image, pooled (issue 12 acceptance).

One seed's 160 test prompts give a wide interval on the consistency difference; pooling the folders of
independently trained runs (``bench_mavilt_synthesis.py --seed S``) pairs every (seed, prompt) image with the mean
image on the same prompt, so the test asks whether the method, not one run, beats the baseline. Same classifier,
threshold and statistic as ``mrg evaluate --images`` (micro consistency F1; ``mrg.metrics.stats.paired_test``).

    python benchmarks/bench_synthesis_seeds.py --data /tmp/mavilt-demo/data /work/bench/mavilt-full*/images
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="'mrg synthesize' folders, one per training seed")
    parser.add_argument("--data", type=Path, required=True, help="the prepared dataset the prompts come from")
    args = parser.parse_args()

    import numpy as np

    from mrg.data.prepared import load_prepared_dataset
    from mrg.metrics.stats import paired_test
    from mrg.metrics.synthesis import (
        ClassifierConfig,
        classify,
        consistency_statistic,
        label_f1,
        load_gray,
        load_or_train_classifier,
        mean_image,
        prompt_labels,
        read_synthesized_folder,
        split_images,
    )

    dataset, cfg = load_prepared_dataset(args.data), ClassifierConfig()
    model, _ = load_or_train_classifier(dataset, cfg)
    _, train_images = split_images(dataset, "train", cfg)
    mean_pred, _ = classify(model, mean_image(train_images, 1))
    synthesized, baseline, targets = [], [], []
    for folder in args.folders:
        items = read_synthesized_folder(folder)
        pred, _ = classify(model, load_gray([item.path for item in items], cfg.image_size))
        labels, _ = prompt_labels(items, dataset)
        f1 = label_f1(pred, labels)["micro_f1"]
        print(f"{folder}: {len(items)} images, consistency F1 {f1:.4f}, mean image "
              f"{label_f1(np.repeat(mean_pred, len(items), 0), labels)['micro_f1']:.4f}")
        synthesized.append(pred)
        baseline.append(np.repeat(mean_pred, len(items), 0))
        targets.append(labels)
    pred, base, ref = np.concatenate(synthesized), np.concatenate(baseline), np.concatenate(targets)
    c = paired_test([consistency_statistic(pred, ref)], [consistency_statistic(base, ref)], resamples=2000)
    c = c["consistency_f1"]
    print(f"pooled over {len(args.folders)} folders ({len(pred)} images): synthesized {c.a:.4f}, mean image {c.b:.4f}, "
          f"delta {c.delta:+.4f} (95% CI {c.ci_low:+.4f} to {c.ci_high:+.4f}, paired p = {c.p_value:.4f})")


if __name__ == "__main__":
    main()
