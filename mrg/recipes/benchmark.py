"""``mrg benchmark``: methods × seeds × datasets (+ baselines and other code bases' predictions) on one leaderboard.

A benchmark config (``mrg/configs/benchmarks/*.yaml`` or a YAML path) names datasets (a prepared folder, or a
synthetic set made here), the systems to train (a method preset plus overrides each), seeds, baselines and
prediction files of other code bases. ``run_benchmark`` then, for every dataset:

1. prepares the dataset (synthetic ones) and, when asked, trains the frozen domain LM (``mrg train-lm``);
2. trains every system for every seed (``mrg.recipes.train``; finished stages are reused, unfinished ones resumed),
   generates the test reports and scores them (``mrg.evaluate``), reusing what a previous call finished;
3. scores the baselines (most-frequent report; nearest-neighbour retrieval under a trained encoder) and the
   external predictions (R2Gen ``res.csv``, R2GenGPT ``test_result.json`` or JSONL) the same way;
4. pools every system's seeds into one evaluation over (seed, study) items, which gives the test-bootstrap
   interval and the paired test against the reference system (two-sided approximate randomisation over the same
   items; a baseline with one run is repeated per seed so the pairs line up);
5. writes ``leaderboard.md``, ``.csv``, ``.json`` and ``.html``: per metric the mean over seeds with its 95%
   t-interval, the test-bootstrap 95% interval of the pooled set, and the paired p-value.

The test split is read only by generation and evaluation, never by training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mrg.config import PRESET_DIR, LMConfig, build_config, config_to_dict, load_config, read_config_file
from mrg.console import info
from mrg.errors import ConfigError, OutputDirError
from mrg.files import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from mrg.metrics.registry import display_name
from mrg.provenance import provenance, utc_now

BENCH_DIR = PRESET_DIR / "benchmarks"
COLUMN_SETS: dict[str, tuple[str, ...]] = {
    "default": ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_f1", "ce_macro_f1"),
    # ReXrank's columns (model-based ones need eval.metrics and their weights; absent ones show as "-")
    "rexrank": ("bleu_2", "bertscore", "semb_score", "radgraph_f1_partial", "radcliq_v1_inverse", "ratescore", "green"),
}


@dataclass(frozen=True, kw_only=True)
class BenchDataset:
    """One dataset of a benchmark: a prepared folder, or a synthetic set made into the benchmark folder."""

    name: str
    root: str | None = None
    """A folder written by ``mrg prepare`` (IU X-ray, MIMIC-CXR, ...)."""
    synthetic: dict[str, Any] | None = None
    """``mrg prepare synthetic`` options instead of ``root``: n, seed, image_size, views, difficulty."""
    lm: list[str] | None = None
    """Train the frozen domain LM (``mrg train-lm``; these are its ``key=value`` overrides) and give every system
    ``model.llm.name_or_path`` = that LM; None keeps each preset's LLM."""


@dataclass(frozen=True, kw_only=True)
class BenchSystem:
    """One trained system: a method preset plus overrides (``data.root``, the LLM and ``train.seed`` are set here)."""

    name: str
    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class BenchExternal:
    """Predictions written by another code base, scored against a dataset's test split."""

    name: str
    dataset: str
    predictions: str


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """A benchmark grid (``mrg benchmark --config``)."""

    title: str = "mrg benchmark"
    datasets: list[dict[str, Any]] = field(default_factory=list)
    systems: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baselines: list[Literal["most-frequent", "nearest-neighbour"]] = field(
        default_factory=lambda: ["most-frequent", "nearest-neighbour"])
    nearest_neighbour_from: str | None = None
    """The system whose trained encoder the nearest-neighbour baseline uses (default: the reference, else the first)."""
    reference: str | None = None
    """The system the paired tests compare against (default: the first system)."""
    external: list[dict[str, Any]] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    """``eval.key=value`` overrides of every evaluation (e.g. eval.meteor=false, eval.bootstrap=1000)."""
    columns: Literal["default", "rexrank"] = "default"
    resamples: int = 1000
    """Bootstrap and randomisation resamples of the pooled evaluations."""


@dataclass
class Bench:
    """A checked benchmark config: its typed parts."""

    config: BenchConfig
    datasets: list[BenchDataset]
    systems: list[BenchSystem]
    external: list[BenchExternal]
    source: dict[str, Any]


def list_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.yaml"))


