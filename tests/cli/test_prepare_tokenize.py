"""``mrg prepare tokenize``: the statistics table, the cache files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.data.conftest import make_dataset, make_tokenizer


def test_r2gen_vocab_table(run_cli, tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    result = run_cli("prepare", "tokenize", "--data", root, "--vocab", "r2gen", "--threshold", "2", "--max-length", "8")
    assert result.exit_code == 0, result.output
    for word in ("split", "mean", "p95", "max", "> 8", "<unk>", "train", "val", "test", "3 (75.0%)"):
        assert word in result.stdout
    assert "BOS and EOS" in result.stdout
    assert json.loads((root / "tokens" / "r2gen-t2.vocab.json").read_text())["threshold"] == 2
    again = run_cli("prepare", "tokenize", "--data", root, "--vocab", "r2gen", "--threshold", "2", "--max-length", "8")
    assert "up to date" in " ".join(again.stdout.split())


def test_hf_tokenizer_by_path(run_cli, tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    tokenizer = make_tokenizer(tmp_path / "tok")
    result = run_cli("prepare", "tokenize", "--data", root, "--tokenizer", tokenizer)
    assert result.exit_code == 0, result.output
    caches = sorted(p.name for p in (root / "tokens").iterdir())
    assert len(caches) == 2 and caches[0].startswith("tok-") and caches[1].endswith(".safetensors")
    assert "> 60" in result.stdout  # R2Gen's IU max_seq_length is the default for an r2gen-iu dataset


def _one_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_errors(run_cli, tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    _one_error(run_cli("prepare", "tokenize", "--data", root), "--tokenizer", "--vocab")
    _one_error(run_cli("prepare", "tokenize", "--data", root, "--vocab", "bpe"), "--vocab")
    _one_error(run_cli("prepare", "tokenize", "--data", tmp_path / "none", "--vocab", "r2gen"), str(tmp_path / "none"))
    _one_error(run_cli("prepare", "tokenize", "--data", root, "--vocab", "r2gen", "--max-length", "0"), "--max-length")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / ".mrg-prepare.json").write_text("{}")
    _one_error(run_cli("prepare", "tokenize", "--data", unfinished, "--vocab", "r2gen"), "prepare.json", "re-run")
    assert not (root / "tokens").exists()


@pytest.mark.reference
def test_reference_iu_xray_vocabulary(run_cli, tmp_path: Path) -> None:
    archive = shared_path("data", "openi", "NLMCXR_reports.tgz")
    out = tmp_path / "iu"
    assert run_cli("prepare", "iu-xray", "--out", out, "--source", archive, "--skip-images").exit_code == 0
    result = run_cli("prepare", "tokenize", "--data", out, "--vocab", "r2gen")
    assert result.exit_code == 0, result.output
    vocab = json.loads((out / "tokens" / "r2gen-t3.vocab.json").read_text())
    assert len(vocab["tokens"]) == 760 and "<unk>" in vocab["tokens"]
    assert "760 tokens" in result.stdout
