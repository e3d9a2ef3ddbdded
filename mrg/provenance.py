"""Provenance stamps: which code, packages and command produced an output directory."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import mrg

_PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "pycocoevalcap", "nltk", "pandas", "numpy")


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that change numbers (None when a package is absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_describe() -> str | None:
    """``git describe --always --dirty`` of the mrg source tree, or None outside a git checkout."""
    source_dir = Path(mrg.__file__).resolve().parent.parent
    if not (source_dir / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def utc_now() -> str:
    """The current UTC time in ISO 8601 with a trailing Z."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def provenance(**extra: Any) -> dict[str, Any]:
    """A provenance record: mrg version, git state, python, platform, packages, command line and time."""
    record: dict[str, Any] = {
        "mrg_version": mrg.__version__,
        "git": git_describe(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "command": sys.argv[:1] and [Path(sys.argv[0]).name, *sys.argv[1:]],
        "created": utc_now(),
    }
    record.update(extra)
    return record
