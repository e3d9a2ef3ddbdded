"""``mrg tokenize-images``: the token ids of every image of a prepared dataset under a trained image tokenizer.

A cache is two files under ``DATA/image_tokens/``, named after the tokenizer's weights (``vq-<sha12>``):
``<name>.safetensors`` (``ids``: ``(N, h, w)`` int32, image ``i`` is ``keys[i]``) and ``<name>.json`` (the
tokenizer run and its weights' checksum, the dataset's ``studies.jsonl`` checksum, the grid, the codebook size
and the image keys, i.e. paths relative to the dataset folder). Both are written atomically, the JSON last, so a
cache with a JSON is complete. Running again with the same tokenizer and dataset does nothing (idempotent);
``load_image_tokens`` refuses a cache whose tokenizer or dataset has changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrg.data.image_set import image_entries, load_pixels, to_float
from mrg.data.prepared import SPLITS, load_prepared_dataset
from mrg.errors import DataError
from mrg.files import atomic_write, read_json, sha256_file, write_json_atomic
from mrg.recipes.vq import load_vq_checkpoint
from mrg.runs import WEIGHTS_NAME

IMAGE_TOKENS_DIR = "image_tokens"
FORMAT = "mrg-image-tokens"
FORMAT_VERSION = 1


@dataclass
class ImageTokens:
    """A cache of image token ids."""

    path: Path
    """The ``.safetensors`` file."""
    record: dict[str, Any]
    skipped: bool = False
    """The cache was already current: nothing was computed."""

    @property
    def num_images(self) -> int:
        return len(self.record["keys"])


def _cache_paths(data_root: Path, weights_sha: str) -> tuple[Path, Path]:
    name = f"vq-{weights_sha[:12]}"
    folder = data_root / IMAGE_TOKENS_DIR
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def _current(json_path: Path, tensor_path: Path, weights_sha: str, dataset_sha: str) -> dict[str, Any] | None:
    if not (json_path.is_file() and tensor_path.is_file()):
        return None
    record = read_json(json_path)
    same = record.get("format") == FORMAT and record.get("vq", {}).get("weights_sha256") == weights_sha
    return record if same and record.get("dataset_sha256") == dataset_sha else None


@torch.no_grad()
def _encode_all(model: Any, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, 1, S, S) uint8 -> (N, h, w) int32 token ids."""
    rows = [model.encode(to_float(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)]
    return torch.cat(rows).to(torch.int32)


def tokenize_images(vq: str | Path, data_root: str | Path, *, batch_size: int = 32, force: bool = False) -> ImageTokens:
    """Encode every image of every split of ``data_root`` with the tokenizer at ``vq`` and cache the ids.

    Args:
        vq: a ``mrg train-vq`` run folder (its ``best``), pointer or step folder.
        data_root: a folder written by ``mrg prepare``.
        batch_size: images per forward pass.
        force: recompute even when the cache is current.

    Raises:
        CheckpointError: ``vq`` holds no tokenizer checkpoint.
        DataError: the dataset is missing or an image is unreadable.
    """
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    data_root = Path(data_root)
    dataset = load_prepared_dataset(data_root)
    model, cfg, step_dir = load_vq_checkpoint(vq)
    weights_sha = sha256_file(step_dir / WEIGHTS_NAME)
    dataset_sha = sha256_file(data_root / "studies.jsonl")
    tensor_path, json_path = _cache_paths(data_root, weights_sha)
    existing = None if force else _current(json_path, tensor_path, weights_sha, dataset_sha)
    if existing is not None:
        return ImageTokens(tensor_path, existing, skipped=True)
    entries = image_entries(dataset, SPLITS)
    ids = _encode_all(model, load_pixels(dataset.root, entries, cfg.model.image_size), batch_size)
    from safetensors.torch import save

    with atomic_write(tensor_path, "wb", encoding=None) as handle:
        handle.write(save({"ids": ids.contiguous()}, metadata={"format": FORMAT}))
    record = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "vq": {"checkpoint": str(Path(step_dir).resolve()), "weights_sha256": weights_sha},
        "dataset_sha256": dataset_sha, "codebook_size": cfg.model.codebook_size, "grid": list(ids.shape[1:]),
        "image_size": cfg.model.image_size, "keys": [e.key for e in entries], "splits": [e.split for e in entries],
    }
    write_json_atomic(json_path, record)  # last: a cache with its JSON is complete
    return ImageTokens(tensor_path, record)


def load_image_tokens(data_root: str | Path, vq: str | Path) -> dict[str, torch.Tensor]:
    """Image key -> ``(h, w)`` token ids from the cache ``tokenize_images`` wrote for the tokenizer at ``vq``.

    Raises:
        DataError: no current cache (never tokenized, or the tokenizer or dataset changed since).
    """
    from safetensors.torch import load_file

    data_root = Path(data_root)
    _, _, step_dir = load_vq_checkpoint(vq)
    weights_sha = sha256_file(step_dir / WEIGHTS_NAME)
    tensor_path, json_path = _cache_paths(data_root, weights_sha)
    record = _current(json_path, tensor_path, weights_sha, sha256_file(data_root / "studies.jsonl"))
    if record is None:
        raise DataError(f"{data_root}: no current image-token cache for {vq}; run 'mrg tokenize-images --vq {vq} --data {data_root}'")
    ids = load_file(str(tensor_path))["ids"]
    return dict(zip(record["keys"], ids, strict=True))
