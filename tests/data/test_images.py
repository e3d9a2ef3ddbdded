"""Image loading: PNG/JPEG, 16-bit PNG, DICOM with MONOCHROME1 inversion and windowing, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrg.data.images import load_image, resize_keep_aspect
from mrg.errors import DataError
from tests.builders import write_dicom


def test_png_and_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (10, 6), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("L", (10, 6), 90).save(tmp_path / "b.jpg")
    assert load_image(tmp_path / "a.png").mode == "L"
    assert load_image(tmp_path / "b.jpg").size == (10, 6)


def test_16_bit_png_is_scaled(tmp_path: Path) -> None:
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = np.asarray(load_image(tmp_path / "wide.png"))
    assert out.min() == 0 and out.max() == 255


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4000, 500, dtype=np.uint16), (4, 1))
    write_dicom(tmp_path / "m2.dcm", ramp, "MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1")
    m2 = np.asarray(load_image(tmp_path / "m2.dcm")).astype(int)
    m1 = np.asarray(load_image(tmp_path / "m1.dcm")).astype(int)
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    assert np.array_equal(m1, 255 - m2)


def test_dicom_window_is_applied(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4000, 500, dtype=np.uint16), (4, 1))
    write_dicom(tmp_path / "w.dcm", ramp, "MONOCHROME2", window=(1000.0, 1000.0))
    out = np.asarray(load_image(tmp_path / "w.dcm")).astype(int)
    # values above the window saturate: the last several columns are all white
    assert (out[0, 4:] == 255).all() and out[0, 0] == 0


def test_unreadable_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_image(bad)
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_resize_keeps_aspect() -> None:
    img = Image.new("L", (400, 200))
    assert resize_keep_aspect(img, 100).size == (200, 100)
    assert resize_keep_aspect(img, 300).size == (400, 200)
