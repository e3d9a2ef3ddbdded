"""``mrg evaluate``: score generated reports exactly as the field does, and say how sure the numbers are.

One call, ``run_evaluation``, does everything the command does:

1. starts METEOR's JVM in the background (its ~10 s load overlaps everything below);
2. reads the predictions (JSONL ``{"id", "prediction", "reference"?}``, R2GenGPT's ``test_result.json`` or
   R2Gen's ``res.csv``) and the references (embedded, a file in any of those formats, or a prepared dataset's
   split), and joins them by id -- bad input is one ``DataError`` naming the file and line or id;
3. normalises both sides per protocol (``r2gen``: R2Gen's cleaner, tokens joined by single spaces as R2Gen's
   tokenizer decodes them; ``coco``: the PTB tokenizer; ``raw``: as given), optionally truncates references;
4. scores METEOR in the JVM (a feeder thread) while the main thread computes BLEU, ROUGE-L, CIDEr-D and the
   clinical efficacy of the labels of ``mrg.metrics.labeler``;
5. optionally bootstraps intervals and runs a paired test against a second system (``compare``);
6. writes ``per_sample.csv``, ``metrics.md`` and, last, ``metrics.json`` (each atomically).

``make_scorer`` gives the trainer the same numbers for validation, with the JVM kept warm across calls.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrg.config import EvalConfig
from mrg.console import info, is_main_process, warn
from mrg.data.chexpert import OBSERVATIONS
from mrg.data.text import normalize_report, resolve_cleaning
from mrg.errors import ConfigError, DataError, MetricError
from mrg.files import atomic_write, sha256_file, write_json_atomic, write_text_atomic
from mrg.metrics.registry import NLG_METRICS
from mrg.provenance import package_versions, provenance

NLG_KEYS = NLG_METRICS
PROTOCOLS = ("r2gen", "coco", "raw")
R2GEN_TRUNCATION = {"r2gen-iu": 59, "r2gen-mimic": 99}
"""Words R2Gen keeps of a reference: max_seq_length (60 / 100) minus the BOS token."""
_SHOW_IDS = 5


# ------------------------------------------------------------------------------------------------ input


@dataclass
class TextFile:
    """Texts read from one file: id -> (line, text or list of texts); ``kind`` says which format it was."""

    path: Path
    kind: str
    texts: dict[str, Any]
    lines: dict[str, int]
    embedded_references: dict[str, Any] = field(default_factory=dict)


def _decode_line(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "re-save the file as UTF-8"
        ) from None


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path}: is a directory; give the file itself") from None
    except OSError as err:
        raise DataError(f"{what} {path}: cannot read ({err.strerror})") from None


def _detect_kind(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    head = data.lstrip()[:1]
    if head == b"{":
        first_line = data.lstrip().split(b"\n", 1)[0]
        try:
            json.loads(first_line)
            return "jsonl"
        except ValueError:
            return "json"
    if head == b"[":
        return "json"
    return "csv"


def _check_text(value: Any, path: Path, lineno: int | None, key: str, item_id: str) -> Any:
    where = f"{path}:{lineno}" if lineno else f"{path} (id {item_id})"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise DataError(f"{where}: '{key}' must be a string (or a non-empty list of strings), got {json.dumps(value)[:60]}")


def _jsonl_rows(path: Path, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = _decode_line(raw, path, lineno)
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object with 'id', got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def _add_text(out: TextFile, item_id: Any, value: Any, lineno: int | None, key: str) -> None:
    """Store one entry's text under its id, refusing a missing, empty or duplicate id and a non-text value."""
    path = out.path
    if item_id is None or isinstance(item_id, (dict, list, bool)) or str(item_id).strip() == "":
        where = f"{path}:{lineno}" if lineno else str(path)
        raise DataError(f"{where}: missing or empty 'id'; every entry needs a string or integer id")
    item_id = str(item_id)
    if item_id in out.texts:
        first = out.lines.get(item_id)
        where = f"{path}:{lineno}" if lineno else str(path)
        raise DataError(f"{where}: duplicate id {item_id!r}" + (f" (first on line {first})" if first else "")
                        + "; ids must be unique")
    out.texts[item_id] = _check_text(value, path, lineno, key, item_id)
    if lineno:
        out.lines[item_id] = lineno


def _read_jsonl_texts(out: TextFile, data: bytes, text_keys: tuple[str, ...], role: str) -> None:
    path = out.path
    for lineno, row in _jsonl_rows(path, data):
        key = next((k for k in text_keys if k in row), None)
        if key is None:
            raise DataError(f"{path}:{lineno}: no '{text_keys[0]}' key (found {sorted(row)[:6]})")
        _add_text(out, row.get("id"), row[key], lineno, key)
        if role == "predictions" and "reference" in row:
            out.embedded_references[str(row.get("id"))] = _check_text(
                row["reference"], path, lineno, "reference", str(row.get("id"))
            )


