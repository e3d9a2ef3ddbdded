"""Image loading: PNG/JPEG, 16-bit PNG, DICOM with MONOCHROME1 inversion and windowing, bad files."""

from __future__ import annotations

import io
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
    with pytest.raises(DataError, match=r"bad\.png: not a PNG, JPEG or DICOM image \(unrecognised content\)"):
        load_image(bad)
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "nope.png")


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_png_is_named(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(pixels))
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_image(cut)
    assert str(info.value) == f"{cut}: not a readable image (image file is truncated); re-download or remove the file"


def test_rgba_and_palette_pngs_become_the_same_grayscale(tmp_path: Path) -> None:
    gray = np.random.default_rng(1).integers(0, 256, (16, 24), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 100)])  # alpha is ignored, not blended
    (tmp_path / "rgba.png").write_bytes(_png_bytes(Image.fromarray(rgba, "RGBA")))
    palette = Image.fromarray(gray).convert("P")  # a 256-entry grey palette: lossless
    (tmp_path / "palette.png").write_bytes(_png_bytes(palette))
    for name in ("rgba.png", "palette.png"):
        img = load_image(tmp_path / name)
        assert img.mode == "L" and img.size == (24, 16)
        assert np.array_equal(np.asarray(img), gray), name


def _compressed_dicom(path: Path, pixels: np.ndarray, syntax: str) -> Path:
    """``pixels`` as a MONOCHROME1 DICOM whose pixel data is RLE- or JPEG-compressed (or only labelled JPEG-LS)."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, RLELossless

    ds = pydicom.dcmread(write_dicom(path, pixels, "MONOCHROME1"))
    if syntax == "rle":
        ds.compress(RLELossless, pixels)
    else:
        jpeg = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(jpeg, format="JPEG", quality=100)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([jpeg.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if syntax == "jpeg" else JPEGLSLossless
    ds.save_as(str(path))
    return path


@pytest.mark.parametrize("syntax", ["rle", "jpeg"])
def test_compressed_dicom_equals_the_uncompressed_one(tmp_path: Path, syntax: str) -> None:
    ramp = np.tile(np.arange(0, 256, 32, dtype=np.uint16), (8, 1))  # 8-bit values, so JPEG at q100 keeps them
    plain = np.asarray(load_image(write_dicom(tmp_path / "plain.dcm", ramp, "MONOCHROME1"))).astype(int)
    packed = np.asarray(load_image(_compressed_dicom(tmp_path / f"{syntax}.dcm", ramp, syntax))).astype(int)
    assert plain[0, 0] == 255 and plain[0, -1] == 0  # MONOCHROME1: inverted
    assert np.abs(packed - plain).max() <= (0 if syntax == "rle" else 2)


def test_dicom_compression_without_a_decoder_is_one_line(tmp_path: Path) -> None:
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    if JPEGLSLosslessDecoder.is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = _compressed_dicom(tmp_path / "jls.dcm", np.zeros((8, 8), dtype=np.uint16), "jpeg-ls")
    with pytest.raises(DataError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the DICOM pixel data is compressed as JPEG-LS Lossless Image Compression")
    assert "install a decoder (" in message and "pylibjpeg" in message and "\n" not in message and "\t" not in message


def test_resize_keeps_aspect() -> None:
    img = Image.new("L", (400, 200))
    assert resize_keep_aspect(img, 100).size == (200, 100)
    assert resize_keep_aspect(img, 300).size == (400, 200)
