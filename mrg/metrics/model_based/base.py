"""What every model-based metric family shares: options, results, weights, devices, batching and the cache.

A *family* is one model (or a few) and the metrics computed from its outputs, e.g. ``chexbert`` gives the
CheXbert F1 scores and SembScore from one forward pass per report. The registry of ``mrg evaluate`` calls
``family.score(predictions, references, options)`` and gets a :class:`FamilyResult`.

Weights come from a local path (a file or a folder) or a Hugging Face hub id. Hub ids are resolved from the
local hub cache first; the network is tried only when the hub is not marked offline (``HF_HUB_OFFLINE``).
A missing file is one :class:`~mrg.errors.MetricError` line that names the option, the hub repository and
file to download, and how to point mrg at a local copy.

Per-text model outputs are cached on disk per (family, component, weights SHA-256, text SHA-256), as JSON
lines (never pickle), so a reference set is scored once across runs; see :class:`TextCache`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrg.errors import ConfigError, MetricError
from mrg.files import atomic_write, sha256_file

CACHE_FORMAT = 1
# Shards of one cache folder are merged into one file when there are more than this many.
_MAX_SHARDS = 16


@dataclass(frozen=True)
class ModelMetricOptions:
    """How a family runs: which weights, on which device, in which batch size, with which cache.

    Attributes:
        weights: hub id or local path (file or folder) of the family's model; None: the default hub id.
        device: "auto" (cuda if available else cpu), "cpu", "cuda" or "cuda:N".
        batch_size: texts per forward pass.
        cache_dir: root of the (family, weights-hash, text) -> result cache; None: ``$MRG_CACHE_DIR/metrics``;
            "" (empty) disables the cache.
    """

    weights: str | None = None
    device: str = "auto"
    batch_size: int = 32
    cache_dir: str | None = None


@dataclass
class FamilyResult:
    """The scores of one family on one set of (prediction, reference) pairs.

    Attributes:
        corpus: the corpus-level numbers, e.g. ``{"chexbert_f1_micro_14": ..., "semb_score": ...}``.
        items: per-item values of the metrics that are a mean over items (bootstrap input); may be empty.
        info: the weights' identity (path or hub id and SHA-256), the implementation followed (package and
            version, or "re-implementation of ..."), the device, and how many texts were computed vs cached.
    """

    corpus: dict[str, float]
    items: dict[str, list[float]]
    info: dict[str, Any]


@dataclass(frozen=True)
class MetricInfo:
    """One number a family produces."""

    name: str
    display: str
    higher_is_better: bool
    description: str


@dataclass(frozen=True)
class Family:
    """A model-based metric family as the evaluation registry sees it."""

    name: str
    metrics: tuple[MetricInfo, ...]
    default_weights: str
    requires: tuple[str, ...]
    score: Callable[[list[str], list[str], ModelMetricOptions], FamilyResult]
    gpu_only: bool = False
    gpu_recommended: bool = False
    """Runs on CPU but slowly (an LLM judge): ``mrg evaluate`` warns when it runs on CPU."""


def unavailable_reason(family: Family) -> str | None:
    """None when the family's Python packages are importable, else why it is skipped (one line)."""
    import importlib.util

    missing = [name for name in family.requires if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"needs pip install 'mrg[clinical]' (missing: {', '.join(missing)})"


# ----------------------------------------------------------------------------------------------- inputs


def check_pairs(family: str, predictions: Sequence[str], references: Sequence[str]) -> None:
    """Raise a one-line MetricError unless the two lists pair up and hold only strings."""
    if len(predictions) != len(references):
        raise MetricError(
            f"{family}: {len(predictions)} predictions but {len(references)} references; they must pair up"
        )
    if not predictions:
        raise MetricError(f"{family}: nothing to score (no prediction/reference pairs)")
    for side, texts in (("prediction", predictions), ("reference", references)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise MetricError(f"{family}: {side} {index} is {type(text).__name__}, not text")


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size {batch_size!r} is not a positive integer; pass e.g. 32")
    return batch_size


# ---------------------------------------------------------------------------------------------- devices


def resolve_device(spec: str) -> Any:
    """The torch device for "auto", "cpu", "cuda" or "cuda:N".

    Raises:
        ConfigError: an unknown name, or a CUDA device that this machine does not have.
    """
    import torch

    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0
        if ":" in text:
            suffix = text.split(":", 1)[1]
            if not suffix.isdigit():
                raise ConfigError(f"device {spec!r}: expected cuda:N with a number N, e.g. cuda:0")
            index = int(suffix)
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r}: CUDA is not available on this machine; use device=cpu or auto")
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(text)
    raise ConfigError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")


# ---------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class HubFile:
    """A file (or, with ``filename`` None, a whole repository) on the Hugging Face hub."""

    repo: str
    filename: str | None = None

    def __str__(self) -> str:
        return self.repo if self.filename is None else f"{self.repo}/{self.filename}"


def parse_hub_spec(spec: str) -> HubFile | None:
    """``owner/repo`` or ``owner/repo/path/in/repo``; None when ``spec`` does not look like a hub id."""
    parts = spec.strip().strip("/").split("/")
    if len(parts) < 2 or any(not part or part in (".", "..") for part in parts):
        return None
    if spec.startswith(("/", ".", "~")) or "\\" in spec:
        return None
    return HubFile("/".join(parts[:2]), "/".join(parts[2:]) or None)


def hub_offline() -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def missing_weights_error(option: str, hub: HubFile, what: str, local_hint: str) -> MetricError:
    where = "offline" if hub_offline() else "not in the local hub cache and the download failed"
    file_part = f" (file {hub.filename})" if hub.filename else ""
    return MetricError(
        f"{option}: no weights found ({where}); download {what} from the hub repository {hub.repo}{file_part} "
        f"and pass {option}={local_hint}"
    )


def fetch_from_hub(option: str, hub: HubFile, what: str, local_hint: str) -> Path:
    """The local path of a hub file or repository snapshot: the hub cache first, the network unless offline.

    Raises:
        MetricError: not cached and (offline or the download failed); names the repository, file and option.
    """
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover - transformers depends on it
        raise missing_weights_error(option, hub, what, local_hint) from None

    def _get(local_only: bool) -> Path:
        if hub.filename is None:
            return Path(huggingface_hub.snapshot_download(hub.repo, local_files_only=local_only))
        return Path(huggingface_hub.hf_hub_download(hub.repo, hub.filename, local_files_only=local_only))

    try:
        return _get(True)
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        pass
    if hub_offline():
        raise missing_weights_error(option, hub, what, local_hint)
    try:
        return _get(False)
    except Exception:  # noqa: BLE001 - network, auth or missing file: the user gets the same advice
        raise missing_weights_error(option, hub, what, local_hint) from None


def resolve_weights(option: str, spec: str | None, default: HubFile, what: str, local_hint: str) -> tuple[Path, str]:
    """Where the weights are on disk, and how the user named them (a path or a hub id).

    ``spec`` is an existing local path (file or folder), or a hub id (``owner/repo`` or
    ``owner/repo/file``); None means ``default``.

    Raises:
        MetricError: a path that does not exist, or a hub id that cannot be fetched (one line, with advice).
    """
    if spec is None or not str(spec).strip():
        return fetch_from_hub(option, default, what, local_hint), str(default)
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve(), str(path)
    hub = parse_hub_spec(spec)
    if hub is None or spec.startswith(("/", ".", "~")):
        raise MetricError(
            f"{option}={spec}: no such file or folder; pass the path of {what} or a hub id like {default}"
        )
    if hub.filename is None and default.filename is not None and hub.repo == default.repo:
        hub = default
    return fetch_from_hub(option, hub, what, local_hint), str(hub)


def _sha_memo_path(cache_root: Path | None) -> Path | None:
    return None if cache_root is None else cache_root / "weights-sha256.json"


def weights_sha256(paths: Iterable[Path], cache_root: Path | None = None) -> str:
    """One SHA-256 over the given files (path names relative to their common folder and bytes).

    Hashing a 400 MB checkpoint takes seconds, so digests are remembered per (path, size, mtime) in
    ``<cache_root>/weights-sha256.json``.
    """
    files = sorted({Path(p).resolve() for p in paths})
    memo_path = _sha_memo_path(cache_root)
    memo: dict[str, str] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
    changed = False
    combined = hashlib.sha256()
    common = Path(os.path.commonpath([str(f) for f in files])) if files else Path("/")
    if len(files) == 1:
        common = files[0].parent
    for file in files:
        stat = file.stat()
        key = f"{file}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = memo.get(key)
        if digest is None:
            digest = sha256_file(file)
            memo[key] = digest
            changed = True
        combined.update(str(file.relative_to(common)).encode("utf-8") + b"\0" + digest.encode("ascii") + b"\n")
    if changed and memo_path is not None:
        try:
            with atomic_write(memo_path) as handle:
                json.dump(memo, handle, indent=0)
        except OSError:
            pass  # a read-only cache only costs the hashing time next run
    return combined.hexdigest()


# ------------------------------------------------------------------------------------------------ cache


def default_cache_root() -> Path:
    """``$MRG_CACHE_DIR/metrics`` (else ``$XDG_CACHE_HOME/mrg/metrics`` or ``~/.cache/mrg/metrics``)."""
    from mrg.data.sources import cache_root

    return cache_root() / "metrics"


def cache_root_for(options: ModelMetricOptions) -> Path | None:
    if options.cache_dir is None:
        return default_cache_root()
    if options.cache_dir == "":
        return None
    return Path(options.cache_dir).expanduser()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextCache:
    """Per-text results of one model on disk: ``<root>/<family>/<component>-<weights sha[:16]>-<variant>/``.

    Each run that computed something writes one new shard ``<uuid>.jsonl`` (temporary file + rename), so
    concurrent writers never interleave; a reader loads every shard. When a folder holds more than 16
    shards they are merged into one (also written atomically; a shard deleted under a concurrent reader
    is simply skipped, and its texts are recomputed). Each line is ``{"k": sha256(text), "v": value}``.
    Values are JSON (arrays as base64 float32, see :func:`pack_array`). The cache is not bounded: it
    grows by one entry per distinct text per model (CheXbert: about 4 KB a text); delete the folder to
    reclaim the space.

    With ``root`` None the cache is in memory only (nothing is read or written).
    """

    def __init__(self, root: Path | None, family: str, component: str, weights_sha: str, variant: str = "") -> None:
        tag = hashlib.sha256(f"{CACHE_FORMAT}|{variant}".encode()).hexdigest()[:8]
        self.folder = None if root is None else root / family / f"{component}-{weights_sha[:16]}-{tag}"
        self._values: dict[str, Any] = {}
        self._new: dict[str, Any] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.folder is None or not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("*.jsonl")):
            try:
                with open(shard, encoding="utf-8") as handle:
                    for line in handle:
                        try:
                            row = json.loads(line)
                            self._values[row["k"]] = row["v"]
                        except (ValueError, KeyError, TypeError):
                            continue  # a damaged line is recomputed
            except FileNotFoundError:
                continue  # merged away by a concurrent writer

    def get(self, key: str) -> Any | None:
        self._load()
        if key in self._new:
            return self._new[key]
        return self._values.get(key)

    def put(self, key: str, value: Any) -> None:
        self._load()
        self._new[key] = value

    def flush(self) -> None:
        """Write the values added since the last flush as one new shard; merge shards when there are many."""
        if not self._new:
            return
        new, self._new = self._new, {}
        self._values.update(new)
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.folder / f"{uuid.uuid4().hex}.jsonl") as handle:
                for key, value in new.items():
                    handle.write(json.dumps({"k": key, "v": value}, separators=(",", ":")) + "\n")
            shards = sorted(self.folder.glob("*.jsonl"))
            if len(shards) > _MAX_SHARDS:
                self._merge(shards)
        except OSError as err:
            raise MetricError(
                f"{self.folder}: cannot write the metric cache ({err.strerror or err}); pass a writable cache_dir "
                "or an empty one to disable caching"
            ) from None

    def _merge(self, shards: list[Path]) -> None:
        self._loaded = False
        self._load()
        assert self.folder is not None
        with atomic_write(self.folder / f"{uuid.uuid4().hex}.jsonl") as handle:
            for key, value in self._values.items():
                handle.write(json.dumps({"k": key, "v": value}, separators=(",", ":")) + "\n")
        for shard in shards:
            try:
                shard.unlink()
            except FileNotFoundError:
                pass


