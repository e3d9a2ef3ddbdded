"""Token-id caches and length statistics for a prepared dataset (``mrg prepare tokenize``).

Two kinds of tokenizer:

* a Hugging Face tokenizer (a local folder or a hub id): the ids of every study's ``report_clean`` with the
  tokenizer's own special tokens (``add_special_tokens=True``), not truncated;
* R2Gen's word vocabulary (``vocab="r2gen"``): the whitespace tokens of the train split's ``report_clean``
  with count >= threshold, plus ``<unk>``, sorted, ids from 1; id 0 is BOS, EOS and PAD, and a report is
  encoded as ``[0] + ids + [0]`` (so lengths count BOS and EOS, as R2Gen's ``max_seq_length`` does).

A cache is two files under ``DIR/tokens/``: ``<name>.json`` (tokenizer identity, the dataset's
studies.jsonl checksum, statistics, the study order) and ``<name>.safetensors`` (``ids``: all ids
concatenated, ``offsets``: where each study starts). Nothing is pickled. ``load_token_cache`` refuses a
cache whose dataset or tokenizer has changed since it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrg.data.prepared import SPLITS, PreparedDataset, load_prepared_dataset
from mrg.errors import ConfigError, DataError
from mrg.files import read_json, sha256_file, write_json_atomic

__all__ = [
    "R2GEN_DEFAULTS",
    "R2GenVocab",
    "TokenCache",
    "build_r2gen_vocab",
    "find_token_cache",
    "length_stats",
    "load_token_cache",
    "tokenize_dataset",
    "training_token_ids",
]

TOKENS_DIR = "tokens"
CACHE_VERSION = 1
R2GEN_DEFAULTS: dict[str, dict[str, int]] = {
    "r2gen-iu": {"threshold": 3, "max_length": 60},
    "r2gen-mimic": {"threshold": 10, "max_length": 100},
}
"""R2Gen's settings per dataset (``--threshold``, ``--max_seq_length`` of its train scripts)."""
_FALLBACK_MAX_LENGTH = 100


# -------------------------------------------------------------------------------------------- R2Gen


@dataclass
class R2GenVocab:
    """R2Gen's word vocabulary: ``tokens[i]`` has id ``i + 1``; id 0 is BOS/EOS/PAD."""

    tokens: list[str]
    threshold: int

    @property
    def unk_id(self) -> int:
        return self.tokens.index("<unk>") + 1

    def encode(self, text: str) -> list[int]:
        """``[0] + ids + [0]`` for the whitespace tokens of an already-cleaned report."""
        lookup = {token: i + 1 for i, token in enumerate(self.tokens)}
        unk = self.unk_id
        return [0] + [lookup.get(token, unk) for token in text.split()] + [0]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "r2gen-word", "threshold": self.threshold, "bos_id": 0, "eos_id": 0, "pad_id": 0,
                "unk_id": self.unk_id, "first_id": 1, "tokens": self.tokens}


def build_r2gen_vocab(train_texts: Sequence[str], threshold: int) -> R2GenVocab:
    """Tokens of the (cleaned) train reports with count >= ``threshold``, plus ``<unk>``, sorted."""
    if threshold < 1:
        raise ConfigError(f"--threshold {threshold}: must be at least 1")
    counts = Counter(token for text in train_texts for token in text.split())
    tokens = sorted([token for token, count in counts.items() if count >= threshold] + ["<unk>"])
    return R2GenVocab(tokens=tokens, threshold=threshold)


# --------------------------------------------------------------------------------------- statistics


def length_stats(lengths: Sequence[int], max_length: int | None) -> dict[str, Any]:
    """count, mean, p95, max and the share (and number) of sequences longer than ``max_length``."""
    if not lengths:
        return {"count": 0, "mean": None, "p95": None, "max": None, "truncated": 0, "truncated_share": None}
    arr = np.asarray(lengths, dtype=np.int64)
    over = int((arr > max_length).sum()) if max_length else 0
    return {
        "count": int(arr.size),
        "mean": round(float(arr.mean()), 4),
        "p95": round(float(np.percentile(arr, 95)), 2),
        "max": int(arr.max()),
        "truncated": over,
        "truncated_share": round(over / arr.size, 6),
    }


# ------------------------------------------------------------------------------------------- caches


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "tokenizer"


