"""Synthetic chest radiographs with free-text reports and true CheXpert labels: the embedded default dataset.

``prepare_synthetic(out_dir, n=..., seed=...)`` writes a prepared dataset (the same format as IU X-ray and
MIMIC-CXR, see :mod:`mrg.data.prepared`) that needs no download and no credentials, so the demo and CI can
run the whole pipeline anywhere. Three stages, each a pure function of ``(seed, study index)``:

1. **Sampling** (:func:`sample_cases`): a patient (size, rotation, exposure, inspiration, heart size) and
   findings that co-occur the way they do in practice (effusions with cardiomegaly, lines and tubes with
   airspace disease, pacemakers with cardiomegaly), each with a laterality, a size and sometimes a hedge
   (a subtle finding the report calls "possible").
2. **Rendering** (:func:`render_frontal`, :func:`render_lateral`): an attenuation map built from analytic
   shapes evaluated on whole batches of pixel grids at once (numpy only): body, lung fields, mediastinum,
   heart, diaphragm domes, ribs, clavicles, spine, trachea, vessel markings, then the findings (heart width,
   basal fluid with a meniscus, apical lucency with a visceral pleural edge, round densities, dense lobar or
   hazy patchy opacity, radiopaque tubes, lines and a pacemaker), exposure and quantum noise.
3. **Reporting** (:func:`compose_report`): FINDINGS and IMPRESSION sections in varied radiology phrasing
   (synonyms, negations, hedges, sentence order, numbered lists, ``XXXX`` de-identification like IU X-ray),
   and the CheXpert-14 label vector that the report states: every sentence carries the labels a
   CheXpert-style rule labeler reads from it, so the vector is both the truth of the image and what the
   text says (1.0 present, -1.0 hedged, 0.0 explicitly negated, blank when not mentioned).

``difficulty="hard"`` (``mrg prepare synthetic --difficulty hard``) makes the harder set of
:mod:`mrg.data.sources.synthetic_hard` instead: more findings per study with side, size and severity,
finer differences, hedged and negated phrasing, distractors, and no co-occurrence to guess from. It reuses
the anatomy and drawing here; ``easy`` (the default) is this module's generator, unchanged.

Image coordinates: ``x`` runs from -1 (image left) to 1 (image right), ``y`` from -1 (top) to 1 (bottom).
Frontal films are PA, so the patient's right is on the image's left.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mrg.data.chexpert import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN
from mrg.data.prepared import MARKER_NAME, SPLITS, STAMP_NAME, Study, prepare_output_dir, write_prepared_dataset
from mrg.errors import ConfigError
from mrg.files import read_json

__all__ = [
    "DEFAULT_SPLIT",
    "DIFFICULTIES",
    "GENERATOR_VERSION",
    "SyntheticCase",
    "compose_report",
    "findings_in_words",
    "generate_studies",
    "png_bytes",
    "prepare_synthetic",
    "render_frontal",
    "render_lateral",
    "sample_cases",
    "split_counts",
]

# Bump when sampling, rendering or phrasing changes, so a folder made by another version is not mistaken for this one.
GENERATOR_VERSION = 1
DEFAULT_SPLIT: tuple[float, float, float] = (0.7, 0.1, 0.2)
DIFFICULTIES: tuple[str, ...] = ("easy", "hard")
VIEW_NAMES: tuple[str, ...] = ("PA", "lateral")
CHUNK = 8  # studies rendered together; fixed so a study's pixels never depend on n or on the worker count

# Independent random streams per study: changing the phrasing never changes an image, and vice versa.
_STREAM_CASE, _STREAM_FRONTAL, _STREAM_LATERAL, _STREAM_TEXT, _STREAM_SPLIT, _STREAM_BANK = 11, 12, 13, 14, 15, 16


# =============================================================================================== sampling


@dataclass
class SyntheticCase:
    """One synthetic study before rendering: the patient, the findings and the devices (JSON-ready dicts)."""

    index: int
    patient: dict[str, float]
    findings: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    difficulty: ClassVar[str] = "easy"

    @property
    def id(self) -> str:
        """The study id, also its image folder name."""
        return f"synth-{self.index:06d}"

    def finding(self, kind: str) -> dict[str, Any] | None:
        """The finding of this kind, if the study has one."""
        return next((f for f in self.findings if f["kind"] == kind), None)

    def device(self, kind: str) -> dict[str, Any] | None:
        """The device of this kind, if the study has one."""
        return next((d for d in self.devices if d["kind"] == kind), None)

    def to_extra(self) -> dict[str, Any]:
        """The generation parameters as stored in ``studies.jsonl`` (``extra``)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "index": self.index,
            "views": list(VIEW_NAMES),
            "findings": self.findings,
            "devices": self.devices,
            "patient": self.patient,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> SyntheticCase:
        """Rebuild a case from the ``extra`` dict of a prepared synthetic study."""
        return cls(index=int(extra["index"]), patient=dict(extra["patient"]), findings=list(extra["findings"]),
                   devices=list(extra["devices"]))


def _r(value: float) -> float:
    return round(float(value), 4)


def _pick(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


# Cardiothoracic ratio ranges per heart-size grade; the report's words follow the grade, the image the ratio.
_CTR_RANGES = {"normal": (0.40, 0.485), "borderline": (0.52, 0.545), "mild": (0.565, 0.60),
               "moderate": (0.615, 0.65), "severe": (0.665, 0.72)}
# Effusion height above the costophrenic angle, in image units (the lung field is about 1.3 tall).
_EFFUSION_HEIGHT = {"trace": (0.07, 0.09), "small": (0.16, 0.21), "moderate": (0.32, 0.40), "large": (0.56, 0.66)}
# Pneumothorax: how far the lung shrinks towards its base (1 = not at all).
_PTX_RETRACTION = {"tiny": (0.935, 0.95), "small": (0.86, 0.89), "moderate": (0.76, 0.80), "large": (0.60, 0.66)}
_LOBES = ("right upper lobe", "right middle lobe", "right lower lobe", "lingula", "left lower lobe")
_OPACITY_SITES = ("right base", "left base", "both bases", "right upper lung", "left upper lung",
                  "right mid lung", "left mid lung")
# Where a round lesion may sit: zone -> (y range, lateral distance from the midline).
_LESION_ZONES = {"upper": ((-0.52, -0.28), (0.30, 0.68)), "mid": ((-0.18, 0.08), (0.40, 0.72)),
                 "lower": ((0.14, 0.32), (0.50, 0.74))}


def _sample_patient(rng: np.random.Generator) -> dict[str, float]:
    return {
        "scale": _r(rng.uniform(0.88, 1.0)),
        "rotation_deg": _r(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0)),
        "shift_x": _r(np.clip(rng.normal(0.0, 0.025), -0.06, 0.06)),
        "shift_y": _r(rng.uniform(-0.03, 0.05)),
        "body_width": _r(rng.uniform(0.9, 0.98)),
        "inspiration": _r(rng.uniform(-0.05, 0.05)),
        "contrast": _r(rng.uniform(0.88, 1.12)),
        "brightness": _r(rng.uniform(-0.05, 0.05)),
        "gamma": _r(rng.uniform(0.8, 1.2)),
        "noise": _r(rng.uniform(0.012, 0.028)),
        "ctr": _r(rng.uniform(*_CTR_RANGES["normal"])),
        "lateral_rotation_deg": _r(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0)),
        "lateral_shift_x": _r(rng.uniform(-0.04, 0.04)),
    }


def _lesion_fits(side: str, zone: str, radius: float, heart_left: float) -> bool:
    """Whether a lesion of this radius fits in the zone (a big heart leaves no room at the left base)."""
    u0, u1 = _LESION_ZONES[zone][1]
    if side == "left" and zone == "lower":
        u0 = max(u0, heart_left + radius + 0.04)
    return u0 + radius * 0.5 < u1 - radius * 0.5 - 0.01


def _lesion_spot(rng: np.random.Generator, side: str, zone: str, radius: float, amp: float,
                 heart_left: float) -> list[float]:
    if not _lesion_fits(side, zone, radius, heart_left):
        zone = "mid"
    (y0, y1), (u0, u1) = _LESION_ZONES[zone]
    if side == "left" and zone == "lower":
        u0 = max(u0, heart_left + radius + 0.04)  # keep a left basal lesion lateral to the heart
    u = rng.uniform(u0 + radius * 0.5, u1 - radius * 0.5)
    y = rng.uniform(y0, y1)
    x = -u if side == "right" else u
    depth = rng.uniform(-0.45, 0.35)  # antero-posterior position, used by the lateral view
    return [_r(x), _r(y), _r(radius), _r(amp), _r(depth)]


def _sample_case(index: int, seed: int, normal_fraction: float) -> SyntheticCase:
    rng = np.random.default_rng([seed, index, _STREAM_CASE])
    patient = _sample_patient(rng)
    findings: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    normal = rng.random() < normal_fraction
    if not normal:
        while not findings:  # an abnormal study has at least one pathology
            cardio = rng.random() < 0.40
            effusion = rng.random() < (0.45 if cardio else 0.22)
            airspace = _pick(rng, ("none", "consolidation", "lung_opacity"),
                             (0.6, 0.22, 0.18) if not effusion else (0.45, 0.3, 0.25))
            lesion = rng.random() < 0.16
            ptx = rng.random() < 0.10
            if cardio:
                grade = "borderline" if rng.random() < 0.15 else _pick(rng, ("mild", "moderate", "severe"),
                                                                         (0.45, 0.35, 0.2))
                patient["ctr"] = _r(rng.uniform(*_CTR_RANGES[grade]))
                findings.append({"kind": "cardiomegaly", "severity": grade, "hedged": grade == "borderline",
                                 "ctr": patient["ctr"]})
            if effusion:
                side = _pick(rng, ("right", "left", "bilateral"), (0.3, 0.25, 0.45) if cardio else (0.38, 0.32, 0.3))
                hedged = side != "bilateral" and rng.random() < 0.15
                size = "trace" if hedged else _pick(rng, ("small", "moderate", "large"), (0.5, 0.33, 0.17))
                heights = {s: _r(rng.uniform(*_EFFUSION_HEIGHT[size])) if side in (s, "bilateral") else 0.0
                           for s in ("right", "left")}
                findings.append({"kind": "pleural_effusion", "side": side, "size": size, "hedged": hedged,
                                 "height": heights})
            if ptx:
                hedged = rng.random() < 0.12
                size = "tiny" if hedged else _pick(rng, ("small", "moderate", "large"), (0.5, 0.3, 0.2))
                findings.append({"kind": "pneumothorax", "side": _pick(rng, ("right", "left")), "size": size,
                                 "hedged": hedged, "retraction": _r(rng.uniform(*_PTX_RETRACTION[size]))})
            if airspace == "consolidation":
                lobe = _pick(rng, _LOBES, (0.2, 0.15, 0.3, 0.1, 0.25))
                findings.append({"kind": "consolidation", "site": lobe, "side": lobe.split()[0] if lobe != "lingula"
                                 else "left", "hedged": False, "density": _r(rng.uniform(0.26, 0.34))})
            elif airspace == "lung_opacity":
                site = _pick(rng, _OPACITY_SITES, (0.2, 0.18, 0.22, 0.1, 0.1, 0.1, 0.1))
                side = "bilateral" if site == "both bases" else site.split()[0]
                findings.append({"kind": "lung_opacity", "site": site, "side": side, "hedged": False,
                                 "density": _r(rng.uniform(0.11, 0.15))})
            if lesion:
                _add_lesion(rng, patient, findings)
    # Devices: ICU patients (tube and lines) are sicker; pacemakers go with big hearts.
    sick = any(f["kind"] in ("consolidation", "lung_opacity", "pleural_effusion") for f in findings)
    if rng.random() < (0.22 if sick else 0.05 if findings else 0.02):
        devices.append({"kind": "endotracheal_tube", "tip_cm": int(rng.integers(2, 7))})
        if rng.random() < 0.7:
            devices.append({"kind": "enteric_tube"})
        if rng.random() < 0.8:
            devices.append(_central_line(rng))
    elif rng.random() < (0.06 if findings else 0.02):
        devices.append(_central_line(rng))
    big_heart = any(f["kind"] == "cardiomegaly" for f in findings)
    if rng.random() < (0.25 if big_heart else 0.03):
        devices.append({"kind": "pacemaker", "leads": int(_pick(rng, (1, 2), (0.35, 0.65)))})
    return SyntheticCase(index=index, patient=patient, findings=findings, devices=devices)


