"""Where the shipped data manifests are found: the checkout, a wheel's share/ folder, or $MRG_DATA_MANIFESTS."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mrg.data import sources
from mrg.errors import DataError

CHECKOUT = Path(__file__).resolve().parents[2]


def test_checkout_manifest_is_found(monkeypatch) -> None:
    monkeypatch.delenv("MRG_DATA_MANIFESTS", raising=False)
    assert sources.manifest_path("iu_xray", "r2gen_split.json") == CHECKOUT / "data_manifests/iu_xray/r2gen_split.json"


def test_wheel_location_is_used_when_no_checkout(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MRG_DATA_MANIFESTS", raising=False)
    fake_package = tmp_path / "site-packages" / "mrg" / "__init__.py"
    monkeypatch.setattr(sources.mrg, "__file__", str(fake_package))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    shipped = tmp_path / "env/share/mrg/data_manifests/mimic_cxr/releases.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_text("{}")
    assert sources.manifest_path("mimic_cxr", "releases.json") == shipped


def test_missing_manifest_names_the_places_and_the_fix(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MRG_DATA_MANIFESTS", str(tmp_path))
    with pytest.raises(DataError) as err:
        sources.manifest_path("iu_xray", "r2gen_split.json")
    message = str(err.value)
    assert str(tmp_path / "iu_xray/r2gen_split.json") in message
    assert "MRG_DATA_MANIFESTS" in message


def test_pyproject_ships_every_manifest_file() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    shipped = {
        (target, source)
        for target, files in config["tool"]["setuptools"]["data-files"].items()
        for source in files
    }
    expected = {
        ("share/mrg/" + str(path.parent.relative_to(CHECKOUT)), str(path.relative_to(CHECKOUT)))
        for path in (CHECKOUT / "data_manifests").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == expected
