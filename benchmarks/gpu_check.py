"""GPU readiness check: bf16 training steps and greedy generation of MRG-LLM at ~1B scale, on one GPU.

    python benchmarks/gpu_check.py                      # one recent NVIDIA GPU; sized for under 5 minutes (untimed)
    python benchmarks/gpu_check.py --micro-batch 16 --gradient-checkpointing
    python benchmarks/gpu_check.py --llm-shape llama2-7b --encoder swin-b --micro-batch 6   # check docs/scaling.md
    python benchmarks/gpu_check.py --cpu-smoke          # the same code path, tiny models, CPU, seconds

What runs: the report model of the ``mrg-llm`` method (``mrg.model.build.build_report_model``) with random weights: a ViT-B/16 (224 px,
trainable, fp32 master weights), the linear projector, the promptbook-wise MRG-LLM promptbook (L = N = 8,
H = 512) and a frozen random Llama in bf16 (``--llm-shape 1b``: hidden 2048, 16 layers, 16 heads with 4
key/value heads (GQA), MLP 8192, vocabulary 32000: 1.10 B parameters). Attention is flash_attention_2 when
the ``flash_attn`` package is importable, else PyTorch SDPA (``--attn`` to choose). Nothing is downloaded:
the backbones are ``random:<kind>`` specs that mrg builds and saves once (under ``--cache-dir``, by default
a temporary folder removed at exit; the 1b LLM takes 4.4 GB there in fp32).

1. Training: ``--warmup`` then ``--steps`` timed steps on one fixed micro-batch: bf16 autocast forward,
   backward, gradient clipping and AdamW (torch's default implementation, as ``mrg train``) on the
   trainable parts. Reported: median step time, samples/s, tokens/s (LLM input positions: visual +
   prompt + template + report tokens), target tokens/s (report tokens + EOS), peak memory
   (``torch.cuda.max_memory_allocated`` over the timed steps) and the model FLOPs utilisation (MFU).
2. Generation: greedy decoding with the KV cache of ``--gen-tokens`` (20) new tokens per study for the
   same micro-batch (EOS suppressed so every study decodes all of them). Reported: end-to-end tokens/s
   (encoder, prefill and decoding), the prefill time (one new token) and the decode time per step.
3. Census of the activations kept for backward (``torch.autograd.graph.saved_tensors_hooks`` during one
   training forward), per part and per sample, and for the LLM as bytes per token per layer per hidden
   unit: the coefficient that ``docs/scaling.md`` uses (34 in Korthikanti et al.'s notation).

Model FLOPs of one training step (per study; the MFU counts these, never recomputation):

* Frozen LLM, forward: ``2 N_lin T + 2 V D K + 4 n_layers d_attn T^2`` with N_lin the weights of the
  decoder layers' linear maps, T the input length, V D the output head, applied to the K positions whose
  logits the loss needs (mrg keeps only those), d_attn = heads x head_dim. Attention is counted over the
  full T x T square, as PaLM's MFU and torch's FlopCounterMode count it; a causal kernel does about half
  of that work (attention is under 2% of the total at the default sizes).
* Frozen LLM, backward to its inputs (no weight gradients): each linear map costs its forward once more
  (dX = dY W^T, 2N per token; dW is never formed) and attention twice its forward (four products: dV, dP,
  dQ, dK against two), so forward + backward = ``4 N_lin T + 4 V D K + 12 n_layers d_attn T^2``.
* Trainable encoder + projector + promptbook: 3 x their forward (backward forms both dX and dW: 6N per
  token for a linear map). Their forward FLOPs are counted with ``torch.utils.flop_counter`` on the real
  modules, so Swin's windowed attention and stage-wise token counts come out right; for ViT-B/16 it equals
  ``2 N_lin 197 + 2 N_patch 196 + 4 x 12 x 768 x 197^2`` per image.

``MFU = model FLOPs per step / median step time / peak dense bf16 FLOP/s of the card``. Peaks (dense,
no sparsity, TFLOP/s): A100 312, H100 SXM 989, H100 PCIe 756, H200 989, L4 121, RTX 4090 165 (the card is
recognised from ``torch.cuda.get_device_name()``; ``--peak-tflops`` overrides, and an unknown card gets no
MFU). As a check on the formula the whole training step is also counted with FlopCounterMode
("executed FLOPs"): the two agree to about 1% (the ViT's patch embedding forms no input gradient);
executed exceeds model FLOPs with gradient checkpointing (recomputation), and flash_attn kernels are
invisible to the counter.

Every figure is printed, then one final JSON line with all of them. Without a CUDA device (and without
``--cpu-smoke``) the script prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

EXIT_NO_CUDA = 2
EXIT_FAILED = 1

# Llama-architecture shapes of the frozen random LLM (fields of transformers' LlamaConfig).
LLM_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 16,
           "num_key_value_heads": 4, "vocab_size": 32000},
    "llama2-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 32, "vocab_size": 32000},
    "llama2-13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
                   "num_key_value_heads": 40, "vocab_size": 32000},
}
# Vision backbones (random:<kind> specs of mrg.model.random_models) and their input size in pixels.
ENCODERS: dict[str, tuple[str, int]] = {
    "tiny-vit": ("random:vit?image_size=32&patch_size=8&hidden_size=32&num_hidden_layers=2&num_attention_heads=2"
                 "&intermediate_size=64", 32),
    "vit-b": ("random:vit?image_size=224&patch_size=16&hidden_size=768&num_hidden_layers=12&num_attention_heads=12"
              "&intermediate_size=3072", 224),
    "swin-b": ("random:swin?image_size=224&patch_size=4&embed_dim=128&depths=[2,2,18,2]&num_heads=[4,8,16,32]"
               "&window_size=7", 224),
}
# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity), matched against the device
# name in order; None: a card whose peak this table does not know (pass --peak-tflops).
PEAK_BF16_TFLOPS: tuple[tuple[str, float | None], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100 NVL", None),
    (r"H100", 989.0),  # SXM
    (r"H200", 989.0),
    (r"A100", 312.0),
    (r"\bL4\b", 121.0),
    (r"RTX 4090", 165.0),
)
GIB = 1024**3

# Report text for the synthetic batch: ordinary report words, long enough to fill any report length.
REPORT_WORDS = (
    "the heart size is normal . the lungs are clear . there is no pleural effusion or pneumothorax . "
    "mild degenerative changes of the thoracic spine . no focal consolidation . stable cardiomediastinal silhouette ."
).split()


# ------------------------------------------------------------------------------------------ the mrg adapter


@dataclass
class Workload:
    """What the benchmark needs from mrg: a model on the device, one batch, and three closures over them."""

    model: Any
    """The whole report model (``torch.nn.Module``), trainable parts marked with ``requires_grad``."""
    llm: Any
    """The frozen Hugging Face causal LM inside it (hooked to read the input length and count decode steps)."""
    parts: dict[str, Any]
    """Named sub-modules for the parameter count and the activation census: encoder, projector, promptbook, llm."""
    layout: dict[str, int]
    """Tokens per study as mrg lays them out: visual, prompt, template, report (EOS included)."""
    loss: Callable[[], Any]
    """One training forward on the batch -> scalar loss."""
    front: Callable[[], Any]
    """The trainable front alone (encoder, projector, promptbook) on the batch -> prompt tokens."""
    generate: Callable[[int], None]
    """Greedy decoding of exactly n new tokens for every study of the batch (KV cache)."""


def build_model_and_batch(
    *,
    llm_spec: str,
    encoder_spec: str,
    image_size: int,
    micro_batch: int,
    report_tokens: int,
    attn: str,
    gradient_checkpointing: bool,
    promptbook: dict[str, int],
    device: Any,
) -> Workload:
    """THE ADAPTER: every call into mrg is in this function; the rest of the script is plain torch.

    Builds the report model through mrg's config and its method (``stage_model``: the code path of ``mrg train``), a
    micro-batch of ``micro_batch`` single-view studies with random pixels and reports long enough to be cut
    to ``report_tokens`` tokens (EOS included), and the closures of ``Workload``. Update this function when
    mrg's model-building or batch API changes.
    """
    import torch

    from mrg.config import GenerateConfig, load_config
    from mrg.methods import get_method
    from mrg.model.trainable import stage_model

    cfg = load_config(None, [
        f"model.encoder.name_or_path={encoder_spec}",
        "model.encoder.trainable=full",
        f"model.llm.name_or_path={llm_spec}",
        "model.llm.dtype=bfloat16",
        f"model.llm.attn_implementation={attn}",
        f"model.llm.gradient_checkpointing={str(gradient_checkpointing).lower()}",
        "model.llm.chat_template=r2gengpt",  # the paper presets' template
        "model.promptbook.mode=promptbook-wise",
        *(f"model.promptbook.{key}={value}" for key, value in promptbook.items()),
        f"model.max_report_tokens={report_tokens}",
        f"data.image_size={image_size}",
        "data.max_views=1",
        "train.precision=bf16",
    ])
    method = get_method(cfg.model.method)
    stage = method.stages[0]
    model = stage_model(method, cfg, stage).to(device)
    report = " ".join(REPORT_WORDS[i % len(REPORT_WORDS)] for i in range(2 * report_tokens))
    generator = torch.Generator().manual_seed(0)
    items = [
        {"id": f"study-{i}", "pixel_values": torch.randn(1, 3, image_size, image_size, generator=generator), "report": report}
        for i in range(micro_batch)
    ]
    batch = method.collate(cfg, stage, model)(items)  # studies + report tokens, as training batches are
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    gen_cfg = {"strategy": "greedy", "repetition_penalty": 1.0}

    def loss() -> Any:
        return model(batch).loss

    def front() -> Any:
        visual, token_mask = model.visual_tokens(batch)  # (B, M, D)
        return model.promptbook(visual, token_mask)  # (B, L, D)

    def generate(new_tokens: int) -> None:
        model.generate(batch, GenerateConfig(**gen_cfg, min_new_tokens=new_tokens, max_new_tokens=new_tokens))

    layout = {
        "visual_tokens": model.encoder.num_tokens(image_size, 1),
        "prompt_tokens": model.promptbook.num_tokens,
        "template_tokens": model.llm.template.num_text_tokens,
        "report_tokens": report_tokens,
    }
    parts = {"encoder": model.encoder, "projector": model.projector, "promptbook": model.promptbook, "llm": model.llm.model}
    return Workload(model=model, llm=model.llm.model, parts=parts, layout=layout, loss=loss, front=front, generate=generate)


# ------------------------------------------------------------------------------------------ FLOP accounting


def llm_forward_flops(*, linear_params: int, head_params: int, layers: int, attn_width: int, seq: int, kept: int) -> dict[str, float]:
    """Forward FLOPs of the LLM for one sequence: linear maps on T tokens, the head on K, T x T attention."""
    return {
        "linear": 2.0 * linear_params * seq,
        "head": 2.0 * head_params * kept,
        "attention": 4.0 * layers * attn_width * seq * seq,
    }


def frozen_llm_training_flops(**shape: int) -> float:
    """Forward + backward to the inputs of a frozen LLM for one sequence (see the module docstring).

    Backward to the inputs costs each linear map (and the head) its forward once more, attention twice.
    """
    forward = llm_forward_flops(**shape)
    return 2.0 * (forward["linear"] + forward["head"]) + 3.0 * forward["attention"]


def trainable_training_flops(forward_flops: float) -> float:
    """Forward + backward (dX and dW) of trainable modules: three times their forward."""
    return 3.0 * forward_flops


def llm_shape_counts(llm: Any) -> dict[str, int]:
    """Weights of the decoder layers' linear maps, of the output head, layer count and attention width."""
    from torch import nn

    head = llm.get_output_embeddings()
    linear = sum(m.weight.numel() for m in llm.modules() if isinstance(m, nn.Linear) and m is not head)
    config = llm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "linear_params": linear,
        "head_params": head.weight.numel(),
        "layers": config.num_hidden_layers,
        "attn_width": config.num_attention_heads * head_dim,
    }