def _central_line(rng: np.random.Generator) -> dict[str, Any]:
    return {"kind": "central_line", "side": _pick(rng, ("right", "left"), (0.7, 0.3)),
            "approach": _pick(rng, ("internal jugular", "subclavian"), (0.65, 0.35)),
            "tip": _pick(rng, ("SVC", "cavoatrial junction"), (0.6, 0.4))}


def _add_lesion(rng: np.random.Generator, patient: dict[str, float], findings: list[dict[str, Any]]) -> None:
    kind = _pick(rng, ("nodule", "mass", "multiple"), (0.6, 0.25, 0.15))
    heart_left = _heart_borders(patient)[1]
    side = _pick(rng, ("right", "left"))
    zone = _pick(rng, ("upper", "mid", "lower"), (0.4, 0.35, 0.25))
    hedged = kind == "nodule" and rng.random() < 0.2
    if kind == "multiple":
        spots = [_lesion_spot(rng, s, z, rng.uniform(0.04, 0.055), 0.2, heart_left)
                 for s, z in (("right", _pick(rng, ("upper", "mid"))), ("left", _pick(rng, ("upper", "mid"))),
                              (_pick(rng, ("right", "left")), "lower"))]
        side = "bilateral"
    else:
        if kind == "mass":
            radius, amp = rng.uniform(0.11, 0.15), 0.3
        else:
            radius, amp = (rng.uniform(0.04, 0.05), 0.12) if hedged else (rng.uniform(0.055, 0.075), 0.24)
        if not _lesion_fits(side, zone, radius, heart_left):
            zone = "mid"
        spots = [_lesion_spot(rng, side, zone, radius, amp, heart_left)]
    findings.append({"kind": "lung_lesion", "type": kind, "side": side, "zone": zone, "hedged": hedged,
                     "spots": spots})


def sample_cases(n: int, seed: int, *, normal_fraction: float = 0.35, start: int = 0,
                 difficulty: str = "easy") -> list[SyntheticCase]:
    """The cases of studies ``start .. start + n - 1`` for ``seed`` (a study depends only on seed and index).

    ``difficulty="hard"`` gives :class:`~mrg.data.sources.synthetic_hard.HardCase` objects, which
    :func:`render_frontal`, :func:`render_lateral` and :func:`compose_report` accept as well.
    """
    if difficulty == "hard":
        from mrg.data.sources.synthetic_hard import sample_hard_cases

        return list(sample_hard_cases(n, seed, normal_fraction=normal_fraction, start=start))
    return [_sample_case(i, seed, normal_fraction) for i in range(start, start + n)]


def _is_hard(cases: Sequence[SyntheticCase]) -> bool:
    kinds = {case.difficulty for case in cases}
    if len(kinds) > 1:
        raise ValueError("a batch mixes easy and hard synthetic cases; render them separately")
    return kinds == {"hard"}


# ============================================================================================== rendering
#
# Every shape is a soft mask in [0, 1] computed on a (B, S, S) grid with per-study parameters of shape
# (B, 1, 1), so a batch of studies costs a few dozen whole-array numpy operations. Brightness is an
# attenuation map: air ~0.05, soft tissue ~0.42, mediastinum/heart/abdomen ~0.65, aerated lung ~0.15.

_F32 = np.float32


def _ramp(t: np.ndarray, width: float) -> np.ndarray:
    """A soft step from 0 (t <= -width/2) to 1 (t >= width/2): anti-aliased edges without exp()."""
    out = t * _F32(1.0 / width)
    out += _F32(0.5)
    np.maximum(out, _F32(0.0), out=out)
    return np.minimum(out, _F32(1.0), out=out)


def _norm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(a^2 + b^2); np.hypot is several times slower on float32 arrays."""
    out = a * a
    out += b * b
    return np.sqrt(out, out=out)


def _bump(t: np.ndarray) -> np.ndarray:
    """A smooth bell, 1 at t = 0 and 0 for |t| >= 1 (cheaper than exp(-t^2))."""
    out = np.maximum(_F32(1.0) - t * t, _F32(0.0))
    return np.square(out, out=out)


def _clip01(t: np.ndarray) -> np.ndarray:
    np.maximum(t, _F32(0.0), out=t)
    return np.minimum(t, _F32(1.0), out=t)


def _select(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` where the float mask is 1, ``b`` where it is 0 (np.where on booleans is slow)."""
    return b + (a - b) * mask


def _col(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=_F32)[:, None, None]


def _bspline_taps(size: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (4, size) of the cubic B-spline that smooths ``grid`` noise samples onto ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (grid - 3) + 1.0
    base = np.floor(pos).astype(np.int64)
    f = pos - base
    weights = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3]) / 6.0
    weights /= np.sqrt((weights**2).sum(axis=0, keepdims=True))  # unit variance at every pixel
    return np.stack([base - 1, base, base + 1, base + 2]), weights.astype(_F32)


_TAPS_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _smooth_noise(coarse: np.ndarray, size: int) -> np.ndarray:
    """(B, g, g) white noise -> (B, size, size) smooth unit-variance noise.

    Separable 4-tap filtering with plain numpy, not a matrix product: BLAS threads make small products
    very slow on a busy machine, and their summation order may depend on the batch.
    """
    key = (size, coarse.shape[-1])
    if key not in _TAPS_CACHE:
        _TAPS_CACHE[key] = _bspline_taps(size, coarse.shape[-1])
    idx, w = _TAPS_CACHE[key]
    cols = coarse[:, :, idx[0]] * w[0]
    for k in range(1, 4):
        cols += coarse[:, :, idx[k]] * w[k]
    out = cols[:, idx[0], :] * w[0][:, None]
    for k in range(1, 4):
        out += cols[:, idx[k], :] * w[k][:, None]
    return out


def _ridges(noise: np.ndarray, width: float) -> np.ndarray:
    """Thin branching lines along the zero set of a smooth noise field (vessels, bronchograms)."""
    r = _clip01(_F32(1.0) - np.abs(noise) * _F32(1.0 / width))
    return r * r


