"""Small file builders shared by several test areas (import as ``from tests.builders import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None) -> Path:
    """A minimal single-frame 12-bit DICOM radiograph with ``pixels`` (uint16 values) and optional window."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def build_model(cfg, stage: str | None = None):
    """The model of ``cfg``'s method for ``stage`` (default: its first), trainability applied, as ``mrg train`` builds it."""
    from mrg.methods import get_method
    from mrg.model.trainable import stage_model

    method = get_method(cfg.model.method)
    return stage_model(method, cfg, method.stage(stage) if stage else method.stages[0])


def with_tokens(model, batch: dict) -> dict:
    """``batch`` plus the report tokens the collate step adds (``mrg.data.dataset.ReportCollator``)."""
    from mrg.data.dataset import report_tensors

    return {**batch, **report_tensors(model.tokenizer, batch["reports"], model.max_report_tokens)}
