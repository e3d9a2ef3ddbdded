"""How well cheap probes separate on the easy and the hard synthetic sets (CE micro-F1, 14 observations).

For each difficulty, one dataset of N studies (default 2,000, seed 0, two views at 128 px, split 70/10/20,
exactly what ``mrg prepare synthetic --difficulty D`` writes: the same generator functions, rendered in
memory) and these predictors of the test studies' CheXpert-14 labels, scored with mrg's CE micro-F1
(``ce_f1``: 1.0 is positive, -1.0 / 0.0 / blank negative), from weakest to strongest:

* **most-frequent report**: the training split's most frequent report (``mrg.baselines.most_frequent_report``,
  as the demo's baseline), labelled by mrg's labeler, predicted for every test study;
* **best constant labels**: the label vector that maximises micro-F1 on the training split (the top-k most
  prevalent observations, k chosen on train): the best any model can do from label priors alone;
* **1-NN on pixels**: both views averaged down to 32 x 32, standardised per pixel, the nearest training
  study (L2) lends its label vector;
* **linear probe**: logistic regression on those 2 x 32 x 32 pixels, 14 outputs, weight decay and a global
  decision threshold chosen on the validation split; training seeds vary the minibatch order;
* **CNN, flattened head**: five convolutions over each 128 px view (shared weights), the two 8 x 8 feature
  maps flattened into a linear layer, 14 outputs (99,710 parameters);
* **CNN, pooled head**: six convolutions per view down to 16 x 16 x 64, then global max, global mean and a
  4 x 4 mean pool of each view into a linear layer (125,598 parameters): the max pool suits small findings
  anywhere in the film (a nodule, a fracture) that a flattened head must learn position by position.

Both CNNs: AdamW with a one-cycle schedule, batch 32, ``--epochs`` epochs, the epoch and the global decision
threshold with the best validation micro-F1. The linear probe and the CNNs are trained with ``--seeds``
(default 0 1 2) on the same data; the table shows mean and standard deviation over seeds, then the pooled
CNN's per-observation F1 of seed 0.

    python benchmarks/bench_hard_synthetic.py [--n 2000] [--epochs 30] [--seeds 0 1 2] [--threads 2]
    python benchmarks/bench_hard_synthetic.py --describe    # only the datasets' statistics, a few seconds
    python benchmarks/bench_hard_synthetic.py --skip-cnn    # the probes without a CNN, about a minute

Each difficulty starts with the dataset's statistics: positive / hedged prevalence per observation,
findings per abnormal study, the largest correlation (phi) between the presence of two finding kinds
in abnormal studies, the share of studies with each distractor, how many label vectors mrg's labeler reads
back exactly from the reports, and report length and vocabulary after R2Gen's cleaning.

About 80 minutes on 2 cores (77 measured; the pooled CNN is most of it). Other processes change the time, not the figures:
with the same seeds, torch version and thread count the scores are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mrg.baselines import most_frequent_report  # noqa: E402
from mrg.data.chexpert import OBSERVATIONS  # noqa: E402
from mrg.data.sources.synthetic import CHUNK, generate_studies, render_frontal, render_lateral, sample_cases  # noqa: E402
from mrg.data.text import normalize_report  # noqa: E402
from mrg.metrics.clinical import clinical_efficacy, per_observation_table  # noqa: E402
from mrg.metrics.labeler import label_reports  # noqa: E402

THRESHOLDS = np.round(np.arange(0.15, 0.71, 0.05), 2)


def make_dataset(n: int, seed: int, size: int, difficulty: str) -> dict:
    """Studies, the two views as (n, 2, size, size) uint8 and the 0/1 target matrix (n, 14)."""
    studies = generate_studies(n, seed, difficulty=difficulty)
    cases = sample_cases(n, seed, difficulty=difficulty)
    films = np.empty((n, 2, size, size), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        chunk = cases[start : start + CHUNK]
        films[start : start + len(chunk), 0] = render_frontal(chunk, size, seed)
        films[start : start + len(chunk), 1] = render_lateral(chunk, size, seed)
    targets = np.asarray([[1.0 if (s.labels or {}).get(o) == 1.0 else 0.0 for o in OBSERVATIONS] for s in studies],
                         dtype=np.float32)
    split = np.asarray([s.split for s in studies])
    return {"studies": studies, "films": films, "targets": targets, "split": split}


def describe(studies: list) -> None:
    """Print prevalence, findings per study, the strongest co-occurrence and report length of a dataset."""
    n = len(studies)
    positive = Counter(o for s in studies for o, v in s.labels.items() if v == 1.0)
    hedged = Counter(o for s in studies for o, v in s.labels.items() if v == -1.0)
    cells = [f"{o} {100 * positive[o] / n:.1f}" + (f" / {100 * hedged[o] / n:.1f}" if hedged[o] else "")
             for o in OBSERVATIONS if positive[o] or hedged[o]]
    print(f"  prevalence, positive / hedged %: {', '.join(cells)}")
    abnormal = [s for s in studies if s.extra["findings"]]
    counts = np.asarray([len(s.extra["findings"]) for s in abnormal])
    kinds = sorted({f["kind"] for s in abnormal for f in s.extra["findings"]})
    present = np.asarray([[any(f["kind"] == k for f in s.extra["findings"]) for k in kinds] for s in abnormal], float)
    corr = np.corrcoef(present.T)
    np.fill_diagonal(corr, 0.0)
    i, j = np.unravel_index(np.abs(corr).argmax(), corr.shape)
    hedged_share = np.mean([f.get("hedged", False) for s in abnormal for f in s.extra["findings"]])
    print(f"  abnormal studies {len(abnormal) / n:.1%}: {counts.mean():.2f} findings each, "
          f"{np.mean((counts >= 2) & (counts <= 5)):.1%} with 2-5, {hedged_share:.1%} of findings hedged; "
          f"largest |phi| between two kinds {abs(corr[i, j]):.2f} ({kinds[i]}, {kinds[j]})")
    shares = Counter(d["kind"] for s in studies for d in {d["kind"]: d for d in s.extra.get("distractors", [])}.values())
    if shares:
        print(f"  distractors, % of studies: {', '.join(f'{k} {100 * v / n:.1f}' for k, v in sorted(shares.items()))}")
    read = label_reports([s.report for s in studies])
    exact = sum(got == s.labels for got, s in zip(read, studies, strict=True))
    print(f"  mrg's labeler reads {exact:,} of {n:,} label vectors exactly from the reports")
    words = [normalize_report(s.report, "r2gen-iu").split() for s in studies]
    print(f"  reports: {len({s.report for s in studies}):,} distinct of {n:,}, {np.mean([len(w) for w in words]):.1f} "
          f"words on average, vocabulary {len({t for w in words for t in w})} (after R2Gen's IU cleaning)")


def as_labels(matrix: np.ndarray) -> list[dict[str, float]]:
    return [{o: 1.0 for o, v in zip(OBSERVATIONS, row, strict=True) if v} for row in matrix]


def ce_f1(pred: np.ndarray, truth: list[dict[str, float]]) -> float:
    return clinical_efficacy(as_labels(pred), truth)["ce_f1"]


def most_frequent_probe(data: dict, idx: dict) -> float:
    train = [data["studies"][i] for i in idx["train"]]
    report = most_frequent_report(train)
    labels = label_reports([report])[0]
    pred = np.asarray([[1.0 if labels.get(o) == 1.0 else 0.0 for o in OBSERVATIONS]] * len(idx["test"]))
    return ce_f1(pred, [data["studies"][i].labels for i in idx["test"]])


def best_constant_probe(data: dict, idx: dict) -> tuple[float, list[str]]:
    y = data["targets"][idx["train"]]
    order = np.argsort(-y.mean(axis=0))
    best_k, best = 0, -1.0
    for k in range(len(OBSERVATIONS) + 1):
        vector = np.zeros(len(OBSERVATIONS))
        vector[order[:k]] = 1
        score = ce_f1(np.repeat(vector[None], len(y), 0), [data["studies"][i].labels for i in idx["train"]])
        if score > best:
            best_k, best = k, score
    vector = np.zeros(len(OBSERVATIONS))
    vector[order[:best_k]] = 1
    test = np.repeat(vector[None], len(idx["test"]), 0)
    return ce_f1(test, [data["studies"][i].labels for i in idx["test"]]), [OBSERVATIONS[i] for i in order[:best_k]]


def small_pixels(films: np.ndarray, side: int = 32) -> np.ndarray:
    n, v, s, _ = films.shape
    f = s // side
    return films.reshape(n, v, side, f, side, f).mean(axis=(3, 5)).reshape(n, -1).astype(np.float32)


def nearest_neighbour_probe(features: np.ndarray, data: dict, idx: dict) -> float:
    train, test = features[idx["train"]], features[idx["test"]]
    d2 = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None]
    nearest = idx["train"][np.argmin(d2, axis=1)]
    return ce_f1(data["targets"][nearest], [data["studies"][i].labels for i in idx["test"]])


def _threshold(prob_val: np.ndarray, data: dict, idx: dict) -> float:
    truth = [data["studies"][i].labels for i in idx["val"]]
    return float(max(THRESHOLDS, key=lambda t: ce_f1(prob_val >= t, truth)))


def linear_probe(features: np.ndarray, data: dict, idx: dict, seed: int) -> float:
    torch.manual_seed(seed)
    x = torch.from_numpy(features)
    y = torch.from_numpy(data["targets"])
    best = None
    for weight_decay in (1e-3, 1e-2, 1e-1):
        torch.manual_seed(seed)
        model = nn.Linear(x.shape[1], len(OBSERVATIONS))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=weight_decay)
        train = torch.from_numpy(idx["train"])
        for _ in range(60):
            for batch in train[torch.randperm(len(train))].split(64):
                opt.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch]).backward()
                opt.step()
        with torch.no_grad():
            prob = torch.sigmoid(model(x)).numpy()
        t = _threshold(prob[idx["val"]], data, idx)
        val = ce_f1(prob[idx["val"]] >= t, [data["studies"][i].labels for i in idx["val"]])
        if best is None or val > best[0]:
            best = (val, prob, t)
    _, prob, t = best
    return ce_f1(prob[idx["test"]] >= t, [data["studies"][i].labels for i in idx["test"]])


def _block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout), nn.ReLU()]


class FlatCNN(nn.Module):
    """Five convolutions per view (shared), 128 px -> 8 x 8 x 32, both views' maps flattened into one linear layer."""

    def __init__(self, size: int) -> None:
        super().__init__()
        block = _block
        self.trunk = nn.Sequential(*block(1, 16, 5, 2), *block(16, 32, 3, 2), *block(32, 32, 3, 1),
                                   *block(32, 48, 3, 2), *block(48, 32, 3, 2))
        side = size // 16
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * 32 * side * side, len(OBSERVATIONS)))

    def forward(self, films: torch.Tensor) -> torch.Tensor:  # films: (B, 2, S, S) in [0, 1]
        b = films.shape[0]
        maps = self.trunk(films.reshape(b * 2, 1, *films.shape[2:]) - 0.5)  # (2B, 32, S/16, S/16)
        return self.head(maps.reshape(b, -1))


