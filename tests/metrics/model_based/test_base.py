"""Options, devices, weights resolution, the missing-weights error, the skip reason and the text cache."""

from __future__ import annotations

import numpy as np
import pytest

from mrg.errors import ConfigError, MetricError
from mrg.metrics.model_based import FAMILIES, Family, ModelMetricOptions, unavailable_reason
from mrg.metrics.model_based.base import (
    CachedRunner,
    HubFile,
    TextCache,
    pack_array,
    parse_hub_spec,
    resolve_device,
    resolve_weights,
    text_key,
    unpack_array,
    weights_sha256,
)


def test_options_defaults_match_the_interface() -> None:
    options = ModelMetricOptions(weights=None)
    assert (options.device, options.batch_size, options.cache_dir) == ("auto", 32, None)


def test_device_names() -> None:
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_hub_spec_parsing() -> None:
    assert parse_hub_spec("StanfordAIMI/RRG_scorers/chexbert.pth") == HubFile("StanfordAIMI/RRG_scorers", "chexbert.pth")
    assert parse_hub_spec("distilbert/distilroberta-base") == HubFile("distilbert/distilroberta-base")
    assert parse_hub_spec("chexbert.pth") is None
    assert parse_hub_spec("/abs/path/x") is None


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_missing_weights_is_one_line_naming_the_hub_file_and_option(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))  # nothing cached
    with pytest.raises(MetricError) as err:
        FAMILIES[name].score(["no effusion"], ["no effusion"], ModelMetricOptions(None, "cpu", 4, str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message
    assert "eval.weights." in message and "(offline)" in message and "hub repository" in message
    repo = FAMILIES[name].default_weights.split(",")[0].split("/")
    assert "/".join(repo[:2]) in message


def test_missing_weights_names_the_file_for_chexbert(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(MetricError) as err:
        FAMILIES["chexbert"].score(["a"], ["b"], ModelMetricOptions(None, "cpu", 4, str(tmp_path)))
    assert str(err.value) == (
        "eval.weights.chexbert: no weights found (offline); download chexbert.pth from the hub repository "
        "StanfordAIMI/RRG_scorers (file chexbert.pth) and pass eval.weights.chexbert=/path/to/chexbert.pth"
    )


def test_a_missing_local_path_is_named(tmp_path) -> None:
    with pytest.raises(MetricError, match=r"eval.weights.chexbert=\./nope/chexbert.pth: no such file or folder"):
        resolve_weights("eval.weights.chexbert", "./nope/chexbert.pth", HubFile("a/b", "c"), "chexbert.pth", "/p")


def test_unavailable_reason_names_the_extra_and_the_missing_package() -> None:
    fake = Family("fake", (), "x/y", ("torch", "no_such_package_mrg"), lambda p, r, o: None)  # type: ignore[arg-type,return-value]
    assert unavailable_reason(fake) == "needs pip install 'mrg[clinical]' (missing: no_such_package_mrg)"
    for family in FAMILIES.values():
        assert unavailable_reason(family) is None


def test_pack_array_round_trips_float32() -> None:
    values = np.random.default_rng(0).standard_normal(37).astype(np.float32)
    assert np.array_equal(unpack_array(pack_array(values)), values)


def test_cache_shards_are_merged_and_shared_by_writers(tmp_path) -> None:
    writers = [TextCache(tmp_path, "fam", "comp", "f" * 64) for _ in range(2)]
    for round_ in range(20):  # two interleaved writers, one shard each per flush
        for index, cache in enumerate(writers):
            cache.put(text_key(f"{round_}-{index}"), [round_, index])
            cache.flush()
    folder = writers[0].folder
    assert folder is not None and len(list(folder.glob("*.jsonl"))) <= 17
    assert not list(folder.glob(".*.tmp"))
    reader = TextCache(tmp_path, "fam", "comp", "f" * 64)
    assert all(reader.get(text_key(f"{r}-{i}")) == [r, i] for r in range(20) for i in range(2))
    assert TextCache(tmp_path, "fam", "comp", "e" * 64).get(text_key("0-0")) is None  # other weights


def test_runner_dedups_batches_and_caches(tmp_path) -> None:
    seen: list[list[str]] = []

    def compute(texts: list[str]) -> list[int]:
        seen.append(list(texts))
        return [len(t) for t in texts]

    texts = ["bb", "a", "bb", "ccc", "a", "dddd", "e"]
    first = CachedRunner(TextCache(tmp_path, "f", "c", "0" * 64), compute, batch_size=2)
    assert first.run(texts) == [2, 1, 2, 3, 1, 4, 1]
    assert [len(b) for b in seen] == [2, 2, 1] and seen[0] == ["dddd", "ccc"]  # distinct, longest first
    again = CachedRunner(TextCache(tmp_path, "f", "c", "0" * 64), compute, batch_size=2)
    assert again.run(texts) == [2, 1, 2, 3, 1, 4, 1]
    assert again.calls == 0 and again.cached == 5 and len(seen) == 3


def test_weights_sha_is_remembered_and_changes_with_the_bytes(tmp_path) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"abc")
    first = weights_sha256([file], tmp_path)
    assert (tmp_path / "weights-sha256.json").is_file()
    assert weights_sha256([file], tmp_path) == first
    file.write_bytes(b"abd")
    assert weights_sha256([file], tmp_path) != first


def test_the_rexrank_columns_are_all_registered_metrics() -> None:
    from mrg.metrics.registry import get_metric
    from mrg.recipes.benchmark import COLUMN_SETS

    displays = [get_metric(name).display for name in COLUMN_SETS["rexrank"]]  # raises for an unknown name
    assert displays[-2:] == ["RaTEScore", "GREEN"]
