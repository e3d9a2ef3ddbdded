"""``mrg metrics``: the registry as a table and as JSON, filtered by task."""

from __future__ import annotations

import json


def test_metrics_json_lists_builtin_model_based_and_method_metrics(run_cli) -> None:
    result = run_cli("metrics", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["bleu_4"]["display"] == "BLEU-4" and rows["bleu_4"]["higher_is_better"] is True
    assert rows["ce_f1"]["inputs"] == ["texts", "labels"]
    assert "ratescore" in rows  # a model-based family, registered on import
    assert rows["zero_shot_auroc"]["tasks"] == ["retrieval"]  # registered by the trrg method module
    assert rows["auroc"]["tasks"] == ["label-classification"]  # mrg evaluate on a label-probability CSV


def test_metrics_task_filter_and_unknown_task(run_cli) -> None:
    result = run_cli("metrics", "--task", "retrieval", "--json")
    assert result.exit_code == 0
    assert {row["name"] for row in json.loads(result.stdout)} == {
        "recall_at_1", "recall_at_5", "recall_at_10", "zero_shot_auroc"}
    table = run_cli("metrics", "--task", "retrieval")
    assert table.exit_code == 0 and "recall_at_1" in table.stdout
    bad = run_cli("metrics", "--task", "retreival")
    assert bad.exit_code == 1
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Did you mean 'retrieval'?" in lines[0]