def _load_hf_tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    if spec.startswith(("/", "./", "../", "~")) and not Path(spec).expanduser().is_dir():
        raise DataError(f"--tokenizer {spec}: folder not found; give a folder saved with save_pretrained or a model id")
    try:
        return AutoTokenizer.from_pretrained(str(Path(spec).expanduser()) if spec.startswith("~") else spec)
    except Exception as err:  # transformers raises OSError, ValueError, EnvironmentError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"--tokenizer {spec}: cannot load a tokenizer ({first}); give a folder with tokenizer files "
            "(tokenizer.json / tokenizer_config.json) or a Hugging Face model id that is cached or reachable"
        ) from None


def _hf_identity(tokenizer: Any, spec: str) -> dict[str, Any]:
    """A content hash of the tokenizer, so a cache is tied to the exact vocabulary and rules."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = backend.to_str()
    else:
        content = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = {k: v for k, v in getattr(tokenizer, "special_tokens_map", {}).items() if isinstance(v, str)}
    digest = hashlib.sha256((content + json.dumps(special, sort_keys=True)).encode("utf-8")).hexdigest()
    return {
        "kind": "huggingface",
        "spec": spec,
        "name_or_path": str(getattr(tokenizer, "name_or_path", spec)),
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "special_tokens": special,
        "sha256": digest,
    }


def _dataset_sha(ds: PreparedDataset) -> str:
    return sha256_file(ds.root / "studies.jsonl")


@dataclass
class TokenCache:
    """A loaded token cache: its metadata and the ids of every study."""

    meta: dict[str, Any]
    ids: dict[str, np.ndarray]

    def lengths(self, split: str | None = None) -> list[int]:
        order = self.meta["studies"]
        splits = self.meta["splits"]
        return [len(self.ids[sid]) for sid, sp in zip(order, splits, strict=True) if split is None or sp == split]


def _write_cache(root: Path, name: str, meta: dict[str, Any], sequences: list[list[int]]) -> Path:
    from safetensors.numpy import save_file

    folder = root / TOKENS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    dtype = np.int32 if flat.size == 0 or int(flat.max()) < 2**31 else np.int64
    arrays = {"ids": flat.astype(dtype), "offsets": offsets}
    tensors_path = folder / f"{name}.safetensors"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)  # safetensors writes by path
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata={"meta": f"{name}.json"})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, tensors_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta["tensors_sha256"] = sha256_file(tensors_path)
    write_json_atomic(folder / f"{name}.json", meta, indent=None)  # last: a cache is complete when its JSON exists
    return folder / f"{name}.json"


def load_token_cache(data_dir: str | Path, name: str) -> TokenCache:
    """Load ``DIR/tokens/<name>.json`` and its arrays, checking they still match the dataset.

    Raises:
        DataError: the cache is missing, damaged, or older than the dataset's studies.jsonl.
    """
    from safetensors.numpy import load_file

    root = Path(data_dir)
    meta_path = root / TOKENS_DIR / f"{name}.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: token cache not found; create it with 'mrg prepare tokenize --data {root}'")
    meta = read_json(meta_path)
    tensors_path = meta_path.with_suffix(".safetensors")
    if not tensors_path.is_file() or sha256_file(tensors_path) != meta.get("tensors_sha256"):
        raise DataError(f"{tensors_path}: missing or does not match {meta_path.name}; re-run 'mrg prepare tokenize --force'")
    if sha256_file(root / "studies.jsonl") != meta.get("dataset", {}).get("studies_sha256"):
        raise DataError(f"{meta_path}: the dataset changed since it was tokenized; re-run 'mrg prepare tokenize'")
    arrays = load_file(str(tensors_path))
    flat, offsets = arrays["ids"], arrays["offsets"]
    ids = {sid: flat[offsets[i] : offsets[i + 1]] for i, sid in enumerate(meta["studies"])}
    return TokenCache(meta=meta, ids=ids)


@dataclass
class TokenizeResult:
    """What ``tokenize_dataset`` wrote (or found up to date) and the statistics to print."""

    name: str
    path: Path
    meta: dict[str, Any]
    skipped: bool


def _cache_is_current(path: Path, tokenizer_sha: str, dataset_sha: str, max_length: int) -> dict[str, Any] | None:
    if not path.is_file() or not path.with_suffix(".safetensors").is_file():
        return None
    try:
        meta = read_json(path)
    except DataError:
        return None
    same = (meta.get("version") == CACHE_VERSION and meta.get("tokenizer", {}).get("sha256") == tokenizer_sha
            and meta.get("dataset", {}).get("studies_sha256") == dataset_sha and meta.get("max_length") == max_length)
    return meta if same else None


def _check_tokenize_options(
    tokenizer: str | None, vocab: str | None, threshold: int | None, max_length: int | None
) -> None:
    """Refuse option combinations ``tokenize_dataset`` cannot use, naming the option."""
    if (tokenizer is None) == (vocab is None):
        raise ConfigError("give exactly one of --tokenizer ID_OR_PATH or --vocab r2gen")
    if vocab is not None and vocab != "r2gen":
        raise ConfigError(f"--vocab {vocab!r}: the only vocabulary builder is 'r2gen'")
    if threshold is not None and tokenizer is not None:
        raise ConfigError("--threshold applies to --vocab r2gen only; drop it or use --vocab r2gen")
    if max_length is not None and max_length < 1:
        raise ConfigError(f"--max-length {max_length}: must be at least 1")


_Encode = Callable[[], tuple[list[list[int]], dict[str, int] | None]]
"""Encodes every study's text: the id sequences, and the unknown tokens per split (word vocabularies only)."""


