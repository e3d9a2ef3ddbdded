"""The typed config tree: presets, overrides, type checks, did-you-mean and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrg.config import (
    RunConfig,
    TrainConfig,
    build_config,
    config_from_dict,
    config_to_dict,
    diff_configs,
    list_presets,
    load_config,
    save_config,
)
from mrg.errors import ConfigError


def test_defaults_validate() -> None:
    cfg = load_config(None, [])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.select == {"bleu_4": 0.5, "cider": 0.5}


def test_overrides_are_typed() -> None:
    cfg = load_config(None, ["train.lr=3e-4", "train.max_steps=7", "data.augment=true",
                             "train.trackers=csv", "model.promptbook.mode=prompt-wise", "model.init_from=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.max_steps == 7
    assert cfg.data.augment is True
    assert cfg.train.trackers == ["csv"]
    assert cfg.model.promptbook.mode == "prompt-wise"
    assert cfg.model.init_from is None


def test_dict_override() -> None:
    cfg = load_config(None, ["train.select={bleu_4: 1.0}"])
    assert cfg.train.select == {"bleu_4": 1.0}


def test_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'.*Did you mean 'lr'"):
        load_config(None, ["train.lrr=1"])


def test_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        load_config(None, ["trian.lr=1"])


def test_wrong_type_names_key_and_type() -> None:
    with pytest.raises(ConfigError, match=r"'train\.micro_batch_size' must be int, got 'four'"):
        load_config(None, ["train.micro_batch_size=four"])
    with pytest.raises(ConfigError, match="one of 'none', 'static'"):
        load_config(None, ["model.promptbook.mode=bookwise"])


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.lrr=1", "generate.num_beamz=2"])
    assert "train.lrr" in str(info.value) and "generate.num_beamz" in str(info.value)


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])


def test_cross_field_validation() -> None:
    with pytest.raises(ConfigError, match="min_new_tokens"):
        load_config(None, ["generate.min_new_tokens=200", "generate.max_new_tokens=100"])
    with pytest.raises(ConfigError, match="init_from"):
        load_config(None, ["model.stage=2"])


def test_yaml_file_and_unknown_key(tmp_path: Path) -> None:
    good = tmp_path / "run.yaml"
    good.write_text("train:\n  lr: 1e-3\n  epochs: 2\nmodel:\n  promptbook:\n    num_tokens: 4\n")
    cfg = load_config(str(good), ["train.epochs=3"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 3
    assert cfg.model.promptbook.num_tokens == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 2\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  epochs: two\n")
    with pytest.raises(ConfigError, match=r"'train\.epochs' must be int"):
        load_config(str(wrong))


def test_empty_and_invalid_yaml(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(str(empty))
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(broken))


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")


@pytest.mark.parametrize("name", list_presets())
def test_every_shipped_preset_loads(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)


def test_roundtrip_and_diff(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=2e-4"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    again = load_config(str(path))
    assert again == cfg
    assert config_from_dict(RunConfig, config_to_dict(cfg)) == cfg
    other = load_config(None, ["train.lr=5e-4", "model.promptbook.num_tokens=4"])
    keys = {key for key, _, _ in diff_configs(cfg, other)}
    assert keys == {"train.lr", "model.promptbook.num_tokens"}


def test_build_config_for_a_section() -> None:
    train = build_config(TrainConfig, {"epochs": 3}, ["lr=0.5"])
    assert train.epochs == 3 and train.lr == 0.5


def test_build_config_does_not_mutate_its_input() -> None:
    data = {"train": {"epochs": 3}}
    build_config(RunConfig, data, ["train.lr=0.5"])
    assert data == {"train": {"epochs": 3}}


def test_a_run_problem_is_not_repeated_for_each_stage() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("trrg-tiny", ["method.classes=[Edma]"])
    assert str(err.value).count("names 'Edma'") == 1 and "stage pretrain" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # a stage's own problem still names the stage
        load_config("trrg-tiny", ["stages.pretrain.train.lr=abc"])
    assert str(err.value) == "stage pretrain: 'train.lr' must be float, got 'abc'"
