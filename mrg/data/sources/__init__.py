"""Dataset sources for ``mrg prepare``: each module turns one public dataset into the prepared format.

Shared here: where downloads are cached and where the shipped data manifests (split lists, archive
checksums: ids and numbers only, never data) live.
"""

from __future__ import annotations

import os
from pathlib import Path

import mrg
from mrg.errors import DataError

__all__ = ["cache_root", "manifest_path"]


def cache_root() -> Path:
    """The root of mrg's download cache: ``$MRG_CACHE_DIR``, else ``$XDG_CACHE_HOME/mrg``, else ``~/.cache/mrg``."""
    if os.environ.get("MRG_CACHE_DIR"):
        return Path(os.environ["MRG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mrg"


def manifest_path(*parts: str) -> Path:
    """A file under the project's ``data_manifests/`` folder (``$MRG_DATA_MANIFESTS`` overrides its location).

    Raises:
        DataError: the file is absent (mrg must run from a source checkout, or the variable must point at one).
    """
    root = Path(os.environ.get("MRG_DATA_MANIFESTS") or Path(mrg.__file__).resolve().parent.parent / "data_manifests")
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DataError(
            f"{path}: data manifest not found; install mrg from a source checkout (pip install -e .) "
            "or set MRG_DATA_MANIFESTS to the checkout's data_manifests folder"
        )
    return path
