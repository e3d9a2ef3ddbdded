"""The ``mavilt`` method on tiny random models: registry, both stages, what trains, generate, seeded synthesis."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests import training_fixtures
from tests.methods.test_trrg import _one_error_line
from tests.methods.test_trrg import synthetic_data as synthetic_data  # noqa: F401 - the fixture
from tests.training_fixtures import tiny_overrides, trainable_weights

model_cache = training_fixtures.model_cache


@pytest.fixture(scope="module")
def vq_run(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    from mrg.config import load_vq_config
    from mrg.recipes.vq import train_vq

    out = tmp_path_factory.mktemp("vq") / "vq"
    train_vq(synthetic_data, out, load_vq_config("tiny"))
    return out


def test_methods_lists_mavilt_with_its_stages() -> None:
    from mrg.methods import get_method

    method = get_method("mavilt")
    assert [s.name for s in method.stages] == ["pretrain", "finetune"]
    assert method.stage("finetune").starts_from == "pretrain"
    assert "mavilt-tiny" in method.presets()


def test_mavilt_refuses_missing_vq_and_another_codebook(run_cli, tmp_path: Path, synthetic_data, vq_run) -> None:  # noqa: F811
    result = run_cli("train", "--config", "mavilt-tiny", "--out", tmp_path / "a",
                     *tiny_overrides(synthetic_data, "method.vq=", "train.max_steps=1"))
    assert "method.vq" in _one_error_line(result)
    result = run_cli("train", "--config", "mavilt-tiny", "--out", tmp_path / "b",
                     *tiny_overrides(synthetic_data, f"method.vq={vq_run}", "method.codebook_size=999",
                                     "train.max_steps=1"))
    line = _one_error_line(result)
    assert "codebook_size" in line and "999" in line and "16" in line


def test_mavilt_trains_new_rows_only_generates_and_samples_deterministically(run_cli, tmp_path: Path, synthetic_data,  # noqa: F811
                                                                            vq_run, model_cache) -> None:
    run = tmp_path / "run"
    result = run_cli("train", "--config", "mavilt-tiny", "--out", run,
                     *tiny_overrides(synthetic_data, f"method.vq={vq_run}", "train.max_steps=2"))
    assert result.exit_code == 0, result.output
    for stage in ("pretrain", "finetune"):
        weights = trainable_weights(run / stage / "step-000002")
        assert set(weights) == {"vocab.new_embeddings", "vocab.new_head"}, stage  # the base LLM never trains
    out = tmp_path / "test.jsonl"
    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", out,
                     "generate.strategy=greedy", "generate.max_new_tokens=5", "generate.min_new_tokens=1")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5

    from mrg.model.mavilt_model import SamplingSettings
    from mrg.synthesize import load_synthesis_model

    model, _ = load_synthesis_model(run)
    settings = SamplingSettings(temperature=1.0, top_k=8, top_p=0.9)
    a = model.sample_image_tokens(["The heart is enlarged.", "No effusion."], [3, 4], settings)
    b = model.sample_image_tokens(["The heart is enlarged."], [3], settings)
    c = model.sample_image_tokens(["The heart is enlarged."], [5], settings)
    assert a.shape == (2, 8, 8) and torch.equal(a[:1], b)  # a row does not depend on the batch
    assert not torch.equal(b, c)
    guided = model.sample_image_tokens(["The heart is enlarged."], [3], SamplingSettings(cfg_scale=2.0))
    assert guided.shape == (1, 8, 8)


def test_train_llm_trains_the_whole_llm_and_its_checkpoint_loads(run_cli, tmp_path: Path, synthetic_data,  # noqa: F811
                                                                  vq_run, model_cache) -> None:
    run = tmp_path / "run"
    result = run_cli("train", "--config", "mavilt-tiny", "--out", run, "--stage", "pretrain",
                     *tiny_overrides(synthetic_data, f"method.vq={vq_run}", "method.train_llm=true", "train.max_steps=1"))
    assert result.exit_code == 0, result.output
    weights = trainable_weights(run / "pretrain" / "step-000001")
    llm = {k for k in weights if k.startswith("llm.")}
    assert {"vocab.new_embeddings", "vocab.new_head"} <= set(weights)
    assert any("layers.0.self_attn.q_proj" in k for k in llm) and not any("lora_" in k for k in llm)
    assert not any(k.startswith("encoder.") for k in weights)  # the tokenizer stays fixed

    from mrg.synthesize import load_synthesis_model

    model, _ = load_synthesis_model(run / "pretrain")  # strict load: the LLM's trained weights are part of the state
    assert model.sample_image_tokens(["The heart is enlarged."], [0]).shape == (1, 8, 8)

    for extra, words in (("method.lora=true", "method.train_llm"), ("method.preserve=kl", "preserve")):
        line = _one_error_line(run_cli("train", "--config", "mavilt-tiny", "--out", tmp_path / "x",
                                       *tiny_overrides(synthetic_data, f"method.vq={vq_run}", "method.train_llm=true",
                                                       extra, "train.max_steps=1")))
        assert words in line, line


def test_report_to_image_labels_are_the_codes(synthetic_data, vq_run, model_cache) -> None:  # noqa: F811
    from mrg.config import load_config
    from mrg.methods import get_method

    cfg = load_config("mavilt-tiny", [f"data.root={synthetic_data}", f"method.vq={vq_run}"])
    method = get_method("mavilt")
    model = method.build_model(cfg, method.stage("pretrain"))
    pixels = torch.rand(2, 1, 1, 32, 32)
    ids = model.image_ids({"pixel_values": pixels})
    assert ids.shape == (2, 8 * 8 + 2)
    assert (ids[:, 0] == model.vocab.vocab.boi_id).all() and (ids[:, -1] == model.vocab.vocab.eoi_id).all()
    batch = {"pixel_values": pixels, "report_ids": torch.tensor([[5, 6, 2], [7, 2, 0]]),
             "report_mask": torch.tensor([[True, True, True], [True, True, False]])}
    loss = model.report_to_image_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_synthesize_cli_writes_seeded_pngs_with_sidecars(run_cli, tmp_path: Path, synthetic_data, vq_run,  # noqa: F811
                                                         model_cache) -> None:
    import json

    run = tmp_path / "run"
    result = run_cli("train", "--config", "mavilt-tiny", "--out", run, "--stage", "pretrain",
                     *tiny_overrides(synthetic_data, f"method.vq={vq_run}", "train.max_steps=1"))
    assert result.exit_code == 0, result.output
    outs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / name
        result = run_cli("synthesize", "--checkpoint", run / "pretrain", "--data", synthetic_data, "--split", "test",
                         "--limit", "2", "--seed", seed, "--top-k", "8", "--out", out)
        assert result.exit_code == 0, result.output
        outs.append(out)
    first = sorted(p.name for p in outs[0].iterdir())
    assert first == ["test-000.json", "test-000.png", "test-001.json", "test-001.png"]
    assert (outs[0] / "test-000.png").read_bytes() == (outs[1] / "test-000.png").read_bytes()
    assert (outs[0] / "test-000.png").read_bytes() != (outs[2] / "test-000.png").read_bytes()
    sidecar = json.loads((outs[0] / "test-001.json").read_text())
    assert sidecar["id"] == "test-001" and sidecar["study_id"] == "test-001" and sidecar["seed"] == 8
    assert sidecar["prompt"] and sidecar["sampling"]["top_k"] == 8 and sidecar["config"]["grid"] == [8, 8]
    reports = tmp_path / "reports.txt"
    reports.write_text("The heart is enlarged.\n\nNo effusion.\n")
    result = run_cli("synthesize", "--checkpoint", run / "pretrain", "--reports", reports, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "report-001.json").read_text())["study_id"] is None
    # a prompt is cleaned as the training reports were (recorded in the checkpoint), then tokenized
    first_prompt = json.loads((tmp_path / "r" / "report-000.json").read_text())
    meta = json.loads((run / "pretrain" / "step-000001" / "meta.json").read_text())
    assert meta["report_cleaning"] == first_prompt["config"]["prompt_cleaning"] == "r2gen-iu"
    assert first_prompt["prompt"] == "The heart is enlarged." and first_prompt["model_prompt"] == "the heart is enlarged ."
    from mrg.synthesize import prompt_cleaning

    older = tmp_path / "older"  # a checkpoint from before meta.json recorded it: data.normalize, resolved
    shutil.copytree(run / "pretrain" / "step-000001", older)
    (older / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "report_cleaning"}))
    assert prompt_cleaning(older) == "r2gen-iu"
    result = run_cli("synthesize", "--checkpoint", run / "pretrain", "--text", "x", "--reports", reports,
                     "--out", tmp_path / "e")
    assert "exactly one of" in _one_error_line(result)