def pack_array(array: np.ndarray) -> str:
    """A float32 array as base64 text (exact round trip of float32 values)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def unpack_array(text: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
    return array if shape is None else array.reshape(shape)


@dataclass
class CachedRunner:
    """Dedup + cache + batching around a per-text model function.

    ``compute(texts)`` gets at most ``batch_size`` distinct texts not yet cached and returns one JSON value
    per text. Texts are processed longest first so that padding is small. ``calls`` counts compute calls
    and ``computed`` / ``cached`` count distinct texts, for the tests and for ``info``.
    """

    cache: TextCache
    compute: Callable[[list[str]], list[Any]]
    batch_size: int
    length: Callable[[str], int] = len
    calls: int = 0
    computed: int = 0
    cached: int = 0
    _seen: set[str] = field(default_factory=set)

    def run(self, texts: Sequence[str]) -> list[Any]:
        keys = {text: text_key(text) for text in texts}
        todo = [text for text, key in keys.items() if self.cache.get(key) is None]
        for key in keys.values():
            if key not in self._seen:
                self._seen.add(key)
                if self.cache.get(key) is not None:
                    self.cached += 1
        todo.sort(key=lambda t: (-self.length(t), t))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            values = self.compute(batch)
            self.calls += 1
            if len(values) != len(batch):  # pragma: no cover - a programming error in a family
                raise RuntimeError("compute returned a different number of values than texts")
            for text, value in zip(batch, values, strict=True):
                self.cache.put(keys[text], value)
            self.computed += len(batch)
        self.cache.flush()
        return [self.cache.get(keys[text]) for text in texts]


def mean(values: Sequence[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if len(values) else math.nan


def implementation_info(reference: str, version: str) -> str:
    return f"re-implementation of {reference} {version} (mrg)"
