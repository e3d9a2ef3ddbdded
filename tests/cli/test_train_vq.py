"""``mrg train-vq`` and ``mrg tokenize-images`` on a tiny synthetic set: runs, resumes, refusals, the token cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY = ("-c", "tiny")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mrg.data.sources.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("vq") / "syn"
    prepare_synthetic(root, n=12, seed=0, image_size=32)
    return root


@pytest.fixture(scope="module")
def trained(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mrg.config import load_vq_config
    from mrg.recipes.vq import train_vq

    out = tmp_path_factory.mktemp("vqrun") / "run"
    train_vq(synthetic, out, load_vq_config("tiny"))
    return out


def _one_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_vq_cli_writes_a_run(run_cli, synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train-vq", "--data", synthetic, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.stdout and "Code usage" in result.stdout
    lines = [json.loads(x) for x in (out / "val_metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10]
    for name in ("psnr", "ssim", "grad_mag_error", "codebook_usage", "codebook_perplexity"):
        assert all(isinstance(x[name], float) for x in lines)
    assert (out / "best").is_symlink() and (out / "last").resolve().name == "step-000010"
    meta = json.loads((out / "last" / "meta.json").read_text())
    assert meta["kind"] == "vq" and meta["finished"] is True
    again = run_cli("train-vq", "--data", synthetic, "--out", out, *TINY)
    assert again.exit_code == 0 and "already trained" in again.stdout


def test_resume_reproduces_the_uninterrupted_run(synthetic: Path, tmp_path: Path) -> None:
    from mrg.checkpoint import write_pointer
    from mrg.config import load_vq_config
    from mrg.recipes.vq import train_vq

    cfg = load_vq_config("tiny")
    out = tmp_path / "run"
    train_vq(synthetic, out, cfg)
    full = load_file(str(out / "step-000010" / "trainable.safetensors"))
    shutil.rmtree(out / "step-000010")  # as if the run had been killed after step 5's checkpoint
    write_pointer(out, "last", out / "step-000005")
    with pytest.raises(Exception, match="--resume"):
        train_vq(synthetic, out, cfg)
    result = train_vq(synthetic, out, cfg, resume=True)
    assert result.step == 10 and not result.skipped
    resumed = load_file(str(out / "step-000010" / "trainable.safetensors"))
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.allclose(full[name].float(), resumed[name].float(), atol=1e-6), name


def test_checkpoint_with_another_codebook_size_is_refused(run_cli, synthetic: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out, symlinks=True)
    result = run_cli("train-vq", "--data", synthetic, "--out", out, *TINY, "model.codebook_size=32", "model.code_dim=4",
                     "--resume")
    _one_error(result, "model.codebook_size: checkpoint 16, config 32", "model.code_dim: checkpoint 8, config 4")


def test_tokenize_images_is_idempotent(run_cli, synthetic: Path, trained: Path) -> None:
    from mrg.recipes.vq import load_vq_checkpoint
    from mrg.recipes.vq_tokens import load_image_tokens

    first = run_cli("tokenize-images", "--vq", trained, "--data", synthetic)
    assert first.exit_code == 0, first.output
    assert "written" in first.stdout
    caches = sorted((synthetic / "image_tokens").iterdir())
    assert [p.suffix for p in caches] == [".json", ".safetensors"]
    stamps = [os.stat(p).st_mtime_ns for p in caches]
    again = run_cli("tokenize-images", "--vq", trained, "--data", synthetic)
    assert again.exit_code == 0 and "already current" in again.stdout
    assert [os.stat(p).st_mtime_ns for p in caches] == stamps  # nothing rewritten
    tokens = load_image_tokens(synthetic, trained)
    record = json.loads(caches[0].read_text())
    assert len(tokens) == len(record["keys"]) == 24  # 12 studies, two views
    model, _, _ = load_vq_checkpoint(trained)
    from mrg.data.image_set import ImageEntry, load_pixels, to_float

    key = record["keys"][3]
    pixels = to_float(load_pixels(synthetic, [ImageEntry(key, "train")], 32))
    assert torch.equal(tokens[key].long(), model.encode(pixels)[0])  # the cached ids are the tokenizer's


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("train-vq", "--data", "{tmp}/missing", "--out", "{tmp}/o", *TINY), ("missing", "dataset folder not found")),
        (("train-vq", "--data", "{syn}", "--out", "{tmp}/o", *TINY, "model.codebok_size=4"), ("codebook_size",)),
        (("train-vq", "--data", "{syn}", "--out", "{tmp}/o", *TINY, "model.downsample=3"), ("power of 2",)),
        (("train-vq", "--data", "{syn}", "--out", "{tmp}/o", "-c", "nosuch"), ("unknown preset", "tiny")),
        (("tokenize-images", "--vq", "{tmp}/nothing", "--data", "{syn}"), ("checkpoint not found",)),
        (("tokenize-images", "--vq", "{run}", "--data", "{tmp}/missing"), ("dataset folder not found",)),
    ],
)
def test_bad_input_is_one_line(run_cli, synthetic: Path, trained: Path, tmp_path: Path, args, needles) -> None:
    filled = [a.format(tmp=tmp_path, syn=synthetic, run=trained) for a in args]
    _one_error(run_cli(*filled), *needles)


def test_foreign_output_folder_is_refused(run_cli, synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_error(run_cli("train-vq", "--data", synthetic, "--out", out, *TINY), "not empty")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_patch_gan_term_trains_a_discriminator(synthetic: Path, tmp_path: Path) -> None:
    from mrg.config import load_vq_config
    from mrg.recipes.vq import load_vq_checkpoint, train_vq

    out = tmp_path / "gan"
    train_vq(synthetic, out, load_vq_config("tiny", ["loss.gan_weight=0.5", "loss.gan_start=3"]))
    weights = load_file(str(out / "last" / "trainable.safetensors"))
    assert any(k.startswith("discriminator.") for k in weights)
    logged = {line.split(",")[1] for line in (out / "metrics.csv").read_text().splitlines()[1:]}
    assert {"gan", "disc", "l1", "grad"} <= logged
    model, _, _ = load_vq_checkpoint(out)  # the tokenizer loads without the discriminator
    assert not any(k.startswith("discriminator.") for k in model.state_dict())
