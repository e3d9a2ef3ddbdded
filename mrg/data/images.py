"""Reading radiographs (PNG, JPEG, DICOM) into 8-bit grayscale PIL images, and resizing them.

DICOM pixel data goes through the modality LUT and the VOI LUT / window in the file, is scaled to
0-255, and MONOCHROME1 images (where high values are dark) are inverted, so every source ends up
as MONOCHROME2-style 8-bit grayscale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mrg.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
UNREADABLE_FIX = "; re-download or remove the file"
"""The end of ``load_image``'s message for an unreadable file (callers that know a better fix replace it)."""


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_problem(path: Path, err: Exception) -> str:
    """One line saying why pydicom could not give the pixels (its messages can span several lines)."""
    message = str(err)
    if "missing dependencies" in message:
        # compressed pixel data without a decoder: pydicom lists each plugin's requirements on its own line
        syntax = message.split("'")[1] if message.count("'") >= 2 else "compressed"
        options = [line.split(" - requires ", 1)[1].strip() for line in message.splitlines() if " - requires " in line]
        fix = f"install a decoder ({'; or '.join(options)})" if options else "install a pydicom pixel-data plugin"
        return (f"{path}: the DICOM pixel data is compressed as {syntax}, which this Python cannot decode; {fix}, "
                "or convert the file to uncompressed DICOM or PNG")
    return f"{path}: not a readable DICOM image ({type(err).__name__}: {' '.join(message.split())})"


def _load_dicom(path: Path) -> Image.Image:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - pydicom is a dependency
        raise DataError(f"{path}: reading DICOM needs pydicom ({err}); pip install pydicom") from None
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for bad files
        raise DataError(_dicom_problem(path, err)) from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour DICOM (rare for radiographs)
        return Image.fromarray(pixels[..., :3].astype(np.uint8)).convert("L")
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single 2-D frame, got pixel array of shape {pixels.shape}")
    values = apply_modality_lut(pixels, ds)
    values = apply_voi_lut(values, ds) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else values
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255.0).astype(np.uint8), mode="L")


def load_image(path: str | Path) -> Image.Image:
    """Load a radiograph as an 8-bit grayscale (mode ``L``) image.

    Raises:
        DataError: the file is missing or is not a readable PNG, JPEG or DICOM image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if _is_dicom(path):
        return _load_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):  # 16-bit PNGs: scale to 8 bits, not clip
                arr = np.asarray(img, dtype=np.float64)
                low, high = float(arr.min()), float(arr.max())
                arr = (arr - low) / (high - low) * 255.0 if high > low else np.zeros_like(arr)
                return Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
            return img.convert("L")
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG, JPEG or DICOM image (unrecognised content){UNREADABLE_FIX}") from None
    except (OSError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image ({err}){UNREADABLE_FIX}") from None


def resize_keep_aspect(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` pixels, keeping the aspect ratio (never upsamples)."""
    width, height = img.size
    short = min(width, height)
    if short <= size:
        return img.copy()
    scale = size / short
    return img.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