def _r2gen_tokenization(
    root: Path, ds: PreparedDataset, texts: list[str], threshold: int
) -> tuple[str, dict[str, Any], _Encode]:
    """R2Gen's word vocabulary built from the train split: the cache name, its identity, and its encoder.

    The encoder also writes the vocabulary beside the cache (only called when the cache must be rebuilt).
    """
    train = [t for t, s in zip(texts, ds.studies, strict=True) if s.split == "train"]
    if not train:
        raise DataError(f"--data {root}: the train split is empty; R2Gen's vocabulary is built from it")
    r2gen = build_r2gen_vocab(train, threshold)
    name = f"r2gen-t{threshold}"
    identity = {"kind": "r2gen-word", "threshold": threshold, "vocab_size": len(r2gen.tokens),
                "vocab_file": f"{TOKENS_DIR}/{name}.vocab.json",
                "sha256": hashlib.sha256(json.dumps(r2gen.tokens).encode()).hexdigest()}

    def encode() -> tuple[list[list[int]], dict[str, int] | None]:
        write_json_atomic(root / TOKENS_DIR / f"{name}.vocab.json", r2gen.to_dict())
        sequences = [r2gen.encode(t) for t in texts]
        unk = r2gen.unk_id
        unk_counts = {split: int(sum(seq.count(unk) for seq, s in zip(sequences, ds.studies, strict=True)
                                     if s.split == split)) for split in SPLITS}
        return sequences, unk_counts

    return name, identity, encode


def _hf_tokenization(tokenizer: str, texts: list[str]) -> tuple[str, dict[str, Any], _Encode]:
    """A Hugging Face tokenizer: the cache name (folder or hub id, plus its hash), its identity, and its encoder."""
    hf = _load_hf_tokenizer(tokenizer)
    identity = _hf_identity(hf, tokenizer)
    name = f"{_slug(Path(tokenizer).name if Path(tokenizer).exists() else tokenizer)}-{identity['sha256'][:10]}"

    def encode() -> tuple[list[list[int]], dict[str, int] | None]:
        sequences: list[list[int]] = []
        for start in range(0, len(texts), 1024):
            batch = hf(texts[start : start + 1024], add_special_tokens=True, truncation=False, verbose=False)
            sequences += [list(ids) for ids in batch["input_ids"]]
        return sequences, None

    return name, identity, encode


def _split_length_stats(
    sequences: list[list[int]], ds: PreparedDataset, max_length: int, unk_counts: dict[str, int] | None
) -> dict[str, dict[str, Any]]:
    """``length_stats`` per split, with the split's unknown-token count when the vocabulary has one."""
    stats = {
        split: length_stats([len(seq) for seq, s in zip(sequences, ds.studies, strict=True) if s.split == split],
                            max_length)
        for split in SPLITS
    }
    if unk_counts is not None:
        for split in SPLITS:
            stats[split]["unk"] = unk_counts[split]
    return stats


