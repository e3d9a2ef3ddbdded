"""The method registry: lookup, declarations, presets, stage configs, and a method from outside the package end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrg.config import load_config, stage_config
from mrg.errors import ConfigError
from mrg.methods import Method, Stage, get_method, list_methods, method_names, register_method, unregister_method
from tests import toy_method  # noqa: F401  (registers the toy method)


def test_built_in_methods_and_their_stages() -> None:
    names = method_names()
    assert {"mrg-llm", "two-stage", "toy"} <= set(names)
    assert [s.name for s in get_method("mrg-llm").stages] == ["train"]
    two = get_method("two-stage")
    assert [s.name for s in two.stages] == ["align", "finetune"] and two.multi_stage
    assert two.stage("finetune").starts_from == "align"
    assert "two-stage-tiny" in two.presets() and "tiny" in get_method("mrg-llm").presets()
    assert all(isinstance(m, Method) for m in list_methods())


def test_unknown_method_or_stage_suggests() -> None:
    with pytest.raises(ConfigError, match=r"--method two-stag: not a registered method. Did you mean 'two-stage'"):
        get_method("two-stag")
    with pytest.raises(ConfigError, match=r"--stage finetun: method two-stage has no such stage .* Did you mean 'finetune'"):
        get_method("two-stage").stage("finetun")
    with pytest.raises(ConfigError, match=r"model\.method mrgllm: not a registered method.*Did you mean 'mrg-llm'"):
        load_config("tiny", ["model.method=mrgllm"])


def test_a_method_must_declare_consistent_stages() -> None:
    class Broken(Method):
        name = "broken"
        summary = "a stage starting from a later one"
        stages = (Stage("a", "first", trains=("x.*",), starts_from="b"), Stage("b", "second", trains=("x.*",)))

    with pytest.raises(ValueError, match="starts from 'b', not an earlier stage"):
        register_method(Broken())
    assert "broken" not in method_names()


def test_method_options_and_per_stage_settings_are_typed_and_checked() -> None:
    cfg = load_config("two-stage-tiny", ["stages.finetune.train.lr=5e-5", "stages.finetune.train.max_steps=3",
                                         "method.finetune_also=[]"])
    assert cfg.method.finetune_also == [] and cfg.stages == {"finetune": {"train": {"lr": 5e-5, "max_steps": 3}}}
    finetune, align = stage_config(cfg, "finetune"), stage_config(cfg, "align")
    assert (finetune.train.lr, finetune.train.max_steps) == (5e-5, 3)
    assert (align.train.lr, align.train.max_steps) == (cfg.train.lr, cfg.train.max_steps)
    with pytest.raises(ConfigError) as err:
        load_config("two-stage-tiny", ["stages.finetune.train.lr=fast", "method.finetune_also=[decoder]",
                                       "stages.tune.train.lr=1"])
    message = str(err.value)  # every problem in one message
    assert "stage finetune: 'train.lr' must be float, got 'fast'" in message
    assert "'method.finetune_also' must be list[Literal['encoder', 'projector', 'promptbook']], got '[decoder]'" in message
    assert "method two-stage has no stage 'tune'" in message


def test_config_records_the_method_and_rebuilds_from_the_file(tmp_path: Path) -> None:
    from mrg.config import config_from_dict, config_to_dict, save_config

    cfg = load_config("two-stage-tiny", ["stages.finetune.train.lr=5e-5"])
    save_config(cfg, tmp_path / "c.yaml")
    import yaml

    again = config_from_dict(type(cfg), yaml.safe_load((tmp_path / "c.yaml").read_text()))
    assert again == cfg and config_to_dict(again)["model"]["method"] == "two-stage"


def test_the_cli_lists_methods(run_cli) -> None:
    result = run_cli("methods")
    assert result.exit_code == 0 and "mrg-llm" in result.stdout and "two-stage" in result.stdout
    assert "align" in result.stdout and "finetune" in result.stdout
    data = json.loads(run_cli("methods", "--json").stdout)
    two = next(m for m in data if m["name"] == "two-stage")
    assert [s["name"] for s in two["stages"]] == ["align", "finetune"]
    assert two["stages"][1]["starts_from"] == "align" and "finetune_also" in two["options"]
    assert "two-stage-iu-xray" in two["presets"]


def test_a_method_from_a_test_module_trains_generates_and_evaluates_through_the_cli(run_cli, tmp_path: Path) -> None:
    """The toy method lives in tests/: nothing in the loop, the CLI, generate or evaluate knows it."""
    run = tmp_path / "run"
    common = ["train.micro_batch_size=2", "train.max_steps=2", "train.val_every=-1", "train.trackers=csv",
              "train.precision=fp32", "generate.strategy=greedy", "generate.batch_size=2"]
    result = run_cli("train", "--method", "toy", "--out", run, *common)
    assert result.exit_code == 0, result.output
    assert "toy, stage train" in result.stdout and (run / "step-000002" / "meta.json").is_file()
    meta = json.loads((run / "step-000002" / "meta.json").read_text())
    assert (meta["method"], meta["stage"], meta["finished"]) == ("toy", "train", True)

    predictions = tmp_path / "test.jsonl"
    result = run_cli("generate", "--checkpoint", run, "--split", "test", "--out", predictions)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert len(rows) == 5 and all(r["prediction"] and r["reference"] for r in rows)
    assert json.loads(predictions.with_name("test.jsonl.meta.json").read_text())["model"]["method"] == "toy"

    result = run_cli("evaluate", "--predictions", predictions, "--out", tmp_path / "eval", "--no-meteor")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["bleu_4"] <= 1 and "ce_f1" in metrics


def test_registering_a_name_twice_needs_replace() -> None:
    class Other(toy_method.ToyMethod):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method(Other())
    register_method(Other(), replace=True)
    try:
        assert isinstance(get_method("toy"), Other)
    finally:
        register_method(toy_method.TOY, replace=True)
    unregister_method("no-such-method")  # a no-op


def test_training_batches_take_report_ids_from_the_prepare_tokenize_cache(tmp_path: Path) -> None:
    from mrg.data.dataset import ReportCollator, report_tensors
    from mrg.data.tokenize import tokenize_dataset
    from mrg.model.random_models import resolve_model_path
    from tests.builders import build_model
    from tests.training_fixtures import tiny_overrides, write_fixture_dataset

    data = write_fixture_dataset(tmp_path / "data", {"train": 4, "val": 2, "test": 1})
    cfg = load_config("tiny", tiny_overrides(data))
    method = get_method("mrg-llm")
    model = build_model(cfg)
    without = method.collate(cfg, method.stages[0], model)
    assert isinstance(without, ReportCollator) and not without.token_ids

    tokenize_dataset(data, tokenizer=resolve_model_path(cfg.model.llm.name_or_path))
    cached = method.collate(cfg, method.stages[0], model)
    assert set(cached.token_ids) == {f"{s}-{i:03d}" for s, n in (("train", 4), ("val", 2), ("test", 1)) for i in range(n)}
    items = [method.datasets(cfg, method.stages[0], model, ("train",))["train"][i] for i in range(4)]
    batch = cached(items)
    assert cached.cache_hits == 4
    fresh = report_tensors(model.tokenizer, [item["report"] for item in items], cfg.model.max_report_tokens)
    assert batch["report_ids"].tolist() == fresh["report_ids"].tolist()  # the cache holds exactly what training makes
    assert batch["num_target_tokens"] == fresh["num_target_tokens"]
    # another cleaning than the cache's: training tokenizes itself
    other = load_config("tiny", tiny_overrides(data, "data.normalize=none"))
    assert not method.collate(other, method.stages[0], model).token_ids
