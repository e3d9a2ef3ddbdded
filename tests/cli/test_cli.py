"""The top-level CLI: help, version and the single error handler."""

from __future__ import annotations

import os
import subprocess
import sys

import mrg


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mrg {mrg.__version__}"


def test_help_lists_commands(run_cli) -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "Radiology report generation" in result.stdout
    assert "config" in result.stdout


def test_unknown_command_is_one_line_exit_1(run_cli) -> None:
    result = run_cli("no-such-command")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: No such command 'no-such-command'. (see 'mrg --help')"]


def test_mrg_error_is_one_red_line(run_cli) -> None:
    result = run_cli("config", "show", "train.lrr=1")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown config key 'train.lrr'")
    assert "Traceback" not in result.output


def test_debug_env_shows_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mrg", "config", "show", "train.lrr=1"],
        capture_output=True,
        text=True,
        env={"MRG_DEBUG": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_config_show_resolves(run_cli) -> None:
    result = run_cli("config", "show", "train.lr=0.003")
    assert result.exit_code == 0
    assert "lr: 0.003" in result.stdout


def _spincount_after_import(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(extra_env)
    code = "import os, mrg.cli; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_cli_sets_short_openmp_spin_unless_user_chose_a_policy() -> None:
    assert _spincount_after_import({}) == "10000"
    assert _spincount_after_import({"GOMP_SPINCOUNT": "0"}) == "0"
    assert _spincount_after_import({"OMP_WAIT_POLICY": "PASSIVE"}) == "unset"


def test_config_list_shows_run_tokenizer_and_benchmark_presets(run_cli) -> None:
    out = run_cli("config", "list").stdout
    runs, vq, bench = (out.index(title) for title in ("run presets", "image tokenizer presets", "benchmark presets"))
    assert runs < vq < bench
    assert "trrg-demo" in out[runs:vq] and "demo  The demo's image tokenizer" in out[vq:bench]
    assert "trrg-ablations" in out[bench:] and "trrg-ablations" not in out[:bench]
