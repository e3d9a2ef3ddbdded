"""Token caches: HF tokenizers loaded by path, R2Gen's word vocabulary, length statistics, staleness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrg.data.tokenize import build_r2gen_vocab, length_stats, load_token_cache, tokenize_dataset
from mrg.errors import ConfigError, DataError
from tests.conftest import shared_path
from tests.data.conftest import make_dataset, make_tokenizer


def test_r2gen_vocab_rules() -> None:
    vocab = build_r2gen_vocab(["a b b c .", "b c . d"], threshold=2)
    assert vocab.tokens == [".", "<unk>", "b", "c"]  # count >= 2, plus <unk>, sorted
    assert vocab.unk_id == 2
    assert vocab.encode("b z .") == [0, 3, 2, 1, 0]
    with pytest.raises(ConfigError, match="--threshold"):
        build_r2gen_vocab([], threshold=0)


def test_length_stats() -> None:
    stats = length_stats([10, 20, 30, 100], max_length=25)
    assert stats == {"count": 4, "mean": 40.0, "p95": 89.5, "max": 100, "truncated": 2, "truncated_share": 0.5}
    assert length_stats([], 10)["mean"] is None


def test_r2gen_vocab_cache(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    result = tokenize_dataset(root, vocab="r2gen", threshold=2, max_length=8)
    vocab = json.loads((root / "tokens" / "r2gen-t2.vocab.json").read_text())
    assert vocab["tokens"] == [".", "<unk>", "are", "clear", "heart", "is", "lungs", "no", "normal", "the"]
    assert vocab["bos_id"] == vocab["eos_id"] == vocab["pad_id"] == 0
    cache = load_token_cache(root, result.name)
    # "heart normal . 2 lungs clear ." -> "2. " became a sentence break: "heart normal . lungs clear ."
    tokens = ["<pad>"] + vocab["tokens"]
    assert [tokens[i] for i in cache.ids["train3"][1:-1]] == ["heart", "normal", ".", "lungs", "clear", "."]
    assert cache.ids["train3"][0] == 0 and cache.ids["train3"][-1] == 0
    assert result.meta["stats"]["test"]["unk"] == 2  # "hyperinflated", "cardiomegaly"
    assert cache.lengths("val") == [len("the heart is normal . small effusion .".split()) + 2]
    assert cache.lengths("train") == [12, 10, 10, 8]  # with BOS and EOS
    assert result.meta["stats"]["train"]["truncated"] == 3  # longer than 8
    again = tokenize_dataset(root, vocab="r2gen", threshold=2, max_length=8)
    assert again.skipped


def test_hf_tokenizer_cache_by_path(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    tokenizer = make_tokenizer(tmp_path / "tok")
    result = tokenize_dataset(root, tokenizer=str(tokenizer), max_length=9)
    assert result.name.startswith("tok-") and not result.skipped
    assert (root / "tokens" / f"{result.name}.safetensors").is_file()
    meta = json.loads((root / "tokens" / f"{result.name}.json").read_text())
    assert meta["tokenizer"]["spec"] == str(tokenizer) and len(meta["tokenizer"]["sha256"]) == 64
    cache = load_token_cache(root, result.name)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    for study_id, text in (("train0", "the heart is normal . the lungs are clear ."), ("test1", "cardiomegaly .")):
        expected = tok(text)["input_ids"]
        assert cache.ids[study_id].tolist() == expected and expected[0] == 1 and expected[-1] == 2
    lengths = cache.lengths("train")
    assert result.meta["stats"]["train"]["max"] == max(lengths)
    assert result.meta["stats"]["train"]["truncated"] == sum(n > 9 for n in lengths)
    assert np.isclose(result.meta["stats"]["train"]["mean"], np.mean(lengths))
    assert tokenize_dataset(root, tokenizer=str(tokenizer), max_length=9).skipped
    assert not tokenize_dataset(root, tokenizer=str(tokenizer), max_length=9, force=True).skipped


def test_stale_or_damaged_cache_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    result = tokenize_dataset(root, vocab="r2gen")
    tensors = root / "tokens" / f"{result.name}.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4])
    with pytest.raises(DataError, match="does not match"):
        load_token_cache(root, result.name)
    tokenize_dataset(root, vocab="r2gen", force=True)
    studies = root / "studies.jsonl"
    studies.write_text(studies.read_text().replace("Cardiomegaly", "Cardiomegaly again"))
    with pytest.raises(DataError, match="changed since it was tokenized"):
        load_token_cache(root, result.name)
    with pytest.raises(DataError, match="token cache not found"):
        load_token_cache(root, "nope")


def test_bad_arguments(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match="exactly one"):
        tokenize_dataset(root)
    with pytest.raises(ConfigError, match="--threshold"):
        tokenize_dataset(root, tokenizer="x", threshold=3)
    with pytest.raises(DataError, match="--tokenizer ./missing: folder not found"):
        tokenize_dataset(root, tokenizer="./missing")
    not_a_tokenizer = tmp_path / "empty"
    not_a_tokenizer.mkdir()
    with pytest.raises(DataError, match="cannot load a tokenizer"):
        tokenize_dataset(root, tokenizer=str(not_a_tokenizer))
    with pytest.raises(DataError, match="the train split is empty"):
        tokenize_dataset(make_dataset(tmp_path / "notrain", {"train": [], "val": ["a."], "test": ["b."]}),
                         vocab="r2gen")


@pytest.mark.reference
def test_r2gen_vocabulary_and_lengths_on_iu_xray(tmp_path: Path) -> None:
    """R2Gen's tokenizer on its IU annotation: 760 tokens with <unk>, lengths as measured in data.md §3."""
    from mrg.files import read_json

    annotation = read_json(shared_path("data", "r2gen_iu", "annotation.json"))
    reports = {split: [e["report"] for e in entries] for split, entries in annotation.items()}
    root = make_dataset(tmp_path / "iu", reports)
    result = tokenize_dataset(root, vocab="r2gen")
    assert result.meta["tokenizer"]["vocab_size"] == 760 and result.meta["max_length"] == 60
    stats = result.meta["stats"]
    assert {s: (round(v["mean"], 1), v["max"], v["truncated"]) for s, v in stats.items()} == {
        "train": (38.4, 164, 178), "val": (37.7, 97, 25), "test": (34.5, 108, 33)}
    assert stats["test"]["unk"] == 221
