"""Every image of a prepared dataset as one grayscale tensor item (the image tokenizer's data).

Each image of each study is its own item, keyed by its path relative to the dataset folder (``images/<id>/0.png``),
which is unique and stable, so token caches and checkpoints can name images. The pixels are read once, resized
to a square (bicubic) and kept as uint8 in memory: 4,000 images of 128 px are 65 MB, and decoding PNGs at every
step would cost more than the small tokenizer's forward pass on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mrg.data.images import load_image
from mrg.data.prepared import PreparedDataset
from mrg.errors import DataError


@dataclass(frozen=True)
class ImageEntry:
    """One image of a prepared dataset."""

    key: str
    """Path relative to the dataset folder; unique."""
    split: str


def image_entries(dataset: PreparedDataset, splits: tuple[str, ...]) -> list[ImageEntry]:
    """The images of ``splits`` in file order (every view of every study).

    Raises:
        DataError: the splits hold no image.
    """
    entries = [ImageEntry(rel, s.split) for s in dataset.studies if s.split in splits for rel in s.image_paths]
    if not entries:
        raise DataError(f"{dataset.root}: the {'/'.join(splits)} split(s) hold no images")
    return entries


def load_pixels(root: Path, entries: list[ImageEntry], image_size: int) -> torch.Tensor:
    """(N, 1, S, S) uint8 pixels of ``entries``, resized to ``image_size`` (bicubic, aspect not kept).

    Raises:
        DataError: an image is missing or unreadable (the message names it).
    """
    out = torch.empty(len(entries), 1, image_size, image_size, dtype=torch.uint8)
    for i, entry in enumerate(entries):
        img = load_image(root / entry.key)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out[i, 0] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return out


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]."""
    return pixels.float() / 255.0