def load_bench(source: str, overrides: list[str] | None = None) -> Bench:
    """Read and check a benchmark config (a shipped name or a YAML path); every problem in one message.

    Raises:
        ConfigError: unknown file or keys, wrong types, duplicate or unknown names.
    """
    path = Path(source)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = BENCH_DIR / f"{source}.yaml"
        if not path.is_file():
            from mrg.metrics.registry import suggest

            raise ConfigError(f"--config {source}: not a benchmark preset.{suggest(source, list_benchmarks())} "
                              f"Presets: {', '.join(list_benchmarks())}; or give a YAML path")
    elif not path.is_file():
        raise ConfigError(f"--config {source}: file not found")
    data = read_config_file(path)
    problems: list[str] = []
    try:
        cfg = build_config(BenchConfig, data, overrides)
    except ConfigError as err:  # still check the entries below, so one message lists every problem
        problems.append(str(err))
        lists = {k: v for k, v in data.items() if k in ("datasets", "systems", "external") and isinstance(v, list)}
        cfg = BenchConfig(**lists)

    def entries(kind: type, items: list[dict[str, Any]], key: str) -> list[Any]:
        built = []
        for number, item in enumerate(items, start=1):
            try:
                built.append(build_config(kind, item))
            except ConfigError as err:
                problems.append(f"{key}[{number}]: {err}")
        return built

    datasets = entries(BenchDataset, cfg.datasets, "datasets")
    systems = entries(BenchSystem, cfg.systems, "systems")
    external = entries(BenchExternal, cfg.external, "external")
    problems += _bench_problems(cfg, datasets, systems, external)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return Bench(cfg, datasets, systems, external, {"config": str(path), "data": config_to_dict(cfg)})


def _bench_problems(cfg: BenchConfig, datasets: list[BenchDataset], systems: list[BenchSystem],
                    external: list[BenchExternal]) -> list[str]:
    problems = []
    for kind, names in (("datasets", [d.name for d in datasets]), ("systems", [s.name for s in systems])):
        if not names:
            problems.append(f"'{kind}' is empty")
        if len(set(names)) != len(names):
            problems.append(f"'{kind}' names must be unique, got {names}")
    for d in datasets:
        if (d.root is None) == (d.synthetic is None):
            problems.append(f"dataset {d.name}: give exactly one of 'root' and 'synthetic'")
    system_names = {s.name for s in systems}
    for key in ("reference", "nearest_neighbour_from"):
        value = getattr(cfg, key)
        if value is not None and value not in system_names:
            problems.append(f"'{key}' names '{value}', which is not a system ({', '.join(sorted(system_names))})")
    problems += [f"external {e.name}: dataset '{e.dataset}' is not in 'datasets'" for e in external
                 if e.dataset not in {d.name for d in datasets}]
    if not cfg.seeds:
        problems.append("'seeds' is empty")
    bad = [o for o in cfg.eval if not o.startswith("eval.")]
    if bad:
        problems.append(f"'eval' holds {bad[0]!r}; give eval.key=value overrides")
    return problems


# ----------------------------------------------------------------------------------------------- running


@dataclass
class SystemRuns:
    """The evaluations of one system on one dataset: one per seed (baselines may have one)."""

    dataset: str
    name: str
    kind: Literal["method", "baseline", "external"]
    evaluations: list[Path] = field(default_factory=list)
    """Evaluation folders (each with metrics.json and its predictions), in seed order."""
    predictions: list[Path] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)


