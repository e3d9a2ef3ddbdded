"""The hard synthetic set (``mrg prepare synthetic --difficulty hard``): a set on which methods can differ.

The easy set (:mod:`mrg.data.sources.synthetic`) leaves little room between methods: few findings per
study, big visual differences between grades, and co-occurrences (effusion with a big heart, tubes with
airspace disease) that let a model guess one finding from another; image-to-label probes come within 0.03
of a perfect CE score on it (``benchmarks/bench_hard_synthetic.py``). This set keeps
the same format, anatomy and drawing primitives and changes what is sampled, drawn and written:

* **More findings per study**: an abnormal study has 1 to 5 findings (2 to 4 typical) drawn from eleven
  kinds, five more than the easy set (atelectasis, edema, widened mediastinum, rib fracture, apical pleural
  thickening), covering 13 of the 14 CheXpert observations; opacity and consolidation may co-occur.
* **Side, size and severity on every finding**, visible in the image and stated in the report: per-side
  effusion sizes ("small right and moderate left pleural effusions"), lesion diameters in mm or cm, heart
  size grades 0.005-0.015 of cardiothoracic ratio apart, edema from vascular congestion to severe,
  displaced, healing or nondisplaced rib fractures at a stated rib.
* **Finer differences**: smaller and fainter nodules, subtler opacities and fluid, a heart at the "upper
  limits of normal" (labelled 0) between normal and borderline (-1) and mild cardiomegaly (1).
* **Hedged and negated phrasing**: a fifth of the findings are drawn subtle and reported with an
  uncertainty cue (-1); negations name a side ("No left pleural effusion."), ride on positive sentences
  ("Moderate cardiomegaly without pulmonary edema.") or list absent findings.
* **Distractors** that are not findings and carry no label: calcified granulomas (tiny, dense, sharp),
  nipple shadows (symmetric faint dots, the size of a small nodule), breast shadows and a mastectomy
  (asymmetric basal density), skin folds (a vertical edge over the lung, like a pleural line), ECG
  electrodes with their wires, and rotated films.
* **No co-occurrence to lean on**: the kinds of a study are drawn independently of each other (given
  their number), and devices independently of findings, so no finding predicts another.

Labels stay CheXpert-14 and truthful: every sentence carries the labels mrg's labeler reads from it, the
study's vector aggregates them, and the generator negates only what it did not draw; distractors are
either not mentioned or mentioned in words that no labeler rule reads as a finding. ``extra["attributes"]``
lists side, size, severity and location per finding in one shape for question generation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mrg.data.chexpert import NEGATIVE, POSITIVE, UNCERTAIN
from mrg.data.sources import synthetic as easy
from mrg.data.sources.synthetic import (
    _F32,
    CARDIOMEGALY,
    CONSOLIDATION,
    EDEMA,
    EFFUSION,
    FRACTURE,
    LESION,
    MEDIASTINUM,
    OPACITY,
    PNEUMOTHORAX,
    SyntheticCase,
    _bump,
    _cap,
    _fill,
    _Film,
    _norm,
    _pick,
    _r,
    _ramp,
    _Sentence,
)

__all__ = [
    "HARD_GENERATOR_VERSION",
    "HardCase",
    "compose_hard_report",
    "finding_attributes",
    "hard_findings_in_words",
    "render_frontal_hard",
    "render_lateral_hard",
    "sample_hard_cases",
]

# Bump when the hard set's sampling, drawing or phrasing changes (the easy set has its own version).
HARD_GENERATOR_VERSION = 1

# Streams of their own: hard study i of seed s shares nothing with easy study i of seed s.
_STREAM_CASE, _STREAM_FRONTAL, _STREAM_LATERAL, _STREAM_TEXT = 21, 22, 23, 24

ATELECTASIS, PLEURAL_OTHER = "Atelectasis", "Pleural Other"

KIND_TO_OBSERVATION: dict[str, str] = {
    "cardiomegaly": CARDIOMEGALY, "pleural_effusion": EFFUSION, "pneumothorax": PNEUMOTHORAX, "lung_lesion": LESION,
    "consolidation": CONSOLIDATION, "lung_opacity": OPACITY, "atelectasis": ATELECTASIS, "edema": EDEMA,
    "widened_mediastinum": MEDIASTINUM, "fracture": FRACTURE, "pleural_thickening": PLEURAL_OTHER,
}
_KINDS: tuple[str, ...] = tuple(KIND_TO_OBSERVATION)
# Sampling weights of the kinds; a study's kinds are drawn without replacement, independently of each other.
_KIND_WEIGHTS = np.asarray([1.0, 1.0, 0.7, 0.9, 0.8, 0.9, 0.9, 0.8, 0.6, 0.7, 0.6])
_FINDING_COUNTS, _FINDING_COUNT_WEIGHTS = (1, 2, 3, 4, 5), (0.1, 0.25, 0.3, 0.2, 0.15)
HEDGE_RATE = 0.2

# Cardiothoracic ratio per grade: neighbouring grades are 0.005-0.015 apart (the easy set's 0.015-0.035).
_CTR = {"normal": (0.40, 0.48), "upper-normal": (0.485, 0.505), "borderline": (0.51, 0.53), "mild": (0.545, 0.575),
        "moderate": (0.59, 0.63), "severe": (0.645, 0.70)}
_EFFUSION_HEIGHT = {"trace": (0.06, 0.08), "small": (0.13, 0.18), "moderate": (0.26, 0.34), "large": (0.45, 0.58)}
_PTX_RETRACTION = {"tiny": (0.95, 0.96), "small": (0.89, 0.92), "moderate": (0.80, 0.84), "large": (0.66, 0.72)}
_CM_PER_UNIT = 37.5  # a lesion of radius r (image units) is 2 r / 1.6 * 30 = 37.5 r cm across, as in the easy set


# =============================================================================================== sampling


@dataclass
class HardCase(SyntheticCase):
    """A study of the hard set: the easy set's fields plus distractors (structures that are not findings).

    Every finding dict has ``kind``, ``side``, ``size``, ``severity``, ``location`` and ``hedged`` (None where
    a property does not apply) plus the geometry that was drawn.
    """

    distractors: list[dict[str, Any]] = field(default_factory=list)
    difficulty: ClassVar[str] = "hard"

    @property
    def id(self) -> str:
        """The study id, also its image folder name (distinct from the easy set's)."""
        return f"synth-hard-{self.index:06d}"

    def to_extra(self) -> dict[str, Any]:
        """The generation parameters as stored in ``studies.jsonl`` (``extra``), with per-finding attributes."""
        return {
            "generator_version": HARD_GENERATOR_VERSION,
            "difficulty": "hard",
            "index": self.index,
            "views": list(easy.VIEW_NAMES),
            "findings": self.findings,
            "devices": self.devices,
            "distractors": self.distractors,
            "patient": self.patient,
            "attributes": finding_attributes(self),
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> HardCase:
        """Rebuild a case from the ``extra`` dict of a prepared hard study."""
        return cls(index=int(extra["index"]), patient=dict(extra["patient"]), findings=list(extra["findings"]),
                   devices=list(extra["devices"]), distractors=list(extra.get("distractors", [])))


def _finding(kind: str, *, side: str | None = None, size: str | None = None, severity: str | None = None,
             location: str | None = None, hedged: bool = False, **geometry: Any) -> dict[str, Any]:
    return {"kind": kind, "side": side, "size": size, "severity": severity, "location": location, "hedged": hedged,
            **geometry}


def _sample_patient(rng: np.random.Generator) -> dict[str, float]:
    """Wider ranges than the easy set's: noisier, more varied exposure, and one film in five rotated 6-11 degrees."""
    rotated = rng.random() < 0.2
    rotation = (rng.uniform(6.0, 11.0) * _pick(rng, (-1.0, 1.0))) if rotated else np.clip(rng.normal(0.0, 2.0), -5.0, 5.0)
    return {
        "scale": _r(rng.uniform(0.86, 1.0)),
        "rotation_deg": _r(rotation),
        "shift_x": _r(np.clip(rng.normal(0.0, 0.03), -0.07, 0.07)),
        "shift_y": _r(rng.uniform(-0.03, 0.05)),
        "body_width": _r(rng.uniform(0.9, 0.98)),
        "inspiration": _r(rng.uniform(-0.06, 0.05)),
        "contrast": _r(rng.uniform(0.82, 1.15)),
        "brightness": _r(rng.uniform(-0.06, 0.06)),
        "gamma": _r(rng.uniform(0.75, 1.3)),
        "noise": _r(rng.uniform(0.015, 0.04)),
        "ctr": _r(rng.uniform(*_CTR["upper-normal" if rng.random() < 0.2 else "normal"])),
        "lateral_rotation_deg": _r(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0)),
        "lateral_shift_x": _r(rng.uniform(-0.05, 0.05)),
    }


def _dome_y(patient: dict[str, float], side: str, u: float) -> float:
    """Height of a hemidiaphragm at distance ``u`` from the midline (the frontal renderer's dome)."""
    top = 0.40 + patient["inspiration"] + (0.05 if side == "left" else 0.0)
    d = u - 0.35
    return top + (0.9 + 0.7 * (d > 0)) * d * d


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def _cardiomegaly(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    grade = "borderline" if hedged else _pick(rng, ("mild", "moderate", "severe"), (0.4, 0.35, 0.25))
    patient["ctr"] = _r(rng.uniform(*_CTR[grade]))
    return _finding("cardiomegaly", severity=grade, hedged=hedged, ctr=patient["ctr"])


def _effusion(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    if hedged:
        side = _pick(rng, ("right", "left"))
        sizes = {side: "trace"}
    else:
        side = _pick(rng, ("right", "left", "bilateral"), (0.36, 0.32, 0.32))
        sizes = {s: _pick(rng, ("small", "moderate", "large"), (0.45, 0.35, 0.2)) for s in _sides(side)}
    order = ("trace", "small", "moderate", "large")
    largest = max(sizes.values(), key=order.index)
    heights = {s: _r(rng.uniform(*_EFFUSION_HEIGHT[sizes[s]])) if s in sizes else 0.0 for s in ("right", "left")}
    return _finding("pleural_effusion", side=side, size=largest, hedged=hedged, size_by_side=sizes, height=heights)


def _pneumothorax(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    size = "tiny" if hedged else _pick(rng, ("small", "moderate", "large"), (0.45, 0.33, 0.22))
    return _finding("pneumothorax", side=_pick(rng, ("right", "left")), size=size, location="apical" if hedged else None,
                    hedged=hedged, retraction=_r(rng.uniform(*_PTX_RETRACTION[size])))


def _lesion_size(cm: float) -> str:
    return "small" if cm < 1.5 else "moderate" if cm < 3.0 else "large"


def _lung_lesion(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    heart_left = easy._heart_borders(patient)[1]
    kind = "nodule" if hedged else _pick(rng, ("nodule", "mass", "multiple"), (0.55, 0.2, 0.25))
    spots = []
    if kind == "multiple":
        count = int(_pick(rng, (2, 3, 4), (0.45, 0.35, 0.2)))
        side = _pick(rng, ("right", "left", "bilateral"), (0.3, 0.3, 0.4))
        spot_sides = [_pick(rng, ("right", "left")) for _ in range(count)] if side == "bilateral" else [side] * count
        if side == "bilateral" and len(set(spot_sides)) == 1:
            spot_sides[0] = "left" if spot_sides[0] == "right" else "right"
        for spot_side in spot_sides:
            radius = rng.uniform(0.8, 2.0) / _CM_PER_UNIT
            zone = _pick(rng, ("upper", "mid", "lower"), (0.4, 0.35, 0.25))
            if not easy._lesion_fits(spot_side, zone, radius, heart_left):
                zone = "mid"
            spots.append(easy._lesion_spot(rng, spot_side, zone, radius, rng.uniform(0.16, 0.2), heart_left))
        zone = None
    else:
        side = _pick(rng, ("right", "left"))
        zone = _pick(rng, ("upper", "mid", "lower"), (0.4, 0.35, 0.25))
        if kind == "mass":
            cm, amp = rng.uniform(3.2, 5.5), rng.uniform(0.24, 0.3)
        elif hedged:
            # below 1 cm, so the report says "8 mm": CheXpert's cleaning splits "1.5" into two sentences,
            # and the hedge would not reach the nodule
            cm, amp = rng.uniform(0.6, 0.95), rng.uniform(0.09, 0.11)
        else:
            cm, amp = rng.uniform(1.0, 2.8), rng.uniform(0.15, 0.2)
        radius = cm / _CM_PER_UNIT
        if not easy._lesion_fits(side, zone, radius, heart_left):
            zone = "mid"
        spots.append(easy._lesion_spot(rng, side, zone, radius, amp, heart_left))
    cm = _r(max(s[2] for s in spots) * _CM_PER_UNIT)  # the largest diameter, read back from the drawn radius
    return _finding("lung_lesion", side=side, size=_lesion_size(cm), location=zone, hedged=hedged, type=kind,
                    zone=zone, size_cm=cm, count=len(spots), spots=spots)


def _consolidation(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    lobe = _pick(rng, easy._LOBES, (0.2, 0.15, 0.3, 0.1, 0.25))
    side = "left" if lobe == "lingula" else lobe.split()[0]
    density = rng.uniform(0.14, 0.17) if hedged else rng.uniform(0.2, 0.3)
    return _finding("consolidation", side=side, location=lobe, hedged=hedged, site=lobe, density=_r(density))


def _lung_opacity(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    site = _pick(rng, easy._OPACITY_SITES, (0.2, 0.18, 0.22, 0.1, 0.1, 0.1, 0.1))
    side = "bilateral" if site == "both bases" else site.split()[0]
    severity = "subtle" if hedged else _pick(rng, ("mild", "moderate"), (0.5, 0.5))
    density = {"subtle": (0.055, 0.07), "mild": (0.075, 0.095), "moderate": (0.10, 0.13)}[severity]
    return _finding("lung_opacity", side=side, severity=severity, location=site, hedged=hedged, site=site,
                    density=_r(rng.uniform(*density)))


_ATELECTASIS_BAND = {"minimal": (0.02, 0.11), "linear": (0.026, 0.16), "subsegmental": (0.04, 0.19)}  # thickness, density


def _atelectasis(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    side = _pick(rng, ("right", "left", "bilateral"), (0.38, 0.37, 0.25))
    size = "minimal" if hedged else _pick(rng, ("linear", "subsegmental"))
    thickness, density = _ATELECTASIS_BAND[size]
    right_border, left_border = easy._heart_borders(patient)
    bands = []
    for s in _sides(side):
        length = rng.uniform(0.2, 0.3)
        # lateral to the heart border, where the band lies over aerated lung; a big heart pushes it up
        border = -right_border if s == "right" else left_border
        u = max(rng.uniform(0.32, 0.5), border + 0.04 + 0.45 * length)
        lift = 0.0
        if u > 0.64:
            u, lift = 0.64, 0.22
        y = _dome_y(patient, s, u) - rng.uniform(0.08, 0.14) - lift
        x = -u if s == "right" else u
        bands.append([_r(x), _r(y), _r(length), _r(rng.uniform(-0.25, 0.25)), _r(thickness),
                      _r(density * rng.uniform(0.9, 1.1))])
    location = {"right": "right base", "left": "left base", "bilateral": "both bases"}[side]
    return _finding("atelectasis", side=side, size=size, location=location, hedged=hedged, bands=bands)


def _edema(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    severity = "mild" if hedged else _pick(rng, ("moderate", "severe"), (0.6, 0.4))
    haze = {"mild": (0.03, 0.04), "moderate": (0.06, 0.075), "severe": (0.1, 0.12)}[severity]
    return _finding("edema", side="bilateral", severity=severity, hedged=hedged, haze=_r(rng.uniform(*haze)),
                    kerley=severity != "mild")


def _widened_mediastinum(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    severity = "mild" if hedged else _pick(rng, ("mild", "marked"), (0.55, 0.45))
    widen = {True: (0.018, 0.026), False: (0.032, 0.045) if severity == "mild" else (0.055, 0.075)}[hedged]
    return _finding("widened_mediastinum", severity=severity, location="superior mediastinum", hedged=hedged,
                    widen=_r(rng.uniform(*widen)))


def _fracture(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    side = _pick(rng, ("right", "left"))
    rib = int(rng.integers(2, 7))  # posterior rib bands 2..6 of the renderer's pattern: the 4th to 8th ribs
    severity = "nondisplaced" if hedged else _pick(rng, ("displaced", "healing"), (0.55, 0.45))
    gap, step, callus = {"nondisplaced": (0.022, 0.0, 0.0), "displaced": (0.03, 0.04, 0.0),
                         "healing": (0.014, 0.015, 0.14)}[severity]
    return _finding("fracture", side=side, severity=severity, location=f"{_ordinal(rib + 2)} posterior rib",
                    hedged=hedged, rib=rib, rib_number=rib + 2, u=_r(rng.uniform(0.5, 0.66)), gap=gap, step=step,
                    callus=callus)


def _pleural_thickening(rng: np.random.Generator, patient: dict[str, float], hedged: bool) -> dict[str, Any]:
    side = _pick(rng, ("right", "left", "bilateral"), (0.4, 0.4, 0.2))
    severity = "minimal" if hedged else _pick(rng, ("mild", "moderate"))
    thickness = {"minimal": 0.025, "mild": 0.04, "moderate": 0.06}[severity]
    return _finding("pleural_thickening", side=side, severity=severity, location="apical", hedged=hedged,
                    thickness={s: _r(thickness * rng.uniform(0.9, 1.1)) if s in _sides(side) else 0.0
                               for s in ("right", "left")})


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


_SAMPLERS = {"cardiomegaly": _cardiomegaly, "pleural_effusion": _effusion, "pneumothorax": _pneumothorax,
             "lung_lesion": _lung_lesion, "consolidation": _consolidation, "lung_opacity": _lung_opacity,
             "atelectasis": _atelectasis, "edema": _edema, "widened_mediastinum": _widened_mediastinum,
             "fracture": _fracture, "pleural_thickening": _pleural_thickening}


def _sample_devices(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Devices independent of the findings (the easy set ties them to airspace disease and big hearts)."""
    devices: list[dict[str, Any]] = []
    if rng.random() < 0.12:
        devices.append({"kind": "endotracheal_tube", "tip_cm": int(rng.integers(2, 7))})
        if rng.random() < 0.7:
            devices.append({"kind": "enteric_tube"})
        if rng.random() < 0.8:
            devices.append(easy._central_line(rng))
    elif rng.random() < 0.08:
        devices.append(easy._central_line(rng))
    if rng.random() < 0.08:
        devices.append({"kind": "pacemaker", "leads": int(_pick(rng, (1, 2), (0.35, 0.65)))})
    return devices


# ECG electrode positions (patient coordinates) on the front of the chest; a film shows three to five.
_ELECTRODE_SLOTS = ((-0.55, -0.62), (0.55, -0.62), (0.55, 0.22), (-0.5, 0.26), (0.2, 0.05), (-0.25, -0.2))


def _sample_distractors(rng: np.random.Generator, patient: dict[str, float]) -> list[dict[str, Any]]:
    """Structures that are not findings: each kind independently, in normal and abnormal studies alike."""
    out: list[dict[str, Any]] = []
    heart_left = easy._heart_borders(patient)[1]
    if rng.random() < 0.35:
        spots = [easy._lesion_spot(rng, _pick(rng, ("right", "left")), _pick(rng, ("upper", "mid", "lower")),
                                   rng.uniform(0.010, 0.016), rng.uniform(0.35, 0.45), heart_left)
                 for _ in range(int(_pick(rng, (1, 2, 3), (0.5, 0.3, 0.2))))]
        out.append({"kind": "calcified_granuloma", "spots": spots})
    female = rng.random() < 0.45
    mastectomy = _pick(rng, ("right", "left")) if female and rng.random() < 0.15 else None
    if female:
        out.append({"kind": "breast_shadow", "sides": [s for s in ("right", "left") if s != mastectomy],
                    "y": _r(rng.uniform(0.12, 0.28)), "density": _r(rng.uniform(0.05, 0.08))})
        if mastectomy:
            out.append({"kind": "mastectomy", "side": mastectomy})
    if rng.random() < 0.25:
        y, u = rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.62)
        spots = [[_r((-1 if s == "right" else 1) * (u + rng.uniform(-0.03, 0.03))), _r(y + rng.uniform(-0.03, 0.03)),
                  _r(rng.uniform(0.022, 0.03)), _r(rng.uniform(0.07, 0.09))] for s in ("right", "left") if s != mastectomy]
        out.append({"kind": "nipple_shadow", "spots": spots})
    if rng.random() < 0.12:
        out.append({"kind": "skin_fold", "side": _pick(rng, ("right", "left")), "u": _r(rng.uniform(0.55, 0.72)),
                    "curve": _r(rng.uniform(-0.15, 0.15)), "y0": _r(rng.uniform(-0.6, -0.45)),
                    "y1": _r(rng.uniform(0.1, 0.3))})
    if rng.random() < 0.3:
        count = int(_pick(rng, (3, 4, 5), (0.4, 0.4, 0.2)))
        slots = rng.choice(len(_ELECTRODE_SLOTS), size=count, replace=False)
        electrodes = [[_r(_ELECTRODE_SLOTS[k][0] + rng.uniform(-0.06, 0.06)),
                       _r(_ELECTRODE_SLOTS[k][1] + rng.uniform(-0.06, 0.06))] for k in sorted(slots)]
        out.append({"kind": "ecg_electrodes", "positions": electrodes})
    if abs(patient["rotation_deg"]) >= 6.0:
        out.append({"kind": "rotation", "degrees": patient["rotation_deg"]})
    return out


def _sample_hard_case(index: int, seed: int, normal_fraction: float) -> HardCase:
    rng = np.random.default_rng([seed, index, _STREAM_CASE])
    patient = _sample_patient(rng)
    findings: list[dict[str, Any]] = []
    if rng.random() >= normal_fraction:
        count = int(_pick(rng, _FINDING_COUNTS, _FINDING_COUNT_WEIGHTS))
        chosen = rng.choice(len(_KINDS), size=count, replace=False, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum())
        for k in sorted(int(c) for c in chosen):  # cardiomegaly first: lesions must fit beside the heart
            findings.append(_SAMPLERS[_KINDS[k]](rng, patient, bool(rng.random() < HEDGE_RATE)))
    devices = _sample_devices(rng)
    distractors = _sample_distractors(rng, patient)
    return HardCase(index=index, patient=patient, findings=findings, devices=devices, distractors=distractors)


def sample_hard_cases(n: int, seed: int, *, normal_fraction: float = 0.35, start: int = 0) -> list[HardCase]:
    """The cases of hard studies ``start .. start + n - 1`` for ``seed`` (each depends only on seed and index)."""
    return [_sample_hard_case(i, seed, normal_fraction) for i in range(start, start + n)]


def finding_attributes(case: HardCase) -> list[dict[str, Any]]:
    """Side, size, severity and location of every finding, one shape for all kinds (None where not applicable).

    ``label`` is the finding's own CheXpert value (1.0, or -1.0 when the report hedges it); ``size_cm`` is set
    for lung lesions (the largest), ``size_by_side`` for pleural effusions.
    """
    out = []
    for f in case.findings:
        out.append({
            "finding": f["kind"], "observation": KIND_TO_OBSERVATION[f["kind"]],
            "label": UNCERTAIN if f["hedged"] else POSITIVE, "hedged": f["hedged"],
            "side": f["side"], "size": f["size"], "severity": f["severity"], "location": f["location"],
            "size_cm": f.get("size_cm"), "size_by_side": f.get("size_by_side"),
        })
    return out


# ============================================================================================== rendering
#
# The easy renderer draws the anatomy and the findings it knows (heart size, fluid, pneumothorax, lesions,
# airspace disease, devices) from the same finding fields; the layers below add the hard set's findings
# and distractors to its attenuation map before exposure. Each is drawn per study on a window that holds it.


def _window(film: _Film, i: int, box: tuple[float, float, float, float], *, lateral: bool) -> tuple[slice, slice]:
    return film.batch.window(np.asarray([i]), box, film.att.shape[-1], lateral=lateral)


def _side_sign(side: str) -> float:
    return -1.0 if side == "right" else 1.0  # PA film: the patient's right is on the image's left


def _band(x: np.ndarray, y: np.ndarray, cx: float, cy: float, length: float, tilt: float, thickness: float,
          edge: float) -> np.ndarray:
    """A straight band (plate-like atelectasis) of the given length, tilt (radians) and thickness."""
    c, s = _F32(math.cos(tilt)), _F32(math.sin(tilt))
    along = (x - _F32(cx)) * c + (y - _F32(cy)) * s
    across = (y - _F32(cy)) * c - (x - _F32(cx)) * s
    return _ramp(_F32(thickness / 2) - np.abs(across), edge) * _ramp(_F32(length / 2) - np.abs(along), 0.08)


def _rib_pattern(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frontal renderer's posterior ribs: their band index (phase) and brightness at every pixel."""
    phase = (y + _F32(0.95) - _F32(0.42) * np.square(u)) * _F32(1.0 / 0.165)
    return phase, _ramp(np.cos(phase * _F32(2 * math.pi)) - _F32(0.45), 0.5)


def _frontal_layers(film: _Film) -> None:
    m, att, edge = film.maps, film.att, film.edge
    for i, case in enumerate(film.batch.cases):
        for f in case.findings:
            kind = f["kind"]
            if kind == "edema":
                _frontal_edema(film, i, f)
            elif kind == "atelectasis":
                for x0, y0, length, tilt, thickness, density in f["bands"]:
                    reach = length / 2 + thickness + edge
                    r, c = _window(film, i, (x0 - reach, x0 + reach, y0 - reach, y0 + reach), lateral=False)
                    band = _band(m["x"][i, r, c], m["y"][i, r, c], x0, y0, length, tilt, thickness, edge * 0.6)
                    att[i, r, c] += _F32(density) * band * np.minimum(m["lung"][i, r, c] * _F32(1.5), _F32(1.0))
            elif kind == "pleural_thickening":
                for side, thickness in f["thickness"].items():
                    if thickness > 0:
                        _frontal_apical_cap(film, i, side, thickness)
            elif kind == "widened_mediastinum":
                _frontal_mediastinum(film, i, f["widen"])
            elif kind == "fracture":
                _frontal_fracture(film, i, f)
        for d in case.distractors:
            _frontal_distractor(film, i, d)


def _frontal_edema(film: _Film, i: int, f: dict[str, Any]) -> None:
    """Perihilar haze fading outwards, and for moderate and severe edema Kerley B lines at the lateral bases."""
    m, att = film.maps, film.att
    y, ax, air = m["y"][i], m["ax"][i], m["air"][i]
    hilum = _norm(ax - _F32(0.2), y + _F32(0.05))
    haze = _bump(hilum * _F32(1.5)) * (_F32(0.75) + _F32(0.25) * _ramp(film.noise["blots"][i], 2.0))
    att[i] += _F32(f["haze"]) * haze * air
    if f["kerley"]:
        lateral, dome = m["lateral"][i], m["dome"][i]
        period = _F32(0.06)
        t = np.abs((y / period) % _F32(1.0) - _F32(0.5)) * period  # distance to the nearest line
        lines = _ramp(_F32(0.008) - t, 0.01)
        zone = _ramp(ax - (lateral - _F32(0.14)), 0.04) * _ramp(y - (dome - _F32(0.32)), 0.08)
        att[i] += _F32(0.06 if f["severity"] == "moderate" else 0.08) * lines * zone * air


def _frontal_apical_cap(film: _Film, i: int, side: str, thickness: float) -> None:
    """Pleural thickening: a dense rim along the lung apex on one side."""
    m, att = film.maps, film.att
    sign = _side_sign(side)
    box = (0.05, 1.0) if sign > 0 else (-1.0, -0.05)
    r, c = _window(film, i, (box[0], box[1], -1.0, -0.35), lateral=False)
    u, y = m["x"][i, r, c] * _F32(sign), m["y"][i, r, c]
    top = m["apex"][i] + _F32(2.4) * np.square(u - _F32(0.43))  # the lung field's upper boundary
    rim = _ramp(top + _F32(thickness) - y, film.edge * 0.6) * _ramp(_F32(-0.42) - y, 0.12) * _ramp(u - _F32(0.12), 0.05)
    att[i, r, c] += _F32(0.22) * rim * m["lung"][i, r, c]


def _frontal_mediastinum(film: _Film, i: int, widen: float) -> None:
    """A widened superior mediastinum: soft tissue on both sides of it, replacing the adjacent lung."""
    m, att = film.maps, film.att
    r, c = _window(film, i, (-0.45, 0.45, -0.9, -0.05), lateral=False)
    x, y = m["x"][i, r, c], m["y"][i, r, c]
    profile = _F32(widen) * _bump((y + _F32(0.45)) * _F32(2.4))
    outline = _ramp(x + _F32(0.1) + _F32(0.02) * y + profile, film.edge) * _ramp(_F32(0.11) + profile - x, film.edge)
    extra = np.maximum(outline - m["dense"][i, r, c], _F32(0.0)) * m["body"][i, r, c]
    att[i, r, c] += extra * (_F32(0.26) + _F32(0.27) * m["air"][i, r, c])


def _frontal_fracture(film: _Film, i: int, f: dict[str, Any]) -> None:
    """A rib fracture: a lucent line across one posterior rib, the lateral fragment stepped down, or a callus."""
    m, att, edge = film.maps, film.att, film.edge
    sign, u0, k = _side_sign(f["side"]), f["u"], f["rib"]
    y0 = 0.165 * k - 0.95 + 0.42 * u0 * u0
    box = (sign * u0 - 0.16, sign * u0 + 0.16, y0 - 0.14, y0 + 0.14)
    r, c = _window(film, i, box, lateral=False)
    u, y = m["x"][i, r, c] * _F32(sign), m["y"][i, r, c]
    phase, rib = _rib_pattern(u, y)
    this = _ramp(_F32(0.45) - np.abs(phase - _F32(k)), 0.1)
    line = u - _F32(u0) - _F32(0.3) * (y - _F32(y0))  # the fracture line, slightly oblique
    outer = _ramp(line, edge * 0.5)
    phase_s, rib_s = _rib_pattern(u, y - _F32(f["step"]))  # the lateral fragment, moved down by the step
    this_s = _ramp(_F32(0.45) - np.abs(phase_s - _F32(k)), 0.1)
    moved = rib * this * (_F32(1.0) - outer) + rib_s * this_s * outer
    gap = _ramp(_F32(f["gap"] / 2) - np.abs(line), edge * 0.4)
    weight = _F32(0.04) * m["thorax"][i, r, c] * (_F32(1.0) - _F32(0.7) * m["dense"][i, r, c])
    # the rib as the renderer drew it is replaced by the broken one, and the fracture line is lucent
    delta = weight * (moved * (_F32(1.0) - gap) - rib * this) - _F32(0.05) * gap * np.maximum(this, this_s)
    if f["callus"]:
        delta += _F32(f["callus"]) * _bump(_norm((u - _F32(u0)) / _F32(0.06), (y - _F32(y0)) / _F32(0.045)))
    att[i, r, c] += delta


def _spots(film: _Film, i: int, spots: Sequence[Sequence[float]], softness: float, *, lateral: bool = False) -> None:
    """Round densities [x, y, radius, amplitude(, depth)]; ``softness`` is the edge width in image units."""
    m, att = film.maps, film.att
    for spot in spots:
        cx = spot[4] if lateral else spot[0]
        cy, radius, amp = spot[1], spot[2], spot[3]
        reach = radius + softness + film.edge
        r, c = _window(film, i, (cx - reach, cx + reach, cy - reach, cy + reach), lateral=lateral)
        d = _norm(m["x"][i, r, c] - _F32(cx), m["y"][i, r, c] - _F32(cy))
        att[i, r, c] += _F32(amp) * _ramp(_F32(radius) - d, softness)


def _frontal_distractor(film: _Film, i: int, d: dict[str, Any]) -> None:
    m, att, edge = film.maps, film.att, film.edge
    kind = d["kind"]
    if kind == "calcified_granuloma":
        _spots(film, i, d["spots"], edge * 0.5)
    elif kind == "nipple_shadow":
        _spots(film, i, d["spots"], 0.03)
    elif kind == "breast_shadow":
        cy = d["y"]
        r, c = _window(film, i, (-1.0, 1.0, cy - 0.4, cy + 0.45), lateral=False)
        x, y = m["x"][i, r, c], m["y"][i, r, c]
        for side in d["sides"]:
            u = x * _F32(_side_sign(side))
            radius = _norm((u - _F32(0.58)) / _F32(0.42), (y - _F32(cy)) / _F32(0.3))
            upper = _ramp(_F32(1.0) - radius, 0.7)  # fades upwards, ends sharply below
            lower = _ramp(_F32(1.0) - radius, 0.08)
            shadow = upper + (lower - upper) * (y > _F32(cy))
            att[i, r, c] += _F32(d["density"]) * shadow * m["body"][i, r, c]
    elif kind == "skin_fold":
        sign = _side_sign(d["side"])
        r, c = _window(film, i, (-1.0, 1.0, d["y0"] - 0.05, d["y1"] + 0.05), lateral=False)
        x, y = m["x"][i, r, c], m["y"][i, r, c]
        mid = _F32((d["y0"] + d["y1"]) / 2)
        t = x * _F32(sign) - (_F32(d["u"]) + _F32(d["curve"]) * np.square((y - mid) * _F32(2.0)))
        along = _ramp(y - _F32(d["y0"]), 0.08) * _ramp(_F32(d["y1"]) - y, 0.08)
        fold = _ramp(-t, 0.012) * _ramp(t + _F32(0.12), 0.12) + _F32(0.6) * _ramp(_F32(0.006) - np.abs(t), edge * 0.5)
        att[i, r, c] += _F32(0.05) * fold * along * m["body"][i, r, c]
    elif kind == "ecg_electrodes":
        for ex, ey in d["positions"]:
            sign = 1.0 if ex >= 0 else -1.0
            wire = np.asarray([[[ex, ey], [ex + sign * 0.2, ey - 0.3], [ex + sign * 0.32, -1.2]]], dtype=_F32)
            reach = 0.05 + edge
            r, c = _window(film, i, (min(ex, ex + sign * 0.32) - reach, max(ex, ex + sign * 0.32) + reach, -1.2,
                                     ey + reach), lateral=False)
            x, y = m["x"][i, r, c][None], m["y"][i, r, c][None]
            dist = _norm(x - _F32(ex), y - _F32(ey))
            ring = _ramp(_F32(0.007) - np.abs(dist - _F32(0.028)), edge * 0.5) + _F32(0.6) * _ramp(_F32(0.01) - dist, edge * 0.5)
            line = easy._tube(x, y, wire, 0.005, max(edge * 0.6, 0.008)) * _ramp(dist - _F32(0.03), 0.01)
            att[i, r, c] += (_F32(0.28) * ring + _F32(0.13) * line)[0]
    # rotation is drawn by the patient's geometry; a mastectomy by the breast and nipple shadows it removes


def _lateral_layers(film: _Film) -> None:
    """What the lateral view shows of the hard findings: edema haze, basal bands, apical caps, granulomas.

    Rib fractures, the widened mediastinum, skin folds, nipple and breast shadows and ECG electrodes are
    drawn on the frontal view only.
    """
    m, att, edge = film.maps, film.att, film.edge
    for i, case in enumerate(film.batch.cases):
        x, y = m["x"][i], m["y"][i]
        for f in case.findings:
            kind = f["kind"]
            if kind == "edema":
                haze = _bump(_norm(x - _F32(0.1), y + _F32(0.05)) * _F32(1.8))
                att[i] += _F32(f["haze"]) * haze * m["air"][i]
            elif kind == "atelectasis":
                for x0, y0, length, tilt, thickness, density in f["bands"]:
                    # as high above the posterior sulcus as the frontal band is above its dome
                    above = _dome_y(case.patient, "left" if x0 > 0 else "right", abs(x0)) - y0
                    cx = 0.45
                    cy = float(m["top"][i, 0, 0]) + 0.38 * (cx + 0.1) ** 2 - above
                    reach = length / 2 + thickness + edge
                    r, c = _window(film, i, (cx - reach, cx + reach, cy - reach, cy + reach), lateral=True)
                    band = _band(x[r, c], y[r, c], cx, cy, length * 0.8, -0.2 + tilt * 0.3, thickness, edge * 0.6)
                    att[i, r, c] += _F32(density * 0.8) * band * np.minimum(m["lung"][i, r, c] * _F32(1.5), _F32(1.0))
            elif kind == "pleural_thickening":
                thickness = max(f["thickness"].values())
                r, c = _window(film, i, (-0.4, 0.7, -1.0, -0.45), lateral=True)
                xs, ys = x[r, c], y[r, c]
                top = _F32(-0.82) + _F32(0.5) * _F32(case.patient["inspiration"]) + _F32(0.9) * np.square(xs - _F32(0.1))
                rim = _ramp(top + _F32(thickness) - ys, edge * 0.6) * _ramp(_F32(-0.5) - ys, 0.1)
                att[i, r, c] += _F32(0.18) * rim * m["lung"][i, r, c]
        for d in case.distractors:
            if d["kind"] == "calcified_granuloma":
                _spots(film, i, d["spots"], edge * 0.5, lateral=True)


def render_frontal_hard(cases: Sequence[HardCase], size: int, seed: int) -> np.ndarray:
    """PA films of hard cases, as a (B, size, size) uint8 array."""
    film = easy._frontal_film(cases, size, seed, stream=_STREAM_FRONTAL)
    _frontal_layers(film)
    return film.expose()


def render_lateral_hard(cases: Sequence[HardCase], size: int, seed: int) -> np.ndarray:
    """Lateral films of hard cases, as a (B, size, size) uint8 array."""
    film = easy._lateral_film(cases, size, seed, stream=_STREAM_LATERAL)
    _lateral_layers(film)
    return film.expose()


# ============================================================================================== reporting
#
# As in the easy set, each sentence carries the labels mrg's CheXpert-style labeler reads from it, and
# only absent findings are ever negated. Every template of a finding carries the same labels, so the
# label vector is a function of the image, not of the wording.

_CARDIO_ADJ = {"mild": (("mild", "mildly"),), "moderate": (("moderate", "moderately"),),
               "severe": (("marked", "markedly"), ("severe", "severely"))}
_UPPER_NORMAL_HEART = ("The heart is at the upper limits of normal in size.", "Heart size is at the upper limits of normal.",
                       "The cardiac silhouette is at the upper limits of normal in size.")
_EFFUSION_TWO_SIZES = ("{Size_r} right and {size_l} left pleural effusions.",
                       "Bilateral pleural effusions, {size_r} on the right and {size_l} on the left.",
                       "There are bilateral pleural effusions, {size_l} on the left and {size_r} on the right.")
_EFFUSION_TRACE = ("Possible trace {side} pleural effusion.",
                   "Blunting of the {side} costophrenic angle may represent a trace pleural effusion.",
                   "A trace {side} pleural effusion cannot be excluded.", "Cannot exclude a trace {side} pleural effusion.")
_NODULE = ("There is a {cm} nodule in the {loc}.", "{Cm} nodule in the {loc}.", "A {cm} rounded nodule projects over the {loc}.",
           "{Loc} nodule measuring {cm}.", "A {cm} nodule is seen in the {loc}.")
_MASS = ("There is a {cm} mass in the {loc}.", "{Loc} mass measuring {cm}.", "A large {cm} mass occupies the {loc}.")
_NODULE_HEDGED = ("Possible {cm} nodule in the {loc}.", "A faint {cm} nodule in the {loc} cannot be excluded.",
                  "Questionable {cm} nodule in the {loc}.")
_NODULES = ("{Count} nodules in the {where}, the largest {cm}.", "There are {count} nodules in the {where}, the largest measuring {cm}.",
            "{Count} pulmonary nodules in the {where}, up to {cm}.")
_CONSOLIDATION_HEDGED = ("Possible consolidation in the {site}.", "Cannot exclude early consolidation in the {site}.",
                         "Questionable consolidation in the {site}.")
_OPACITY_MILD = ("Faint patchy opacity {where}.", "Mild hazy airspace opacity {where}.", "Subtle patchy opacity {where}.")
_OPACITY_HEDGED = ("Possible faint opacity {where}.", "Questionable subtle opacity {where}.",
                   "A faint opacity {where} cannot be excluded.")
_ATELECTASIS = {"linear": ("Linear atelectasis at the {where}.", "Plate-like atelectasis at the {where}.",
                           "There is linear atelectasis at the {where}."),
                "subsegmental": ("Subsegmental atelectasis at the {where}.", "{Where_adj} subsegmental atelectasis.",
                                 "There is subsegmental atelectasis at the {where}."),
                "minimal": ("Possible minimal atelectasis at the {where}.",
                            "Minimal atelectasis at the {where} cannot be excluded.",
                            "Questionable minimal atelectasis at the {where}.")}
_ATELECTASIS_WHERE = {"right base": ("right lung base", "right basilar"), "left base": ("left lung base", "left basilar"),
                      "both bases": ("lung bases", "bibasilar")}
_EDEMA = {"mild": ("Mild pulmonary vascular congestion.", "There is mild pulmonary vascular congestion.",
                   "Mild central pulmonary vascular congestion."),
          "moderate": ("Moderate interstitial pulmonary edema with Kerley B lines.", "Moderate pulmonary edema.",
                       "There is moderate interstitial edema with septal lines."),
          "severe": ("Severe pulmonary edema.", "Marked bilateral pulmonary edema with Kerley B lines.",
                     "Severe perihilar pulmonary edema.")}
_MEDIASTINUM = {"mild": ("The superior mediastinum is mildly widened.", "Mild widening of the superior mediastinum.",
                         "The mediastinum is mildly widened."),
                "marked": ("The mediastinum is markedly widened.", "Marked widening of the superior mediastinum.",
                           "The superior mediastinum is markedly widened.")}
_MEDIASTINUM_HEDGED = ("Possible mild widening of the mediastinum.", "Questionable mild widening of the superior mediastinum.")
_FRACTURE = {"displaced": ("Acute displaced fracture of the {side} {nth} posterior rib.",
                           "There is a displaced fracture of the {side} {nth} rib.",
                           "{Side} {nth} posterior rib fracture with mild displacement."),
             "healing": ("Healing fracture of the {side} {nth} posterior rib with callus.",
                         "There is a healing {side} {nth} rib fracture."),
             "nondisplaced": ("Possible nondisplaced fracture of the {side} {nth} posterior rib.",
                              "A nondisplaced {side} {nth} rib fracture cannot be excluded.",
                              "Questionable nondisplaced fracture of the {side} {nth} rib.")}
_THICKENING = {"mild": ("Mild {side} apical pleural thickening.", "{Side} apical pleural thickening.",
                        "There is mild {side} apical pleural thickening."),
               "moderate": ("Moderate {side} apical pleural thickening.", "There is moderate {side} apical pleural thickening."),
               "minimal": ("Possible minimal {side} apical pleural thickening.",
                           "Questionable minimal {side} apical pleural thickening.")}
# Label-free sentences about distractors; each was checked against mrg's labeler (no mention of any observation).
_DISTRACTOR_WORDS = {
    "ecg_electrodes": ("ECG electrodes overlie the chest.", "External monitoring electrodes project over the chest."),
    "skin_fold": ("A skin fold projects over the {side} hemithorax.", "Skin fold over the {side} lateral chest."),
    "nipple_shadow": ("Bilateral nipple shadows.", "Nipple shadows project over the lower chest."),
    "breast_shadow": ("Overlying breast shadows.", "Breast shadows overlie the lung bases."),
    "mastectomy": ("Status post {side} mastectomy.",),
    "rotation": ("The patient is rotated.", "The film is slightly rotated."),
}
# Absent findings that a normal or "without" phrase may deny: observation -> phrases.
_NEGATABLE = {CONSOLIDATION: ("focal consolidation", "consolidation"), OPACITY: ("focal airspace opacity", "focal airspace disease"),
              EFFUSION: ("pleural effusion", "effusion"), PNEUMOTHORAX: ("pneumothorax",),
              EDEMA: ("pulmonary edema", "edema"), ATELECTASIS: ("atelectasis",)}
_WITHOUT = {PNEUMOTHORAX: "pneumothorax", EDEMA: "pulmonary edema", CONSOLIDATION: "focal consolidation",
            EFFUSION: "pleural effusion"}
# Which absent findings a positive sentence of each kind may deny with "without".
_WITHOUT_AFTER = {"cardiomegaly": (EDEMA, EFFUSION), "pleural_effusion": (PNEUMOTHORAX,), "pneumothorax": (EFFUSION,),
                  "lung_opacity": (CONSOLIDATION,), "atelectasis": (CONSOLIDATION,), "edema": (EFFUSION,)}


def _cm_words(cm: float) -> str:
    return f"{round(cm * 10)} mm" if cm < 1.0 else f"{cm:.1f} cm"


def _loc(rng: np.random.Generator, side: str, zone: str) -> str:
    return f"{side} {_pick(rng, easy._ZONE_WORDS[zone])}"


def _effusion_text(rng: np.random.Generator, f: dict[str, Any]) -> str:
    """The sentence of a pleural effusion: trace when hedged, else by side and the size of each side."""
    hedged = f["hedged"]
    sizes = f["size_by_side"]
    if hedged:
        text = _fill(rng, _EFFUSION_TRACE, side=f["side"])
    elif f["side"] != "bilateral":
        templates = easy._EFFUSION_ONE + (easy._EFFUSION_SMALL if f["size"] == "small" else ())
        text = _fill(rng, templates, size=f["size"], side=f["side"])
    elif sizes["right"] == sizes["left"]:
        text = _fill(rng, easy._EFFUSION_BOTH, size=f["size"])
    else:
        text = _fill(rng, _EFFUSION_TWO_SIZES, size_r=sizes["right"], size_l=sizes["left"])
    return text


def _lesion_text(rng: np.random.Generator, f: dict[str, Any]) -> str:
    """The sentence of a lung lesion: several nodules, or one nodule or mass at its location, with its size."""
    hedged = f["hedged"]
    cm = _cm_words(f["size_cm"])
    if f["type"] == "multiple":
        where = "both lungs" if f["side"] == "bilateral" else f"{f['side']} lung"
        count = {2: "two", 3: "three", 4: "four"}[f["count"]]
        text = _fill(rng, _NODULES, count=count, where=where, cm=cm)
    else:
        templates = _NODULE_HEDGED if hedged else _MASS if f["type"] == "mass" else _NODULE
        text = _fill(rng, templates, loc=_loc(rng, f["side"], f["zone"]), cm=cm)
    return text


def _finding_sentence(rng: np.random.Generator, f: dict[str, Any]) -> _Sentence:
    kind, hedged = f["kind"], f["hedged"]
    value = UNCERTAIN if hedged else POSITIVE
    obs = KIND_TO_OBSERVATION[kind]
    if kind == "cardiomegaly":
        if hedged:
            return _Sentence(_pick(rng, easy._CARDIO_HEDGED), {obs: value}, "heart", True)
        adj, adv = _pick(rng, _CARDIO_ADJ[f["severity"]])
        return _Sentence(_fill(rng, easy._CARDIO_POSITIVE, adj=adj, adv=adv), {obs: value}, "heart", True)
    if kind == "pleural_effusion":
        return _Sentence(_effusion_text(rng, f), {obs: value}, "pleura", True)
    if kind == "pneumothorax":
        if hedged:
            text = _fill(rng, easy._PTX_HEDGED, side=f["side"])
        else:
            text = _fill(rng, easy._PTX_POSITIVE + (easy._PTX_SMALL if f["size"] == "small" else ()),
                         size=f["size"], side=f["side"])
        return _Sentence(text, {obs: value}, "pleura", True)
    if kind == "lung_lesion":
        return _Sentence(_lesion_text(rng, f), {obs: value}, "lungs", True)
    if kind == "consolidation":
        if hedged:
            return _Sentence(_fill(rng, _CONSOLIDATION_HEDGED, site=f["site"]), {obs: value}, "lungs", True)
        text = _fill(rng, easy._CONSOLIDATION, site=f["site"], site_adj=easy._site_adj(f["site"]))
        return _Sentence(text, {CONSOLIDATION: POSITIVE, OPACITY: POSITIVE}, "lungs", True)
    if kind == "lung_opacity":
        where = _pick(rng, easy._OPACITY_SITE[f["site"]])
        templates = {"subtle": _OPACITY_HEDGED, "mild": _OPACITY_MILD, "moderate": easy._OPACITY}[f["severity"]]
        return _Sentence(_fill(rng, templates, where=where), {obs: value}, "lungs", True)
    if kind == "atelectasis":
        where, where_adj = _ATELECTASIS_WHERE[f["location"]]
        return _Sentence(_fill(rng, _ATELECTASIS[f["size"]], where=where, where_adj=where_adj), {obs: value}, "lungs", True)
    if kind == "edema":
        return _Sentence(_pick(rng, _EDEMA[f["severity"]]), {obs: value}, "lungs", True)
    if kind == "widened_mediastinum":
        templates = _MEDIASTINUM_HEDGED if hedged else _MEDIASTINUM[f["severity"]]
        return _Sentence(_pick(rng, templates), {obs: value}, "mediastinum", True)
    if kind == "fracture":
        text = _fill(rng, _FRACTURE[f["severity"]], side=f["side"], nth=_ordinal(f["rib_number"]))
        return _Sentence(text, {obs: value}, "bones", True)
    if kind == "pleural_thickening":
        return _Sentence(_fill(rng, _THICKENING[f["severity"]], side=f["side"]), {obs: value}, "pleura", True)
    raise ValueError(f"unknown finding kind {kind!r}")  # pragma: no cover - sampling only makes the kinds above


def _present(case: HardCase) -> set[str]:
    """The observations the study shows (positive or hedged), consolidation counting as an opacity too."""
    shown = {KIND_TO_OBSERVATION[f["kind"]] for f in case.findings}
    if any(f["kind"] == "consolidation" and not f["hedged"] for f in case.findings):
        shown.add(OPACITY)
    return shown


def _negation(rng: np.random.Generator, observations: Sequence[str], topic: str) -> _Sentence:
    items = [_pick(rng, _NEGATABLE[obs]) for obs in observations]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
    return _Sentence(_fill(rng, easy._NEGATION_LEADS, items=listed), dict.fromkeys(observations, NEGATIVE), topic)


def _with_without(rng: np.random.Generator, f: dict[str, Any], sentence: _Sentence, absent: list[str]) -> _Sentence:
    """Sometimes append "without <absent finding>" to a positive sentence: "Moderate cardiomegaly without edema.".

    Never to a hedged one: "cannot exclude X without Y" would make Y uncertain too.
    """
    choices = [obs for obs in _WITHOUT_AFTER.get(f["kind"], ()) if obs in absent]
    if f["hedged"] or not choices or "," in sentence.text or " with" in sentence.text or rng.random() >= 0.3:
        return sentence
    obs = _pick(rng, choices)
    absent.remove(obs)
    return _Sentence(f"{sentence.text[:-1]} without {_WITHOUT[obs]}.", {**sentence.labels, obs: NEGATIVE},
                     sentence.topic, True)


def _side_negations(rng: np.random.Generator, case: HardCase) -> list[_Sentence]:
    """Negations that name the clear side of a one-sided effusion or pneumothorax."""
    out = []
    for f in case.findings:
        if f["kind"] not in ("pleural_effusion", "pneumothorax") or f["side"] == "bilateral" or rng.random() >= 0.35:
            continue
        other = "left" if f["side"] == "right" else "right"
        if f["kind"] == "pleural_effusion":
            text, labels = _pick(rng, ((f"No {other} pleural effusion.", {EFFUSION: NEGATIVE}),
                                       (f"No pleural effusion on the {other}.", {EFFUSION: NEGATIVE}),
                                       (f"The {other} costophrenic angle is sharp.", {})))
        else:
            text, labels = _pick(rng, ((f"No {other} pneumothorax.", {PNEUMOTHORAX: NEGATIVE}),
                                       (f"No pneumothorax on the {other}.", {PNEUMOTHORAX: NEGATIVE})))
        out.append(_Sentence(text, labels, "pleura"))
    return out


def _normal_sentences(rng: np.random.Generator, case: HardCase, absent: list[str]) -> list[_Sentence]:
    """Statements about what the image does not show (``absent`` lists the observations still free to deny)."""
    kinds = {f["kind"] for f in case.findings}
    out: list[_Sentence] = []
    mediastinum_free = "widened_mediastinum" not in kinds
    say_mediastinum = mediastinum_free and rng.random() < 0.5
    if "cardiomegaly" not in kinds and rng.random() < 0.92:
        if case.patient["ctr"] >= _CTR["upper-normal"][0]:
            out.append(_Sentence(_pick(rng, _UPPER_NORMAL_HEART), {CARDIOMEGALY: NEGATIVE}, "heart"))
        elif say_mediastinum and rng.random() < 0.5:
            text, labels = _pick(rng, easy._HEART_MEDIASTINUM_NORMAL)
            out.append(_Sentence(text, labels, "heart"))
            say_mediastinum = False
        else:
            text, labels = _pick(rng, easy._HEART_NORMAL)
            out.append(_Sentence(text, labels, "heart"))
    if say_mediastinum:
        text, labels = _pick(rng, easy._MEDIASTINUM_NORMAL)
        out.append(_Sentence(text, labels, "mediastinum"))

    parenchyma = kinds & {"consolidation", "lung_opacity", "lung_lesion", "atelectasis", "edema"}
    if not parenchyma and rng.random() < 0.85:
        pleural = kinds & {"pleural_effusion", "pneumothorax", "pleural_thickening"}
        text, labels = _pick(rng, easy._LUNGS_OTHERWISE if pleural else easy._LUNGS_CLEAR)
        if all(obs in absent for obs in labels):
            out.append(_Sentence(text, labels, "lungs"))
            for obs in labels:
                absent.remove(obs)
    elif parenchyma and "edema" not in kinds and rng.random() < 0.3:  # edema is diffuse: nothing is "otherwise clear"
        text, labels = _pick(rng, easy._LUNGS_OTHERWISE)
        out.append(_Sentence(text, labels, "lungs"))
    out.extend(_side_negations(rng, case))
    deniable = [obs for obs in (CONSOLIDATION, OPACITY, EDEMA, ATELECTASIS, EFFUSION, PNEUMOTHORAX) if obs in absent]
    if OPACITY in deniable and CONSOLIDATION in deniable and rng.random() < 0.5:
        deniable.remove(OPACITY)  # "no focal consolidation" usually stands for both
    rng.shuffle(deniable)
    while deniable and rng.random() < 0.85:
        group = deniable[: int(rng.integers(1, 4))]
        deniable = deniable[len(group) :]
        out.append(_negation(rng, group, "pleura" if set(group) & {EFFUSION, PNEUMOTHORAX} else "lungs"))
    if EDEMA in absent and rng.random() < 0.1:
        out.append(_Sentence("Normal pulmonary vascularity.", {}, "lungs"))
    if "fracture" not in kinds and rng.random() < 0.6:
        text, labels = _pick(rng, easy._BONES)
        out.append(_Sentence(text, labels, "bones"))
    return out


def _distractor_sentences(rng: np.random.Generator, case: HardCase) -> list[_Sentence]:
    out = []
    for d in case.distractors:
        templates = _DISTRACTOR_WORDS.get(d["kind"])
        if templates and rng.random() < 0.5:
            out.append(_Sentence(_fill(rng, templates, side=d.get("side", "")), {}, "other"))
    return out


_TOPIC_ORDER = ("devices", "heart", "mediastinum", "lungs", "pleura", "bones", "other")


def compose_hard_report(case: HardCase, seed: int) -> tuple[str, str, dict[str, float]]:
    """The FINDINGS text, the IMPRESSION text and the CheXpert-14 labels of a hard case."""
    rng = np.random.default_rng([seed, case.index, _STREAM_TEXT])
    present = _present(case)
    absent = [obs for obs in (CONSOLIDATION, OPACITY, EDEMA, ATELECTASIS, EFFUSION, PNEUMOTHORAX) if obs not in present]
    if any(f["kind"] == "consolidation" for f in case.findings) and OPACITY in absent:
        absent.remove(OPACITY)  # a hedged consolidation is still an opacity on the film: never deny one
    abnormal = [_with_without(rng, f, _finding_sentence(rng, f), absent) for f in case.findings]
    abnormal += [easy._device_sentence(rng, d) for d in case.devices]
    normal = _normal_sentences(rng, case, absent) + _distractor_sentences(rng, case)
    order = list(_TOPIC_ORDER)
    if rng.random() < 0.5:
        order = order[1:] + order[:1]
    mode = rng.random()
    if mode < 0.5:
        sentences = sorted(abnormal + normal, key=lambda s: (order.index(s.topic), not s.abnormal))
    elif mode < 0.8:
        sentences = sorted(abnormal, key=lambda s: order.index(s.topic)) + sorted(normal, key=lambda s: order.index(s.topic))
    else:
        sentences = abnormal + normal
        sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    texts = [s.text for s in sentences]
    if len(texts) >= 3 and rng.random() < 0.05:
        findings_text = " ".join(f"{i}. {t}" for i, t in enumerate(texts, start=1))
    else:
        findings_text = " ".join(texts)
    return findings_text, _impression(rng, case), easy._aggregate(sentences)


def _impression(rng: np.random.Generator, case: HardCase) -> str:
    items = [_cap(w) + "." for w in _finding_words(case)]
    if case.devices and rng.random() < 0.3:
        items.append("Lines and tubes as above.")
    if not items:
        return _pick(rng, easy._IMPRESSION_NORMAL)
    if len(items) >= 2 and rng.random() < 0.5:
        return " ".join(f"{i}. {t}" for i, t in enumerate(items, start=1))
    return " ".join(items)


def _finding_words(case: HardCase) -> list[str]:
    words = []
    for f in case.findings:
        kind, hedge = f["kind"], "possible " if f["hedged"] else ""
        if kind == "cardiomegaly":
            words.append("borderline heart size, possible mild cardiomegaly" if f["hedged"] else
                         f"{'marked' if f['severity'] == 'severe' else f['severity']} cardiomegaly")
        elif kind == "pleural_effusion":
            sizes = f["size_by_side"]
            if f["side"] != "bilateral":
                words.append(f"{hedge}{f['size']} {f['side']} pleural effusion")
            elif sizes["right"] == sizes["left"]:
                words.append(f"{f['size']} bilateral pleural effusions")
            else:
                words.append(f"{sizes['right']} right and {sizes['left']} left pleural effusions")
        elif kind == "pneumothorax":
            words.append(f"possible tiny {f['side']} apical pneumothorax" if f["hedged"] else
                         f"{f['size']} {f['side']} pneumothorax")
        elif kind == "lung_lesion":
            cm = _cm_words(f["size_cm"])
            if f["type"] == "multiple":
                where = "both lungs" if f["side"] == "bilateral" else f"the {f['side']} lung"
                words.append(f"{f['count']} pulmonary nodules in {where}, up to {cm}")
            else:
                words.append(f"{hedge}{cm} {f['side']} {f['zone']} lung {f['type']}")
        elif kind == "consolidation":
            words.append(f"{hedge}{easy._site_adj(f['site'])} consolidation")
        elif kind == "lung_opacity":
            words.append(f"{hedge}{'faint' if f['severity'] != 'moderate' else 'patchy'} opacity, {f['site']}")
        elif kind == "atelectasis":
            words.append(f"{hedge}{f['size']} atelectasis, {f['location']}")
        elif kind == "edema":
            words.append("mild pulmonary vascular congestion" if f["hedged"] else f"{f['severity']} pulmonary edema")
        elif kind == "widened_mediastinum":
            words.append(f"{hedge}{f['severity']} widening of the superior mediastinum")
        elif kind == "fracture":
            words.append(f"{hedge}{f['severity']} {f['side']} {_ordinal(f['rib_number'])} rib fracture")
        elif kind == "pleural_thickening":
            words.append(f"{hedge}{f['severity']} {f['side']} apical pleural thickening")
    return words


def hard_findings_in_words(case: HardCase) -> list[str]:
    """The true findings of a hard study in words (``"normal"`` when it has none), then its devices."""
    return (_finding_words(case) or ["normal"]) + [easy._device_words(d) for d in case.devices]