def tokenize_dataset(
    data_dir: str | Path,
    *,
    tokenizer: str | None = None,
    vocab: str | None = None,
    threshold: int | None = None,
    max_length: int | None = None,
    force: bool = False,
) -> TokenizeResult:
    """Cache the token ids of every study's ``report_clean`` and compute length statistics per split.

    Args:
        data_dir: a folder written by ``mrg prepare`` (with its prepare.json stamp).
        tokenizer: a Hugging Face tokenizer folder or hub id (exclusive with ``vocab``).
        vocab: ``"r2gen"`` to build R2Gen's word vocabulary from the train split instead.
        threshold: minimum count of an R2Gen vocabulary token (default: R2Gen's, 3 for IU, 10 for MIMIC).
        max_length: the length above which a sequence counts as truncated (default: R2Gen's
            max_seq_length, 60 for IU and 100 for MIMIC; 100 for other datasets).
        force: recompute even if an up-to-date cache exists.

    Raises:
        ConfigError: neither or both of ``tokenizer`` / ``vocab``, or a bad value.
        DataError: the dataset or tokenizer cannot be read.
    """
    _check_tokenize_options(tokenizer, vocab, threshold, max_length)
    root = Path(data_dir)
    ds = load_prepared_dataset(root)
    defaults = R2GEN_DEFAULTS.get(ds.normalize, {})
    max_length = max_length or defaults.get("max_length", _FALLBACK_MAX_LENGTH)
    dataset_sha = _dataset_sha(ds)
    texts = [s.report_clean or s.report for s in ds.studies]

    if vocab == "r2gen":
        threshold = threshold or defaults.get("threshold", 3)
        name, identity, encode = _r2gen_tokenization(root, ds, texts, threshold)
    else:
        assert tokenizer is not None
        name, identity, encode = _hf_tokenization(tokenizer, texts)
    current = None if force else _cache_is_current(root / TOKENS_DIR / f"{name}.json", identity["sha256"],
                                                     dataset_sha, max_length)
    if current is not None:
        return TokenizeResult(name, root / TOKENS_DIR / f"{name}.json", current, skipped=True)
    sequences, unk_counts = encode()
    stats = _split_length_stats(sequences, ds, max_length, unk_counts)
    meta = {
        "version": CACHE_VERSION,
        "name": name,
        "tokenizer": identity,
        "text_field": "report_clean",
        "add_special_tokens": True,
        "lengths_include": "BOS and EOS ([0] + ids + [0])" if vocab else "the tokenizer's own special tokens",
        "max_length": max_length,
        "dataset": {"normalize": ds.normalize, "studies_sha256": dataset_sha,
                    "counts": {split: len(ds.split(split)) for split in SPLITS}},
        "stats": stats,
        "studies": [s.id for s in ds.studies],
        "splits": [s.split for s in ds.studies],
    }
    path = _write_cache(root, name, meta, sequences)
    return TokenizeResult(name, path, meta, skipped=False)


def find_token_cache(data_dir: str | Path, tokenizer: Any) -> TokenCache | None:
    """The ``mrg prepare tokenize`` cache of ``data_dir`` made with exactly this tokenizer, if there is one.

    A cache whose dataset has changed since it was written is ignored (training then tokenizes itself).
    """
    folder = Path(data_dir) / TOKENS_DIR
    if not folder.is_dir():
        return None
    wanted = _hf_identity(tokenizer, "")["sha256"]
    for meta_path in sorted(folder.glob("*.json")):
        if meta_path.name.endswith(".vocab.json"):
            continue
        try:
            meta = read_json(meta_path)
        except DataError:
            continue
        if meta.get("tokenizer", {}).get("sha256") != wanted:
            continue
        try:
            return load_token_cache(data_dir, meta_path.stem)
        except DataError:
            return None
    return None


def training_token_ids(cache: TokenCache, tokenizer: Any) -> dict[str, list[int]]:
    """The cache's ids as training uses them: the tokenizer's own special tokens (BOS, ...) stripped.

    The cache holds ``tokenizer(report_clean, add_special_tokens=True)``; training encodes reports with
    ``add_special_tokens=False`` and appends EOS itself.
    """
    bare = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
    head, tail = start, len(full) - start - len(bare)
    return {sid: ids[head : len(ids) - tail].tolist() for sid, ids in cache.ids.items()}