def peak_tflops_for(device_name: str) -> tuple[float | None, str]:
    """The dense bf16 peak of a card from its name, and where the figure comes from."""
    for pattern, value in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return value, f"table ({pattern})" if value is not None else "unknown card"
    return None, "unknown card"


def frozen_llama_layer_coefficient(*, hidden: int, intermediate: int, heads: int, kv_heads: int, gqa_in_kernel: bool) -> float:
    """Bytes kept for backward per token per layer per hidden unit, frozen bf16 Llama layer, SDPA/flash attention.

    What autograd keeps when the weights are frozen (a linear map needs W, not its input, for dX): the fp32
    upcast of each RMSNorm input (2 x 4), the attention kernel's q, k, v and output in bf16 (2 each; k and v
    at the key/value heads' width when the kernel does GQA itself), its fp32 log-sum-exp (4 per head), and
    the MLP's gate output, SiLU output and up output (3 x 2 x intermediate / hidden).
    """
    kv = 2 * 2 * (kv_heads / heads if gqa_in_kernel else 1.0)
    return 8.0 + 4.0 + kv + 4.0 * heads / hidden + 6.0 * intermediate / hidden


# ------------------------------------------------------------------------------------------ measurement


WEIGHT_COPIES = "weight_copies"
"""The census entry for autocast's bf16 copies of fp32 weights: kept once per step, whatever the batch."""