def _read_json_texts(out: TextFile, data: bytes, text_keys: tuple[str, ...], role: str) -> None:
    """A JSON object ``{id: [text]}`` (R2GenGPT's files) or a JSON list of objects with an id and a text key."""
    path = out.path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{data[err.start]:02x}); re-save the file as UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if isinstance(obj, dict):
        out.kind = "r2gengpt-json"
        for item_id, value in obj.items():
            if isinstance(value, list) and len(value) == 1 and role == "predictions":
                value = value[0]
            _add_text(out, item_id, value, None, "text")
    elif isinstance(obj, list):
        for index, row in enumerate(obj):
            if not isinstance(row, dict):
                raise DataError(f"{path}: entry {index} is not an object with 'id'")
            key = next((k for k in text_keys if k in row), None)
            if key is None:
                raise DataError(f"{path}: entry {index} has no '{text_keys[0]}' key")
            _add_text(out, row.get("id"), row[key], None, key)
    else:
        raise DataError(f"{path}: expected a JSON object {{id: [text]}} or a list of objects")


def _read_csv_texts(out: TextFile, data: bytes) -> None:
    """A headerless one-column CSV (R2Gen's res.csv / gts.csv): the ids are the row numbers."""
    path = out.path
    out.kind = "r2gen-csv"
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        _decode_line(raw, path, lineno)  # name the line of a bad byte before csv sees it
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    for index, row in enumerate(reader):
        lineno = reader.line_num
        if len(row) > 1:
            raise DataError(f"{path}:{lineno}: {len(row)} columns; R2Gen's res.csv/gts.csv have one (quote texts with commas)")
        _add_text(out, str(index), row[0] if row else "", lineno, "text")


def read_text_file(path: str | Path, *, role: str) -> TextFile:
    """Read predictions (``role="predictions"``) or references (``role="references"``) in any supported format.

    Formats: JSONL lines ``{"id", "prediction" | "reference" | "report"}``; a JSON object ``{id: [text]}``
    (R2GenGPT's ``test_result.json`` / ``test_refs.json``) or a JSON list of such objects; a headerless
    one-column CSV (R2Gen's ``res.csv`` / ``gts.csv``), whose ids are the row numbers 0, 1, ...

    Raises:
        DataError: unreadable, not UTF-8, malformed, a missing or duplicate id, a text that is not a string.
    """
    path = Path(path)
    data = _read_bytes(path, f"--{role}")
    kind = _detect_kind(path, data)
    text_keys = ("prediction",) if role == "predictions" else ("reference", "report")
    out = TextFile(path=path, kind=kind, texts={}, lines={})
    if kind == "jsonl":
        _read_jsonl_texts(out, data, text_keys, role)
    elif kind == "json":
        _read_json_texts(out, data, text_keys, role)
    else:
        _read_csv_texts(out, data)
    if not out.texts:
        what = "is empty" if not data.strip() else "holds no entries"
        raise DataError(f"--{role} {path}: the file {what}; give the {role} of the test set, one per id")
    return out


@dataclass
class EvalSet:
    """Predictions joined with their references, in prediction-file order."""

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    sources: dict[str, Any]
    normalize_hint: str | None = None
    """The dataset's normalisation when references came from ``--data``."""


def _sibling(path: Path, names: dict[str, str]) -> Path | None:
    partner = names.get(path.name)
    if partner and (path.parent / partner).is_file():
        return path.parent / partner
    return None


def _single_prediction(value: Any, where: str, item_id: str) -> Any:
    """The one prediction of an item (R2GenGPT's files hold one-element lists)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise DataError(f"{where}: id {item_id!r} has {len(value)} predictions; give exactly one")
        return value[0]
    return value


def _describe_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:_SHOW_IDS])
    return shown + (", ..." if len(ids) > _SHOW_IDS else "")


def _references_from_file(
    pred_file: TextFile, references: str | Path, sources: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The texts of a references file (recorded in ``sources``) and the name errors use for it."""
    ref_file = read_text_file(references, role="references")
    if pred_file.kind == ref_file.kind == "r2gen-csv" and len(pred_file.texts) != len(ref_file.texts):
        # headerless CSVs pair by row number: say so, rather than list ids that are only row numbers
        raise DataError(
            f"--predictions {pred_file.path} has {len(pred_file.texts)} rows but --references {ref_file.path} has "
            f"{len(ref_file.texts)}; R2Gen's res.csv and gts.csv pair row by row, so both must come from the same "
            "test run"
        )
    sources.update(references=str(ref_file.path), references_format=ref_file.kind,
                   references_sha256=sha256_file(ref_file.path))
    return ref_file.texts, str(ref_file.path)


def _references_from_dataset(
    pred_file: TextFile, data: str | Path, split: str, sources: dict[str, Any]
) -> tuple[dict[str, Any], str, str]:
    """The raw reports of a prepared dataset's split, the name errors use, and the dataset's normalisation.

    An id-less R2Gen ``res.csv`` with as many rows as the split is paired with it by position (and
    ``pred_file`` re-keyed), as R2Gen writes it in test-loader order.
    """
    from mrg.data.prepared import load_prepared_dataset

    dataset = load_prepared_dataset(data)
    studies = dataset.split(split)
    if not studies:
        raise DataError(f"--data {data}: the {split} split is empty")
    ref_texts = {s.id: s.report for s in studies}
    sources.update(references=f"{data} ({split} split, raw 'report' of studies.jsonl)",
                   references_format="prepared-dataset", dataset_normalize=dataset.normalize,
                   data=str(data), split=split)
    if pred_file.kind == "r2gen-csv" and set(pred_file.texts) != set(ref_texts) and len(pred_file.texts) == len(studies):
        # R2Gen writes res.csv in test-loader order (annotation order, no shuffle): pair by position.
        pred_file.texts = {s.id: pred_file.texts[str(i)] for i, s in enumerate(studies)}
        sources["paired_by"] = "row order of res.csv = order of the split in annotation.json"
        warn(f"{pred_file.path} has no ids; paired its rows with the {split} split in dataset order")
    return ref_texts, f"--data {data} --split {split}", dataset.normalize