def run_benchmark(bench: Bench, out_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Run the grid into ``out_dir`` (reusing finished work) and write the leaderboard files.

    Returns:
        The leaderboard record (also ``leaderboard.json``).

    Raises:
        OutputDirError: ``out_dir`` holds a benchmark of another config (pass ``force`` to reuse it anyway).
    """
    out = Path(out_dir)
    _claim(out, bench, force)
    started = time.perf_counter()
    all_runs: list[SystemRuns] = []
    for dataset in bench.datasets:
        root, lm_dir = _prepare_dataset(dataset, out)
        all_runs += _train_systems(bench, dataset, root, lm_dir, out)
        all_runs += _baselines(bench, dataset, root, out, all_runs)
        all_runs += [_external(bench, e, root, out) for e in bench.external if e.dataset == dataset.name]
    record = leaderboard(bench, all_runs, out)
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_leaderboard(record, out)
    return record


def _claim(out: Path, bench: Bench, force: bool) -> None:
    stamp = out / "benchmark.json"
    if stamp.is_file() and not force:
        previous = read_json(stamp)
        if previous.get("bench", {}).get("data") != bench.source["data"]:
            raise OutputDirError(f"--out {out}: holds a benchmark of another config ({previous.get('bench', {}).get('config')}); "
                                 "choose another --out, or pass --force to reuse its finished runs")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, {"bench": bench.source, "created": utc_now(), "provenance": provenance()})


def _prepare_dataset(dataset: BenchDataset, out: Path) -> tuple[Path, Path | None]:
    """The dataset's folder (made when synthetic) and its trained domain LM (when asked for)."""
    from mrg.domain_lm import train_report_lm

    root = Path(dataset.root) if dataset.root else out / "datasets" / dataset.name
    if dataset.synthetic is not None:
        from mrg.data.sources.synthetic import prepare_synthetic

        info(f"dataset {dataset.name}: synthetic {dataset.synthetic}")
        prepare_synthetic(root, **dataset.synthetic)
    if dataset.lm is None:
        return root, None
    lm_dir = out / "lm" / dataset.name
    train_report_lm(root, lm_dir, build_config(LMConfig, {}, list(dataset.lm)))
    return root, lm_dir


def _eval_overrides(bench: Bench) -> list[str]:
    return list(bench.config.eval)


def _evaluate(predictions: Path, out_dir: Path, root: Path, bench: Bench, *, compare: Path | None = None,
              resamples: int = 0) -> Path:
    """Score ``predictions`` into ``out_dir`` unless a previous call did it for these very predictions."""
    from mrg.evaluate import run_evaluation

    cfg = load_config(None, _eval_overrides(bench)).eval
    if resamples:
        cfg = dataclasses.replace(cfg, bootstrap=resamples)
    digest = hashlib.sha256(predictions.read_bytes() + (compare.read_bytes() if compare else b"")
                            + repr(config_to_dict(cfg)).encode()).hexdigest()
    stamp = out_dir / "bench_inputs.sha256"
    if (out_dir / "metrics.json").is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return out_dir  # scored before, from these very predictions and settings
    run_evaluation(predictions, out_dir, cfg, data=root, split="test", compare=compare)
    write_text_atomic(stamp, digest + "\n")
    return out_dir


def _train_systems(bench: Bench, dataset: BenchDataset, root: Path, lm_dir: Path | None, out: Path) -> list[SystemRuns]:
    from mrg.generate import generate_reports
    from mrg.recipes.train import train

    runs = []
    for system in bench.systems:
        entry = SystemRuns(dataset.name, system.name, "method")
        for seed in bench.config.seeds:
            run_dir = out / "runs" / dataset.name / system.name / f"seed-{seed}"
            extra = [f"data.root={root}", f"train.seed={seed}"]
            if lm_dir is not None:
                extra.append(f"model.llm.name_or_path={lm_dir}")
            cfg = load_config(system.config, [*system.overrides, *extra, *_eval_overrides(bench)])
            info(f"{dataset.name} / {system.name} / seed {seed}: training")
            train(cfg, run_dir, resume="auto")
            predictions = run_dir / "test_predictions.jsonl"
            if not _generated_from_current(predictions, run_dir):
                generate_reports(run_dir, out_path=predictions, data_root=root, split="test")
            entry.evaluations.append(_evaluate(predictions, run_dir / "eval", root, bench))
            entry.predictions.append(predictions)
            entry.seeds.append(seed)
        runs.append(entry)
    return runs


def _generated_from_current(predictions: Path, run_dir: Path) -> bool:
    """Whether ``predictions`` were generated from the checkpoint the run would give now."""
    from mrg.checkpoint import resolve_checkpoint
    from mrg.generate import meta_path_for

    meta = meta_path_for(predictions)
    if not (predictions.is_file() and meta.is_file()):
        return False
    return read_json(meta).get("checkpoint") == str(resolve_checkpoint(run_dir, prefer="best").resolve())


def _baselines(bench: Bench, dataset: BenchDataset, root: Path, out: Path, trained: list[SystemRuns]) -> list[SystemRuns]:
    from mrg.baselines import most_frequent_report, nearest_neighbour_predictions
    from mrg.data.prepared import load_prepared_dataset

    found = []
    prepared = load_prepared_dataset(root)
    folder = out / "baselines" / dataset.name
    if "most-frequent" in bench.config.baselines:
        constant = most_frequent_report(prepared.split("train"))
        path = folder / "most-frequent" / "predictions.jsonl"
        write_jsonl_atomic(path, ({"id": s.id, "prediction": constant} for s in prepared.split("test")))
        found.append(SystemRuns(dataset.name, "most-frequent report", "baseline",
                                [_evaluate(path, path.parent / "eval", root, bench)], [path], [None]))
    if "nearest-neighbour" in bench.config.baselines:
        source = bench.config.nearest_neighbour_from or bench.config.reference or bench.systems[0].name
        runs = next(r for r in trained if r.dataset == dataset.name and r.name == source)
        entry = SystemRuns(dataset.name, f"nearest-neighbour ({source} encoder)", "baseline")
        for seed, evaluation in zip(runs.seeds, runs.evaluations, strict=True):
            path = folder / "nearest-neighbour" / f"seed-{seed}.jsonl"
            write_jsonl_atomic(path, nearest_neighbour_predictions(evaluation.parent, root))
            entry.evaluations.append(_evaluate(path, path.with_suffix(""), root, bench))
            entry.predictions.append(path)
            entry.seeds.append(seed)
        found.append(entry)
    return found


def _external(bench: Bench, external: BenchExternal, root: Path, out: Path) -> SystemRuns:
    path = Path(external.predictions)
    folder = out / "external" / external.dataset / external.name
    return SystemRuns(external.dataset, external.name, "external", [_evaluate(path, folder, root, bench)], [path], [None])


# -------------------------------------------------------------------------------------------- the table


def _pooled(runs: SystemRuns, seeds: list[int], folder: Path) -> Path:
    """One predictions file of every seed's predictions, ids ``<seed>:<id>`` (a single run is repeated per seed)."""
    rows = []
    by_seed = dict(zip(runs.seeds, runs.predictions, strict=True))
    for seed in seeds:
        source = by_seed.get(seed, runs.predictions[0])
        rows += [{"id": f"{seed}:{r['id']}", "prediction": r["prediction"]} for r in read_jsonl(source)]
    path = folder / "pooled_predictions.jsonl"
    write_jsonl_atomic(path, rows)
    return path


def _pooled_references(root: Path, seeds: list[int], folder: Path) -> Path:
    from mrg.data.prepared import load_prepared_dataset
    from mrg.data.text import normalize_report, resolve_cleaning

    prepared = load_prepared_dataset(root)
    mode = resolve_cleaning("auto", prepared.normalize)
    rows = [{"id": f"{seed}:{s.id}", "reference": s.report_clean or normalize_report(s.report, mode)}
            for seed in seeds for s in prepared.split("test")]
    path = folder / "pooled_references.jsonl"
    write_jsonl_atomic(path, rows)
    return path


def _t95(n: int) -> float:
    """The two-sided 95% Student-t quantile for n-1 degrees of freedom (n <= 30 tabulated; 1.96 beyond)."""
    table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
             2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]
    return table[n - 2] if 2 <= n <= 30 else 1.96


