"""Dataset sources for ``mrg prepare``: each module turns one public dataset into the prepared format.

Shared here: where downloads are cached and where the shipped data manifests (split lists, archive
checksums: ids and numbers only, never data) live.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mrg
from mrg.errors import DataError

__all__ = ["cache_root", "manifest_path", "manifest_roots"]


def cache_root() -> Path:
    """The root of mrg's download cache: ``$MRG_CACHE_DIR``, else ``$XDG_CACHE_HOME/mrg``, else ``~/.cache/mrg``."""
    if os.environ.get("MRG_CACHE_DIR"):
        return Path(os.environ["MRG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mrg"


def manifest_roots() -> list[Path]:
    """Where ``data_manifests/`` is looked for, in order.

    ``$MRG_DATA_MANIFESTS`` when set; else the checkout beside the package (editable installs, CI) and the copy
    a wheel installs under ``<prefix>/share/mrg/data_manifests`` (``[tool.setuptools.data-files]``).
    """
    if os.environ.get("MRG_DATA_MANIFESTS"):
        return [Path(os.environ["MRG_DATA_MANIFESTS"]).expanduser()]
    return [
        Path(mrg.__file__).resolve().parent.parent / "data_manifests",
        Path(sys.prefix) / "share" / "mrg" / "data_manifests",
    ]


def manifest_path(*parts: str) -> Path:
    """A file under the project's ``data_manifests/`` folder (see :func:`manifest_roots`).

    Raises:
        DataError: the file is in none of the places looked at.
    """
    candidates = [root.joinpath(*parts) for root in manifest_roots()]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(path) for path in candidates)
    raise DataError(
        f"data manifest {'/'.join(parts)} not found (looked at {looked}); reinstall mrg "
        "(pip install -e . from a checkout) or set MRG_DATA_MANIFESTS to a checkout's data_manifests folder"
    )