def _is_weight_copy(tensor: Any) -> bool:
    """Whether a saved tensor is (a view of) a dtype cast of a parameter: autocast's weight copy."""
    base = tensor._base if tensor._base is not None else tensor  # a matmul saves the cast weight transposed
    fn = base.grad_fn
    if type(fn).__name__ != "ToCopyBackward0":
        return False
    from torch import nn

    # AccumulateGrad nodes end the graph at leaves; a parameter is the leaf that makes it a weight copy
    return any(isinstance(getattr(nxt, "variable", None), nn.Parameter) for nxt, _ in fn.next_functions)


@contextmanager
def census(parts: dict[str, Any], layers: Any) -> Any:
    """Count the bytes autograd keeps for backward, by the part whose forward saved them.

    Storages are counted once (a tensor saved by two ops, or views of one buffer) and parameters not at all
    (they are weights, not activations); autocast's bf16 copies of fp32 weights are counted apart
    (``WEIGHT_COPIES``), since they do not grow with the batch. Tensors saved outside every part (the
    sequence layout and the loss in the report model's forward) count as ``loss_and_layout``. Yields a
    dict part -> bytes, filled when the block ends.
    """
    import torch

    totals: dict[str, int] = {}
    seen: set[int] = set()
    weights = {p.untyped_storage().data_ptr() for module in parts.values() for p in module.parameters()}
    stack: list[str] = []
    handles = []

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            stack.append(name)
        return hook

    def leave(*_: Any) -> None:
        stack.pop()

    named = list(parts.items()) + [("llm_layers", layer) for layer in layers]
    for name, module in named:
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in seen and pointer not in weights:
            seen.add(pointer)
            part = WEIGHT_COPIES if _is_weight_copy(tensor) else stack[-1] if stack else "loss_and_layout"
            totals[part] = totals.get(part, 0) + storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield totals
    finally:
        for handle in handles:
            handle.remove()