def _seed_summary(values: list[float]) -> dict[str, Any]:
    mean = statistics.mean(values)
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci_low": None, "ci_high": None, "values": values}
    sd = statistics.stdev(values)
    half = _t95(len(values)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "values": values}


def leaderboard(bench: Bench, all_runs: list[SystemRuns], out: Path) -> dict[str, Any]:
    """Aggregate every system: mean ± 95% t-interval over seeds, the pooled test-bootstrap interval, paired p."""
    from mrg.evaluate import run_evaluation

    columns = list(COLUMN_SETS[bench.config.columns])
    reference = bench.config.reference or bench.systems[0].name
    seeds = list(bench.config.seeds)
    rows = []
    for dataset in bench.datasets:
        runs = [r for r in all_runs if r.dataset == dataset.name]
        root = Path(dataset.root) if dataset.root else out / "datasets" / dataset.name
        pooled_dir = out / "pooled" / dataset.name
        refs = _pooled_references(root, seeds, pooled_dir)
        ref_runs = next(r for r in runs if r.name == reference)
        ref_pooled = _pooled(ref_runs, seeds, pooled_dir / "_reference")
        cfg = dataclasses.replace(load_config(None, _eval_overrides(bench)).eval, bootstrap=bench.config.resamples)
        for runs_one in runs:
            folder = pooled_dir / runs_one.name
            pooled = _pooled(runs_one, seeds, folder)
            compare = None if runs_one.name == reference else ref_pooled
            record = run_evaluation(pooled, folder / "eval", cfg, references=refs, compare=compare).record
            per_seed = [read_json(e / "metrics.json") for e in runs_one.evaluations]
            rows.append(_row(runs_one, record, per_seed, columns))
    return {"title": bench.config.title, "created": utc_now(), "reference": reference, "seeds": seeds,
            "columns": columns, "column_names": {c: display_name(c) for c in columns}, "rows": rows,
            "bench": bench.source, "provenance": provenance(),
            "method": {"seed_interval": "mean over seeds ± Student-t 95% interval (n-1 degrees of freedom)",
                       "test_interval": f"percentile bootstrap ({bench.config.resamples} resamples) over the pooled "
                                        "(seed, study) items",
                       "paired_test": "two-sided approximate randomisation against the reference over the same "
                                      "(seed, study) items; a one-run baseline is repeated per seed"}}