class PooledCNN(nn.Module):
    """Six convolutions per view (shared), 128 px -> 16 x 16 x 64, pooled (max, mean, 4 x 4 mean) per view."""

    def __init__(self, size: int) -> None:
        super().__init__()
        block = _block
        self.trunk = nn.Sequential(*block(1, 16, 5, 2), *block(16, 32, 3, 1), *block(32, 32, 3, 2),
                                   *block(32, 48, 3, 1), *block(48, 64, 3, 2), *block(64, 64, 3, 1))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * (64 * 2 + 64 * 16), len(OBSERVATIONS)))

    def forward(self, films: torch.Tensor) -> torch.Tensor:  # films: (B, 2, S, S) in [0, 1]
        b = films.shape[0]
        maps = self.trunk(films.reshape(b * 2, 1, *films.shape[2:]) - 0.5)  # (2B, 64, S/8, S/8)
        pooled = torch.cat([maps.amax((2, 3)), maps.mean((2, 3)), nn.functional.adaptive_avg_pool2d(maps, 4).flatten(1)], 1)
        return self.head(pooled.reshape(b, -1))


CNNS = {"CNN, flattened head": FlatCNN, "CNN, pooled head": PooledCNN}


def cnn_probe(data: dict, idx: dict, seed: int, epochs: int, architecture: type[nn.Module]) -> tuple[float, np.ndarray, float]:
    torch.manual_seed(seed)
    films = torch.from_numpy(data["films"])
    y = torch.from_numpy(data["targets"])
    model = architecture(films.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    train = torch.from_numpy(idx["train"])
    steps = epochs * ((len(train) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    best = (-1.0, None, 0.5)
    val_truth = [data["studies"][i].labels for i in idx["val"]]

    def predict(rows: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for part in torch.from_numpy(rows).split(100):
                out.append(torch.sigmoid(model(films[part].float() / 255.0)))
        model.train()
        return torch.cat(out).numpy()

    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(32):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(films[batch].float() / 255.0), y[batch])
            loss.backward()
            opt.step()
            sched.step()
        prob_val = predict(idx["val"])
        t = _threshold(prob_val, data, idx)
        score = ce_f1(prob_val >= t, val_truth)
        if score > best[0]:
            best = (score, predict(idx["test"]), t)
    _, prob_test, t = best
    pred = prob_test >= t
    return ce_f1(pred, [data["studies"][i].labels for i in idx["test"]]), pred, t


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of the probes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--difficulties", nargs="+", default=["easy", "hard"])
    parser.add_argument("--describe", action="store_true", help="only print the datasets' statistics")
    parser.add_argument("--skip-cnn", action="store_true", help="only the probes without a CNN (about a minute)")
    args = parser.parse_args()
    if args.describe:
        for difficulty in args.difficulties:
            print(f"[{difficulty}] n={args.n} seed={args.seed}")
            describe(generate_studies(args.n, args.seed, difficulty=difficulty))
        return
    torch.set_num_threads(args.threads)
    print(f"bench_hard_synthetic: n={args.n} seed={args.seed} image_size={args.image_size} epochs={args.epochs} "
          f"seeds={args.seeds} threads={args.threads} torch={torch.__version__} cpus={os.cpu_count()}")
    rows: dict[str, dict[str, str]] = {}
    per_obs: dict[str, dict[str, tuple[int, float]]] = {}
    for difficulty in args.difficulties:
        started = time.perf_counter()
        data = make_dataset(args.n, args.seed, args.image_size, difficulty)
        idx = {name: np.flatnonzero(data["split"] == name) for name in ("train", "val", "test")}
        positives = data["targets"][idx["test"]].sum(1)
        print(f"\n[{difficulty}] {len(idx['train'])}/{len(idx['val'])}/{len(idx['test'])} studies, "
              f"{positives.mean():.2f} positive observations per test study; "
              f"data made in {time.perf_counter() - started:.1f} s")
        describe(data["studies"])
        row: dict[str, str] = {}
        row["most-frequent report"] = f"{most_frequent_probe(data, idx):.3f}"
        constant, chosen = best_constant_probe(data, idx)
        row["best constant labels"] = f"{constant:.3f}"
        print(f"  best constant labels: {', '.join(chosen) or '(none)'}")
        features = small_pixels(data["films"])
        mean, sd = features[idx["train"]].mean(0), features[idx["train"]].std(0) + 1e-3
        features = (features - mean) / sd
        row["1-NN on pixels"] = f"{nearest_neighbour_probe(features, data, idx):.3f}"
        linear = []
        for seed in args.seeds:
            linear.append(linear_probe(features, data, idx, seed))
        row["linear probe"] = _mean_sd(linear)
        print(f"  linear probe per seed: {', '.join(f'{v:.3f}' for v in linear)}")
        first_pred = None
        for name, architecture in ({} if args.skip_cnn else CNNS).items():
            cnn = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                score, pred, threshold = cnn_probe(data, idx, seed, args.epochs, architecture)
                cnn.append(score)
                if architecture is PooledCNN and first_pred is None:
                    first_pred = pred
                print(f"  {name}, seed {seed}: CE F1 {score:.3f} (threshold {threshold:.2f}, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
            row[name] = _mean_sd(cnn)
        rows[difficulty] = row
        if first_pred is not None:
            table = per_observation_table(as_labels(first_pred), [data["studies"][i].labels for i in idx["test"]])
            per_obs[difficulty] = {r["observation"]: (int(r["support"]), float(r["f1"])) for r in table}
        counts = Counter(len(s.extra["findings"]) for s in data["studies"])
        print(f"  findings per study: {dict(sorted(counts.items()))}")

    print("\nCE micro-F1 on the test split (mean ± sd over training seeds where there are several)")
    names = list(next(iter(rows.values())))
    print(f"{'probe':<24}" + "".join(f"{d:>18}" for d in rows))
    for name in names:
        print(f"{name:<24}" + "".join(f"{rows[d][name]:>18}" for d in rows))
    print(f"load at end: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    if not per_obs:
        return
    print("\nCNN with pooled head (seed 0), F1 per observation on the test split (support in parentheses)")
    print(f"{'observation':<28}" + "".join(f"{d:>16}" for d in per_obs))
    for obs in OBSERVATIONS:
        cells = []
        for d in per_obs:
            support, f1 = per_obs[d].get(obs, (0, 0.0))
            cells.append(f"{f1:.2f} ({support})" if support else "-")
        print(f"{obs:<28}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
