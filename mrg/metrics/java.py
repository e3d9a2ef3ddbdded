"""Locating Java and the jars that pycocoevalcap ships (METEOR 1.5, Stanford PTB tokenizer)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from mrg.errors import MetricError

JAVA_HINT = "install a Java runtime, e.g. 'apt-get install default-jre-headless'"


def find_java(purpose: str, skip_hint: str) -> str:
    """The ``java`` executable on PATH (or under ``$JAVA_HOME/bin``).

    Args:
        purpose: what needs Java, for the message (e.g. "METEOR").
        skip_hint: how to do without it (e.g. "or pass --no-meteor").

    Raises:
        MetricError: no Java runtime was found.
    """
    found = shutil.which("java")
    if found:
        return found
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MetricError(f"{purpose} needs Java but no 'java' is on PATH; {JAVA_HINT}, {skip_hint}")


def pycocoevalcap_file(*parts: str) -> Path:
    """A file inside the installed pycocoevalcap package (read only; nothing is ever written there).

    Raises:
        MetricError: pycocoevalcap or the file is missing.
    """
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricError("pycocoevalcap is not installed; run 'pip install pycocoevalcap==1.2'")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*parts)
        if path.is_file():
            return path
    where = "/".join(parts)
    raise MetricError(f"pycocoevalcap/{where} is missing from the installed package; reinstall it with "
                      "'pip install --force-reinstall pycocoevalcap==1.2'")