def _row(runs: SystemRuns, pooled: dict[str, Any], per_seed: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    intervals = (pooled.get("bootstrap") or {}).get("intervals", {})
    tests = (pooled.get("compare") or {}).get("metrics", {})
    cells = {}
    for key in columns:
        values = [float(m[key]) for m in per_seed if isinstance(m.get(key), (int, float))]
        if not values:
            cells[key] = None
            continue
        cell = _seed_summary(values)
        interval = intervals.get(key) or {}
        cell.update(pooled=pooled.get(key), test_ci_low=interval.get("low"), test_ci_high=interval.get("high"),
                    p_value=(tests.get(key) or {}).get("p_value"), delta=(tests.get(key) or {}).get("delta"))
        cells[key] = cell
    return {"dataset": runs.dataset, "system": runs.name, "kind": runs.kind, "runs": len(per_seed), "metrics": cells,
            "evaluations": [str(e) for e in runs.evaluations]}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    text = _fmt(cell["mean"])
    if cell.get("ci_low") is not None:
        text += f" ± {(cell['ci_high'] - cell['ci_low']) / 2:.3f}"
    if cell.get("test_ci_low") is not None:
        text += f" [{_fmt(cell['test_ci_low'])}, {_fmt(cell['test_ci_high'])}]"
    if cell.get("p_value") is not None:
        text += f" p={cell['p_value']:.3f}"
    return text


def render_markdown(record: dict[str, Any]) -> str:
    columns = record["columns"]
    lines = [f"# {record['title']}", "",
             f"Seeds {record['seeds']}; reference system **{record['reference']}**. Each cell: mean over seeds ± half "
             "the 95% t-interval; [95% test-bootstrap interval of the pooled (seed, study) set]; p of the paired test "
             "against the reference.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in record["rows"]):
        lines += [f"## {dataset}", "", "| system | runs | " + " | ".join(record["column_names"][c] for c in columns) + " |",
                  "|---|---:|" + "---|" * len(columns)]
        for row in (r for r in record["rows"] if r["dataset"] == dataset):
            lines.append(f"| {row['system']} | {row['runs']} | " + " | ".join(_cell_text(row["metrics"][c]) for c in columns)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(record: dict[str, Any]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "system", "kind", "runs", "metric", "mean", "sd", "seed_ci_low", "seed_ci_high",
                     "pooled", "test_ci_low", "test_ci_high", "delta_vs_reference", "p_value", "per_seed"])
    for row in record["rows"]:
        for key, cell in row["metrics"].items():
            if cell is None:
                continue
            writer.writerow([row["dataset"], row["system"], row["kind"], row["runs"], key, cell["mean"], cell["sd"],
                             cell["ci_low"], cell["ci_high"], cell["pooled"], cell["test_ci_low"], cell["test_ci_high"],
                             cell["delta"], cell["p_value"], " ".join(f"{v:.6f}" for v in cell["values"])])
    return buffer.getvalue()


def write_leaderboard(record: dict[str, Any], out: Path) -> None:
    from mrg.viewer.leaderboard import render_leaderboard_html

    write_text_atomic(out / "leaderboard.md", render_markdown(record))
    write_text_atomic(out / "leaderboard.csv", render_csv(record))
    write_text_atomic(out / "leaderboard.html", render_leaderboard_html(record))
    write_json_atomic(out / "leaderboard.json", record)  # last: its presence means the leaderboard is complete


__all__ = ["BenchConfig", "leaderboard", "list_benchmarks", "load_bench", "run_benchmark"]
