"""Shared fixtures: CLI runner, reference-data locations and small synthetic inputs."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

# Tests never show progress bars and never reach the network beyond loopback.
os.environ.setdefault("MRG_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# random:<kind> models and downloads are cached per test session, never in the user's ~/.cache/mrg
os.environ.setdefault("MRG_CACHE_DIR", tempfile.mkdtemp(prefix="mrg-test-cache-"))

import mrg.cli  # noqa: E402,F401  (its import sets the CLI's OpenMP spin default before any test imports torch)


@dataclass
class CliResult:
    """What a command left behind: its exit code and the text it printed."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``mrg ARGS...`` in-process through the real entry point (error handler included)."""
    from mrg.cli import main

    def _run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the calling test when it is absent (a user's clone has none)."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared is not part of the product)")
    return path


@pytest.fixture
def python_executable() -> str:
    return sys.executable
