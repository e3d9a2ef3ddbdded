"""random:<kind> specs: deterministic tiny models saved once and loaded by path like hub checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from mrg.errors import ConfigError
from mrg.model.random_models import (
    ENCODER_KINDS,
    LLM_KINDS,
    RADIOLOGY_CORPUS,
    cache_root,
    is_random_spec,
    materialize,
    parse_spec,
    resolve_model_path,
)


def test_specs_parse_with_overrides() -> None:
    kind, fields = parse_spec("random:vit?image_size=32&hidden_size=48")
    assert kind == "vit" and fields["image_size"] == 32 and fields["hidden_size"] == 48
    assert is_random_spec("random:llama") and not is_random_spec("microsoft/swin-base-patch4-window7-224")
    assert resolve_model_path("/some/folder") == "/some/folder"
    with pytest.raises(ConfigError, match="unknown random model kind 'vitt'"):
        parse_spec("random:vitt")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_spec("random:vit?image_size")


def test_materialised_once_into_the_cache(random_model_cache) -> None:
    first = materialize("random:vit")
    assert first.parent == cache_root() and str(first).startswith(str(random_model_cache))
    stamp = json.loads((first / "mrg-random.json").read_text())
    assert stamp["kind"] == "vit"
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert materialize("random:vit") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert materialize("random:vit?hidden_size=48") != first


def test_same_spec_same_weights(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    a = load_file(str(materialize("random:llama") / "model.safetensors"))
    monkeypatch.setenv("MRG_CACHE_DIR", str(tmp_path))
    b = load_file(str(materialize("random:llama") / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tokenizer_is_a_small_radiology_bpe() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(materialize("random:llama"))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert tok.chat_template is None
    text = RADIOLOGY_CORPUS[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split())  # every corpus word is one token
    assert tok(text)["input_ids"][0] == tok.bos_token_id  # adds BOS like Llama's tokenizer
    assert tok.decode(ids).strip() == text
    unusual = "pneumomediastinum with subcutaneous emphysema"
    assert tok.decode(tok(unusual, add_special_tokens=False)["input_ids"]).strip() == unusual  # byte-level: no <unk>
    chat = AutoTokenizer.from_pretrained(materialize("random:llama-chat"))
    assert chat.chat_template
    no_bos = AutoTokenizer.from_pretrained(materialize("random:llama?bos=false"))
    assert no_bos.bos_token is None


def test_every_kind_is_known() -> None:
    assert {"vit", "swin", "resnet", "convnext", "dinov2", "clip", "siglip"} <= set(ENCODER_KINDS)
    assert {"llama", "llama-chat"} <= set(LLM_KINDS)


def test_building_a_random_model_leaves_the_callers_random_state(tmp_path, monkeypatch) -> None:
    import torch

    from mrg.model.random_models import materialize

    monkeypatch.setenv("MRG_CACHE_DIR", str(tmp_path))
    torch.manual_seed(5)
    materialize("random:vit?hidden_size=24")  # built here
    built = torch.rand(3)
    torch.manual_seed(5)
    materialize("random:vit?hidden_size=24")  # found in the cache
    assert torch.equal(torch.rand(3), built)


def test_a_rank_other_than_0_writes_a_complete_model(tmp_path, monkeypatch) -> None:
    """transformers 5 skips save_pretrained's writes on ranks other than 0 (CI caught empty cached models)."""
    mixin = pytest.importorskip("transformers.distributed.mixin")
    monkeypatch.setenv("MRG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    for spec in ("random:vit", "random:llama"):
        folder = materialize(spec)
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file(), spec


def test_a_cached_folder_without_its_model_is_rebuilt(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MRG_CACHE_DIR", str(tmp_path))
    folder = materialize("random:vit")
    (folder / "config.json").unlink()
    (folder / "model.safetensors").unlink()
    assert materialize("random:vit") == folder
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
