"""The 14 CheXpert observations, in the labeler's output order, shared by data sources and metrics."""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five observations of the "5-label" clinical-efficacy variants (CheXbert / ifcc / LLaVA-Rad).
FIVE_OBSERVATIONS: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

# Label values as written by the CheXpert labeler; a missing key means blank (not mentioned).
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
