"""``mrg analyze``: the measures against brute force, both analyses on tiny checkpoints of every prompt mode and of
two-stage, the attention masses against a direct forward pass, and the command's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mrg.analysis import AnalysisConfig, AnalysisRecipe, analyze
from mrg.analysis.attention import GROUPS, collect, group_masses, patch_grid
from mrg.analysis.prompts import correlations, jaccard, nearest_tokens, spectrum
from mrg.config import load_config
from mrg.errors import ConfigError
from mrg.model.report_model import INPUT_GROUPS
from tests import training_fixtures
from tests.toy_method import TOY  # noqa: F401  (registers the toy method)

synthetic_data = training_fixtures.synthetic_data
model_cache = training_fixtures.model_cache
tiny_run = training_fixtures.tiny_run


# -------------------------------------------------------------------------------------------- measures


def test_nearest_tokens_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    table, tokens = torch.randn(50, 8, generator=gen), torch.randn(7, 8, generator=gen)
    sims, ids = nearest_tokens(tokens, table, 3, chunk=3)  # several chunks
    tokens_np, table_np = tokens.numpy(), table.numpy()
    for n in range(7):
        brute = [float(np.dot(tokens_np[n], table_np[v]) / np.linalg.norm(tokens_np[n]) / np.linalg.norm(table_np[v])) for v in range(50)]
        order = sorted(range(50), key=lambda v: -brute[v])[:3]
        assert ids[n].tolist() == order and np.allclose(sims[n].tolist(), [brute[v] for v in order], atol=1e-5)
    _, own = nearest_tokens(table[:10], table, 1, chunk=4, exclude_self=True)
    assert all(own[i, 0] != i for i in range(10))  # a word's nearest other word


def test_spectrum_correlations_and_jaccard() -> None:
    gen = torch.Generator().manual_seed(1)
    rank2 = torch.randn(40, 2, generator=gen) @ torch.randn(2, 16, generator=gen)
    s = spectrum(rank2)
    assert 1.0 < s["effective_rank"] <= 2.0 + 1e-6 and sum(s["explained_variance"][:2]) == pytest.approx(1.0)
    iso = spectrum(torch.randn(4000, 4, generator=gen))
    assert iso["effective_rank"] == pytest.approx(4.0, abs=0.1)  # isotropic: every direction counts
    x, y = [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 5.0]
    dx, dy = [v - 2.0 for v in x], [v - 2.75 for v in y]
    pearson = sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sum(a * a for a in dx) * sum(b * b for b in dy))
    # ranks with the tie averaged: x -> 0, 1.5, 1.5, 3; y -> 0, 2, 1, 3; their Pearson is 4.5 / sqrt(4.5 * 5)
    assert correlations(x, y) == {"pearson": pytest.approx(pearson), "spearman": pytest.approx(4.5 / math.sqrt(4.5 * 5))}
    assert correlations([1, 1, 1], [1, 2, 3])["pearson"] is None
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3) and jaccard(frozenset(), frozenset()) is None


def test_group_masses_sum_attention_per_group() -> None:
    attn = torch.softmax(torch.randn(2, 3, 4, 6), dim=-1)  # (B, L, H, K)
    codes = torch.tensor([[1, 1, 2, 2, 3, 4], [0, 1, 2, 3, 3, 4]])
    mass = group_masses(attn, codes, len(INPUT_GROUPS))
    assert torch.allclose(mass.sum(dim=-1), torch.ones(2, 3, 4))
    assert torch.allclose(mass[1, :, :, 3], attn[1, :, :, 3] + attn[1, :, :, 4])
    assert patch_grid(17) == (1, 4, 4) and patch_grid(16) == (0, 4, 4) and patch_grid(7) is None


# -------------------------------------------------------------------------------------------- end to end


def _check_outputs(out: Path, groups: list[str]) -> dict:
    record = json.loads((out / "analysis.json").read_text())
    assert record["format"] == "mrg-analysis"
    prompts, attention = record["analyses"]["prompts"], record["analyses"]["attention"]
    assert list(prompts["groups"]) == groups == [g["name"] for g in prompts["inputs"]["groups"]]
    for name in groups:
        group = prompts["groups"][name]
        assert group["nearest"]["tokens"] > 0 and len(group["nearest"]["examples"][0]["tokens"][0]["nearest"]) == 5
        assert group["spectrum"]["effective_rank"] >= 0 and group["norms"]["max"] > 0
    # the masses of every generated token sum to 1 over the groups (padding receives none)
    assert attention["mass_sum_max_error"] < 1e-5 and attention["generated_tokens"] > 0
    assert sum(attention["overall"].values()) == pytest.approx(1.0, abs=1e-5)
    for layer in range(len(attention["by_layer"]["visual"])):
        assert sum(values[layer] for values in attention["by_layer"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(attention["by_layer"]) == {g for g in GROUPS if g != "clues" or "clues" in groups}
    assert attention["implementation"] == "eager" and "SDPA" in attention["implementation_note"]
    for section in (prompts, attention):
        for figure in section["figures"]:
            assert (out / figure["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return record


def test_both_analyses_on_the_tiny_promptbook_run(tmp_path: Path, tiny_run, run_cli) -> None:
    out = tmp_path / "analysis"
    first = analyze("prompts", tiny_run, out=out, split="test", limit=4)
    second = analyze("attention", tiny_run, out=out, split="test", limit=4, maps=2)
    record = _check_outputs(out, ["visual", "prompt"])
    assert first.num_studies == second.num_studies == 4
    mixing = record["analyses"]["prompts"]["mixing"]
    assert mixing["book_size"] == 4 and sum(mixing["argmax_usage"]) == 4
    assert sum(mixing["mean_weights"]) == pytest.approx(1.0) and mixing["by_finding"]
    assert record["analyses"]["attention"]["maps"] == ["attention-map-test-000.png", "attention-map-test-001.png"]
    assert record["analyses"]["attention"]["inputs"]["num_studies"] == 4
    result = run_cli("report", tiny_run, out, "--out", tmp_path / "page.html", "--no-images")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert result.exit_code == 0 and "1 analysis" in result.output, result.output
    assert page.count('<figure class="analysis-figure">') == len(record["analyses"]["prompts"]["figures"]) + len(
        record["analyses"]["attention"]["figures"])


def test_step_zero_masses_equal_a_direct_forward_pass(tmp_path: Path, tiny_run) -> None:
    recipe = AnalysisRecipe.setup(AnalysisConfig("attention", tiny_run, tmp_path, limit=1))
    totals, _, _ = collect(recipe.inputs, map_ids=set())
    model = recipe.inputs.model
    batch = next(recipe.inputs.batches())
    with torch.no_grad():
        visual, token_mask = model.visual_tokens(batch)
        embeds, mask, _, _ = model.assemble(visual, token_mask, model.promptbook(visual, token_mask), left_pad=True)
        codes = model.input_groups(visual, token_mask, left_pad=True)[0]
        out = model.llm.model(inputs_embeds=embeds, attention_mask=mask.long(), output_attentions=True)
    last = torch.stack([a[0, :, -1, :] for a in out.attentions]).double()  # (L, H, T)
    for g in GROUPS:
        expected = float(last[:, :, codes == INPUT_GROUPS.index(g)].sum(dim=-1).mean()) if g != "generated" else 0.0
        assert float(totals.by_step[0][INPUT_GROUPS.index(g)]) == pytest.approx(expected, abs=1e-6)


def _train(tmp_path: Path, preset: str, synthetic_data: Path, *overrides: str) -> Path:
    from mrg.recipes.train import train

    run = tmp_path / "run"
    extra = ["train.max_steps=1", "generate.max_new_tokens=4", *overrides]
    if preset == "two-stage-tiny":
        extra = ["stages.align.train.max_steps=1", "stages.finetune.train.max_steps=1", *extra[1:]]
    train(load_config(preset, training_fixtures.tiny_overrides(synthetic_data, *extra)), run)
    return run


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "overrides", "groups"), [
    ("tiny", ("model.promptbook.mode=none",), ["visual"]),
    ("tiny", ("model.promptbook.mode=static",), ["visual", "prompt"]),
    ("tiny", ("model.promptbook.mode=prompt-wise", "model.encoder.views=concat"), ["visual", "prompt"]),
    ("two-stage-tiny", (), ["visual"]),
])
def test_every_prompt_mode_and_two_stage(tmp_path: Path, synthetic_data, model_cache, preset, overrides, groups) -> None:
    run = _train(tmp_path, preset, synthetic_data, *overrides)
    out = tmp_path / "analysis"
    analyze("prompts", run, out=out, split="val", limit=3)
    analyze("attention", run, out=out, split="val", limit=3, maps=1)
    record = _check_outputs(out, groups)
    if "model.promptbook.mode=static" in overrides:  # one prompt for every study: nothing to correlate
        similarity = record["analyses"]["prompts"]["groups"]["prompt"]["similarity_vs_labels"]
        assert similarity["pearson"] is None and "same for every study" in similarity["note"]
    if preset == "two-stage-tiny":
        assert record["analyses"]["attention"]["inputs"]["stage"] == "finetune"
    assert "mixing" not in record["analyses"]["prompts"]


# -------------------------------------------------------------------------------------------- the command


def test_a_method_without_soft_tokens_gets_a_clear_message(tmp_path: Path, run_cli) -> None:
    from mrg.recipes.train import train

    run = tmp_path / "toy"
    train(training_fixtures.toy_config("train.max_steps=1"), run)
    with pytest.raises(ConfigError, match="method toy .*has no soft tokens to analyze"):
        analyze("prompts", run, out=tmp_path / "a")
    result = run_cli("analyze", "prompts", "--checkpoint", run, "--out", tmp_path / "a")
    assert result.exit_code == 1 and "has no soft tokens to analyze" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["clusters"], "mrg analyze clusters: not an analysis; use prompts or attention"),
    (["prompts", "--split", "dev"], "--split dev: not a split"),
    (["attention", "--study", "nope"], "--study nope: not among the 5 analysed studies"),
    (["prompts", "model.llm.dtype=bfloat16"], "'model.llm.dtype' cannot change at generation"),
    (["prompts", "--limit", "-1"], "--limit -1"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, run_cli, tiny_run, args, message) -> None:
    kind, *rest = args
    result = run_cli("analyze", kind, "--checkpoint", tiny_run, "--out", tmp_path / "a", *rest)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2


def test_out_holding_another_tools_record_is_refused_before_any_work(tmp_path: Path, run_cli, tiny_run) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "analysis.json").write_text('{"format": "other"}', encoding="utf-8")
    result = run_cli("analyze", "prompts", "--checkpoint", tiny_run, "--out", tmp_path / "a")
    assert result.exit_code == 1 and "analysis.json: not an mrg analysis file; choose another --out folder" in result.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["analysis.json"]  # no figure written


def test_chosen_studies_get_the_heat_maps(tmp_path: Path, run_cli, tiny_run) -> None:
    out = tmp_path / "a"
    result = run_cli("analyze", "attention", "--checkpoint", tiny_run, "--out", out, "--limit", "4", "--study", "test-003",
                     "generate.max_new_tokens=3")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "analysis.json").read_text())["analyses"]["attention"]
    assert record["maps"] == ["attention-map-test-003.png"] and len(record["position_counts"]) <= 3
    assert "mass on visual" in result.output


def test_missing_checkpoint(tmp_path: Path, run_cli) -> None:
    result = run_cli("analyze", "prompts", "--checkpoint", tmp_path / "nothing", "--out", tmp_path / "a")
    assert result.exit_code == 1 and "nothing" in result.output and "Traceback" not in result.output


def test_help_names_both_analyses_and_the_options(run_cli) -> None:
    result = run_cli("analyze", "--help")
    assert result.exit_code == 0
    for text in ("prompts", "attention", "--checkpoint", "--split", "--out", "--limit", "--study", "eager"):
        assert text in result.stdout
    assert "analyze" in run_cli("--help").stdout
