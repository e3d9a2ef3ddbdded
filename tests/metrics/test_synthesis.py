"""Synthesis metrics: FID, MS-SSIM, label F1, the baselines, the folder reader and the whole scorer on synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mrg.data.prepared import load_prepared_dataset
from mrg.errors import DataError, MetricError
from mrg.metrics.registry import SYNTHESIS, metrics_for_task
from mrg.metrics.synthesis import (
    ClassifierConfig,
    consistency_statistic,
    evaluate_synthesis,
    fid,
    frechet_distance,
    label_f1,
    load_or_train_classifier,
    mean_image,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_scales,
    nearest_by_labels,
    read_synthesized_folder,
    render_synthesis_markdown,
    write_real_as_synthesized,
)

# one classifier setting for the whole module (and tests/cli/test_evaluate_images.py), so it trains once per dataset
FAST = ClassifierConfig(image_size=64, steps=150)


# ------------------------------------------------------------------------------------------------ FID


def test_frechet_distance_hand_examples() -> None:
    # 1-D: (0 - 2)^2 + 1 + 4 - 2 sqrt(1 * 4) = 5
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([2.0]), np.array([[4.0]])) == pytest.approx(5.0)
    # diagonal 2-D: |mu|^2 + (1 + 4) + (4 + 9) - 2 (2 + 6) = 1 + 2
    value = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 0.0]), np.diag([4.0, 9.0]))
    assert value == pytest.approx(3.0)


def test_frechet_distance_matches_the_general_formula_on_non_commuting_covariances() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()  # S1 S2 has real positive eigenvalues
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift() -> None:
    feats = np.random.default_rng(1).normal(size=(200, 16))
    assert fid(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert fid(feats, feats + 0.5) == pytest.approx(16 * 0.25, rel=1e-6)  # a shift moves the means only
    assert fid(feats, feats[:1]) > 0  # one row: zero covariance, still defined


# ------------------------------------------------------------------------------------------------ MS-SSIM


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = (0.5 + 0.3 * torch.sin(6 * x) * torch.cos(4 * y))[None, None]
    assert float(ms_ssim(img, img)) == pytest.approx(1.0, abs=1e-5)
    values = [float(ms_ssim(img, (img + s * torch.randn(img.shape, generator=gen)).clamp(0, 1)))
              for s in (0.02, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]
    assert 0 <= values[2] < 0.9


def test_ms_ssim_scales_fit_the_window() -> None:
    assert ms_ssim_scales(256) == 5
    assert ms_ssim_scales(128) == 4
    assert ms_ssim_scales(64) == 3
    with pytest.raises(MetricError, match="at least 11 px"):
        ms_ssim_scales(8)


def test_ms_ssim_diversity_is_one_for_copies_and_lower_for_different_images() -> None:
    copies = torch.rand(1, 1, 32, 32).expand(5, -1, -1, -1)
    assert ms_ssim_diversity(copies) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_diversity(torch.rand(6, 1, 32, 32), max_pairs=4, seed=3) < 0.5  # sampled pairs
    with pytest.raises(MetricError, match="at least 2 images"):
        ms_ssim_diversity(copies[:1])


# ------------------------------------------------------------------------------------------------ labels and baselines


def test_label_f1_micro_over_all_classes_macro_over_present_ones() -> None:
    ref = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    pred = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    scores = label_f1(pred, ref)
    # tp 2, fp 1, fn 1 -> micro 4 / 6; class 0: 2/3, class 1: 1, class 2 has no positive reference
    assert scores["micro_f1"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["num_classes"] == 2


def test_nearest_by_labels_prefers_exact_matches_and_breaks_ties_deterministically() -> None:
    train = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    query = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    first = nearest_by_labels(train, query, ["a", "b"])
    assert first[0] == 0 and first[1] in (1, 2, 3)
    assert (nearest_by_labels(train, query, ["a", "b"]) == first).all()
    picks = {int(nearest_by_labels(train, query[1:], [f"id{i}"])[0]) for i in range(20)}
    assert picks == {1, 2, 3}  # ties spread over the ids


def test_mean_image_is_the_pixel_mean_repeated() -> None:
    train = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    out = mean_image(train, 3)
    assert out.shape == (3, 1, 4, 4) and torch.allclose(out, torch.full_like(out, 0.5))


def test_synthesis_metrics_are_registered_under_their_task() -> None:
    names = {m.name for m in metrics_for_task(SYNTHESIS)}
    assert {"consistency_f1", "consistency_macro_f1", "fid", "ms_ssim", "classifier_f1"} <= names


# ------------------------------------------------------------------------------------------------ the folder


def _write(folder: Path, item_id: str, **meta: object) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8), mode="L").save(folder / f"{item_id}.png")
    (folder / f"{item_id}.json").write_text(json.dumps({"id": item_id, "prompt": "No acute findings.",
                                                        "study_id": None, "seed": 0, **meta}))


def test_read_synthesized_folder_reads_sidecars(tmp_path: Path) -> None:
    _write(tmp_path, "b", seed=2)
    _write(tmp_path, "a", study_id="s1")
    items = read_synthesized_folder(tmp_path)
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].study_id == "s1" and items[1].seed == 2 and items[0].path == tmp_path / "a.png"


def test_read_synthesized_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        read_synthesized_folder(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no <id>\.png images"):
        read_synthesized_folder(tmp_path)
    _write(tmp_path, "a")
    (tmp_path / "a.json").write_text(json.dumps({"id": "a", "prompt": "x", "seed": 0}))
    with pytest.raises(DataError, match=r"a\.json: missing field\(s\) 'study_id'"):
        read_synthesized_folder(tmp_path)
    (tmp_path / "a.json").unlink()
    with pytest.raises(DataError, match=r"a\.png: no sidecar a\.json"):
        read_synthesized_folder(tmp_path)
    _write(tmp_path, "a", seed="zero")
    with pytest.raises(DataError, match="'seed' must be an integer"):
        read_synthesized_folder(tmp_path)


# ------------------------------------------------------------------------------------------------ the whole scorer


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mrg.data.sources.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("synth") / "data"
    prepare_synthetic(root, n=240, seed=0, image_size=64, views=1)
    return root


@pytest.fixture(scope="module")
def real_as_synth(synth_data: Path) -> Path:
    out = synth_data.parent / "real-test"
    write_real_as_synthesized(synth_data, "test", out)
    return out


def test_consistency_statistic_pools_like_label_f1_and_resamples() -> None:
    rng = np.random.default_rng(0)
    ref, pred = rng.random((30, 14)) < 0.3, rng.random((30, 14)) < 0.3
    statistic = consistency_statistic(pred, ref)
    assert statistic.value() == pytest.approx(label_f1(pred, ref)["micro_f1"])
    twice = np.array([[2.0] + [0.0] * 29])  # a resample holding only the first image, twice
    assert statistic.values(twice)[0] == pytest.approx(label_f1(pred[:1], ref[:1])["micro_f1"])


def test_real_test_images_beat_the_mean_image_baseline(synth_data: Path, real_as_synth: Path) -> None:
    """The acceptance check of the metric pipeline: real images with their own reports as prompts are consistent."""
    record = evaluate_synthesis(real_as_synth, synth_data, classifier=FAST)
    cols = record["columns"]
    assert record["num_images"] == 48
    assert record["prompt_labels"]["gold"] == 48 and record["prompt_labels"]["labeler"] == 0
    assert cols["synthesized"]["consistency_f1"] > cols["mean_image"]["consistency_f1"] + 0.15
    assert cols["synthesized"]["consistency_f1"] == pytest.approx(record["classifier_f1"])  # the images are the split's
    assert cols["synthesized"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert cols["mean_image"]["fid"] > cols["nearest_real"]["fid"] > 0
    assert cols["mean_image"]["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert cols["synthesized"]["ms_ssim"] < 0.95
    assert record["real"]["ms_ssim"] == pytest.approx(cols["synthesized"]["ms_ssim"])
    assert set(cols) == {"synthesized", "mean_image", "nearest_real"}
    paired = record["paired"]["mean_image"]
    assert paired["delta"] == pytest.approx(cols["synthesized"]["consistency_f1"] - cols["mean_image"]["consistency_f1"])
    assert paired["ci_low"] > 0 and paired["p_value"] < 0.05  # 48 real images against one mean image
    assert "Synthesized minus mean image, consistency F1" in render_synthesis_markdown(record)


def test_prompts_without_study_id_are_labelled_and_the_classifier_is_reused(synth_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nolabels"
    write_real_as_synthesized(synth_data, "test", out, limit=12, with_study_id=False)
    load_or_train_classifier(load_prepared_dataset(synth_data), FAST)  # trains unless a test above did
    record = evaluate_synthesis(out, synth_data, classifier=FAST)
    assert record["prompt_labels"]["labeler"] == 12 and record["prompt_labels"]["gold"] == 0
    assert record["classifier"]["trained"] is False  # cached by the test above (same dataset and settings)
    assert (Path(record["classifier"]["path"]) / "model.safetensors").is_file()


def test_backbone_encoder_for_fid(synth_data: Path, real_as_synth: Path, tmp_path: Path) -> None:
    some = tmp_path / "some"
    some.mkdir()
    for path in sorted(real_as_synth.iterdir())[:16]:
        shutil.copy(path, some / path.name)
    record = evaluate_synthesis(some, synth_data, classifier=FAST, encoder="random:resnet")
    assert record["encoder"]["name"] == "random:resnet"
    assert np.isfinite(record["columns"]["synthesized"]["fid"]) and record["columns"]["mean_image"]["fid"] > 0


def test_unreadable_png_and_unprepared_data_are_named(synth_data: Path, tmp_path: Path) -> None:
    _write(tmp_path / "bad", "x")
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png: not a PNG.*re-run mrg synthesize"):
        evaluate_synthesis(tmp_path / "bad", synth_data, classifier=FAST)
    _write(tmp_path / "ok", "x")
    with pytest.raises(DataError, match=r"--data .*no prepare\.json"):
        evaluate_synthesis(tmp_path / "ok", tmp_path, classifier=FAST)