def _embedded_references(pred_file: TextFile, sources: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The 'reference' fields of a JSONL predictions file; every line must have one."""
    ref_texts = pred_file.embedded_references
    missing = [i for i in pred_file.texts if i not in ref_texts]
    if missing:
        first = missing[0]
        raise DataError(f"{pred_file.path}:{pred_file.lines.get(first, '?')}: id {first!r} has no 'reference' "
                        f"({len(missing)} lines lack one); give --references FILE or --data DIR instead")
    sources.update(references=f"{pred_file.path} ('reference' fields)", references_format="embedded")
    return ref_texts, str(pred_file.path)


def _check_same_ids(pred_file: TextFile, ref_texts: dict[str, Any], ref_name: str) -> None:
    """Refuse predictions and references that do not cover the same ids, naming a few on each side."""
    only_pred = [i for i in pred_file.texts if i not in ref_texts]
    only_ref = [i for i in ref_texts if i not in pred_file.texts]
    if only_pred or only_ref:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} of {len(pred_file.texts)} predictions have no reference in {ref_name} "
                         f"({_describe_ids(only_pred)})")
        if only_ref:
            parts.append(f"{len(only_ref)} references have no prediction in {pred_file.path} ({_describe_ids(only_ref)})")
        raise DataError("; ".join(parts) + "; predictions and references must cover the same ids")


def _reference_list(ref: Any, ref_name: str, item_id: str) -> list[str]:
    """One item's references as a list; refuses an item whose references are all empty."""
    ref_list = [ref] if isinstance(ref, str) else list(ref)
    if not any(r.strip() for r in ref_list):
        raise DataError(f"{ref_name}: the reference of id {item_id!r} is empty; an empty reference cannot be scored")
    return ref_list


def load_eval_set(
    predictions: str | Path,
    *,
    references: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "test",
) -> EvalSet:
    """Read predictions and references and join them by id.

    References come from ``references`` (a file), else ``data`` (a prepared dataset's split), else the
    ``reference`` fields embedded in a JSONL predictions file, else a sibling file R2Gen / R2GenGPT wrote
    next to the predictions (``gts.csv`` beside ``res.csv``, ``test_refs.json`` beside ``test_result.json``).

    Raises:
        DataError: any problem with the inputs (named by file and line or id).
    """
    if references is not None and data is not None:
        raise ConfigError("give either --references FILE or --data DIR, not both")
    pred_file = read_text_file(predictions, role="predictions")
    sources: dict[str, Any] = {"predictions": str(pred_file.path), "predictions_format": pred_file.kind,
                               "predictions_sha256": sha256_file(pred_file.path)}
    normalize_hint = None
    ref_texts: dict[str, Any]
    if references is None and data is None and not pred_file.embedded_references:
        references = _sibling(pred_file.path, {"res.csv": "gts.csv", "test_result.json": "test_refs.json"})
        if references is not None:
            info(f"references: {references} (found beside the predictions)")
        else:
            raise DataError(
                f"--predictions {pred_file.path}: no references; give --references FILE, --data DIR --split {split}, "
                "or a 'reference' field on every line"
            )
    if references is not None:
        ref_texts, ref_name = _references_from_file(pred_file, references, sources)
    elif data is not None:
        ref_texts, ref_name, normalize_hint = _references_from_dataset(pred_file, data, split, sources)
    else:
        ref_texts, ref_name = _embedded_references(pred_file, sources)
    if pred_file.embedded_references and (references is not None or data is not None):
        sources["embedded_references"] = "ignored (explicit references given)"

    _check_same_ids(pred_file, ref_texts, ref_name)
    ids = list(pred_file.texts)
    preds: list[str] = []
    refs: list[list[str]] = []
    for item_id in ids:
        preds.append(_single_prediction(pred_file.texts[item_id], str(pred_file.path), item_id))
        refs.append(_reference_list(ref_texts[item_id], ref_name, item_id))
    return EvalSet(ids=ids, predictions=preds, references=refs, sources=sources, normalize_hint=normalize_hint)


# ------------------------------------------------------------------------------------------ protocol


def resolve_normalize(cfg: EvalConfig, dataset_mode: str | None) -> str:
    """The R2Gen cleaner the r2gen protocol uses: explicit, else the dataset's, else ``r2gen-iu``."""
    return resolve_cleaning(cfg.normalize, dataset_mode, cleaner_only=True)


def _check_config(cfg: EvalConfig) -> None:
    """The eval section's own checks (``EvalConfig.problems``) for a config built in code rather than loaded."""
    problems = ([] if cfg.protocol in PROTOCOLS else [f"--protocol {cfg.protocol!r} is not one of {', '.join(PROTOCOLS)}"])
    problems += cfg.problems()
    if problems:
        raise ConfigError("; ".join(problems))


@dataclass
class Prepared:
    """Texts as the metrics see them."""

    predictions: list[str]
    references: list[list[str]]
    label_predictions: list[str]
    label_references: list[str]
    truncated: int


def _truncate(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None:
        return text, False
    words = text.split()
    if len(words) <= limit:
        return text, False
    return " ".join(words[:limit]), True


def prepare_texts(
    predictions: Sequence[str], references: Sequence[Sequence[str]], protocol: str, normalize: str,
    ref_max_tokens: int | None,
) -> Prepared:
    """Normalise both sides per protocol and truncate references (``ref_max_tokens``).

    An empty or whitespace-only prediction becomes ``""`` under every protocol, so it scores exactly as an
    empty string does with pycocoevalcap's scorers (0 against any reference without empty tokens). R2Gen's
    cleaner would turn it into ``" ."``, whose ``.`` then matches every full stop of the reference; R2Gen
    itself never cleans its generations (it decodes token ids, and no tokens decode to ``""``).
    """
    predictions = [p if p.strip() else "" for p in predictions]
    if protocol == "r2gen":
        def clean(text: str) -> str:
            return " ".join(normalize_report(text, normalize).split())

        preds = [clean(p) if p else "" for p in predictions]
        refs = [[clean(r) for r in rs] for rs in references]
        label_preds, label_refs = preds, None
    elif protocol == "coco":
        from mrg.metrics.ptb import ptb_tokenize_many

        flat_refs = [r for rs in references for r in rs]
        preds, flat = ptb_tokenize_many(list(predictions), flat_refs)
        refs, position = [], 0
        for rs in references:
            refs.append(flat[position : position + len(rs)])
            position += len(rs)
        label_preds, label_refs = predictions, [rs[0] for rs in references]
    else:
        preds = predictions
        refs = [list(rs) for rs in references]
        label_preds, label_refs = preds, None
    truncated = 0
    if ref_max_tokens is not None:
        out = []
        for rs in refs:
            row = []
            for r in rs:
                text, cut = _truncate(r, ref_max_tokens)
                truncated += cut
                row.append(text)
            out.append(row)
        refs = out
    if label_refs is None:
        label_refs = [rs[0] for rs in refs]
    return Prepared(preds, refs, label_preds, label_refs, truncated)


def describe_protocol(protocol: str, normalize: str) -> tuple[str, str]:
    """(normalisation, tokenization) in words."""
    if protocol == "r2gen":
        return (f"R2Gen cleaner '{normalize}' on both sides (mrg.data.text.normalize_report), tokens joined by "
                "single spaces as R2Gen's tokenizer decodes them; an empty prediction stays empty (the cleaner "
                "alone would make it ' .')", "whitespace split (no PTB tokenizer)")
    if protocol == "coco":
        return ("none before tokenization", "Stanford PTB tokenizer on both sides, lower-cased, punctuation removed "
                "(COCO caption protocol, as pycocoevalcap's PTBTokenizer)")
    return ("none: texts scored as given", "whitespace split")


def deviations(protocol: str, cfg: EvalConfig, normalize: str, multi_reference: bool, sanitised: int) -> list[str]:
    """Where this evaluation differs from R2Gen's, in words (shown in metrics.md and on the terminal)."""
    notes = []
    if protocol == "coco":
        notes.append("PTB tokenizer on both sides (COCO protocol): R2Gen does not tokenize, so '.' tokens count "
                     "there; these numbers are not comparable with R2Gen-protocol numbers")
    elif protocol == "raw":
        notes.append("no normalisation: comparable with R2Gen only if both sides were already R2Gen-cleaned")
    else:
        notes.append("references are not mapped through a training vocabulary (R2Gen's decoded references turn "
                     "rare words into <unk>)")
        if cfg.ref_max_tokens is None:
            legacy = R2GEN_TRUNCATION.get(normalize)
            notes.append(f"references are not truncated (R2Gen keeps the first {legacy} words; "
                         f"--ref-max-tokens {legacy} reproduces it)")
    if cfg.ref_max_tokens is not None:
        notes.append(f"references truncated to their first {cfg.ref_max_tokens} words (--ref-max-tokens)")
    if multi_reference:
        notes.append("several references per item (R2Gen uses one)")
    if sanitised:
        notes.append(f"{sanitised} texts contained newlines or '|||', which METEOR's line protocol cannot carry; "
                     "they were collapsed to spaces / removed for METEOR on both sides")
    notes.append("CIDEr-D is reported (R2Gen reports BLEU, METEOR and ROUGE-L only; R2GenGPT adds CIDEr), computed "
                 "over the whole evaluated set")
    return notes


# ------------------------------------------------------------------------------------------- scoring


@dataclass
class Scores:
    """Everything computed for one system on one evaluation set."""

    metrics: dict[str, float]
    items: dict[str, list[float]]
    """Per-item values by column name (bleu_1..4, meteor, rouge_l, cider, CE per-sample columns)."""
    statistics: list[Any]
    """``mrg.metrics.stats.ItemStatistic`` for every metric (bootstrap, paired tests)."""
    pred_labels: list[dict[str, float]] | None = None
    ref_labels: list[dict[str, float]] | None = None
    ce_table: list[dict[str, Any]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    """Per model-based family: its weights identity, implementation and device."""


def _start_meteor(cfg: EvalConfig, start: bool = True) -> Any:
    """The process-wide METEOR scorer, its JVMs started now (``start``) or at its first call."""
    if not cfg.meteor:
        return None
    from mrg.metrics.meteor import default_jvms, get_meteor

    scorer = get_meteor(timeout=cfg.meteor_timeout, jvms=cfg.meteor_jvms or default_jvms())
    if start:
        scorer.start()
    else:
        scorer.command()  # still fail now, not mid-training, when Java or the jar is missing
    return scorer


def score_texts(
    prepared: Prepared, cfg: EvalConfig, meteor: Any = None, ref_labels: list[dict[str, float]] | None = None
) -> Scores:
    """All metrics of one system: METEOR in its JVM while BLEU/ROUGE-L/CIDEr-D and CE run here."""
    from mrg.metrics.nlg import score_nlg
    from mrg.metrics.stats import ce_statistics, mean_statistic, meteor_statistic, nlg_statistics

    timings: dict[str, float] = {}
    started = time.perf_counter()
    future: Future | None = None
    if meteor is not None:
        future = meteor.submit(prepared.predictions, prepared.references)
    nlg = score_nlg(prepared.predictions, prepared.references)
    timings["nlg_s"] = time.perf_counter() - started
    metrics = nlg.as_dict()
    items: dict[str, list[float]] = {f"bleu_{k + 1}": nlg.bleu_items[:, k].tolist() for k in range(4)}
    items["rouge_l"] = nlg.rouge_l_items.tolist()
    items["cider"] = nlg.cider_items.tolist()
    statistics = nlg_statistics(nlg)
    pred_labels = table = None
    if cfg.clinical:
        from mrg.metrics import clinical

        t0 = time.perf_counter()
        pred_labels = _label(prepared.label_predictions)
        if ref_labels is None:
            ref_labels = _label(prepared.label_references)
        counts = clinical.ce_counts(pred_labels, ref_labels)
        ce = clinical.clinical_efficacy_from_counts(counts)
        metrics.update(ce)
        for row_key, values in _columns(clinical.per_sample_ce(pred_labels, ref_labels)).items():
            items[row_key] = values
        table = clinical.per_observation_table(pred_labels, ref_labels)
        statistics += ce_statistics(counts, list(ce))
        timings["clinical_s"] = time.perf_counter() - t0
    model_info: dict[str, Any] = {}
    for family in cfg.metrics:
        t0 = time.perf_counter()
        result = score_model_family(family, prepared.label_predictions, prepared.label_references, cfg)
        timings[f"{family}_s"] = time.perf_counter() - t0
        model_info[family] = result.info
        metrics.update(result.corpus)
        for key, values in result.items.items():
            if len(values) == len(prepared.predictions):
                items[key] = list(values)
                statistics.append(mean_statistic(key, np.asarray(values, dtype=float)))
    if future is not None:
        t0 = time.perf_counter()
        result = future.result()
        timings["meteor_wait_s"] = time.perf_counter() - t0
        metrics["meteor"] = result.score
        items["meteor"] = result.item_scores.tolist()
        statistics.append(meteor_statistic(result))
    timings["scoring_s"] = time.perf_counter() - started
    ordered = {k: metrics[k] for k in NLG_KEYS if k in metrics}
    ordered.update({k: v for k, v in metrics.items() if k not in ordered})
    return Scores(ordered, items, statistics, pred_labels, ref_labels, table, timings, model_info)


def score_model_family(family: str, predictions: Sequence[str], references: Sequence[str], cfg: EvalConfig) -> Any:
    """One model-based family (``mrg.metrics.model_based``) on the texts as the labeler reads them.

    Raises:
        MetricError: the family cannot run here (missing package) or its weights are missing (one line naming
            the hub repository, the file and ``eval.weights.<family>``).
    """
    from mrg.metrics.model_based import FAMILIES, ModelMetricOptions, unavailable_reason
    from mrg.metrics.model_based.base import resolve_device

    spec = FAMILIES[family]
    reason = unavailable_reason(spec)
    if reason is not None:
        raise MetricError(f"--metrics {family}: {reason}")
    weights = cfg.weights.get(family)
    if family == "radcliq" and weights is None and any(k in cfg.weights for k in ("chexbert", "radgraph", "bertscore")):
        weights = ",".join(f"{k}={cfg.weights[k]}" for k in ("chexbert", "radgraph", "bertscore") if k in cfg.weights)
    parts = {"ner": cfg.weights.get("ratescore_ner"), "embed": cfg.weights.get("ratescore_embed")}
    if family == "ratescore" and weights is None and any(parts.values()):
        weights = ",".join(f"{k}={v}" for k, v in parts.items() if v)
    options = ModelMetricOptions(weights=weights, device=cfg.device, batch_size=cfg.model_batch_size)
    if spec.gpu_recommended and resolve_device(cfg.device).type == "cpu":
        warn(f"--metrics {family}: no GPU here, so the LLM judge runs on CPU, which is slow (minutes per report "
             "with the default 7B model); use eval.device=cuda where there is one")
    return spec.score(list(predictions), list(references), options)


_LABELS: dict[str, dict[str, float]] = {}
_LABELS_MAX = 200_000


def _label(texts: Sequence[str]) -> list[dict[str, float]]:
    """Labels of ``texts``, remembered across calls: validation relabels the same references every time."""
    from mrg.metrics.labeler import label_reports

    todo = list(dict.fromkeys(t for t in texts if t not in _LABELS))
    if todo:
        if len(_LABELS) + len(todo) > _LABELS_MAX:
            _LABELS.clear()
        _LABELS.update(zip(todo, label_reports(todo), strict=True))
    return [dict(_LABELS[t]) for t in texts]


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns


def make_scorer(eval_cfg: EvalConfig, normalize: str) -> Callable[[list[str], list[str]], dict[str, float]]:
    """A validation scorer for the trainer: ``scorer(predictions, references) -> {metric: value}``.

    The METEOR JVMs start now (in the background) and stay warm for every later call of this process; on the
    other processes of a distributed run (rank > 0), which never score, they start only if called.
    Texts are normalised per ``eval_cfg.protocol`` with the R2Gen cleaner ``normalize`` (the dataset's mode;
    ``auto`` or ``none`` fall back to ``eval_cfg.normalize`` / r2gen-iu). No files are written.

    Raises:
        MetricError: Java is missing while ``eval_cfg.meteor`` is on (raised here, not at the first call).
    """
    _check_config(eval_cfg)
    mode = resolve_normalize(eval_cfg, normalize)
    meteor = _start_meteor(eval_cfg, start=is_main_process())

    def scorer(predictions: list[str], references: list[str]) -> dict[str, float]:
        if len(predictions) != len(references):
            raise MetricError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            return {}
        prepared = prepare_texts(predictions, [[r] for r in references], eval_cfg.protocol, mode, eval_cfg.ref_max_tokens)
        return score_texts(prepared, eval_cfg, meteor).metrics

    return scorer


# --------------------------------------------------------------------------------------------- outputs


@dataclass
class EvalReport:
    """What ``run_evaluation`` computed and wrote."""

    out_dir: Path
    record: dict[str, Any]
    """The content of metrics.json."""
    scores: Scores
    compare: dict[str, Any] | None = None


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _label_cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def write_per_sample(path: Path, eval_set: EvalSet, prepared: Prepared, scores: Scores) -> None:
    """``per_sample.csv``: id, both texts as scored, every per-item score and both label vectors."""
    score_columns = [k for k in NLG_KEYS if k in scores.items]
    score_columns += [k for k in scores.items if k not in score_columns]
    header = ["id", "prediction", "reference", "empty_prediction", *score_columns]
    if scores.pred_labels is not None:
        header += [f"pred_{name}" for name in OBSERVATIONS] + [f"ref_{name}" for name in OBSERVATIONS]
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for index, item_id in enumerate(eval_set.ids):
            row: list[Any] = [item_id, prepared.predictions[index], " ||| ".join(prepared.references[index]),
                              int(not prepared.predictions[index].strip())]
            row += [scores.items[key][index] for key in score_columns]
            if scores.pred_labels is not None and scores.ref_labels is not None:
                row += [_label_cell(scores.pred_labels[index].get(name)) for name in OBSERVATIONS]
                row += [_label_cell(scores.ref_labels[index].get(name)) for name in OBSERVATIONS]
            writer.writerow(row)


def _md_table(keys: list[str], record: dict[str, Any], intervals: dict[str, Any], level: int) -> list[str]:
    """A metric / value table, with the bootstrap interval column when there are intervals."""
    ci = bool(intervals)
    lines = ["| metric | value |" + (f" {level}% CI |" if ci else ""), "|---|---:|" + ("---|" if ci else "")]
    for key in keys:
        row = f"| {key} | {_fmt(record.get(key))} |"
        if ci:
            interval = intervals.get(key)
            row += f" {_fmt(interval['low'])} – {_fmt(interval['high'])} |" if interval else " |"
        lines.append(row)
    lines.append("")
    return lines


def _md_per_observation(ce_table: list[dict[str, Any]]) -> list[str]:
    lines = ["### Per observation (uncertain and blank as negative)", ""]
    lines.append("| observation | support | predicted | tp | fp | fn | precision | recall | F1 |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in ce_table:
        lines.append(f"| {row['observation']} | {row['support']} | {row['predicted']} | {row['tp']} | {row['fp']} | "
                     f"{row['fn']} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} |")
    lines.append("")
    return lines


def _md_comparison(compare: dict[str, Any], num_items: int, level: int) -> list[str]:
    lines = [f"## Comparison: A = this run, B = `{Path(compare['predictions']).name}`", ""]
    lines.append(f"Paired test on the same {num_items} items, {compare['resamples']} resamples, seed "
                 f"{compare['seed']}: p is two-sided approximate randomisation; the interval of A − B is a "
                 "paired bootstrap.")
    lines.append("")
    lines.append(f"| metric | A | B | A − B | {level}% CI of A − B | p |")
    lines.append("|---|---:|---:|---:|---|---:|")
    for key, row in compare["metrics"].items():
        lines.append(f"| {key} | {_fmt(row['a'])} | {_fmt(row['b'])} | {row['delta']:+.4f} | "
                     f"{_fmt(row['ci_low'])} – {_fmt(row['ci_high'])} | {row['p_value']:.4f} |")
    lines.append("")
    return lines


def render_markdown(record: dict[str, Any], scores: Scores, compare: dict[str, Any] | None) -> str:
    """``metrics.md``: the headline table, CE variants, per-observation CE, comparison and deviations."""
    protocol = record["protocol"]
    intervals = (record.get("bootstrap") or {}).get("intervals", {})
    level = int(round(100 * (record.get("bootstrap") or {}).get("confidence", 0.95)))
    lines = [f"# Evaluation of `{Path(record['inputs']['predictions']).name}`", ""]
    lines.append(f"Protocol **{protocol['name']}**: {protocol['normalization']}; tokenization: {protocol['tokenization']}. "
                 f"{protocol['num_items']} items, {protocol['references_per_item']} reference(s) each.")
    lines.append("")
    lines.append("## Language metrics (pycocoevalcap-exact)")
    lines.append("")
    lines += _md_table([k for k in NLG_KEYS if k in record], record, intervals, level)
    ce_keys = [k for k in scores.metrics if k.startswith("ce")]
    if ce_keys:
        labeler = protocol.get("labeler") or {}
        lines.append(f"## Clinical efficacy (labeler `{labeler.get('name')}` {labeler.get('version')}; not CheXbert, "
                     "not the original CheXpert labeler)")
        lines.append("")
        lines.append("`ce_precision/recall/f1` is R2Gen's definition (micro over 14 observations, uncertain and "
                     "blank as negative); the other keys name their variant (see docs/metrics.md).")
        lines.append("")
        lines += _md_table(ce_keys, record, intervals, level)
    if scores.ce_table:
        lines += _md_per_observation(scores.ce_table)
    if compare:
        lines += _md_comparison(compare, protocol["num_items"], level)
    lines.append("## Where this differs from R2Gen")
    lines.append("")
    lines += [f"- {note}" for note in protocol["deviations"]]
    lines.append("")
    return "\n".join(lines)


def run_evaluation(
    predictions: str | Path,
    out_dir: str | Path,
    cfg: EvalConfig,
    *,
    references: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "test",
    compare: str | Path | None = None,
) -> EvalReport:
    """Score ``predictions`` and write metrics.json, per_sample.csv and metrics.md into ``out_dir``.

    Args:
        predictions: predictions file (JSONL, R2GenGPT JSON or R2Gen CSV; see ``read_text_file``).
        out_dir: output folder (created; the three files are replaced atomically).
        cfg: the ``eval`` section of the config.
        references: a references file, or None.
        data: a prepared dataset folder whose ``split`` holds the references, or None.
        split: the split of ``data``.
        compare: a second predictions file for the same ids (a baseline): adds a paired test per metric.

    Raises:
        DataError: bad input; ConfigError: bad options; MetricError: a metric could not be computed.
    """
    total_started = time.perf_counter()
    _check_config(cfg)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory")
    meteor = _start_meteor(cfg)  # the JVM loads while the files are read and normalised

    t0 = time.perf_counter()
    eval_set = load_eval_set(predictions, references=references, data=data, split=split)
    other = _load_comparison(compare, eval_set) if compare is not None else None
    if meteor is not None:
        meteor.start(len(eval_set.ids))  # a test set is big enough for the parallel JVMs: start them now
    normalize = resolve_normalize(cfg, eval_set.normalize_hint)
    prepared = prepare_texts(eval_set.predictions, eval_set.references, cfg.protocol, normalize, cfg.ref_max_tokens)
    read_s = time.perf_counter() - t0

    empty, sanitised = _report_input_counts(prepared, cfg)

    scores = score_texts(prepared, cfg, meteor)
    scores.timings["read_normalize_s"] = read_s
    bootstrap_block = _bootstrap_block(scores, cfg) if cfg.bootstrap else None
    compare_block = _compare(other, prepared, cfg, meteor, normalize, scores) if other is not None else None

    record: dict[str, Any] = dict(scores.metrics)
    record["protocol"] = _protocol_record(cfg, eval_set, prepared, scores, normalize, empty, sanitised)
    record["inputs"] = eval_set.sources
    if bootstrap_block:
        record["bootstrap"] = bootstrap_block
    if compare_block:
        record["compare"] = compare_block
    scores.timings["total_s"] = time.perf_counter() - total_started
    record["timings"] = {k: round(v, 3) for k, v in scores.timings.items()}
    record["provenance"] = provenance()

    _write_outputs(out_dir, eval_set, prepared, scores, record, compare_block)
    return EvalReport(out_dir=out_dir, record=record, scores=scores, compare=compare_block)


def _write_outputs(
    out_dir: Path, eval_set: EvalSet, prepared: Prepared, scores: Scores, record: dict[str, Any],
    compare_block: dict[str, Any] | None,
) -> None:
    """per_sample.csv, metrics.md and, last, metrics.json (its presence means the folder is complete)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_per_sample(out_dir / "per_sample.csv", eval_set, prepared, scores)
    write_text_atomic(out_dir / "metrics.md", render_markdown(record, scores, compare_block))
    write_json_atomic(out_dir / "metrics.json", record)


def _report_input_counts(prepared: Any, cfg: EvalConfig) -> tuple[int, int]:
    """Warn about empty predictions and note truncated references: (empty predictions, texts METEOR sanitises)."""
    empty = sum(1 for p in prepared.predictions if not p.strip())
    if empty:
        warn(f"{empty} of {len(prepared.predictions)} predictions are empty (after normalisation); they score 0")
    if prepared.truncated:
        info(f"{prepared.truncated} references truncated to {cfg.ref_max_tokens} words (--ref-max-tokens)")
    sanitised = sum(1 for text in [*prepared.predictions, *(r for rs in prepared.references for r in rs)]
                    if "|||" in text or "\n" in text or "\r" in text) if cfg.meteor else 0
    return empty, sanitised


def _bootstrap_block(scores: Any, cfg: EvalConfig) -> dict[str, Any]:
    """Percentile-bootstrap intervals of every metric, with how they were computed (``metrics.json``'s bootstrap)."""
    from mrg.metrics.stats import bootstrap

    t0 = time.perf_counter()
    intervals = bootstrap(scores.statistics, cfg.bootstrap, cfg.seed, cfg.confidence)
    scores.timings["bootstrap_s"] = time.perf_counter() - t0
    return {
        "resamples": cfg.bootstrap,
        "seed": cfg.seed,
        "confidence": cfg.confidence,
        "method": "percentile bootstrap over items (all metrics on the same resamples)",
        "cider_document_frequency": "recomputed on each resample's references (an item drawn twice counts "
                                    "twice), ref_len = log(resample size): what scoring the resample as a test set gives",
        "meteor": "pooled from the jar's per-item statistics (no re-alignment)",
        "intervals": {key: intervals[key].as_dict() for key in scores.metrics if key in intervals},
    }


def _protocol_record(cfg: EvalConfig, eval_set: EvalSet, prepared: Any, scores: Any, normalize: str | None,
                     empty: int, sanitised: int) -> dict[str, Any]:
    """``metrics.json``'s protocol: how every number was computed, and where it deviates from the field."""
    normalization, tokenization = describe_protocol(cfg.protocol, normalize)
    labeler_info = None
    if cfg.clinical:
        from mrg.metrics import labeler

        labeler_info = {"name": labeler.LABELER_NAME, "version": labeler.LABELER_VERSION,
                        "labelled_text": "raw texts (before PTB tokenization)" if cfg.protocol == "coco"
                        else "the texts as scored (after normalisation and truncation)"}
    return {
        "name": cfg.protocol,
        "normalization": normalization,
        "normalize_mode": normalize if cfg.protocol == "r2gen" else None,
        "tokenization": tokenization,
        "num_items": len(eval_set.ids),
        "references_per_item": max(len(r) for r in eval_set.references),
        "ref_max_tokens": cfg.ref_max_tokens,
        "truncated_references": prepared.truncated,
        "unk_mapping": False,
        "empty_predictions": empty,
        "bleu": "pycocoevalcap Bleu(4): closest reference length, corpus level from pooled counts",
        "meteor": None if not cfg.meteor else "METEOR 1.5 jar of pycocoevalcap (-l en -norm), corpus score pooled by the "
                  "jar; newlines and '|||' sanitised on both sides",
        "rouge_l": "pycocoevalcap Rouge: LCS on split(' '), beta 1.2, mean over items",
        "cider": f"pycocoevalcap Cider (CIDEr-D, sigma 6) with document frequencies over the {len(eval_set.ids)} "
                 "evaluated references",
        "labeler": labeler_info,
        "model_based": scores.model_info or None,
        "deviations": deviations(cfg.protocol, cfg, normalize, any(len(r) > 1 for r in eval_set.references), sanitised),
        "packages": package_versions(("pycocoevalcap", "numpy")),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }


def _load_comparison(path: str | Path, eval_set: EvalSet) -> EvalSet:
    other = read_text_file(path, role="predictions")
    mine = set(eval_set.ids)
    theirs = set(other.texts)
    if mine != theirs:
        only_a, only_b = sorted(mine - theirs), sorted(theirs - mine)
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} ids of --predictions are missing ({_describe_ids(only_a)})")
        if only_b:
            parts.append(f"{len(only_b)} ids are not in --predictions ({_describe_ids(only_b)})")
        raise DataError(f"--compare {other.path}: " + "; ".join(parts) + "; both systems must cover the same ids")
    preds = []
    for item_id in eval_set.ids:
        preds.append(_single_prediction(other.texts[item_id], f"--compare {other.path}", item_id))
    if other.embedded_references and eval_set.sources.get("references_format") == "embedded":
        for item_id, refs in zip(eval_set.ids, eval_set.references, strict=True):
            embedded = other.embedded_references.get(item_id)
            if embedded is not None and ([embedded] if isinstance(embedded, str) else list(embedded)) != refs:
                raise DataError(f"--compare {other.path}:{other.lines.get(item_id, '?')}: id {item_id!r} has another "
                                "reference than in --predictions; both systems must be scored against the same references")
    sources = {"predictions": str(other.path), "predictions_format": other.kind,
               "predictions_sha256": sha256_file(other.path)}
    return EvalSet(ids=list(eval_set.ids), predictions=preds, references=eval_set.references, sources=sources)


def _compare(other: EvalSet, prepared: Prepared, cfg: EvalConfig, meteor: Any, normalize: str,
             scores: Scores) -> dict[str, Any]:
    from mrg.metrics.stats import paired_test

    other_prepared = prepare_texts(other.predictions, other.references, cfg.protocol, normalize, cfg.ref_max_tokens)
    # the references (hence their labels and CIDEr's document frequencies) are shared by both systems
    other_prepared.references = prepared.references
    other_prepared.label_references = prepared.label_references
    other_scores = score_texts(other_prepared, cfg, meteor, ref_labels=scores.ref_labels)
    resamples = cfg.bootstrap or 1000
    tests = paired_test(scores.statistics, other_scores.statistics, resamples, cfg.seed, cfg.confidence)
    ordered = {k: tests[k].as_dict() for k in scores.metrics if k in tests}
    return {
        "predictions": other.sources["predictions"],
        "predictions_sha256": other.sources["predictions_sha256"],
        "resamples": resamples,
        "seed": cfg.seed,
        "confidence": cfg.confidence,
        "p_value": "two-sided approximate randomisation: swap A's and B's output on a random half of the items",
        "interval": "paired percentile bootstrap of A - B",
        "b_metrics": other_scores.metrics,
        "metrics": ordered,
    }
