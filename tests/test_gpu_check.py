"""benchmarks/gpu_check.py: the no-CUDA exit, the CPU smoke run's figures, the FLOP and memory accounting."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check as module
    finally:
        sys.path.pop(0)
    return module


def test_without_cuda_one_line_and_exit_code_2(python_executable: str) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # hides any GPU, so this holds on a GPU machine too
    done = subprocess.run([python_executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu_check: no CUDA device (")
    assert "needs one recent NVIDIA GPU; run it on a GPU machine, e.g." in lines[0]
    assert "--cpu-smoke" in lines[0]


def test_cpu_smoke_prints_every_figure(gpu_check, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--cpu-smoke", "--peak-tflops", "0.5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    for label in ("samples/s", "tokens/s", "peak memory", "model FLOPs", "MFU", "generation", "LLM coefficient"):
        assert any(line.startswith(label) for line in out), label
    r = json.loads(out[-1])

    lay = r["layout"]
    assert lay["sequence_tokens"] == lay["visual_tokens"] + lay["prompt_tokens"] + lay["template_tokens"] + lay["report_tokens"]
    assert lay["visual_tokens"] == 17  # tiny ViT: 32 px / 8 px patches = 16 + CLS
    assert lay["logit_positions"] == lay["report_tokens"] + 1  # mrg computes logits from the position before the report
    p = r["params"]
    assert p["trainable"] == p["encoder"] + p["projector"] + p["promptbook"]
    assert p["frozen"] == p["llm"]

    assert r["timed_steps"] == 3 and r["micro_batch"] == 2
    assert r["samples_per_s"] == pytest.approx(2 / r["step_seconds_median"])
    assert r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * lay["sequence_tokens"])
    assert r["peak_memory_gib"] is None  # CUDA's allocator statistics only

    # the model-FLOP formula against torch's count of the executed step
    assert 0.98 < r["executed_over_model_flops"] <= 1.0
    assert r["achieved_tflops"] == pytest.approx(r["model_tflop_per_step"] / r["step_seconds_median"])
    assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 0.5)
    assert r["peak_tflops_source"] == "--peak-tflops"

    # what docs/scaling.md assumes a frozen Llama layer keeps for backward
    assert r["llm_activation_coefficient"] == pytest.approx(r["llm_activation_coefficient_formula"], rel=0.05)
    assert r["saved_bytes_per_sample"]["llm_layers"] > 0

    assert r["gen_new_tokens"] == 20 and r["gen_llm_forwards"] == 20  # one LLM forward per greedy step
    assert r["gen_tokens_per_s"] == pytest.approx(2 * 20 / r["gen_seconds"])
    assert all(torch.isfinite(torch.tensor([r["loss_first"], r["loss_last"]])))


def test_llm_flops_formula(gpu_check) -> None:
    shape = {"linear_params": 1000, "head_params": 300, "layers": 2, "attn_width": 8, "seq": 10, "kept": 4}
    forward = gpu_check.llm_forward_flops(**shape)
    assert forward == {"linear": 2 * 1000 * 10, "head": 2 * 300 * 4, "attention": 4 * 2 * 8 * 10 * 10}
    # backward to the inputs: linear maps and the head once more, attention twice
    assert gpu_check.frozen_llm_training_flops(**shape) == 2 * (20000 + 2400) + 3 * 6400
    assert gpu_check.trainable_training_flops(5.0) == 15.0


def test_llm_flops_formula_matches_torch_count_for_a_frozen_llama(gpu_check) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, attn_implementation="sdpa")
    llm = LlamaForCausalLM(config).requires_grad_(False)
    batch = 3
    embeds = torch.randn(batch, 12, 32, requires_grad=True)  # (B, T, D)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        llm(inputs_embeds=embeds, logits_to_keep=5).logits.float().sum().backward()
    shape = gpu_check.llm_shape_counts(llm)
    assert shape == {"linear_params": 2 * (32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64), "head_params": 3200, "layers": 2,
                     "attn_width": 32}
    assert counter.get_total_flops() == batch * gpu_check.frozen_llm_training_flops(**shape, seq=12, kept=5)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", None),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_peak_table(gpu_check, name: str, peak: float | None) -> None:
    assert gpu_check.peak_tflops_for(name)[0] == peak


def test_census_separates_activations_from_autocast_weight_copies(gpu_check) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)  # fp32 weights, trainable
    x = torch.randn(3, 8, requires_grad=True)  # (B, C); its gradient needs the weight, the weight's needs x
    with torch.autocast("cpu", dtype=torch.bfloat16), gpu_check.census({"layer": layer}, []) as saved:
        layer(x).float().sum().backward()
    assert saved == {"layer": 3 * 8 * 2, gpu_check.WEIGHT_COPIES: 4 * 8 * 2}  # bf16 input (for dW), bf16 weight (for dX)

    frozen = nn.Linear(8, 4).requires_grad_(False)
    h = torch.randn(3, 8, requires_grad=True)
    with gpu_check.census({"frozen": frozen}, []) as saved:
        frozen(h).sum().backward()
    assert saved == {}  # a frozen linear map keeps only its weight (a parameter), never its input


def test_mrg_is_called_only_from_the_adapter() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    importers = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mrg":
                    importers.add(function.name)
                if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "mrg" for alias in node.names):
                    importers.add(function.name)
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("mrg" in ast.unparse(node).split() or "mrg." in ast.unparse(node) for node in top_level)
    assert importers == {"build_model_and_batch"}