class Clock:
    """Wall time of a block, synchronising the GPU first and last so queued kernels are included."""

    def __init__(self, device: Any) -> None:
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextmanager
    def __call__(self, into: list[float]) -> Any:
        self.sync()
        started = time.perf_counter()
        yield
        self.sync()
        into.append(time.perf_counter() - started)


def check_cuda() -> tuple[bool, str]:
    """Whether a CUDA device with bf16 is usable, and if not, the one line that says why."""
    import torch

    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif not torch.cuda.is_available():
        reason = "torch.cuda.is_available() is False (no driver or CUDA_VISIBLE_DEVICES hides every GPU)"
    elif not torch.cuda.is_bf16_supported():
        return False, (
            f"gpu_check: {torch.cuda.get_device_name()} has no bf16 support; gpu_check needs one recent NVIDIA GPU "
            "(Ampere or newer: A100, L4, RTX 30xx/40xx, H100, H200)"
        )
    else:
        return True, ""
    return False, (
        f"gpu_check: no CUDA device ({reason}): gpu_check needs one recent NVIDIA GPU; run it on a GPU machine, "
        "e.g. `python benchmarks/gpu_check.py` on an A100, H100 or L4 with a CUDA build of torch "
        "(--cpu-smoke runs the code path on this CPU with tiny models)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="Run on the CPU with tiny models (default shapes tiny/tiny-vit, micro-batch 2, 3 steps).")
    parser.add_argument("--llm-shape", choices=sorted(LLM_SHAPES), help="Frozen LLM shape (default: 1b; tiny with --cpu-smoke).")
    parser.add_argument("--llm-layers", type=int, help="Override the LLM's number of layers (e.g. 1 for a per-layer census).")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), help="Vision backbone (default: vit-b; tiny-vit with --cpu-smoke).")
    parser.add_argument("--micro-batch", type=int, help="Studies per step (default: 8, mrg's IU X-ray preset; 2 with --cpu-smoke).")
    parser.add_argument("--steps", type=int, help="Timed training steps (default: 20; 3 with --cpu-smoke).")
    parser.add_argument("--warmup", type=int, help="Untimed training steps first (default: 3; 1 with --cpu-smoke).")
    parser.add_argument("--report-tokens", type=int, default=100,
                        help="Report tokens per study, EOS included (default: 100, mrg's MIMIC-CXR preset).")
    parser.add_argument("--gen-tokens", type=int, default=20, help="New tokens per study in the generation check (default: 20).")
    parser.add_argument("--gen-repeats", type=int, default=3, help="Timed generation calls per length (median; default: 3).")
    parser.add_argument("--attn", choices=["auto", "sdpa", "flash_attention_2", "eager"], default="auto",
                        help="LLM attention kernel (auto: flash_attention_2 when flash_attn is importable, else sdpa).")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="Recompute the LLM's activations in backward.")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="Gradient clipping as in mrg's presets (0: none).")
    parser.add_argument("--peak-tflops", type=float, help="Peak dense bf16 TFLOP/s of the card for the MFU (default: from the table).")
    parser.add_argument("--cache-dir", help="Where random models are built (default: $MRG_CACHE_DIR, else a temporary folder).")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    defaults = {"llm_shape": "tiny" if smoke else "1b", "encoder": "tiny-vit" if smoke else "vit-b",
                "micro_batch": 2 if smoke else 8, "steps": 3 if smoke else 20, "warmup": 1 if smoke else 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("micro_batch", "steps", "report_tokens", "gen_tokens", "gen_repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.report_tokens < 2:
        parser.error("--report-tokens must be at least 2 (report tokens plus the EOS)")
    if args.warmup < 0 or (args.llm_layers is not None and args.llm_layers < 1):
        parser.error("--warmup must be at least 0 and --llm-layers at least 1")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error(f"--peak-tflops must be positive, got {args.peak_tflops}")
    return args


def llm_spec_for(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    """The ``random:llama`` spec of the chosen shape (Llama's 0.02 init, room for the longest sequence)."""
    fields = dict(LLM_SHAPES[args.llm_shape])
    if args.llm_layers is not None:
        fields["num_hidden_layers"] = args.llm_layers
    fields["max_position_embeddings"] = 4096
    query = "&".join(f"{key}={value}" for key, value in fields.items())
    return f"random:llama?{query}&initializer_range=0.02", fields


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, train, generate; returns every figure (the JSON line)."""
    import torch
    import transformers
    from torch.utils.flop_counter import FlopCounterMode

    started = time.perf_counter()
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    attn = args.attn
    flash_attn = importlib.util.find_spec("flash_attn") is not None
    if attn == "auto":
        attn = "flash_attention_2" if flash_attn and device.type == "cuda" else "sdpa"
    llm_spec, llm_fields = llm_spec_for(args)
    encoder_spec, image_size = ENCODERS[args.encoder]
    promptbook = {"num_tokens": 4, "book_size": 4, "hidden_size": 32} if args.llm_shape == "tiny" else \
        {"num_tokens": 8, "book_size": 8, "hidden_size": 512}
    torch.manual_seed(0)
    work = build_model_and_batch(
        llm_spec=llm_spec, encoder_spec=encoder_spec, image_size=image_size, micro_batch=args.micro_batch,
        report_tokens=args.report_tokens, attn=attn, gradient_checkpointing=args.gradient_checkpointing,
        promptbook=promptbook, device=device,
    )
    build_seconds = time.perf_counter() - started
    model, llm = work.model, work.llm
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in work.parts.items()}
    params["trainable"] = sum(p.numel() for p in trainable)
    params["frozen"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    layers = getattr(getattr(llm, "model", llm), "layers", [])
    cuda = device.type == "cuda"
    weights_bytes = torch.cuda.memory_allocated() if cuda else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    # FlopCounterMode cannot see the CPU's fused attention kernel; the math kernel is counted op by op
    def counted_attention() -> Any:
        return torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH) if not cuda else nullcontext()

    # what the LLM is fed: the input length T and the positions K whose logits are computed; decode steps
    seen: dict[str, int] = {"calls": 0}

    def watch(_module: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
        seen["calls"] += 1
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:
            seen["seq"], seen["kept"] = int(embeds.shape[1]), int(output.logits.shape[1])

    watcher = llm.register_forward_hook(watch, with_kwargs=True)

    # probe steps outside the timed loop: the input layout with the activation census, then the FLOP counts
    model.train()
    with autocast, census(work.parts, layers) as saved:
        probe_loss = work.loss()
    probe_loss.backward()
    model.zero_grad(set_to_none=True)
    with counted_attention(), FlopCounterMode(display=False) as step_counter:
        with autocast:
            probe_loss = work.loss()
        probe_loss.backward()
    model.zero_grad(set_to_none=True)
    with counted_attention(), autocast, FlopCounterMode(display=False) as front_counter:
        work.front()
    front_forward = front_counter.get_total_flops() / args.micro_batch
    del probe_loss
    seq, kept = seen["seq"], seen["kept"]
    shape = llm_shape_counts(llm)
    llm_flops = frozen_llm_training_flops(**shape, seq=seq, kept=kept)
    model_flops = args.micro_batch * (llm_flops + trainable_training_flops(front_forward))
    executed_flops = float(step_counter.get_total_flops())
    if args.gradient_checkpointing:  # checkpointing keeps only layer inputs; its recomputed saves bypass the hooks
        saved = {}
    parts_in_order = ("encoder", "projector", "promptbook", "llm_layers", "llm", "loss_and_layout")
    per_sample = {part: saved.get(part, 0) / args.micro_batch for part in parts_in_order}
    coefficient = (per_sample["llm_layers"] / (seq * len(layers) * llm_fields["hidden_size"])) if saved and layers else None

    # training
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    clock = Clock(device)
    step_times: list[float] = []
    losses: list[float] = []

    def train_step() -> None:
        with autocast:
            loss = work.loss()
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    for _ in range(args.warmup):
        train_step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.steps):
        with clock(step_times):
            train_step()
    train_peak = torch.cuda.max_memory_allocated() if cuda else None
    step = statistics.median(step_times)

    # generation: prefill (one new token) and the full length, the difference is the decoding
    model.eval()
    with torch.no_grad(), autocast:
        work.generate(2)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        prefill_times: list[float] = []
        full_times: list[float] = []
        calls_before = seen["calls"]
        for _ in range(args.gen_repeats):
            with clock(prefill_times):
                work.generate(1)
            with clock(full_times):
                work.generate(args.gen_tokens)
    watcher.remove()
    gen_forwards = (seen["calls"] - calls_before) // args.gen_repeats - 1  # minus the prefill-only call's one
    gen_peak = torch.cuda.max_memory_allocated() if cuda else None
    prefill, full = statistics.median(prefill_times), statistics.median(full_times)
    # None when timing noise hides the decoding (a handful of tiny steps on a busy CPU)
    decode_step = (full - prefill) / (args.gen_tokens - 1) if args.gen_tokens > 1 and full > prefill else None

    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    peak, peak_source = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else (
        peak_tflops_for(device_name) if cuda else (None, "no table for CPUs"))
    achieved = model_flops / step / 1e12
    layout = dict(work.layout, sequence_tokens=seq, logit_positions=kept)
    return {
        "device": device_name,
        "device_memory_gib": torch.cuda.get_device_properties(device).total_memory / GIB if cuda else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "flash_attn_installed": flash_attn,
        "attn_implementation": attn,
        "llm_shape": args.llm_shape,
        "llm_layers": len(layers),
        "encoder": args.encoder,
        "params": params,
        "layout": layout,
        "micro_batch": args.micro_batch,
        "gradient_checkpointing": args.gradient_checkpointing,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "build_seconds": build_seconds,
        "step_seconds_median": step,
        "step_seconds_min": min(step_times),
        "samples_per_s": args.micro_batch / step,
        "tokens_per_s": args.micro_batch * seq / step,
        "target_tokens_per_s": args.micro_batch * args.report_tokens / step,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "weights_memory_gib": weights_bytes / GIB if cuda else None,
        "peak_memory_gib": train_peak / GIB if cuda else None,
        "model_tflop_per_step": model_flops / 1e12,
        "executed_tflop_per_step": executed_flops / 1e12,
        "executed_over_model_flops": executed_flops / model_flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_tflops_source": peak_source,
        "mfu": achieved / peak if peak else None,
        "saved_bytes_per_sample": per_sample if saved else None,
        "saved_weight_copies_bytes": saved.get(WEIGHT_COPIES, 0) if saved else None,
        "llm_activation_coefficient": coefficient,
        "llm_activation_coefficient_formula": frozen_llama_layer_coefficient(
            hidden=llm_fields["hidden_size"], intermediate=llm_fields["intermediate_size"],
            heads=llm_fields["num_attention_heads"], kv_heads=llm_fields["num_key_value_heads"], gqa_in_kernel=True),
        "gen_new_tokens": args.gen_tokens,
        "gen_llm_forwards": gen_forwards,
        "gen_seconds": full,
        "gen_tokens_per_s": args.micro_batch * args.gen_tokens / full,
        "gen_prefill_seconds": prefill,
        "gen_decode_ms_per_step": decode_step * 1e3 if decode_step else None,
        "gen_decode_tokens_per_s": args.micro_batch / decode_step if decode_step else None,
        "gen_peak_memory_gib": gen_peak / GIB if cuda else None,
        "total_seconds": time.perf_counter() - started,
    }


def _fmt(value: Any, spec: str = ".3g", unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{spec}}{unit}"


def _count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return str(n)


def print_report(r: dict[str, Any]) -> None:
    """The figures as aligned lines for people (the JSON line follows for machines)."""
    p, lay = r["params"], r["layout"]
    saved = r["saved_bytes_per_sample"]
    rows = [
        ("device", f"{r['device']}" + (f", {r['device_memory_gib']:.1f} GiB" if r["device_memory_gib"] else "")),
        ("software", f"torch {r['torch']}, transformers {r['transformers']}, attention {r['attn_implementation']}"
                     f" (flash_attn {'installed' if r['flash_attn_installed'] else 'not installed'})"),
        ("model", f"LLM {r['llm_shape']} ({r['llm_layers']} layers) {_count(p['llm'])} frozen bf16; encoder {r['encoder']} "
                  f"{_count(p['encoder'])} + projector {_count(p['projector'])} + promptbook {_count(p['promptbook'])} "
                  f"= {_count(p['trainable'])} trainable"),
        ("sequence", f"{lay['sequence_tokens']} tokens = visual {lay['visual_tokens']} + prompt {lay['prompt_tokens']} + "
                     f"template {lay['template_tokens']} + report {lay['report_tokens']}; logits at {lay['logit_positions']}"),
        ("build", f"{r['build_seconds']:.1f} s"),
        ("training", f"micro-batch {r['micro_batch']}, {r['timed_steps']} timed steps after {r['warmup_steps']}"
                     f"{', gradient checkpointing' if r['gradient_checkpointing'] else ''}"),
        ("step time", f"median {r['step_seconds_median'] * 1e3:.1f} ms (min {r['step_seconds_min'] * 1e3:.1f} ms)"),
        ("samples/s", _fmt(r["samples_per_s"], ".1f")),
        ("tokens/s", f"{r['tokens_per_s']:.0f} (report tokens/s {r['target_tokens_per_s']:.0f})"),
        ("peak memory", f"{_fmt(r['peak_memory_gib'], '.2f', ' GiB')} (weights {_fmt(r['weights_memory_gib'], '.2f', ' GiB')})"),
        ("model FLOPs", f"{r['model_tflop_per_step']:.4g} TFLOP/step (executed, FlopCounterMode: "
                        f"{r['executed_tflop_per_step']:.4g}, ratio {r['executed_over_model_flops']:.3f})"),
        ("achieved", f"{r['achieved_tflops']:.4g} TFLOP/s of peak {_fmt(r['peak_tflops'], '.0f')} ({r['peak_tflops_source']})"),
        ("MFU", _fmt(r["mfu"] * 100 if r["mfu"] is not None else None, ".1f", " %")),
        ("loss", f"{r['loss_first']:.4g} -> {r['loss_last']:.4g}"),
    ]
    if saved:
        rows.append(("saved for backward", ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in saved.items()) + " per sample"
                     f"; autocast weight copies {r['saved_weight_copies_bytes'] / 2**20:.2f} MiB per step"))
        rows.append(("LLM coefficient", f"{r['llm_activation_coefficient']:.2f} bytes/(token x layer x hidden), formula "
                                        f"{r['llm_activation_coefficient_formula']:.2f} (docs/scaling.md)"))
    rows += [
        ("generation", f"{r['gen_new_tokens']} new tokens x {r['micro_batch']} studies in {r['gen_seconds'] * 1e3:.1f} ms "
                       f"({r['gen_llm_forwards']} LLM forwards): {r['gen_tokens_per_s']:.0f} tokens/s"),
        ("  prefill / decode", f"{r['gen_prefill_seconds'] * 1e3:.1f} ms / {_fmt(r['gen_decode_ms_per_step'], '.2f', ' ms')} per step "
                               f"({_fmt(r['gen_decode_tokens_per_s'], '.0f')} tokens/s)"),
        ("  peak memory", _fmt(r["gen_peak_memory_gib"], ".2f", " GiB")),
        ("total", f"{r['total_seconds']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    executed = r["executed_over_model_flops"]
    if not r["gradient_checkpointing"] and r["attn_implementation"] != "flash_attention_2" and abs(executed - 1) > 0.02:
        print(f"warning: executed FLOPs differ from the model-FLOP formula by {abs(executed - 1):.1%}; the MFU may be off")
    if not all(math.isfinite(v) for v in (r["loss_first"], r["loss_last"])):
        print("warning: the loss is not finite; the timings stand, but bf16 numerics on this device need a look")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_smoke:
        usable, message = check_cuda()
        if not usable:
            print(message, file=sys.stderr)
            return EXIT_NO_CUDA
    os.environ.setdefault("MRG_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is a local folder; never wait on the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    temporary = None
    if args.cache_dir:
        os.environ["MRG_CACHE_DIR"] = args.cache_dir
    elif "MRG_CACHE_DIR" not in os.environ:
        temporary = tempfile.mkdtemp(prefix="mrg-gpu-check-")
        os.environ["MRG_CACHE_DIR"] = temporary
    try:
        import torch

        try:
            result = run(args)
        except torch.cuda.OutOfMemoryError:
            total = torch.cuda.get_device_properties(0).total_memory / GIB
            print(
                f"gpu_check: out of GPU memory at --micro-batch {args.micro_batch} with --llm-shape {args.llm_shape} "
                f"(peak {torch.cuda.max_memory_allocated() / GIB:.1f} of {total:.1f} GiB); try a smaller --micro-batch "
                "or --gradient-checkpointing",
                file=sys.stderr,
            )
            return EXIT_FAILED
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    print_report(result)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