def _grid(size: int, scale: np.ndarray, rotation_deg: np.ndarray, shift_x: np.ndarray,
          shift_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates of every pixel: the image grid rotated, scaled and shifted per study."""
    c = (np.arange(size, dtype=_F32) + _F32(0.5)) * _F32(2.0 / size) - _F32(1.0)
    xi, yi = c[None, None, :] - shift_x, c[None, :, None] - shift_y
    theta = np.deg2rad(rotation_deg).astype(_F32)
    cos, sin = np.cos(theta), np.sin(theta)
    inv = _F32(1.0) / scale
    return (cos * xi + sin * yi) * inv, (cos * yi - sin * xi) * inv


def _segment_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from every pixel to a polyline; ``points`` is (B, P, 2) in patient coordinates."""
    best = None
    for k in range(points.shape[1] - 1):
        ax, ay = points[:, k, 0, None, None], points[:, k, 1, None, None]
        dx, dy = points[:, k + 1, 0, None, None] - ax, points[:, k + 1, 1, None, None] - ay
        length2 = np.maximum(dx * dx + dy * dy, _F32(1e-9))
        t = _clip01(((x - ax) * dx + (y - ay) * dy) / length2)
        d = _norm(x - ax - t * dx, y - ay - t * dy)
        best = d if best is None else np.minimum(best, d)
    assert best is not None
    return best


def _tube(x: np.ndarray, y: np.ndarray, points: np.ndarray, half_width: float, edge: float) -> np.ndarray:
    return _ramp(_F32(half_width) - _segment_distance(x, y, points), edge)


def _heart_borders(patient: dict[str, float]) -> tuple[float, float]:
    """Right and left heart borders (image x, before rotation) from the cardiothoracic ratio."""
    thorax = 2.0 * (patient["body_width"] - 0.1)
    width = patient["ctr"] * thorax
    return -0.31 * width, 0.69 * width


@dataclass
class _Batch:
    """Per-study parameters of a chunk, as (B, 1, 1) float32 columns."""

    cases: Sequence[SyntheticCase]

    def col(self, key: str) -> np.ndarray:
        return _col([c.patient[key] for c in self.cases])

    def effusion_heights(self) -> tuple[np.ndarray, np.ndarray]:
        right, left = [], []
        for case in self.cases:
            f = case.finding("pleural_effusion")
            right.append(f["height"]["right"] if f else 0.0)
            left.append(f["height"]["left"] if f else 0.0)
        return _col(right), _col(left)

    def subset(self, predicate: Any) -> np.ndarray:
        return np.asarray([i for i, c in enumerate(self.cases) if predicate(c)], dtype=np.int64)

    def window(self, idx: np.ndarray, box: Sequence[float], size: int, *, lateral: bool = False) -> tuple[slice, slice]:
        """Image rows and columns that can show the patient-coordinate ``box`` (x0, x1, y0, y1) in studies ``idx``."""
        patients = [self.cases[i].patient for i in idx]
        scale = np.asarray([p["scale"] for p in patients])[:, None]
        theta = np.deg2rad([p["lateral_rotation_deg" if lateral else "rotation_deg"] for p in patients])[:, None]
        shift_x = np.asarray([p["lateral_shift_x" if lateral else "shift_x"] for p in patients])[:, None]
        shift_y = np.asarray([p["shift_y"] for p in patients])[:, None]
        x0, x1, y0, y1 = box
        cx, cy = np.asarray([x0, x1, x0, x1]), np.asarray([y0, y0, y1, y1])
        cols = (scale * (np.cos(theta) * cx - np.sin(theta) * cy) + shift_x + 1) * size / 2 - 0.5
        rows = (scale * (np.sin(theta) * cx + np.cos(theta) * cy) + shift_y + 1) * size / 2 - 0.5
        return (slice(max(0, math.floor(rows.min()) - 1), min(size, math.ceil(rows.max()) + 2)),
                slice(max(0, math.floor(cols.min()) - 1), min(size, math.ceil(cols.max()) + 2)))

    def rows(self, y_lo: float, y_hi: float, size: int, *, lateral: bool = False) -> slice:
        """Image rows that can show patient heights ``y_lo .. y_hi`` in every study of the batch.

        Small structures are computed on this band only. The bound allows for each study's rotation, scale
        and shift, and every banded structure is exactly zero outside its heights, so the pixels do not
        depend on which studies share the batch.
        """
        scale = np.asarray([c.patient["scale"] for c in self.cases])
        theta = np.deg2rad([c.patient["lateral_rotation_deg" if lateral else "rotation_deg"] for c in self.cases])
        shift = np.asarray([c.patient["shift_y"] for c in self.cases])
        reach = np.abs(np.sin(theta)) * 1.25  # |x| <= 1.25 in patient coordinates
        lo = float(np.min(scale * (np.cos(theta) * y_lo - reach) + shift))
        hi = float(np.max(scale * (np.cos(theta) * y_hi + reach) + shift))
        return slice(max(0, math.floor((lo + 1) * size / 2 - 0.5) - 1), min(size, math.ceil((hi + 1) * size / 2 - 0.5) + 2))


# Texture fields: name -> feature scale, as the coarse grid that spans one image (None: white pixel noise).
_TEXTURES: dict[str, int | None] = {"pixel": None, "vessels": 22, "fine": 44, "blots": 14, "mottle": 30}


@functools.lru_cache(maxsize=4)
def _texture_bank(seed: int, size: int) -> dict[str, np.ndarray]:
    """One field per texture, twice the image size, from which every study crops its own window.

    Cropping (at a random offset, in one of 8 orientations) is a copy, where smoothing fresh noise for
    each study would cost a third of the rendering time; (size + 1)^2 * 8 windows per field are plenty.
    """
    rng = np.random.default_rng([seed, _STREAM_BANK])
    big = 2 * size
    bank = {}
    for name, grid in _TEXTURES.items():
        if grid is None:
            bank[name] = rng.standard_normal((big, big), dtype=_F32)
        else:  # twice the samples over twice the pixels keeps the feature size of one image
            coarse = rng.standard_normal((1, 2 * (grid - 3) + 3, 2 * (grid - 3) + 3), dtype=_F32)
            bank[name] = _smooth_noise(coarse, big)[0]
    return bank


def _draw_noise(cases: Sequence[SyntheticCase], seed: int, stream: int, size: int) -> dict[str, np.ndarray]:
    """Every random field one view needs, cropped per study, so a study's pixels do not depend on its batch."""
    bank = _texture_bank(seed, size)
    crops: dict[str, list[np.ndarray]] = {name: [] for name in _TEXTURES}
    for case in cases:
        rng = np.random.default_rng([seed, case.index, stream])
        picks = rng.integers(0, size + 1, size=(len(_TEXTURES), 2))
        turns = rng.integers(0, 8, size=len(_TEXTURES))
        for (name, field), (oy, ox), turn in zip(bank.items(), picks, turns, strict=True):
            crop = field[oy : oy + size, ox : ox + size]
            if turn & 1:
                crop = crop.T
            if turn & 2:
                crop = crop[::-1]
            if turn & 4:
                crop = crop[:, ::-1]
            crops[name].append(crop)
    return {name: np.stack(views) for name, views in crops.items()}


def _expose(att: np.ndarray, batch: _Batch, pixel_noise: np.ndarray) -> np.ndarray:
    """Attenuation -> 8-bit film: per-study contrast, brightness and gamma, plus quantum noise."""
    img = att * batch.col("contrast") + batch.col("brightness")
    img += pixel_noise * batch.col("noise")
    np.clip(img, _F32(0.0), _F32(1.0), out=img)
    img = np.power(img, batch.col("gamma"))
    return (img * _F32(255.0) + _F32(0.5)).astype(np.uint8)


def _dome(u: np.ndarray, dome_top: np.ndarray) -> np.ndarray:
    """A hemidiaphragm: highest a third of the way out, sloping down to the cardiophrenic and costophrenic angles."""
    d = u - _F32(0.35)
    return dome_top + (_F32(0.9) + _F32(0.7) * (d > 0)) * np.square(d)  # steeper laterally: a deep, sharp angle


def _lung_field(u: np.ndarray, y: np.ndarray, apex: np.ndarray, lateral: np.ndarray, dome: np.ndarray,
                edge: float) -> np.ndarray:
    """Lung fields in side-mirrored coordinates (u = distance from the midline towards the lung's side)."""
    cap = _ramp(y - (apex + _F32(2.4) * np.square(u - _F32(0.43))), edge)
    cap *= _ramp(lateral - _F32(0.10) * np.square(y - _F32(0.3)) - u, edge)
    cap *= _ramp(dome - y, edge)
    return cap * _ramp(u - _F32(0.03), edge)


def _frontal_heart(x: np.ndarray, y: np.ndarray, cases: Sequence[SyntheticCase], dome_r: np.ndarray,
                   edge: float) -> np.ndarray:
    """The cardiac silhouette: right atrium, left ventricle and the block between them (its base hides in the domes)."""
    rb, lb = zip(*(_heart_borders(c.patient) for c in cases), strict=True)
    hrb, hlb = _col(rb), _col(lb)
    grow = hlb - hrb - _F32(0.74)  # 0 for an average normal heart
    centre_y = dome_r - _F32(0.12)
    ra_w = _F32(0.11) + _F32(0.12) * grow
    ra = _ramp(_F32(1.0) - _norm((x - hrb - ra_w) / ra_w, (y - centre_y - _F32(0.02)) / _F32(0.2)), 0.12)
    theta = 0.45
    a = _F32(0.34) + _F32(0.55) * grow
    b = _F32(0.22) + _F32(0.3) * grow
    reach = np.sqrt(a * a * _F32(math.cos(theta) ** 2) + b * b * _F32(math.sin(theta) ** 2))
    cx, cy = hlb - reach, centre_y + _F32(0.1)
    dx, dy = x - cx, y - cy
    c, s = _F32(math.cos(theta)), _F32(math.sin(theta))
    lv = _ramp(_F32(1.0) - _norm((dx * c + dy * s) / a, (dy * c - dx * s) / b), 0.12)
    block = _ramp(x - hrb - ra_w, edge) * _ramp(cx - x, edge) * _ramp(y - cy + _F32(0.12), 0.08) * _ramp(_F32(0.95) - y, edge)
    return np.maximum(np.maximum(ra, lv), block)


@dataclass
class _Film:
    """One view of a batch before exposure: the attenuation map and the geometry that later layers draw on.

    ``att`` is (B, S, S) float32; ``maps`` holds the patient coordinates (``x``, ``y``) and the soft masks the
    view computed (lung, air, fluid, body, ...) as (B, S, S) arrays, and per-study levels (apex, lateral wall,
    dome tops) as (B, 1, 1) columns, so the hard set's extra structures sit on the same anatomy without
    recomputing it.
    """

    batch: _Batch
    noise: dict[str, np.ndarray]
    att: np.ndarray
    edge: float
    maps: dict[str, np.ndarray]

    def expose(self) -> np.ndarray:
        """The 8-bit film, (B, S, S) uint8."""
        return _expose(self.att, self.batch, self.noise["pixel"])


def render_frontal(cases: Sequence[SyntheticCase], size: int, seed: int) -> np.ndarray:
    """PA chest films for a batch of cases (all easy or all hard), as a (B, size, size) uint8 array."""
    if _is_hard(cases):
        from mrg.data.sources.synthetic_hard import render_frontal_hard

        return render_frontal_hard(cases, size, seed)  # type: ignore[arg-type]
    return _frontal_film(cases, size, seed).expose()


def _frontal_film(cases: Sequence[SyntheticCase], size: int, seed: int, stream: int = _STREAM_FRONTAL) -> _Film:
    batch = _Batch(cases)
    noise = _draw_noise(cases, seed, stream, size)
    edge = max(3.0 / size, 0.02)
    x, y = _grid(size, batch.col("scale"), batch.col("rotation_deg"), batch.col("shift_x"), batch.col("shift_y"))
    ax = np.abs(x)
    right = (x < 0).astype(_F32)  # the patient's right, on the image's left

    bw = batch.col("body_width")
    lateral = bw - _F32(0.1)
    apex = _F32(-0.78) + batch.col("inspiration") * _F32(0.5)
    dome_r = _F32(0.40) + batch.col("inspiration")
    dome_l = dome_r + _F32(0.05)
    dome = _dome(ax, _select(right, dome_r, dome_l))

    # body outline with shoulders and neck; soft tissue thickens towards the flanks
    half = bw + _F32(0.3) * _ramp(_F32(-0.66) - y, 0.12) - (bw - _F32(0.04)) * _ramp(_F32(-0.9) - y, 0.05)
    body = _ramp(half - ax, edge * 2)
    att = _F32(0.05) + body * (_F32(0.34) + _F32(0.12) * np.square(np.square(ax / bw)))

    dense, abdomen = _frontal_centre(att, batch, x, y, dome, dome_r, dome_l, body, edge, size)
    lung, fluid, air, marks_keep = _frontal_pleura(att, batch, x, y, ax, right, apex, lateral, dome, dome_r, dome_l,
                                                   dense, edge)
    _frontal_markings(att, noise, ax, y, lung, air, body, marks_keep)
    thorax = _frontal_bones(att, batch, ax, y, lateral, apex, dome, dense, abdomen, body, edge, size)

    # round lesions, airspace disease, devices
    _draw_lesions(att, batch, x, y, edge, depth_axis=False)
    _draw_airspace(att, batch, x, y, air, noise, edge, frontal=True)
    _draw_devices(att, batch, x, y, edge, frontal=True, dome_l=dome_l)
    maps = {"x": x, "y": y, "ax": ax, "right": right, "lateral": lateral, "apex": apex, "dome_r": dome_r,
            "dome_l": dome_l, "dome": dome, "body": body, "dense": dense, "lung": lung, "air": air, "fluid": fluid,
            "thorax": thorax}
    return _Film(batch, noise, att, edge, maps)




def _frontal_centre(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, dome: np.ndarray,
                    dome_r: np.ndarray, dome_l: np.ndarray, body: np.ndarray, edge: float,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adds the dense centre (mediastinum, heart, abdomen) and the gastric bubble to ``att``: (dense, abdomen)."""
    one = _F32(1.0)
    knob = _F32(0.075) * _bump((y + _F32(0.42)) * _F32(7.0))
    trunk = _F32(0.035) * _bump((y + _F32(0.2)) * _F32(8.0))
    med = _ramp(x + _F32(0.1) + _F32(0.02) * y, edge) * _ramp(_F32(0.095) + knob + trunk - x, edge) * _ramp(y + _F32(0.95), 0.1)
    band = batch.rows(-0.3, 0.95, size)
    heart = np.zeros_like(x)
    heart[:, band] = _frontal_heart(x[:, band], y[:, band], batch.cases, dome_r, edge)
    abdomen = _ramp(y - dome, edge)
    dense = np.maximum(np.maximum(med, heart), abdomen) * body
    att += _F32(0.26) * dense
    band = batch.rows(0.3, 0.72, size)
    bubble = _ramp(one - _norm((x[:, band] - _F32(0.36)) / _F32(0.1), (y[:, band] - dome_l - _F32(0.11)) / _F32(0.05)), 0.3)
    att[:, band] -= _F32(0.2) * bubble * abdomen[:, band]

    return dense, abdomen


def _frontal_pleura(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, ax: np.ndarray,
                    right: np.ndarray, apex: np.ndarray, lateral: np.ndarray, dome: np.ndarray, dome_r: np.ndarray,
                    dome_l: np.ndarray, dense: np.ndarray,
                    edge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adds the lungs, pleural fluid and pneumothorax to ``att``: (lung, fluid, air, where markings stay)."""
    one = _F32(1.0)
    lung = _lung_field(ax, y, apex, lateral, dome, edge) * (one - dense)
    fluid = np.zeros_like(lung)
    eff_idx = batch.subset(lambda c: c.finding("pleural_effusion") is not None)
    if len(eff_idx):
        h_r, h_l = batch.effusion_heights()
        fluid[eff_idx] = _effusion(ax[eff_idx], y[eff_idx], right[eff_idx], lateral[eff_idx], dome_r[eff_idx],
                                   dome_l[eff_idx], h_r[eff_idx], h_l[eff_idx]) * lung[eff_idx]
    air = lung - fluid
    marks_keep = np.ones_like(air)
    ptx_idx = batch.subset(lambda c: c.finding("pneumothorax") is not None)
    if len(ptx_idx):
        gap, pleura = _pneumothorax(batch, ptx_idx, x[ptx_idx], y[ptx_idx], apex[ptx_idx], lateral[ptx_idx],
                                    dome_r[ptx_idx], dome_l[ptx_idx], edge)
        gap = gap * air[ptx_idx]
        att[ptx_idx] -= _F32(0.12) * gap
        att[ptx_idx] += _F32(0.25) * pleura * air[ptx_idx]
        marks_keep[ptx_idx] -= gap
    att -= _F32(0.27) * (one - _F32(0.25) * _ramp(y - _F32(0.25), 0.7)) * air
    att += _F32(0.16) * fluid * (_F32(0.7) + _F32(0.3) * _ramp(y - dome + _F32(0.1), 0.3))

    return lung, fluid, air, marks_keep


def _frontal_markings(att: np.ndarray, noise: dict[str, np.ndarray], ax: np.ndarray, y: np.ndarray,
                      lung: np.ndarray, air: np.ndarray, body: np.ndarray, marks_keep: np.ndarray) -> None:
    """Adds the vessel markings, densest at the hila, and soft-tissue mottle to ``att``."""
    one = _F32(1.0)
    hilum = _norm(ax - _F32(0.2), y + _F32(0.08))
    weight = np.maximum(np.minimum(_F32(1.1) - hilum * _F32(1.35), one), _F32(0.15))
    vessels = _ridges(noise["vessels"], 0.3) * _F32(0.7) + _ridges(noise["fine"], 0.25) * _F32(0.3)
    att += _F32(0.13) * vessels * weight * air * marks_keep
    att += _F32(0.08) * _bump(hilum * _F32(4.5)) * lung
    att += _F32(0.015) * noise["mottle"] * body


def _frontal_bones(att: np.ndarray, batch: _Batch, ax: np.ndarray, y: np.ndarray, lateral: np.ndarray,
                   apex: np.ndarray, dome: np.ndarray, dense: np.ndarray, abdomen: np.ndarray, body: np.ndarray,
                   edge: float, size: int) -> np.ndarray:
    """Adds the bones (posterior and anterior ribs, clavicles, spine) and the airways to ``att``: the rib cage."""
    one = _F32(1.0)
    thorax = _ramp(lateral + _F32(0.06) - ax, edge) * _ramp(y - apex + _F32(0.12), 0.05) * _ramp(dome + _F32(0.08) - y, 0.05)
    phase = (y + _F32(0.95) - _F32(0.42) * np.square(ax)) * _F32(1.0 / 0.165)
    posterior = _ramp(np.cos(phase * _F32(2 * math.pi)) - _F32(0.45), 0.5)
    phase_a = (y + _F32(0.9) + _F32(0.35) * ax) * _F32(1.0 / 0.2)
    anterior = _ramp(np.cos(phase_a * _F32(2 * math.pi)) - _F32(0.6), 0.4) * _ramp(ax - _F32(0.25), 0.2)
    att += (_F32(0.04) * posterior + _F32(0.02) * anterior) * thorax * (one - _F32(0.7) * dense)
    band = batch.rows(-0.9, -0.55, size)
    u, v = ax[:, band], y[:, band]
    clavicle_y = _F32(-0.64) - _F32(0.5) * u + _F32(0.45) * np.square(u)  # S-shaped, rising laterally
    clavicle = _ramp(_F32(0.03) - np.abs(v - clavicle_y), edge) * _ramp(u - _F32(0.06), edge) * _ramp(_F32(0.64) - u, 0.06)
    att[:, band] += _F32(0.13) * clavicle * body[:, band]
    spine = _ramp(_F32(0.07) - ax, edge) * (_F32(0.6) + _F32(0.4) * np.cos((y + one) * _F32(2 * math.pi / 0.11)))
    att += _F32(0.05) * spine * body * (one - abdomen * _F32(0.5))
    band = batch.rows(-2.0, -0.05, size)
    u, v = ax[:, band], y[:, band]
    trachea = _ramp(_F32(0.032) - u, edge) * _ramp(_F32(-0.3) - v, 0.04)
    bronchi = _ramp(_F32(0.016) - np.abs(v + _F32(0.31) - _F32(0.9) * u), edge) * _ramp(_F32(0.15) - u, edge)
    att[:, band] -= _F32(0.12) * np.maximum(trachea, bronchi) * body[:, band]

    return thorax


def _effusion(ax: np.ndarray, y: np.ndarray, right: np.ndarray, lateral: np.ndarray, dome_r: np.ndarray,
              dome_l: np.ndarray, h_r: np.ndarray, h_l: np.ndarray) -> np.ndarray:
    """Fluid fraction at the lung bases: a meniscus that rises towards the lateral chest wall."""
    h = _select(right, h_r, h_l)
    angle = _dome(lateral, _select(right, dome_r, dome_l))  # the costophrenic angle
    inward = np.maximum(lateral - ax, _F32(0.0))
    # a meniscus: the fluid climbs the lateral chest wall above its level further in
    surface = angle - h + _F32(0.35) * np.square(inward) - _F32(0.6) * h * _bump(inward * _F32(6.0))
    return _ramp(y - surface, 0.06) * (h > 0)


def _pneumothorax(batch: _Batch, idx: np.ndarray, x: np.ndarray, y: np.ndarray, apex: np.ndarray,
                  lateral: np.ndarray, dome_r: np.ndarray, dome_l: np.ndarray,
                  edge: float) -> tuple[np.ndarray, np.ndarray]:
    """The pleural gap (no lung markings) and the visceral pleural edge, for the studies in ``idx``."""
    findings = [batch.cases[i].finding("pneumothorax") for i in idx]
    sign = _col([1.0 if f["side"] == "left" else -1.0 for f in findings])  # type: ignore[index]
    k = _col([f["retraction"] for f in findings])  # type: ignore[index]
    dome_top = _select((sign > 0).astype(_F32), dome_l, dome_r)
    u = x * sign
    own = _lung_field(u, y, apex, lateral, _dome(u, dome_top), edge)
    cu, cy = _F32(0.3), dome_top
    u2, y2 = cu + (u - cu) / k, cy + (y - cy) / k
    collapsed = _lung_field(u2, y2, apex, lateral, _dome(u2, dome_top), edge * 0.6)
    gap = own * (_F32(1.0) - collapsed)
    pleura = _F32(4.0) * collapsed * (_F32(1.0) - collapsed) * _ramp(own - _F32(0.5), 0.2)
    return gap, pleura


def _draw_lesions(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, edge: float, *,
                  depth_axis: bool) -> None:
    idx = batch.subset(lambda c: c.finding("lung_lesion") is not None)
    if not len(idx):
        return
    spots = [batch.cases[i].finding("lung_lesion")["spots"] for i in idx]  # type: ignore[index]
    most = max(len(s) for s in spots)
    padded = np.zeros((len(idx), most, 5), dtype=_F32)
    for row, s in enumerate(spots):
        padded[row, : len(s)] = s
    reach = max(edge, 0.02)
    for k in range(most):
        cx = padded[:, k, 4 if depth_axis else 0, None, None]
        cy, radius, amp = (padded[:, k, j, None, None] for j in (1, 2, 3))
        r, c = batch.window(idx, (float((cx - radius).min()) - reach, float((cx + radius).max()) + reach,
                                  float((cy - radius).min()) - reach, float((cy + radius).max()) + reach),
                            x.shape[-1], lateral=depth_axis)
        d = _norm(x[idx, r, c] - cx, y[idx, r, c] - cy)
        att[idx, r, c] += amp * _ramp(radius - d, reach)


_LOBE_ZONES = {  # frontal: (centre x, centre y, half width, half height, fissure y or None) in patient coords
    "right upper lobe": (-0.45, -0.42, 0.3, 0.3, -0.16),
    "right middle lobe": (-0.27, 0.08, 0.24, 0.2, None),
    "right lower lobe": (-0.5, 0.3, 0.3, 0.26, None),
    "lingula": (0.45, 0.0, 0.22, 0.2, None),
    "left lower lobe": (0.55, 0.34, 0.27, 0.24, None),
    "right base": (-0.52, 0.33, 0.3, 0.22, None),
    "left base": (0.56, 0.36, 0.27, 0.2, None),
    "right upper lung": (-0.45, -0.4, 0.28, 0.26, None),
    "left upper lung": (0.45, -0.4, 0.28, 0.26, None),
    "right mid lung": (-0.5, -0.05, 0.27, 0.2, None),
    "left mid lung": (0.55, -0.05, 0.25, 0.2, None),
}
_LATERAL_ZONES = {  # lateral view: anterior is image left
    "right upper lobe": (0.05, -0.42, 0.3, 0.25, -0.16),
    "left upper lobe": (0.05, -0.42, 0.3, 0.25, None),
    "right middle lobe": (-0.35, 0.12, 0.22, 0.18, None),
    "lingula": (-0.35, 0.08, 0.22, 0.18, None),
    "right lower lobe": (0.38, 0.32, 0.28, 0.26, None),
    "left lower lobe": (0.38, 0.34, 0.28, 0.26, None),
    "base": (0.38, 0.36, 0.3, 0.22, None),
    "upper": (0.05, -0.42, 0.3, 0.24, None),
    "mid": (0.15, -0.02, 0.3, 0.2, None),
}


def _zone_of(finding: dict[str, Any], frontal: bool) -> list[tuple[float, float, float, float, float | None]]:
    site = finding["site"]
    if frontal:
        return [_LOBE_ZONES["right base"], _LOBE_ZONES["left base"]] if site == "both bases" else [_LOBE_ZONES[site]]
    if site in _LATERAL_ZONES:
        return [_LATERAL_ZONES[site]]
    return [_LATERAL_ZONES["base" if "base" in site else site.split()[1]]]


def _draw_airspace(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, air: np.ndarray,
                   noise: dict[str, np.ndarray], edge: float, *, frontal: bool) -> None:
    """Consolidation (dense, lobar, air bronchograms) and lung opacity (hazy, patchy) inside aerated lung."""
    for kind in ("consolidation", "lung_opacity"):
        idx = batch.subset(lambda c, kind=kind: c.finding(kind) is not None)
        if not len(idx):
            continue
        dense = kind == "consolidation"
        xs, ys, blots = x[idx], y[idx], noise["blots"][idx]
        patch = np.zeros_like(xs)
        for row, i in enumerate(idx):
            finding = batch.cases[i].finding(kind)
            for cx, cy, hw, hh, fissure in _zone_of(finding, frontal):  # type: ignore[arg-type]
                # an irregular outline: the zone's radius perturbed by smooth noise
                r = _norm((xs[row] - cx) / hw, (ys[row] - cy) / hh) + blots[row] * _F32(0.3 if dense else 0.45)
                zone = _ramp(_F32(1.0) - r, 0.25 if dense else 0.7)
                if fissure is not None:  # a lobe stops sharply at its fissure
                    zone *= _ramp(_F32(fissure) - ys[row], edge)
                patch[row] = np.maximum(patch[row], zone)
        texture = noise["mottle"][idx]
        if dense:
            patch *= _F32(0.8) + _F32(0.2) * _ramp(texture, 2.0)
        else:
            patch *= _ramp(texture + _F32(0.3), 1.6)
        density = _col([batch.cases[i].finding(kind)["density"] for i in idx])  # type: ignore[index]
        patch *= np.minimum(air[idx] * _F32(1.6), _F32(1.0))
        att[idx] += density * patch
        if dense:  # air bronchograms: branching lucent lines inside the consolidation
            att[idx] -= _F32(0.1) * _ridges(noise["vessels"][idx], 0.18) * patch


def _device_paths(case: SyntheticCase, frontal: bool, dome_l: float) -> dict[str, np.ndarray]:
    """Polylines (P, 2) of the case's tubes and lines in patient coordinates."""
    paths: dict[str, np.ndarray] = {}
    carina = -0.31
    for device in case.devices:
        kind = device["kind"]
        if kind == "endotracheal_tube":
            tip = carina - 0.035 * device["tip_cm"]
            pts = [[0.01, -1.1], [0.0, -0.8], [0.0, tip]] if frontal else [[-0.2, -1.1], [-0.08, -0.7], [0.05 + 0.06 * (tip + 0.31), tip]]
        elif kind == "enteric_tube":
            pts = ([[0.02, -1.1], [0.03, -0.5], [0.05, 0.2], [0.12, dome_l + 0.05], [0.33, dome_l + 0.12]] if frontal
                   else [[-0.05, -1.1], [0.2, -0.5], [0.28, 0.2], [0.1, 0.48], [-0.15, 0.56]])
        elif kind == "central_line":
            tip = -0.12 if device["tip"] == "SVC" else 0.0
            s = -1.0 if device["side"] == "right" else 1.0
            if device["approach"] == "internal jugular":
                pts = [[s * 0.2, -1.1], [s * 0.14, -0.75], [s * 0.06, -0.55], [-0.06, -0.4], [-0.06, tip]]
            else:
                pts = [[s * 0.7, -0.7], [s * 0.4, -0.74], [s * 0.12, -0.62], [-0.06, -0.45], [-0.06, tip]]
            if not frontal:
                pts = [[-0.1 + 0.05 * i, py] for i, (_, py) in enumerate(pts)]
                pts[-1][0] = -0.1
        elif kind == "pacemaker":
            continue
        else:  # pragma: no cover - sampling only makes the kinds above
            raise ValueError(kind)
        paths[kind] = np.asarray(pts, dtype=_F32)
    pacer = case.device("pacemaker")
    if pacer is not None:
        if frontal:
            paths["pacemaker_ra"] = np.asarray([[0.52, -0.62], [0.3, -0.7], [0.08, -0.55], [-0.05, -0.25],
                                                [-0.08, 0.02]], dtype=_F32)
            if pacer["leads"] == 2:
                paths["pacemaker_rv"] = np.asarray([[0.52, -0.62], [0.28, -0.66], [0.06, -0.5], [-0.04, -0.1],
                                                    [0.1, 0.25], [0.22, 0.36]], dtype=_F32)
        else:
            paths["pacemaker_ra"] = np.asarray([[-0.68, -0.55], [-0.4, -0.55], [-0.2, -0.3], [-0.2, 0.05]], dtype=_F32)
            if pacer["leads"] == 2:
                paths["pacemaker_rv"] = np.asarray([[-0.68, -0.55], [-0.42, -0.5], [-0.25, -0.2], [-0.35, 0.2],
                                                    [-0.45, 0.42]], dtype=_F32)
    return paths


_DEVICE_STYLE = {  # half width, brightness
    "endotracheal_tube": (0.016, 0.22),
    "enteric_tube": (0.011, 0.2),
    "central_line": (0.009, 0.24),
    "pacemaker_ra": (0.008, 0.3),
    "pacemaker_rv": (0.008, 0.3),
}


def _draw_devices(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, edge: float, *, frontal: bool,
                  dome_l: np.ndarray) -> None:
    idx = batch.subset(lambda c: bool(c.devices))
    if not len(idx):
        return
    size = x.shape[-1]
    paths = [_device_paths(batch.cases[i], frontal, float(dome_l[i, 0, 0])) for i in idx]
    for name, (half_width, bright) in _DEVICE_STYLE.items():
        rows = np.asarray([r for r, p in enumerate(paths) if name in p], dtype=np.int64)
        if not len(rows):
            continue
        pts = np.stack([paths[r][name] for r in rows])
        sel = idx[rows]
        reach = half_width + edge
        r, c = batch.window(sel, (pts[..., 0].min() - reach, pts[..., 0].max() + reach,
                                  pts[..., 1].min() - reach, pts[..., 1].max() + reach), size, lateral=not frontal)
        xs, ys = x[sel, r, c], y[sel, r, c]
        line = _tube(xs, ys, pts, half_width, max(edge * 0.7, 0.008))
        if name == "endotracheal_tube":  # a radiolucent tube with a radiopaque stripe
            line = _F32(0.4) * line + _tube(xs, ys, pts, half_width * 0.35, edge * 0.6)
        att[sel, r, c] += _F32(bright) * line
    rows = np.asarray([r for r, i in enumerate(idx) if batch.cases[i].device("pacemaker")], dtype=np.int64)
    if len(rows):
        sel = idx[rows]
        cx, cy, hw, hh = (0.55, -0.63, 0.075, 0.05) if frontal else (-0.7, -0.56, 0.035, 0.06)
        reach = 0.015 + edge
        r, c = batch.window(sel, (cx - hw - reach, cx + hw + reach, cy - hh - reach, cy + hh + reach), size,
                            lateral=not frontal)
        box = np.maximum(np.abs(x[sel, r, c] - _F32(cx)) - _F32(hw), np.abs(y[sel, r, c] - _F32(cy)) - _F32(hh))
        att[sel, r, c] += _F32(0.55) * _ramp(_F32(0.015) - box, edge)


def render_lateral(cases: Sequence[SyntheticCase], size: int, seed: int) -> np.ndarray:
    """Lateral chest films (anterior on the image's left) with the same findings, as (B, size, size) uint8."""
    if _is_hard(cases):
        from mrg.data.sources.synthetic_hard import render_lateral_hard

        return render_lateral_hard(cases, size, seed)  # type: ignore[arg-type]
    return _lateral_film(cases, size, seed).expose()


def _lateral_film(cases: Sequence[SyntheticCase], size: int, seed: int, stream: int = _STREAM_LATERAL) -> _Film:
    batch = _Batch(cases)
    noise = _draw_noise(cases, seed, stream, size)
    edge = max(3.0 / size, 0.02)
    x, y = _grid(size, batch.col("scale"), batch.col("lateral_rotation_deg"), batch.col("lateral_shift_x"),
                 batch.col("shift_y"))
    insp = batch.col("inspiration")

    # body from the anterior chest wall (left) to the back (right), narrowing to the neck at the top
    front = _F32(-0.88) + _F32(0.1) * np.square(y - _F32(0.1)) + _F32(0.35) * _ramp(_F32(-0.8) - y, 0.2)
    body = _ramp(x - front, edge * 2) * _ramp(_F32(0.95) - x, edge * 2)
    att = _F32(0.05) + body * (_F32(0.36) + _F32(0.06) * _ramp(x - _F32(0.55), 0.3))

    # the thoracic cavity and the two hemidiaphragms sloping down to the posterior sulci
    top = _F32(0.36) + insp
    slope = _F32(0.12) + _F32(0.26) * (x > _F32(-0.1))
    dome_a = top + slope * np.square(x + _F32(0.1))
    dome_b = dome_a + _F32(0.045) + _F32(0.03) * x
    anterior = _F32(-0.7) + _F32(0.06) * np.square(y + _F32(0.1))
    cage = (_ramp(x - anterior, edge) * _ramp(_F32(0.8) - x, edge)
            * _ramp(y - (_F32(-0.82) + insp * _F32(0.5) + _F32(0.9) * np.square(x - _F32(0.1))), edge))
    lung = cage * _ramp(dome_a - y, edge)
    between = cage * _ramp(dome_b - y, edge) - lung  # below one dome, above the other: one lung's worth of air
    abdomen = _ramp(y - dome_a, edge) * body

    dense = _lateral_centre(att, batch, x, y, top, cage, abdomen, body, edge, size)
    fluid, air = _lateral_pleura(att, batch, x, y, top, cage, lung, between, dense, dome_b, edge)
    _lateral_bones_and_markings(att, noise, x, y, anterior, cage, lung, air, fluid, abdomen, body, edge)
    _lateral_pneumothorax(att, batch, x, y, lung)

    _draw_lesions(att, batch, x, y, edge, depth_axis=True)
    _draw_airspace(att, batch, x, y, air, noise, edge, frontal=False)
    _draw_devices(att, batch, x, y, edge, frontal=False, dome_l=top + _F32(0.1))
    maps = {"x": x, "y": y, "top": top, "body": body, "cage": cage, "lung": lung, "air": air, "fluid": fluid,
            "dense": dense, "anterior": anterior}
    return _Film(batch, noise, att, edge, maps)




def _lateral_centre(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, top: np.ndarray, cage: np.ndarray,
                    abdomen: np.ndarray, body: np.ndarray, edge: float, size: int) -> np.ndarray:
    """Adds the heart (anterior, on the diaphragm), aorta, gastric bubble and trachea to ``att``: the dense map."""
    one = _F32(1.0)
    rb, lb = zip(*(_heart_borders(c.patient) for c in batch.cases), strict=True)
    grow = _col(lb) - _col(rb) - _F32(0.74)
    hx, hy = _F32(-0.36) - _F32(0.05) * grow, top - _F32(0.02)
    dense = np.zeros_like(x)
    band = batch.rows(-0.25, 1.0, size, lateral=True)
    xs, ys = x[:, band], y[:, band]
    dense[:, band] = _ramp(one - _norm((xs - hx) / (_F32(0.38) + _F32(0.45) * grow),
                                       (ys - hy) / (_F32(0.3) + _F32(0.2) * grow)), 0.12) * cage[:, band]
    band = batch.rows(-0.6, -0.05, size, lateral=True)
    xs, ys = x[:, band], y[:, band]
    arch = _ramp(_F32(0.05) - np.abs(_norm((xs - _F32(0.1)) / _F32(0.22), (ys + _F32(0.2)) / _F32(0.22)) - one) * _F32(0.22),
                 0.08) * _ramp(_F32(-0.2) - ys, 0.2)
    dense[:, band] = np.maximum(dense[:, band], _F32(0.2) * arch * cage[:, band])
    att += _F32(0.25) * np.maximum(dense, abdomen)
    band = batch.rows(0.3, 0.75, size, lateral=True)
    xs, ys = x[:, band], y[:, band]
    bubble = _ramp(one - _norm((xs - _F32(0.05)) / _F32(0.12), (ys - top - _F32(0.12)) / _F32(0.05)), 0.3)
    att[:, band] -= _F32(0.18) * bubble * abdomen[:, band]
    band = batch.rows(-2.0, -0.2, size, lateral=True)
    xs, ys = x[:, band], y[:, band]
    trachea = _ramp(_F32(0.035) - np.abs(xs - _F32(-0.02) - _F32(0.17) * (ys + one)), edge) * _ramp(_F32(-0.26) - ys, 0.05)
    att[:, band] -= _F32(0.1) * trachea * body[:, band]

    return dense


def _lateral_pleura(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, top: np.ndarray, cage: np.ndarray,
                    lung: np.ndarray, between: np.ndarray, dense: np.ndarray, dome_b: np.ndarray,
                    edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Adds the aerated lung and the pleural fluid pooling in the posterior sulci to ``att``: (fluid, air)."""
    one = _F32(1.0)
    h_r, h_l = batch.effusion_heights()
    h_max, both = np.maximum(h_r, h_l), np.minimum(h_r, h_l) > 0
    fluid = np.zeros_like(x)
    if np.any(h_max > 0):
        sulcus = top + _F32(0.34)  # the posterior costophrenic sulcus, as deep as the frontal's lateral angle
        surface = sulcus - h_max + (_F32(0.9) - _F32(0.6) * np.clip(h_max * 2, 0, 1)) * np.square(
            np.maximum(_F32(0.75) - x, _F32(0.0)))
        fluid = _ramp(y - surface, 0.06) * (h_max > 0) * np.where(both, one, _F32(0.6)) * cage * _ramp(dome_b + _F32(0.04) - y, edge)
    air = (lung + _F32(0.5) * between) * (one - dense)
    att -= _F32(0.27) * air * (one - fluid)
    att += _F32(0.1) * fluid

    return fluid, air


def _lateral_bones_and_markings(att: np.ndarray, noise: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                                anterior: np.ndarray, cage: np.ndarray, lung: np.ndarray, air: np.ndarray,
                                fluid: np.ndarray, abdomen: np.ndarray, body: np.ndarray, edge: float) -> None:
    """Adds the spine (darker downwards on a normal lateral), sternum, vessel markings and ribs to ``att``."""
    one = _F32(1.0)
    spine_c = _F32(0.67) + _F32(0.05) * (one - np.square(y))
    vertebrae = _ramp(_F32(0.11) - np.abs(x - spine_c), edge) * _ramp(y + _F32(0.95), 0.1)
    discs = _F32(0.55) + _F32(0.45) * _ramp(np.cos((y + one) * _F32(2 * math.pi / 0.125)) + _F32(0.7), 0.5)
    att += _F32(0.2) * vertebrae * discs * (one - _F32(0.3) * _ramp(y, 1.2)) * (one - _F32(0.5) * abdomen)
    sternum = _ramp(_F32(0.025) - np.abs(x - anterior + _F32(0.04)), edge) * _ramp(_F32(0.35) - y, 0.1) * _ramp(y + _F32(0.62), 0.1)
    att += _F32(0.14) * sternum
    hilum = _norm(x - _F32(0.1), y + _F32(0.05))
    weight = np.maximum(np.minimum(_F32(1.1) - hilum * _F32(1.35), one), _F32(0.15))
    vessels = _ridges(noise["vessels"], 0.3) * _F32(0.7) + _ridges(noise["fine"], 0.25) * _F32(0.3)
    att += _F32(0.09) * vessels * weight * air * (one - fluid) + _F32(0.08) * _bump(hilum * _F32(3.5)) * lung
    att += _F32(0.015) * noise["mottle"] * body
    ribs = _ramp(np.cos((y - _F32(0.35) * x) * _F32(2 * math.pi / 0.17)) - _F32(0.6), 0.4) * cage * _ramp(x - _F32(0.1), 0.4)
    att += _F32(0.03) * ribs


def _lateral_pneumothorax(att: np.ndarray, batch: _Batch, x: np.ndarray, y: np.ndarray, lung: np.ndarray) -> None:
    """Darkens the apex of the cases with a pneumothorax in ``att``."""
    one = _F32(1.0)
    ptx_idx = batch.subset(lambda c: c.finding("pneumothorax") is not None)
    if len(ptx_idx):  # barely visible on a lateral: a thin lucent cap at the apex
        k = _col([batch.cases[i].finding("pneumothorax")["retraction"] for i in ptx_idx])  # type: ignore[index]
        ys, xs = y[ptx_idx], x[ptx_idx]
        cap = _F32(-0.82) + _F32(0.9) * np.square(xs - _F32(0.1)) + (one - k) * _F32(0.8)
        att[ptx_idx] -= _F32(0.05) * _ramp(cap - ys, 0.03) * lung[ptx_idx]


# ============================================================================================== reporting
#
# A report is a list of sentences; each sentence carries the CheXpert labels a rule labeler reads from it
# (a finding: 1.0, or -1.0 when hedged; a negation: 0.0). The study's label vector is their aggregate, so
# it states exactly what the text says, and the generator only ever negates what the image does not show.

CARDIOMEGALY, EFFUSION, PNEUMOTHORAX, LESION = "Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Lung Lesion"
CONSOLIDATION, OPACITY, DEVICES, MEDIASTINUM = "Consolidation", "Lung Opacity", "Support Devices", "Enlarged Cardiomediastinum"
EDEMA, FRACTURE, NO_FINDING = "Edema", "Fracture", "No Finding"


@dataclass(frozen=True)
class _Sentence:
    text: str
    labels: dict[str, float]
    topic: str
    abnormal: bool = False


_SEVERITY = {"mild": (("mild", "mildly"),), "moderate": (("moderate", "moderately"),),
             "severe": (("marked", "markedly"), ("marked", "markedly"), ("severe", "severely"))}
_CARDIO_POSITIVE = ("There is {adj} cardiomegaly.", "{Adj} cardiomegaly.", "The heart is {adv} enlarged.",
                    "The cardiac silhouette is {adv} enlarged.", "Heart size is {adv} enlarged.",
                    "{Adj} enlargement of the cardiac silhouette.")
_CARDIO_HEDGED = ("Possible mild cardiomegaly.", "Mild cardiomegaly cannot be excluded.", "Cannot exclude mild cardiomegaly.",
                  "Possible mild enlargement of the cardiac silhouette.")
_EFFUSION_ONE = ("{Size} {side} pleural effusion.", "There is a {size} {side} pleural effusion.",
                 "A {size} {side} pleural effusion is present.", "{Size} {side}-sided pleural effusion.",
                 "There is a {size} amount of {side} pleural fluid.", "{Size} {side} effusion.")
_EFFUSION_SMALL = ("{Size} {side} pleural effusion blunting the costophrenic angle.",)
_EFFUSION_BOTH = ("{Size} bilateral pleural effusions.", "There are {size} bilateral pleural effusions.",
                  "Bilateral {size} pleural effusions are present.", "{Size} pleural effusions bilaterally.",
                  "{Size} bilateral effusions.")
_EFFUSION_HEDGED = ("Possible small {side} pleural effusion.",
                    "Blunting of the {side} costophrenic angle may represent a small pleural effusion.",
                    "Cannot exclude a small {side} pleural effusion.", "A trace {side} pleural effusion cannot be excluded.")
_PTX_POSITIVE = ("There is a {size} {side} pneumothorax.", "{Size} {side} pneumothorax.",
                 "A {size} {side}-sided pneumothorax is present.",
                 "{Size} {side} pneumothorax, the visceral pleural edge is visible.")
_PTX_SMALL = ("{Size} {side} apical pneumothorax.",)
_PTX_HEDGED = ("Possible tiny {side} apical pneumothorax.", "A tiny {side} apical pneumothorax cannot be excluded.",
               "Cannot exclude a tiny {side} apical pneumothorax.")
_ZONE_WORDS = {"upper": ("upper lobe", "upper lung", "upper lung zone"), "mid": ("mid lung", "mid lung zone"),
               "lower": ("lower lobe", "lung base", "lower lung zone")}
_NODULE = ("There is a {cm} cm nodule in the {loc}.", "{Cm} cm nodule in the {loc}.", "A rounded nodule projects over the {loc}.",
           "{Loc} nodule.", "There is a nodule in the {loc}.", "A {cm} cm nodule is seen in the {loc}.")
_MASS = ("There is a {cm} cm mass in the {loc}.", "{Loc} mass.", "Large rounded mass in the {loc}.",
         "A {cm} cm mass is present in the {loc}.")
_MULTIPLE = ("Multiple bilateral pulmonary nodules.", "There are multiple nodules in both lungs.",
             "Several rounded nodules are scattered in both lungs.")
_NODULE_HEDGED = ("Possible small nodule in the {loc}.", "A small nodule in the {loc} cannot be excluded.",
                  "Questionable small nodule in the {loc}.")
_CONSOLIDATION = ("{Site_adj} airspace opacity consistent with consolidation.", "Dense consolidative opacity in the {site}.",
                  "There is consolidation with airspace opacity in the {site}.",
                  "{Site_adj} consolidation and surrounding airspace disease.",
                  "There is dense opacity in the {site} consistent with consolidation.",
                  "{Site_adj} consolidative opacity with air bronchograms.")
_OPACITY_SITE = {"right base": ("at the right base", "at the right lung base", "in the right lower lung"),
                 "left base": ("at the left base", "at the left lung base", "in the left lower lung"),
                 "both bases": ("at both lung bases", "in both lower lungs"),
                 "right upper lung": ("in the right upper lung",), "left upper lung": ("in the left upper lung",),
                 "right mid lung": ("in the right mid lung",), "left mid lung": ("in the left mid lung",)}
_OPACITY = ("Patchy opacity {where}.", "There are patchy opacities {where}.", "Hazy airspace opacity {where}.",
            "Patchy airspace disease {where}.", "Streaky and patchy opacities {where}.")
_OPACITY_NO_CONSOLIDATION = ("Ill-defined patchy opacity {where} without consolidation.",)

# Normal statements by topic, with the labels they state.
_HEART_NORMAL = (("The heart is normal in size.", {CARDIOMEGALY: NEGATIVE}), ("Heart size is normal.", {CARDIOMEGALY: NEGATIVE}),
                 ("Normal heart size.", {CARDIOMEGALY: NEGATIVE}),
                 ("The heart size is within normal limits.", {CARDIOMEGALY: NEGATIVE}),
                 ("The cardiac silhouette is normal in size.", {CARDIOMEGALY: NEGATIVE}),
                 ("Heart size XXXX within normal limits.", {CARDIOMEGALY: NEGATIVE}))
_MEDIASTINUM_NORMAL = (("The mediastinal contours are normal.", {MEDIASTINUM: NEGATIVE}),
                       ("Mediastinal contours are within normal limits.", {MEDIASTINUM: NEGATIVE}),
                       ("The mediastinum is unremarkable.", {MEDIASTINUM: NEGATIVE}),
                       ("Normal mediastinal contour.", {MEDIASTINUM: NEGATIVE}),
                       ("The hilar and mediastinal contours are normal.", {MEDIASTINUM: NEGATIVE}))
_HEART_MEDIASTINUM_NORMAL = (("The cardiomediastinal silhouette is within normal limits.", {MEDIASTINUM: NEGATIVE}),
                             ("Heart size and mediastinal contours are normal.", {CARDIOMEGALY: NEGATIVE, MEDIASTINUM: NEGATIVE}),
                             ("The heart and mediastinum are normal.", {CARDIOMEGALY: NEGATIVE, MEDIASTINUM: NEGATIVE}),
                             ("Normal cardiomediastinal silhouette.", {MEDIASTINUM: NEGATIVE}),
                             ("The cardiomediastinal silhouette is normal in size and contour.", {MEDIASTINUM: NEGATIVE}))
_LUNGS_CLEAR = (("The lungs are clear.", {}), ("Lungs are clear bilaterally.", {}), ("The lungs are well expanded and clear.", {}),
                ("Clear lungs.", {}), ("The lungs are clear without focal airspace disease.", {OPACITY: NEGATIVE}),
                ("The lungs are clear without focal consolidation.", {CONSOLIDATION: NEGATIVE}))
_LUNGS_OTHERWISE = (("The lungs are otherwise clear.", {}), ("Otherwise, the lungs are clear.", {}))
_BONES = (("The osseous structures are intact.", {}), ("No acute bony abnormality.", {}), ("Bony structures are intact.", {}),
          ("The visualized osseous structures are unremarkable.", {}), ("No acute osseous abnormality.", {}),
          ("The XXXX are intact.", {}), ("No displaced rib fractures.", {FRACTURE: NEGATIVE}))
_VASCULARITY = (("Normal pulmonary vascularity.", {}), ("Pulmonary vasculature is within normal limits.", {}),
                ("No pulmonary edema.", {EDEMA: NEGATIVE}))
_TECHNIQUE = ("PA and lateral views of the chest were obtained.", "XXXX XXXX and lateral chest examination was obtained.",
              "Frontal and lateral views of the chest.")
# Negated items for "No A, B or C." sentences; each names one observation the image does not show.
_NEGATABLE = {CONSOLIDATION: ("focal consolidation", "consolidation", "focal airspace consolidation"),
              OPACITY: ("focal airspace disease", "focal airspace opacity"),
              EFFUSION: ("pleural effusion", "effusion"),
              PNEUMOTHORAX: ("pneumothorax",)}
_NEGATION_LEADS = ("No {items}.", "There is no {items}.", "Negative for {items}.", "No evidence of {items}.")
_IMPRESSION_NORMAL = ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary disease.",
                      "No acute cardiopulmonary process.", "Normal chest x-XXXX.", "No active disease.",
                      "Negative chest x-XXXX.")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(rng: np.random.Generator, templates: Sequence[str], **words: str) -> str:
    """Fill a random template; ``{Word}`` is the capitalised form of ``{word}``."""
    template = _pick(rng, templates)
    values = dict(words)
    values.update({_cap(k): _cap(v) for k, v in words.items()})
    return template.format(**values)


def _lesion_loc(rng: np.random.Generator, finding: dict[str, Any]) -> str:
    return f"{finding['side']} {_pick(rng, _ZONE_WORDS[finding['zone']])}"


def _lesion_cm(finding: dict[str, Any]) -> str:
    """Largest diameter in cm, read from the drawn radius (the lung fields are about 30 cm across)."""
    radius = max(spot[2] for spot in finding["spots"])
    return f"{2 * radius / 1.6 * 30:.1f}"


def _site_adj(site: str) -> str:
    return "lingular" if site == "lingula" else site


def _finding_sentence(rng: np.random.Generator, finding: dict[str, Any]) -> _Sentence:
    kind, hedged = finding["kind"], finding.get("hedged", False)
    value = UNCERTAIN if hedged else POSITIVE
    if kind == "cardiomegaly":
        if hedged:
            return _Sentence(_pick(rng, _CARDIO_HEDGED), {CARDIOMEGALY: value}, "heart", True)
        adj, adv = _pick(rng, _SEVERITY[finding["severity"]])
        return _Sentence(_fill(rng, _CARDIO_POSITIVE, adj=adj, adv=adv), {CARDIOMEGALY: value}, "heart", True)
    if kind == "pleural_effusion":
        side, size = finding["side"], finding["size"]
        if hedged:
            text = _fill(rng, _EFFUSION_HEDGED, side=side)
        elif side == "bilateral":
            text = _fill(rng, _EFFUSION_BOTH, size=size)
        else:
            text = _fill(rng, _EFFUSION_ONE + (_EFFUSION_SMALL if size == "small" else ()), size=size, side=side)
        return _Sentence(text, {EFFUSION: value}, "pleura", True)
    if kind == "pneumothorax":
        side, size = finding["side"], finding["size"]
        if hedged:
            text = _fill(rng, _PTX_HEDGED, side=side)
        else:
            text = _fill(rng, _PTX_POSITIVE + (_PTX_SMALL if size == "small" else ()), size=size, side=side)
        return _Sentence(text, {PNEUMOTHORAX: value}, "pleura", True)
    if kind == "lung_lesion":
        if finding["type"] == "multiple":
            text = _pick(rng, _MULTIPLE)
        else:
            templates = _NODULE_HEDGED if hedged else _MASS if finding["type"] == "mass" else _NODULE
            text = _fill(rng, templates, loc=_lesion_loc(rng, finding), cm=_lesion_cm(finding))
        return _Sentence(text, {LESION: value}, "lungs", True)
    if kind == "consolidation":
        site = finding["site"]
        text = _fill(rng, _CONSOLIDATION, site=site, site_adj=_site_adj(site))
        return _Sentence(text, {CONSOLIDATION: POSITIVE, OPACITY: POSITIVE}, "lungs", True)
    if kind == "lung_opacity":
        where = _pick(rng, _OPACITY_SITE[finding["site"]])
        if rng.random() < 0.15:
            return _Sentence(_fill(rng, _OPACITY_NO_CONSOLIDATION, where=where),
                             {OPACITY: POSITIVE, CONSOLIDATION: NEGATIVE}, "lungs", True)
        return _Sentence(_fill(rng, _OPACITY, where=where), {OPACITY: POSITIVE}, "lungs", True)
    raise ValueError(f"unknown finding kind {kind!r}")  # pragma: no cover - sampling only makes the kinds above


def _device_sentence(rng: np.random.Generator, device: dict[str, Any]) -> _Sentence:
    kind = device["kind"]
    if kind == "endotracheal_tube":
        d = device["tip_cm"]
        text = _pick(rng, (f"Endotracheal tube tip is {d} cm above the carina.",
                           f"An endotracheal tube is in place, terminating {d} cm above the carina.",
                           f"ET tube terminates approximately {d} cm above the carina.",
                           "Endotracheal tube in standard position."))
    elif kind == "enteric_tube":
        text = _pick(rng, ("Enteric tube courses below the diaphragm.", "A nasogastric tube terminates in the stomach.",
                           "Nasogastric tube tip projects over the stomach."))
    elif kind == "central_line":
        side = device["side"]
        approach = device["approach"] if device["approach"] == "subclavian" else _pick(rng, ("internal jugular", "IJ"))
        tip = "the cavoatrial junction" if device["tip"] == "cavoatrial junction" else _pick(
            rng, ("the SVC", "the superior vena cava", "the mid SVC"))
        text = _fill(rng, ("{Side} {approach} central venous catheter with tip at {tip}.",
                           "{Side} {approach} central line terminates at {tip}.",
                           "A {side} {approach} catheter tip projects over {tip}."), side=side, approach=approach, tip=tip)
    elif kind == "pacemaker":
        two = device["leads"] == 2
        text = _pick(rng, (
            "Left chest wall pacemaker with leads in the right atrium and right ventricle." if two
            else "Left chest wall pacemaker with a single lead in the right atrium.",
            f"{'Dual' if two else 'Single'}-chamber pacemaker in place.",
            f"A left-sided pacemaker is present with {'two leads' if two else 'one lead'}.",
            f"Left-sided {'dual' if two else 'single'}-lead pacer."))
    else:  # pragma: no cover - sampling only makes the kinds above
        raise ValueError(f"unknown device kind {kind!r}")
    return _Sentence(text, {DEVICES: POSITIVE}, "devices", True)


def _negation(rng: np.random.Generator, observations: Sequence[str], topic: str) -> _Sentence:
    items = [_pick(rng, _NEGATABLE[obs]) for obs in observations]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
    return _Sentence(_fill(rng, _NEGATION_LEADS, items=listed), dict.fromkeys(observations, NEGATIVE), topic)


def _normal_sentences(rng: np.random.Generator, case: SyntheticCase) -> list[_Sentence]:
    """Statements about what the image does not show; only ever negates absent findings."""
    kinds = {f["kind"] for f in case.findings}
    out: list[_Sentence] = []
    say_mediastinum = rng.random() < 0.55
    if "cardiomegaly" not in kinds and rng.random() < 0.92:
        if say_mediastinum and rng.random() < 0.5:
            text, labels = _pick(rng, _HEART_MEDIASTINUM_NORMAL)
            out.append(_Sentence(text, labels, "heart"))
            say_mediastinum = False
        else:
            text, labels = _pick(rng, _HEART_NORMAL)
            out.append(_Sentence(text, labels, "heart"))
    if say_mediastinum:
        text, labels = _pick(rng, _MEDIASTINUM_NORMAL)
        out.append(_Sentence(text, labels, "mediastinum"))

    lung_findings = kinds & {"consolidation", "lung_opacity", "lung_lesion"}
    absent_lung = [obs for obs, kind in ((CONSOLIDATION, "consolidation"), (OPACITY, "lung_opacity"))
                   if kind not in kinds and not (obs == OPACITY and "consolidation" in kinds)]
    absent_pleura = [obs for obs, kind in ((EFFUSION, "pleural_effusion"), (PNEUMOTHORAX, "pneumothorax"))
                     if kind not in kinds]
    if rng.random() < 0.5:
        absent_pleura.reverse()
    combined = bool(absent_pleura) and bool(absent_lung) and rng.random() < 0.3
    if combined:
        lead = [absent_lung[int(rng.integers(len(absent_lung)))]]
        out.append(_negation(rng, lead + absent_pleura, "pleura"))
    else:
        pleural = len(absent_pleura) < 2
        if not lung_findings and rng.random() < 0.9:
            if absent_lung and rng.random() < 0.3:
                out.append(_negation(rng, [absent_lung[int(rng.integers(len(absent_lung)))]], "lungs"))
            else:  # with fluid or air in the pleura the lungs are only "otherwise" clear
                text, labels = _pick(rng, _LUNGS_OTHERWISE if pleural else _LUNGS_CLEAR)
                out.append(_Sentence(text, labels, "lungs"))
        elif lung_findings and rng.random() < 0.3:
            text, labels = _pick(rng, _LUNGS_OTHERWISE)
            out.append(_Sentence(text, labels, "lungs"))
        if absent_pleura and rng.random() < (0.9 if len(absent_pleura) == 2 else 0.7):
            if len(absent_pleura) == 2 and rng.random() < 0.2:
                out.extend(_negation(rng, [obs], "pleura") for obs in absent_pleura)
            else:
                out.append(_negation(rng, absent_pleura, "pleura"))
    if rng.random() < 0.15:
        text, labels = _pick(rng, _VASCULARITY)
        out.append(_Sentence(text, labels, "lungs"))
    if rng.random() < 0.6:
        text, labels = _pick(rng, _BONES)
        out.append(_Sentence(text, labels, "bones"))
    return out


_TOPIC_ORDER = ("devices", "heart", "mediastinum", "lungs", "pleura", "bones")


def _aggregate(sentences: Sequence[_Sentence]) -> dict[str, float]:
    """CheXpert aggregation: positive beats uncertain beats negative; No Finding when nothing is found."""
    merged: dict[str, float] = {}
    for sentence in sentences:
        for obs, value in sentence.labels.items():
            old = merged.get(obs)
            if old is None or value == POSITIVE or (value == UNCERTAIN and old == NEGATIVE):
                merged[obs] = value
    found = any(v in (POSITIVE, UNCERTAIN) for obs, v in merged.items() if obs != DEVICES)
    if not found:
        merged[NO_FINDING] = POSITIVE
    return {obs: merged[obs] for obs in OBSERVATIONS if obs in merged}


def compose_report(case: SyntheticCase, seed: int) -> tuple[str, str, dict[str, float]]:
    """The FINDINGS text, the IMPRESSION text and the CheXpert-14 labels of one case.

    The phrasing is random (its own stream, so it never changes the images) but every sentence is true of
    the image, and the labels are what a CheXpert-style rule labeler reads from the findings text.
    """
    if case.difficulty == "hard":
        from mrg.data.sources.synthetic_hard import compose_hard_report

        return compose_hard_report(case, seed)  # type: ignore[arg-type]
    rng = np.random.default_rng([seed, case.index, _STREAM_TEXT])
    abnormal = [_finding_sentence(rng, f) for f in case.findings] + [_device_sentence(rng, d) for d in case.devices]
    normal = _normal_sentences(rng, case)
    order = list(_TOPIC_ORDER)
    if rng.random() < 0.5:
        order = order[1:] + order[:1]  # devices last
    mode = rng.random()
    if mode < 0.55:  # the usual order: heart, mediastinum, lungs, pleura, bones
        sentences = sorted(abnormal + normal, key=lambda s: (order.index(s.topic), not s.abnormal))
    elif mode < 0.85:  # what is wrong first, then the normal statements
        sentences = sorted(abnormal, key=lambda s: order.index(s.topic)) + sorted(
            normal, key=lambda s: order.index(s.topic))
    else:
        sentences = abnormal + normal
        sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    if rng.random() < 0.06:
        sentences.insert(0, _Sentence(_pick(rng, _TECHNIQUE), {}, "technique"))
    texts = [s.text for s in sentences]
    if len(texts) >= 3 and rng.random() < 0.05:
        findings_text = " ".join(f"{i}. {t}" for i, t in enumerate(texts, start=1))
    else:
        findings_text = " ".join(texts)
    return findings_text, _impression(rng, case), _aggregate(sentences)


def _impression(rng: np.random.Generator, case: SyntheticCase) -> str:
    items = [_cap(w) + "." for w in _finding_words(case, detail=False)]
    if case.devices and rng.random() < 0.3:
        items.append(_pick(rng, ("Support lines and tubes as described above.", "Lines and tubes as above.")))
    if not items:
        return _pick(rng, _IMPRESSION_NORMAL)
    if len(items) >= 2 and rng.random() < 0.4:
        return " ".join(f"{i}. {t}" for i, t in enumerate(items, start=1))
    return " ".join(items)


def _finding_words(case: SyntheticCase, *, detail: bool) -> list[str]:
    words: list[str] = []
    for f in case.findings:
        kind = f["kind"]
        if kind == "cardiomegaly":
            words.append("borderline heart size, possible mild cardiomegaly" if f["hedged"] else
                         f"{'marked' if f['severity'] == 'severe' else f['severity']} cardiomegaly")
        elif kind == "pleural_effusion":
            if f["hedged"]:
                words.append(f"possible small {f['side']} pleural effusion")
            elif f["side"] == "bilateral":
                words.append(f"{f['size']} bilateral pleural effusions")
            else:
                words.append(f"{f['size']} {f['side']} pleural effusion")
        elif kind == "pneumothorax":
            words.append(f"possible tiny {f['side']} apical pneumothorax" if f["hedged"]
                         else f"{f['size']} {f['side']} pneumothorax")
        elif kind == "lung_lesion":
            loc = f"{f['side']} {f['zone'].replace('mid', 'mid')} lung"
            size = f" ({_lesion_cm(f)} cm)" if detail else ""
            if f["type"] == "multiple":
                words.append("multiple bilateral pulmonary nodules")
            elif f["hedged"]:
                words.append(f"possible small {loc} nodule")
            else:
                words.append(f"{loc} {f['type']}{size}")
        elif kind == "consolidation":
            words.append(f"{_site_adj(f['site'])} consolidation")
        elif kind == "lung_opacity":
            words.append("patchy bibasilar opacities" if f["site"] == "both bases" else f"patchy {f['site']} opacity")
    return words


def _device_words(device: dict[str, Any]) -> str:
    kind = device["kind"]
    if kind == "endotracheal_tube":
        return f"endotracheal tube (tip {device['tip_cm']} cm above the carina)"
    if kind == "enteric_tube":
        return "enteric tube in the stomach"
    if kind == "central_line":
        return f"{device['side']} {device['approach']} central line (tip at the {device['tip']})"
    return f"left chest wall pacemaker ({device['leads']} lead{'s' if device['leads'] > 1 else ''})"


def findings_in_words(study: Study | SyntheticCase | dict[str, Any]) -> list[str]:
    """The true findings of a synthetic study in words, e.g. ``["small left pleural effusion"]``.

    Accepts a prepared ``Study`` (its ``extra``), a ``SyntheticCase`` or the ``extra`` dict, of either
    difficulty. A study without pathology starts with ``"normal"``; devices follow the findings. Used by the
    demo's side-by-side view.
    """
    from mrg.data.sources import synthetic_hard

    if isinstance(study, Study):
        study = study.extra
    if not isinstance(study, SyntheticCase) and study.get("difficulty") == "hard":
        study = synthetic_hard.HardCase.from_extra(study)
    if isinstance(study, synthetic_hard.HardCase):
        return synthetic_hard.hard_findings_in_words(study)
    case = study if isinstance(study, SyntheticCase) else SyntheticCase.from_extra(study)
    words = _finding_words(case, detail=True)
    if not words:
        words = ["normal"]
    return words + [_device_words(d) for d in case.devices]


# ============================================================================================ the dataset


def split_counts(n: int, split: Sequence[float]) -> dict[str, int]:
    """Studies per split: train and val rounded half up, test the rest (2,000 at 70/10/20 -> 1,400/200/400)."""
    train = math.floor(n * split[0] + 0.5)
    val = min(math.floor(n * split[1] + 0.5), n - train)
    return {"train": train, "val": val, "test": n - train - val}


def _assign_splits(n: int, seed: int, split: Sequence[float]) -> list[str]:
    counts = split_counts(n, split)
    order = np.random.default_rng([seed, _STREAM_SPLIT]).permutation(n)
    names = np.empty(n, dtype=object)
    start = 0
    for name in SPLITS:
        names[order[start : start + counts[name]]] = name
        start += counts[name]
    return [str(v) for v in names]


def _image_paths(case_id: str, views: int) -> list[str]:
    return [f"images/{case_id}/{k}.png" for k in range(views)]


def generate_studies(n: int, seed: int, *, views: int = 2, split: Sequence[float] = DEFAULT_SPLIT,
                     normal_fraction: float = 0.35, difficulty: str = "easy") -> list[Study]:
    """The studies (reports, labels, splits, image paths) of a synthetic dataset, without rendering images."""
    splits = _assign_splits(n, seed, split)
    studies = []
    for case in sample_cases(n, seed, normal_fraction=normal_fraction, difficulty=difficulty):
        findings, impression, labels = compose_report(case, seed)
        studies.append(Study(
            id=case.id, split=splits[case.index], report=findings, image_paths=_image_paths(case.id, views),
            sections={"findings": findings, "impression": impression}, labels=labels,
            labels_source="synthetic-truth", extra=case.to_extra()))
    return studies


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a (H, W) uint8 array, every row with PNG's "Up" filter.

    About twice as fast as PIL's encoder, which tries every filter on every row, for files ~6% larger;
    PNG writing is a quarter of the dataset's generation time. Any PNG reader (PIL included) decodes it.
    """
    height, width = pixels.shape
    raw = np.empty((height, width + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type Up: each byte minus the byte above it
    raw[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=raw[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, grayscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _png_chunk(b"IEND", b""))


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write one PNG via a temporary name, so an interrupted run never leaves a truncated image."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png_bytes(pixels))
    os.replace(tmp, path)


def _render_chunk(out_dir: str, seed: int, start: int, stop: int, size: int, views: int, normal_fraction: float,
                  overwrite: bool, difficulty: str = "easy") -> int:
    """Render and write the images of studies ``start .. stop - 1``; returns how many images were written.

    A top-level function so worker processes can run it. Chunks whose images all exist are skipped unless
    ``overwrite`` (a resumed run only redoes unfinished chunks; pixels are deterministic either way).
    """
    root = Path(out_dir)
    cases = sample_cases(stop - start, seed, normal_fraction=normal_fraction, start=start, difficulty=difficulty)
    paths = [[root / p for p in _image_paths(c.id, views)] for c in cases]
    if not overwrite and all(p.is_file() for row in paths for p in row):
        return 0
    renderers = (render_frontal, render_lateral)[:views]
    films = [render(cases, size, seed) for render in renderers]
    for i, row in enumerate(paths):
        row[0].parent.mkdir(parents=True, exist_ok=True)
        for view, path in enumerate(row):
            _write_png(path, films[view][i])
    return len(cases) * views


def _label_counts(studies: Sequence[Study]) -> dict[str, dict[str, dict[str, int]]]:
    """Per split and observation: how many studies are positive and how many hedged (uncertain)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name in SPLITS:
        positive: Counter[str] = Counter()
        uncertain: Counter[str] = Counter()
        for study in studies:
            if study.split != name:
                continue
            for obs, value in (study.labels or {}).items():
                if value == POSITIVE:
                    positive[obs] += 1
                elif value == UNCERTAIN:
                    uncertain[obs] += 1
        counts[name] = {obs: {"positive": positive[obs], "uncertain": uncertain[obs]}
                        for obs in OBSERVATIONS if positive[obs] or uncertain[obs]}
    return counts


def _check_options(n: int, seed: int, image_size: int, views: int, split: Sequence[float], normal_fraction: float,
                   workers: int | None, difficulty: str = "easy") -> tuple[float, float, float]:
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"--difficulty {difficulty}: must be one of {', '.join(DIFFICULTIES)} (default easy)")
    if n < 1:
        raise ConfigError(f"--n {n}: the number of studies must be at least 1")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: the seed must be a non-negative integer")
    if not 32 <= image_size <= 1024:
        raise ConfigError(f"--image-size {image_size}: must be between 32 and 1024 pixels (default 128)")
    if views not in (1, 2):
        raise ConfigError(f"--views {views}: must be 1 (frontal only) or 2 (frontal and lateral)")
    parts = tuple(float(v) for v in split)
    if len(parts) != 3 or any(not math.isfinite(v) or v < 0 for v in parts) or abs(sum(parts) - 1.0) > 1e-6 or parts[0] <= 0:
        shown = ",".join(f"{v:g}" for v in parts)
        raise ConfigError(f"--split {shown}: expected three non-negative fractions train,val,test that sum to 1 "
                          "with a non-empty train split, e.g. 0.7,0.1,0.2")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ConfigError(f"--normal-fraction {normal_fraction:g}: must be between 0 and 1 (default 0.35)")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    return parts  # type: ignore[return-value]


def _default_workers(images: int) -> int:
    if images < 1000:
        return 1  # starting processes costs more than it saves
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _images_digest(root: Path, studies: Sequence[Study]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for study in studies:
        for rel in study.image_paths:
            digest.update((root / rel).read_bytes())
    return digest.hexdigest()


def _claimed_source(root: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The source to claim ``root`` with: ``source``, or the record of an easy folder made before ``difficulty`` existed.

    Such a folder holds exactly what the easy generator writes today (the same bytes), so it is accepted as
    the same dataset instead of being refused for a missing key; a run that finishes it records ``difficulty``.
    """
    if source["difficulty"] != "easy":
        return source
    stamp, marker = root / STAMP_NAME, root / MARKER_NAME
    recorded = stamp if stamp.is_file() else marker if marker.is_file() else None
    if recorded is None:
        return source
    previous = read_json(recorded).get("source")
    legacy = {key: value for key, value in source.items() if key != "difficulty"}
    return previous if previous == legacy else source


def _synthetic_source(n: int, seed: int, image_size: int, views: int, split: Sequence[float],
                      normal_fraction: float, difficulty: str) -> dict[str, Any]:
    """The source record that identifies a synthetic run (options and the generator version of its difficulty)."""
    version = GENERATOR_VERSION
    if difficulty == "hard":
        from mrg.data.sources.synthetic_hard import HARD_GENERATOR_VERSION as version
    return {"kind": "synthetic", "n": n, "seed": seed, "image_size": image_size, "views": views,
            "split": list(split), "normal_fraction": normal_fraction, "difficulty": difficulty,
            "generator_version": version}


def _render_chunks(jobs: list[tuple[Any, ...]], workers: int, views: int, progress: Any) -> None:
    """Render the image chunks ``jobs`` (``_render_chunk`` arguments) in ``workers`` processes, with progress."""
    task = None
    if progress is not None:
        task = progress.add_task("rendering images", total=sum(job[3] - job[2] for job in jobs) * views)
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            _render_chunk(*job)
            if task is not None:
                progress.advance(task, (job[3] - job[2]) * views)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            try:
                futures = [pool.submit(_render_chunk, *job) for job in jobs]
                for job, future in zip(jobs, futures, strict=True):
                    future.result()
                    if task is not None:
                        progress.advance(task, (job[3] - job[2]) * views)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _synthetic_protocol(source: dict[str, Any], studies: list[Study]) -> dict[str, Any]:
    """The protocol record of a synthetic run: its options and the label counts of its studies."""
    return {
        "name": "synthetic",
        "section": "findings",
        "split": "seeded-shuffle",
        "split_ratios": list(source["split"]),
        "image_size": source["image_size"],
        "views": source["views"],
        "normal_fraction": source["normal_fraction"],
        "difficulty": source["difficulty"],
        "generator_version": source["generator_version"],
        "label_counts": _label_counts(studies),
    }


def prepare_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int,
    image_size: int = 128,
    views: int = 2,
    split: Sequence[float] = DEFAULT_SPLIT,
    normal_fraction: float = 0.35,
    difficulty: str = "easy",
    force: bool = False,
    workers: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Generate the synthetic dataset into ``out_dir`` in the prepared format (the same as IU X-ray's).

    Same ``n``, ``seed`` and options give byte-identical files. A re-run on a finished folder does nothing;
    an interrupted run resumes (finished image chunks are kept); ``force`` redoes everything.

    Args:
        out_dir: the dataset folder (created; must be empty or hold an earlier synthetic run).
        n: number of studies.
        seed: random seed (non-negative); different seeds give different studies.
        image_size: side of the square PNGs in pixels (findings are drawn to be visible at 128).
        views: 2 writes a frontal (``0.png``) and a lateral (``1.png``) view per study, like IU X-ray; 1 only the frontal.
        split: train/val/test fractions (R2Gen's IU X-ray protocol is 70/10/20), assigned by a seeded shuffle.
        normal_fraction: share of studies without pathology (they may still carry a device, and in the
            hard set distractors).
        difficulty: ``easy`` (the default set, unchanged) or ``hard`` (see :mod:`mrg.data.sources.synthetic_hard`);
            recorded in the source and protocol records, so a folder of one difficulty is never reused for the other.
        force: redo a finished dataset.
        workers: processes rendering images in parallel (default: up to 4 for 1,000+ images, else 1);
            the pixels do not depend on it.
        progress: optional ``rich.progress.Progress`` to report image progress on.

    Returns:
        The prepare.json record, plus ``"skipped"`` (not stored): True when the folder was already complete
        and nothing was done.

    Raises:
        ConfigError: an option value is out of range (the message names the option).
        OutputDirError: ``out_dir`` holds something else (another dataset, other options, foreign files).
    """
    split = _check_options(n, seed, image_size, views, split, normal_fraction, workers, difficulty)
    root = Path(out_dir)
    source = _synthetic_source(n, seed, image_size, views, split, normal_fraction, difficulty)
    state = prepare_output_dir(root, _claimed_source(root, source), force=force)
    if state == "complete":
        return {**read_json(root / STAMP_NAME), "skipped": True}

    studies = generate_studies(n, seed, views=views, split=split, normal_fraction=normal_fraction, difficulty=difficulty)
    jobs = [(str(root), seed, a, b, image_size, views, normal_fraction, force, difficulty)
            for a, b in [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]]
    _render_chunks(jobs, workers or _default_workers(n * views), views, progress)
    images = {"placed": True, "format": "png", "mode": "L", "size": image_size,
              "views": list(VIEW_NAMES[:views]), "sha256": _images_digest(root, studies)}
    record = write_prepared_dataset(root, studies, source=source, protocol=_synthetic_protocol(source, studies),
                                    normalize="r2gen-iu", images=images)
    return {**record, "skipped": False}
