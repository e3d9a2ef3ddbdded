"""Loading Hugging Face encoders and tokenizers from local folders for the model-based metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrg.errors import MetricError
from mrg.metrics.model_based.base import HubFile, fetch_from_hub

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spm.model", "sentencepiece.bpe.model")


def has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                                               "pytorch_model.bin.index.json")
    )


def load_tokenizer(folder: Path, option: str, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained(folder, **kwargs)`` with a one-line error naming the option."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for unreadable folders
        raise MetricError(
            f"{option}: {folder}: cannot load a tokenizer ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            "the folder needs tokenizer.json or vocab.txt (save_pretrained output)"
        ) from None


def load_encoder(folder: Path, option: str) -> Any:
    """``AutoModel.from_pretrained(folder)`` in eval mode (safetensors or a torch file, no pickle code)."""
    from transformers import AutoModel

    return load_model(folder, option, AutoModel)


def load_model(folder: Path, option: str, auto_class: Any, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(folder, **kwargs)`` (local files only, no remote code) in eval mode."""
    try:
        model = auto_class.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise MetricError(
            f"{option}: {folder}: cannot load the model ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            "the folder needs config.json and model.safetensors (save_pretrained output)"
        ) from None
    return model.eval()


def model_folder(option: str, spec: str | None, default: HubFile, what: str) -> tuple[Path, str]:
    """A local folder holding a Hugging Face model (config, weights, tokenizer) and how the user named it.

    ``spec``: an existing folder, a hub id, or None for ``default`` (a whole repository).

    Raises:
        MetricError: a missing folder, a folder without a model, or a hub id that cannot be fetched.
    """
    if spec is None or not str(spec).strip():
        return fetch_from_hub(option, default, what, "/path/to/folder"), default.repo
    path = Path(str(spec)).expanduser()
    if path.exists():
        if not path.is_dir() or not has_model(path):
            raise MetricError(
                f"{option}={spec}: expected a folder with config.json and model.safetensors ({what}, as "
                "save_pretrained writes it)"
            )
        return path.resolve(), str(path)
    from mrg.metrics.model_based.base import parse_hub_spec

    hub = parse_hub_spec(str(spec))
    if hub is None or str(spec).startswith(("/", ".", "~")):
        raise MetricError(f"{option}={spec}: no such folder; pass the folder of {what} or a hub id like {default}")
    return fetch_from_hub(option, HubFile(hub.repo), what, "/path/to/folder"), hub.repo


def pad_batch(ids: list[list[int]], pad_id: int | None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) long tensors of shape (batch, longest), right-padded with ``pad_id`` (or 0)."""
    import torch

    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), 0 if pad_id is None else pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def model_files(folder: Path) -> list[Path]:
    """The files whose bytes define a model folder (for the weights hash): config, weights, tokenizer."""
    names = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt", "vocab.json",
             "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "spm.model", "tokenizer.model",
             "generation_config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
    shards = sorted(folder.glob("model-*.safetensors")) + sorted(folder.glob("pytorch_model-*.bin"))
    return [folder / name for name in names if (folder / name).is_file()] + shards
