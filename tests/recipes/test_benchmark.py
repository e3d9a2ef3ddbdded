"""``mrg benchmark``: config checks, the leaderboard's statistics and files, and the shipped fast preset end to end."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from mrg.errors import ConfigError
from mrg.recipes.benchmark import _seed_summary, list_benchmarks, load_bench


def test_shipped_presets_load() -> None:
    assert {"fast", "learning", "hard"} <= set(list_benchmarks())
    for name in list_benchmarks():
        bench = load_bench(name)
        assert bench.systems and bench.datasets


def test_bad_configs_list_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "datasets: [{name: a, root: /x, synthetic: {n: 10}}]\n"
        "systems: [{name: s, config: demo, overides: []}, {name: s, config: demo}, {name: s, config: demo}]\n"
        "reference: t\nseeds: []\neval: [train.lr=1]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_bench(str(path))
    message = str(err.value)
    for expected in ("systems[1]: unknown config key 'overides'", "Did you mean 'overrides'",
                     "'systems' names must be unique", "give exactly one of 'root' and 'synthetic'",
                     "'reference' names 't', which is not a system", "'seeds' is empty", "give eval.key=value"):
        assert expected in message, expected
    path.write_text("datasets: [{name: a, root: /x}]\nsystems: [{name: s, config: demo, overides: []}]\n"
                    "baselines: [most-frequnet]\n")
    with pytest.raises(ConfigError) as err:
        load_bench(str(path))
    assert "'baselines' must be" in str(err.value) and "unknown config key 'overides'" in str(err.value)
    with pytest.raises(ConfigError, match="not a benchmark preset. Did you mean 'fast'"):
        load_bench("fats")


def test_seed_summary_is_a_t_interval() -> None:
    cell = _seed_summary([0.70, 0.74, 0.72])
    assert cell["mean"] == pytest.approx(0.72) and cell["sd"] == pytest.approx(0.02)
    half = 4.303 * 0.02 / 3**0.5  # t(0.975, 2 degrees of freedom)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((0.72 - half, 0.72 + half))
    assert _seed_summary([0.5])["ci_low"] is None


@pytest.mark.slow
def test_fast_preset_writes_a_leaderboard_with_intervals_and_paired_tests(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_cli("benchmark", "--config", "fast", "--out", out)
    assert result.exit_code == 0, result.output[-3000:]
    record = json.loads((out / "leaderboard.json").read_text())
    systems = [row["system"] for row in record["rows"]]
    assert systems[:2] == ["mrg-llm promptbook-wise", "two-stage"] and "most-frequent report" in systems
    assert any(s.startswith("nearest-neighbour") for s in systems)
    reference, two_stage = record["rows"][0], record["rows"][1]
    assert reference["runs"] == 2 and two_stage["runs"] == 2
    cell = two_stage["metrics"]["bleu_4"]
    assert len(cell["values"]) == 2 and cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert cell["test_ci_low"] <= cell["pooled"] <= cell["test_ci_high"] and 0 < cell["p_value"] <= 1
    assert reference["metrics"]["bleu_4"]["p_value"] is None  # the reference is not tested against itself
    with open(out / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["metric"] for r in rows} >= {"bleu_4", "ce_f1"} and all(r["per_seed"] for r in rows)
    page = (out / "leaderboard.html").read_text()
    assert page.count('<table class="leaderboard">') == 1 and "Content-Security-Policy" in page
    assert "leaderboard.html (and .md, .csv, .json)" in result.stdout and "| two-stage | 2 |" in (out / "leaderboard.md").read_text()
    # a second call reuses every finished run and evaluation
    started = time.perf_counter()
    again = run_cli("benchmark", "--config", "fast", "--out", out)
    assert again.exit_code == 0 and "finished before" in again.stdout, again.output[-2000:]
    assert "step 1/" not in again.stdout and time.perf_counter() - started < 60
    assert json.loads((out / "leaderboard.json").read_text())["rows"][1]["metrics"]["bleu_4"]["values"] == cell["values"]
    # another config for the same folder is refused
    refused = run_cli("benchmark", "--config", "fast", "--out", out, "seeds=[0]")
    assert refused.exit_code == 1 and "holds a benchmark of another config" in refused.stderr
