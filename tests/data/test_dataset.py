"""Studies as model inputs: ReportDataset items, ImageFileDataset (PNG/DICOM), collation and view masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrg.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileDataset,
    ImageSettings,
    ImageTransform,
    ReportDataset,
    collate_studies,
    dataset_from_config,
)
from mrg.data.prepared import Study, load_prepared_dataset, write_prepared_dataset
from mrg.errors import DataError
from tests.builders import write_dicom

REPORTS = {
    "s1": "The heart is normal in size.  1. No effusion.",
    "s2": "Mild cardiomegaly.. Small left pleural effusion.",
    "s3": "Lungs are clear. No pneumothorax.",
}


def _png(path: Path, value: int, size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8), mode="L").save(path)


@pytest.fixture
def prepared(tmp_path: Path):
    root = tmp_path / "ds"
    root.mkdir()
    studies = []
    views = {"s1": 2, "s2": 1, "s3": 2}
    for number, (sid, report) in enumerate(REPORTS.items()):
        paths = []
        for k in range(views[sid]):
            rel = f"images/{sid}/{k}.png"
            _png(root / rel, 40 * (number + 1) + 10 * k)
            paths.append(rel)
        studies.append(Study(id=sid, split="train" if sid != "s3" else "val", report=report, image_paths=paths))
    write_prepared_dataset(root, studies, source={"kind": "test"}, protocol={"name": "test"}, normalize="r2gen-iu")
    return load_prepared_dataset(root)


def test_items_have_views_and_clean_reports(prepared) -> None:
    ds = ReportDataset(prepared, "train", image_size=16, max_views=2, normalize="auto")
    assert len(ds) == 2
    item = ds[0]
    assert item["id"] == "s1"
    assert item["pixel_values"].shape == (2, 3, 16, 16)
    assert item["pixel_values"].dtype == torch.float32
    # auto = the mode recorded in prepare.json (r2gen-iu): lower-case, enumerations and punctuation gone
    assert item["report"] == prepared.split("train")[0].report_clean
    assert item["report"].startswith("the heart is normal in size")
    assert ds[1]["pixel_values"].shape == (1, 3, 16, 16)
    # another mode recomputes from the raw text
    raw = ReportDataset(prepared, "train", image_size=16, max_views=2, normalize="none")
    assert raw[0]["report"] == REPORTS["s1"]


def test_normalisation_and_channels(prepared) -> None:
    ds = ReportDataset(prepared, "train", image_size=8, max_views=1, normalize="auto")
    pixels = ds[0]["pixel_values"][0]  # (3, 8, 8) of a flat image of value 40
    expected = (40 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(pixels[:, 0, 0], expected, atol=1e-5)
    one = ReportDataset(prepared, "train", image_size=8, max_views=1, normalize="auto", image_mean=[0.5], image_std=[0.5], num_channels=1)
    assert one[0]["pixel_values"].shape == (1, 1, 8, 8)
    assert torch.allclose(one[0]["pixel_values"], torch.full((1, 1, 8, 8), (40 / 255 - 0.5) / 0.5), atol=1e-5)


def test_max_views_keeps_the_first(prepared) -> None:
    ds = ReportDataset(prepared, "train", image_size=8, max_views=1, normalize="auto")
    assert ds[0]["pixel_values"].shape[0] == 1


def test_collate_pads_views_with_a_mask(prepared) -> None:
    ds = ReportDataset(prepared, "train", image_size=8, max_views=2, normalize="auto")
    batch = collate_studies([ds[1], ds[0]])
    assert batch["ids"] == ["s2", "s1"]
    assert batch["pixel_values"].shape == (2, 2, 3, 8, 8)
    assert batch["view_mask"].tolist() == [[True, False], [True, True]]
    assert torch.all(batch["pixel_values"][0, 1] == 0)
    assert batch["reports"] == [ds.report(1), ds.report(0)]


def test_unknown_split_mode_and_empty(prepared) -> None:
    with pytest.raises(DataError, match="split 'dev'"):
        ReportDataset(prepared, "dev", image_size=8, max_views=1, normalize="auto")
    with pytest.raises(DataError, match="split 'test' has no studies"):
        ReportDataset(prepared, "test", image_size=8, max_views=1, normalize="auto")
    with pytest.raises(DataError, match="data.normalize 'r2gen'"):
        ReportDataset(prepared, "train", image_size=8, max_views=1, normalize="r2gen")


def test_augmentation_is_seeded(prepared) -> None:
    ds = ReportDataset(prepared, "train", image_size=16, max_views=2, normalize="auto", augment=True)
    torch.manual_seed(0)
    a = ds[0]["pixel_values"]
    torch.manual_seed(0)
    b = ds[0]["pixel_values"]
    assert torch.equal(a, b)


def test_dataset_from_config(prepared) -> None:
    from mrg.config import load_config

    cfg = load_config(None, [f"data.root={prepared.root}", "data.image_size=12", "data.max_views=2"])
    settings = ImageSettings(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    ds = dataset_from_config(cfg, "val", image_settings=settings)
    assert ds[0]["pixel_values"].shape == (2, 3, 12, 12)
    assert ds.transform.augment is False


def test_image_files_png_and_dicom(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 200, (16, 1))  # 12-bit horizontal ramp
    write_dicom(tmp_path / "mono2.dcm", ramp, "MONOCHROME2")
    write_dicom(tmp_path / "mono1.dcm", ramp, "MONOCHROME1")
    Image.fromarray((ramp // 16).astype(np.uint8), mode="L").save(tmp_path / "ramp.png")
    ds = ImageFileDataset(
        [[tmp_path / "ramp.png"], [tmp_path / "mono2.dcm", tmp_path / "mono1.dcm"]], image_size=16, max_views=2
    )
    assert [ds[i]["id"] for i in range(2)] == ["ramp", "mono2"]
    png, dicom = ds[0]["pixel_values"], ds[1]["pixel_values"]
    assert png.shape == (1, 3, 16, 16) and dicom.shape == (2, 3, 16, 16)
    # MONOCHROME2 ramp rises left to right; MONOCHROME1 is inverted (dark where values are high)
    assert dicom[0, 0, 0, 0] < dicom[0, 0, 0, -1]
    assert dicom[1, 0, 0, 0] > dicom[1, 0, 0, -1]
    batch = collate_studies([ds[0], ds[1]])
    assert "reports" not in batch
    assert batch["view_mask"].tolist() == [[True, False], [True, True]]


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    ds = ImageFileDataset([[bad]], image_size=8, max_views=1, ids=["x"])
    with pytest.raises(DataError, match="broken.png"):
        ds[0]
    with pytest.raises(DataError, match="has no image files"):
        ImageFileDataset([[]], image_size=8, max_views=1)
    with pytest.raises(DataError, match="2 ids for 1 studies"):
        ImageFileDataset([[bad]], image_size=8, max_views=1, ids=["a", "b"])


def test_transform_rejects_mismatched_statistics() -> None:
    with pytest.raises(DataError, match="expects 3 channels"):
        ImageTransform(8, image_mean=[0.5, 0.5], image_std=[0.5, 0.5], num_channels=3)
