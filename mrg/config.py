"""The typed configuration tree of a run: data, model, train, generate and eval sections.

One tree, declared once as dataclasses. A run's configuration is built from three layers, each
checked against the tree: the dataclass defaults, a YAML preset shipped in ``mrg/configs/`` (or a
YAML file given by path), and dotted ``key=value`` overrides from the command line::

    cfg = load_config("tiny", ["train.lr=3e-4", "model.promptbook.mode=prompt-wise"])

Unknown keys fail with a "did you mean" suggestion; values of the wrong type fail with the key, the
value and the expected type. Every problem found is reported in one ``ConfigError``.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mrg.errors import ConfigError
from mrg.files import write_text_atomic

PRESET_DIR = Path(__file__).parent / "configs"

C = TypeVar("C")


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the prepared dataset lives and how studies become model inputs."""

    root: str = "data/synthetic"
    """Folder written by ``mrg prepare`` (holds ``studies.jsonl`` and ``prepare.json``)."""
    normalize: Literal["auto", "r2gen-iu", "r2gen-mimic", "none"] = "auto"
    """Report cleaning for training targets and metric references; ``auto`` follows the dataset's prepare.json."""
    image_size: int = 224
    """Side length, in pixels, of the square image the encoder sees."""
    max_views: int = 2
    """Images per study fed to the encoder (IU X-ray studies have two views; MIMIC-CXR entries one)."""
    augment: bool = False
    """Light training-time augmentation (random resized crop and small rotation); off in R2GenGPT."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    tasks: dict[str, float] = field(default_factory=lambda: {"report": 1.0})
    """Training tasks and their weights: ``report`` (report generation) and ``vqa`` (answers to the questions of
    ``data.vqa_root``), e.g. ``{report: 1, vqa: 1}``; per epoch a task contributes weight x its items (docs/vqa.md)."""
    vqa_root: str = ""
    """Folder written by ``mrg prepare vqa`` (questions.jsonl): the ``vqa`` task's questions."""

    def problems(self) -> list[str]:
        """Known tasks with positive weights; the vqa task needs its questions."""
        problems = [f"'data.tasks' names '{t}', which is not a task; use report and/or vqa" for t in self.tasks
                    if t not in ("report", "vqa")]
        problems += [f"'data.tasks.{t}' must be a positive weight, got {w!r}" for t, w in self.tasks.items()
                     if not isinstance(w, (int, float)) or not w > 0]
        if not self.tasks:
            problems.append("'data.tasks' needs at least one task, e.g. {report: 1}")
        if "vqa" in self.tasks and not self.vqa_root:
            problems.append("'data.tasks' has vqa but 'data.vqa_root' is empty; set it to a 'mrg prepare vqa' folder")
        return problems


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """The visual encoder: any Hugging Face vision backbone, by hub id or local path."""

    name_or_path: str = "microsoft/swin-base-patch4-window7-224"
    """Hub id or local folder of the vision backbone (Swin, ViT, CLIP/SigLIP vision, DINOv2, ConvNeXt, ResNet)."""
    trainable: Literal["frozen", "lora", "full"] = "full"
    """How the encoder trains: frozen (R2GenGPT shallow), lora (delta) or full (deep)."""
    features: Literal["patch", "pooled"] = "patch"
    """Patch tokens (B, M, C) or the pooled vector as a single token."""
    views: Literal["mean", "concat"] = "mean"
    """How several views of one study combine: averaged token-wise (R2GenGPT) or concatenated."""
    lora_rank: int = 16
    """LoRA rank when ``trainable: lora``."""
    lora_alpha: int = 16
    """LoRA scaling numerator when ``trainable: lora``."""
    lora_dropout: float = 0.1
    """LoRA dropout when ``trainable: lora``."""
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value", "q_proj", "v_proj"])
    """Linear layers that get LoRA adapters when ``trainable: lora`` (R2GenGPT: the attention query and value,
    named query/value before transformers 5 and q_proj/v_proj since); names the backbone lacks are ignored,
    but at least one must match."""

    def problems(self) -> list[str]:
        return _lora_problems("model.encoder", self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)


@dataclass(frozen=True, kw_only=True)
class ProjectorConfig:
    """Maps visual features (C) into the LLM's embedding space (D)."""

    kind: Literal["linear", "mlp"] = "linear"
    """Linear (R2GenGPT) or a 2-layer MLP with GELU."""
    layer_norm: bool = True
    """LayerNorm over the projected tokens (R2GenGPT)."""


@dataclass(frozen=True, kw_only=True)
class PromptbookConfig:
    """Instance-specific prompts (MRG-LLM): learnable prompts customised per image by affine transforms."""

    mode: Literal["none", "static", "prompt-wise", "promptbook-wise"] = "promptbook-wise"
    """none: no prompt tokens (R2GenGPT); static: one shared prompt; prompt-wise / promptbook-wise: customised."""
    num_tokens: int = 8
    """L, the number of prompt tokens."""
    book_size: int = 8
    """N, the number of prompts in the book (promptbook-wise only)."""
    pooling: Literal["mean", "max", "first"] = "mean"
    """How the visual tokens are pooled into the conditioning vector g."""
    position: Literal["before-image", "after-image", "after-instruction"] = "after-image"
    """Where the customised prompt sits in the input sequence."""
    hidden_size: int = 512
    """Width of the small network that maps g to the affine parameters and mixing weights."""
    init_scale: float = 1.0
    """Prompt tokens start as N(0, (init_scale x std of the LLM's input embeddings)^2)."""

    def problems(self) -> list[str]:
        found = [f"'model.promptbook.{key}' must be at least 1, got {getattr(self, key)}"
                 for key in ("num_tokens", "book_size", "hidden_size") if getattr(self, key) < 1]
        if self.init_scale <= 0:
            found.append(f"'model.promptbook.init_scale' must be positive, got {self.init_scale}")
        return found


@dataclass(frozen=True, kw_only=True)
class LLMConfig:
    """The frozen causal language model."""

    name_or_path: str = "meta-llama/Llama-2-7b-chat-hf"
    """Hub id or local folder of any ``AutoModelForCausalLM`` with its tokenizer."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "bfloat16"
    """Weights dtype of the frozen LLM."""
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    """Attention kernel of the LLM (auto: transformers' default, usually sdpa)."""
    gradient_checkpointing: bool = False
    """Recompute the LLM's activations in the backward pass (less memory, about 30% slower)."""
    instruction: str = "Generate a comprehensive and detailed diagnosis report for this chest xray image."
    """The instruction that follows the image and prompt tokens (R2GenGPT's wording by default)."""
    chat_template: Literal["auto", "r2gengpt"] = "auto"
    """auto: the tokenizer's chat template when it has one, else R2GenGPT's ``Human: ... \\nAssistant:``."""
    lora_rank: int = 16
    """LoRA rank on the LLM in stages that adapt it (e.g. ``two-stage``'s ``finetune``)."""
    lora_alpha: int = 32
    """LoRA scaling numerator on the LLM in stages that adapt it."""
    lora_dropout: float = 0.05
    """LoRA dropout on the LLM in stages that adapt it."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """LLM modules that get LoRA adapters in stages that adapt it."""

    def problems(self) -> list[str]:
        found = _lora_problems("model.llm", self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)
        if not self.instruction.strip():
            found.append("'model.llm.instruction' is empty; give the instruction that asks for a report")
        return found


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The report model: the method, and the shared parts it composes (encoder, projector, promptbook, LLM)."""

    method: str = "mrg-llm"
    """The method (``mrg methods`` lists them): mrg-llm, two-stage, ...; its own settings are the ``method`` section."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    promptbook: PromptbookConfig = field(default_factory=PromptbookConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_report_tokens: int = 60
    """Report length limit in LLM tokens during training (EOS is always kept)."""
    visual_tokens: bool = True
    """Feed the projected visual tokens to the LLM (MRG-LLM, R2GenGPT); false is an ablation in which the image
    reaches the LLM only through the customised prompt."""
    init_from: str | None = None
    """A run or checkpoint whose trainable weights start the first stage trained (those the stage carries over);
    a stage that starts from an earlier stage of the same run needs nothing here."""

    def problems(self) -> list[str]:
        if self.max_report_tokens < 2:
            return [f"'model.max_report_tokens' must be at least 2 (report tokens plus the EOS), got {self.max_report_tokens}"]
        return []


def _lora_problems(section: str, rank: int, alpha: int, dropout: float, targets: list[str]) -> list[str]:
    """Single-field checks shared by the encoder's and the LLM's LoRA settings."""
    found = []
    if rank < 1 or alpha < 1:
        found.append(f"'{section}.lora_rank' and '{section}.lora_alpha' must be at least 1, got {rank} and {alpha}")
    if not 0 <= dropout < 1:
        found.append(f"'{section}.lora_dropout' must be in [0, 1), got {dropout}")
    if not targets:
        found.append(f"'{section}.lora_targets' is empty; name the linear layers to adapt, e.g. [q_proj, v_proj]")
    return found


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, schedule, validation and checkpoint cadence."""

    seed: int = 42
    """Seed for weights, data order and dropout."""
    epochs: int = 15
    """Passes over the training split (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Optimizer steps to run; overrides ``epochs`` when set."""
    micro_batch_size: int = 8
    """Studies per forward pass on one process."""
    grad_accum_steps: int = 1
    """Forward passes per optimizer step; effective batch = micro_batch_size x grad_accum_steps x processes."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases, norms and prompt tokens)."""
    warmup_steps: int = 0
    """Linear warm-up steps before the cosine decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (0 disables clipping)."""
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Mixed precision of the trainable parts under accelerate (fp16 needs a GPU; bf16 is R2GenGPT's fix for NaNs)."""
    log_every: int = 10
    """Optimizer steps between log lines."""
    val_every: int = 0
    """Optimizer steps between validations; 0 validates at the end of each epoch, -1 never."""
    val_subset: int | None = None
    """Validate on a fixed, seeded subset of this many validation studies (None: the whole split)."""
    save_every: int = 0
    """Optimizer steps between checkpoints; 0 saves at each validation and at the end."""
    keep_last: int = 2
    """Step checkpoints to keep besides ``best`` (0 keeps every checkpoint)."""
    sanity_val_batches: int = 2
    """Validation batches generated and scored before training starts, so a broken validation fails in seconds (0: skip)."""
    find_unused_parameters: bool = False
    """DDP: tolerate trainable parameters that get no gradient in a step (slower; only for models that need it)."""
    select: dict[str, float] = field(default_factory=lambda: {"bleu_4": 0.5, "cider": 0.5})
    """Weights of the validation score that chooses the best checkpoint (R2GenGPT: 0.5 BLEU-4 + 0.5 CIDEr)."""
    trackers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    """Where step metrics go besides the terminal: csv (metrics.csv) and/or tensorboard."""


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """Decoding settings (R2GenGPT's IU X-ray defaults)."""

    strategy: Literal["beam", "greedy", "sample"] = "beam"
    """Beam search (default), greedy decoding or sampling."""
    num_beams: int = 3
    """Beams for beam search."""
    repetition_penalty: float = 2.0
    """Penalty on repeated tokens (1.0 disables)."""
    length_penalty: float = 2.0
    """Beam-search length penalty exponent."""
    min_new_tokens: int = 40
    """Minimum generated tokens (IU X-ray 40, MIMIC-CXR 80)."""
    max_new_tokens: int = 100
    """Maximum generated tokens (IU X-ray 100, MIMIC-CXR 120)."""
    temperature: float = 1.0
    """Sampling temperature (sampling only)."""
    top_p: float = 1.0
    """Nucleus sampling mass (sampling only)."""
    batch_size: int = 12
    """Studies per generation batch on one process."""
    seed: int = 0
    """Seed for sampling (each batch is seeded from it and the batch's first index, so output is reproducible)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision while generating; auto follows ``train.precision`` of the run."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How generated reports are scored."""

    protocol: Literal["r2gen", "coco", "raw"] = "r2gen"
    """r2gen: R2Gen cleaning on both sides, no PTB tokenizer; coco: PTB tokenizer; raw: text as given."""
    normalize: Literal["auto", "r2gen-iu", "r2gen-mimic"] = "auto"
    """R2Gen cleaner of the r2gen protocol; auto: the dataset's (prepare.json), else r2gen-iu."""
    ref_max_tokens: int | None = None
    """Legacy habit: keep only the first N reference words after cleaning (R2Gen keeps 59 on IU X-ray, 99 on MIMIC-CXR)."""
    meteor: bool = True
    """Compute METEOR (needs Java)."""
    meteor_timeout: float = 300.0
    """Seconds without an answer from METEOR's JVM before it is killed and restarted."""
    meteor_jvms: int = 0
    """METEOR JVMs aligning in parallel for sets of 1000+ items (about 0.6 GB each); 0: two on 4+ cores, else one."""
    clinical: bool = True
    """Compute clinical efficacy with the in-project CheXpert-style labeler."""
    bootstrap: int = 0
    """Bootstrap resamples for confidence intervals (0: none); --compare uses this many resamples (1000 when 0)."""
    confidence: float = 0.95
    """Coverage of the bootstrap intervals."""
    seed: int = 0
    """Seed for the bootstrap and the paired test."""
    metrics: list[str] = field(default_factory=list)
    """Model-based metric families to add (``mrg metrics`` lists them): chexbert, radgraph, bertscore, radcliq, ratescore,
    green (an LLM judge: GPU recommended)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Weights of each model-based family, by hub id or local path, e.g. ``{chexbert: /models/chexbert.pth}``;
    RaTEScore's two models also as ``ratescore_ner`` and ``ratescore_embed``."""
    device: str = "auto"
    """Where model-based metrics run: auto (CUDA when available), cpu, cuda, cuda:1."""
    model_batch_size: int = 32
    """Texts per forward pass of a model-based metric."""
    label_threshold: float = 0.5
    """Label-probability CSVs (``mrg perceive``): P from which a class counts as positive for the label metrics
    (``mrg evaluate --threshold``); AUROC uses the probabilities themselves."""

    def problems(self) -> list[str]:
        found = []
        if self.ref_max_tokens is not None and self.ref_max_tokens < 1:
            found.append(f"'eval.ref_max_tokens' (--ref-max-tokens) must be a positive number of words, got {self.ref_max_tokens}")
        if self.bootstrap < 0:
            found.append(f"'eval.bootstrap' (--bootstrap) must be 0 (off) or a number of resamples, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            found.append(f"'eval.confidence' must be between 0 and 1, got {self.confidence}")
        if self.meteor_jvms < 0:
            found.append(f"'eval.meteor_jvms' must be 0 (automatic) or a number of JVMs, got {self.meteor_jvms}")
        if self.model_batch_size < 1:
            found.append(f"'eval.model_batch_size' must be at least 1, got {self.model_batch_size}")
        if not 0.0 <= self.label_threshold <= 1.0:
            found.append(f"'eval.label_threshold' (--threshold) must be within [0, 1], got {self.label_threshold}")
        from mrg.metrics.registry import model_family_problems

        found += model_family_problems(self.metrics, self.weights)
        return found


@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """``mrg train-lm``: a small Llama-style causal LM and BPE tokenizer trained on a dataset's reports.

    Each training sequence is laid out exactly like the report model's input, with the context (the
    labeler's findings as tag tokens) where the visual tokens will later sit and nothing where the
    prompt will sit. A frozen LM trained on reports alone learns to ignore everything before the
    report, so no soft prompt could steer it (../shared/notes/frozen-lm-conditioning.md).
    """

    vocab_size: int = 1024
    """BPE vocabulary size (byte-level, so any text encodes)."""
    hidden_size: int = 128
    """Model width D."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    intermediate_size: int = 384
    """MLP width."""
    max_position_embeddings: int = 512
    """Longest input the LM accepts (template + visual tokens + prompt + report)."""
    max_report_tokens: int = 100
    """Report tokens per training sequence, EOS included."""
    steps: int = 600
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate (AdamW, linear warm-up, cosine decay to 1% of it)."""
    warmup_steps: int = 30
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""
    context: Literal["labels", "none"] = "labels"
    """labels: tag tokens of the findings the in-project labeler reads in each report; none: no context."""
    context_dropout: float = 0.15
    """Share of training sequences whose context is removed, so the LM also writes reports without it."""
    instruction: str = LLMConfig.instruction
    """The instruction of the report model's template (must match ``model.llm.instruction``)."""
    position: Literal["before-image", "after-image", "after-instruction"] = "after-image"
    """Where the report model's prompt sits (must match ``model.promptbook.position``)."""
    vqa_root: str = ""
    """A ``mrg prepare vqa`` folder of this dataset: its training questions join the LM's text, laid out as the
    ``vqa`` task lays them out (context, ``Question: ... Answer:``, the answer), so a frozen LM knows the answer
    words and the format (docs/vqa.md); empty: reports only."""
    seed: int = 0
    """Seed for the tokenizer corpus order, the weights and the batches."""


@dataclass(frozen=True, kw_only=True)
class VQModelConfig:
    """The image tokenizer's architecture (``mrg train-vq``): conv encoder -> vector quantiser -> conv decoder.

    Every field decides which weights exist or what a token id means, so a checkpoint made with other values is
    refused (``mrg.recipes.vq``) with the differing fields named.
    """

    image_size: int = 128
    """Side of the square grayscale image the tokenizer sees (images are resized to it)."""
    downsample: int = 8
    """Downsampling factor f (a power of 2): an image becomes (image_size / f)^2 tokens."""
    base_channels: int = 32
    """Width of the first encoder level; it doubles at each downsampling, up to ``max_channels``."""
    max_channels: int = 128
    """Widest conv level."""
    res_blocks: int = 1
    """Residual blocks per level (0: plain strided convolutions, the fastest on a CPU)."""
    codebook_size: int = 512
    """K, the number of codes (image token ids 0..K-1)."""
    code_dim: int = 64
    """D, the width of a code."""
    update: Literal["ema", "codebook-loss"] = "ema"
    """How codes learn: exponential moving averages of the vectors assigned to them (VQ-VAE-2), or gradient descent
    on the codebook loss ||sg[z] - e||^2 (VQ-VAE); the encoder learns through the straight-through estimator either way."""

    def problems(self) -> list[str]:
        found = [f"'model.{key}' must be at least 1, got {getattr(self, key)}"
                 for key in ("image_size", "base_channels", "max_channels", "code_dim") if getattr(self, key) < 1]
        if self.res_blocks < 0:
            found.append(f"'model.res_blocks' must be >= 0 (0: plain strided convolutions), got {self.res_blocks}")
        if self.codebook_size < 2:
            found.append(f"'model.codebook_size' must be at least 2, got {self.codebook_size}")
        f = self.downsample
        if f < 1 or f & (f - 1):
            found.append(f"'model.downsample' must be a power of 2 (1, 2, 4, 8, 16), got {f}")
        elif self.image_size % f:
            found.append(f"'model.image_size' ({self.image_size}) must be divisible by 'model.downsample' ({f})")
        return found


@dataclass(frozen=True, kw_only=True)
class VQQuantizerConfig:
    """Training settings of the vector quantiser (they change how codes move, not which weights exist)."""

    commitment: float = 0.25
    """beta of the commitment loss beta * ||z - sg[e]||^2 that keeps encoder outputs near their codes."""
    ema_decay: float = 0.99
    """Decay of the code averages when ``model.update: ema``."""
    restart_every: int = 50
    """Every this many steps, codes used fewer than ``restart_threshold`` times since the last check are moved onto
    random encoder outputs of the current batch (dead-code restart); 0 turns restarts off."""
    restart_threshold: float = 1.0
    """Uses since the last check below which a code counts as dead."""

    def problems(self) -> list[str]:
        found = []
        if self.commitment < 0:
            found.append(f"'quantizer.commitment' must be >= 0, got {self.commitment}")
        if not 0 < self.ema_decay < 1:
            found.append(f"'quantizer.ema_decay' must be in (0, 1), got {self.ema_decay}")
        if self.restart_every < 0:
            found.append(f"'quantizer.restart_every' must be >= 0 (0: no restarts), got {self.restart_every}")
        return found


@dataclass(frozen=True, kw_only=True)
class VQLossConfig:
    """The reconstruction loss: pixel L1 + lambda_grad image-gradient term + lambda_feat feature term (+ patch GAN)."""

    pixel_l1: float = 1.0
    """Weight of the mean absolute pixel error."""
    grad_weight: float = 10.0
    """lambda_grad of lambda_grad * ||grad x - grad x_hat||^2 (MAViLT's clinical gradient weighting); 0 turns it off.
    The default 10 makes the term about a quarter of the L1 term early in training: squared Sobel differences of
    [0, 1] images are ~40x smaller than their L1 error (measured on the synthetic set)."""
    grad_operator: Literal["finite-difference", "sobel"] = "sobel"
    """How the image gradient is taken: forward differences, or 3x3 Sobel filters (smoother, less noise-driven)."""
    feat_weight: float = 0.0
    """lambda_feat of lambda_feat * ||phi(x) - phi(x_hat)||^2; 0 turns it off (and nothing is loaded)."""
    feat_encoder: str = ""
    """phi: a vision backbone by hub id, local folder (e.g. a CXR encoder saved with save_pretrained) or random:<kind>
    spec, frozen, through mrg's visual encoder (patch tokens); needed when ``feat_weight`` > 0."""
    gan_weight: float = 0.0
    """Weight of the hinge patch-GAN term for the decoder; 0 (default) builds no discriminator."""
    gan_start: int = 0
    """Step from which the GAN term is on (the discriminator trains from then too)."""

    def problems(self) -> list[str]:
        found = [f"'loss.{key}' must be >= 0, got {getattr(self, key)}"
                 for key in ("pixel_l1", "grad_weight", "feat_weight", "gan_weight", "gan_start")
                 if getattr(self, key) < 0]
        if self.feat_weight > 0 and not self.feat_encoder.strip():
            found.append("'loss.feat_weight' > 0 needs 'loss.feat_encoder' (a hub id, local folder or random:<kind>)")
        return found


@dataclass(frozen=True, kw_only=True)
class VQTrainConfig:
    """Optimisation, validation and checkpoint cadence of ``mrg train-vq``."""

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 16
    """Images per step (drawn from the train split without replacement within a step)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, linear warm-up, cosine decay to 10% of it)."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay on conv matrices."""
    val_every: int = 100
    """Validate (and checkpoint) every this many steps, and at the last step."""
    val_images: int = 64
    """Images of the val split used by each validation (the first ones, in file order); 0: all."""
    keep_last: int = 2
    """Step folders kept besides best and last (0 keeps all)."""
    seed: int = 0
    """Seed for the weights, the batches and the restarts."""

    def problems(self) -> list[str]:
        found = [f"'train.{key}' must be at least 1, got {getattr(self, key)}"
                 for key in ("steps", "batch_size", "val_every") if getattr(self, key) < 1]
        if self.lr <= 0:
            found.append(f"'train.lr' must be positive, got {self.lr}")
        found += [f"'train.{key}' must be >= 0, got {getattr(self, key)}"
                  for key in ("warmup_steps", "val_images", "keep_last") if getattr(self, key) < 0]
        return found


@dataclass(frozen=True, kw_only=True)
class VQConfig:
    """``mrg train-vq``: the image tokenizer (presets in ``mrg/configs/vq/``; keys as ``model.codebook_size=256``)."""

    model: VQModelConfig = field(default_factory=VQModelConfig)
    quantizer: VQQuantizerConfig = field(default_factory=VQQuantizerConfig)
    loss: VQLossConfig = field(default_factory=VQLossConfig)
    train: VQTrainConfig = field(default_factory=VQTrainConfig)


VQ_PRESET_DIR = PRESET_DIR / "vq"


def load_vq_config(source: str | None = None, overrides: list[str] | None = None) -> VQConfig:
    """The tokenizer config from a preset of ``mrg/configs/vq/`` (or a YAML path) plus ``key=value`` overrides.

    Raises:
        ConfigError: unknown preset, file or key, wrong types, inconsistent values; every problem in one message.
    """
    data = read_config_file(resolve_config_source(source, preset_dir=VQ_PRESET_DIR)) if source else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level of a VQ config file must be a mapping of sections")
    return build_config(VQConfig, data, overrides)


@dataclass(frozen=True, kw_only=True)
class MethodOptions:
    """The ``method`` section of a method without settings of its own; methods with settings subclass it."""

    def problems(self) -> list[str]:
        """Single-section checks; a subclass lists every problem it finds (keys as ``method.<key>``)."""
        return []


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a training run needs; saved as ``config.yaml`` in every run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-stage settings that win over the global ones in that stage, e.g. ``{finetune: {train: {lr: 5.0e-5}}}``
    (on the command line ``stages.finetune.train.lr=5e-5``); stage names are the method's (``mrg methods``)."""
    method: MethodOptions = field(default_factory=lambda: MethodOptions())
    """The selected method's own settings; their keys depend on ``model.method`` (``mrg methods --json``)."""


# --------------------------------------------------------------------------------------------- building


_RENAMED = {
    "model.stage": "the two-stage protocol is a method now: 'mrg train --method two-stage' runs stage align, then "
                   "finetune (LoRA on the LLM); use '--stage finetune model.init_from=RUN' to start from an earlier run",
}
"""Keys that older mrg versions accepted, with what replaced them."""


def _renamed_hint(dotted: str) -> str:
    return f" ({_RENAMED[dotted]})" if dotted in _RENAMED else ""


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    if close:
        return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return " Valid keys: " + ", ".join(options) + "."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, from_string: bool) -> Any:
    """Convert ``value`` to type ``tp``; strings from the command line are parsed, YAML values checked."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType, Literal, list, tuple, dict):
        return _coerce_generic(value, origin, args, from_string)
    return _coerce_scalar(value, tp, from_string)


def _coerce_generic(value: Any, origin: Any, args: tuple[Any, ...], from_string: bool) -> Any:
    """``_coerce`` for an optional/union, a ``Literal``, a list, a tuple or a dict type."""
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_string and isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, from_string)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for option in args:
            if value == option:
                return option
            if from_string and isinstance(value, str) and str(option) == value:
                return option
        raise _Mismatch
    if origin in (list, tuple):
        if from_string and isinstance(value, str):
            text = value.strip()
            value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        inner = args[0] if args else Any
        items = [_coerce(v.strip() if isinstance(v, str) else v, inner, from_string) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if from_string and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise _Mismatch
        key_tp, val_tp = args if args else (Any, Any)
        return {_coerce(k, key_tp, from_string): _coerce(v, val_tp, from_string) for k, v in value.items()}
    raise _Mismatch  # pragma: no cover - _coerce passes only the origins above


def _coerce_scalar(value: Any, tp: Any, from_string: bool) -> Any:
    """``_coerce`` for bool, int, float and str (anything else does not match)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if from_string and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string, so accept numeric strings everywhere
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    raise _Mismatch


_SECTION_TYPES: contextvars.ContextVar[dict[str, type] | None] = contextvars.ContextVar("mrg_section_types", default=None)
"""Dotted section -> dataclass for sections whose class depends on the config (``method``: the method's options)."""


def _hints(cls: type, prefix: str) -> dict[str, Any]:
    """Field types of ``cls``, with the sections of ``_SECTION_TYPES`` replaced by their current class."""
    hints = dict(typing.get_type_hints(cls))
    substitutes = _SECTION_TYPES.get() or {}
    for key in hints:
        dotted = f"{prefix}.{key}" if prefix else key
        if dotted in substitutes:
            hints[key] = substitutes[dotted]
    return hints


def _build(cls: type[C], data: Any, prefix: str, problems: list[str], from_string: bool = False) -> C:
    """Build dataclass ``cls`` from a mapping, recording every problem under its dotted key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"'{prefix or 'config'}' must be a mapping of keys to values, got {type(data).__name__}")
        return cls()
    hints = _hints(cls, prefix)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            problems.append(f"unknown config key '{dotted}'." + _renamed_hint(dotted) + _suggest(str(key), list(fields)))
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, dotted, problems, from_string)
            continue
        try:
            kwargs[key] = _coerce(value, tp, from_string)
        except _Mismatch:
            problems.append(f"'{dotted}' must be {_type_name(tp)}, got {value!r}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: str, cls: type, problems: list[str]) -> None:
    """Place an override string at ``dotted`` in a nested dict, checking each key against the dataclasses."""
    parts = dotted.split(".")
    node = tree
    current: Any = cls
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(current)]
        if part not in names:
            where = ".".join(parts[:depth]) or "the config"
            problems.append(f"unknown config key '{dotted}' ('{part}' is not a key of {where})."
                            + _renamed_hint(dotted) + _suggest(part, names))
            return
        if current is RunConfig and part == "stages":  # stages.<stage>.<section>.<key>: checked when the stage is built
            if len(parts) < depth + 4:
                problems.append(f"'{dotted}' must name a stage and a key, e.g. 'stages.finetune.train.lr=5e-5'")
                return
            node = node.setdefault("stages", {})
            for key in parts[depth + 1 : -1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    problems.append(f"'{dotted}': '{key}' must be a mapping")
                    return
            node[parts[-1]] = _Override(value)
            return
        tp = _hints(current, ".".join(parts[:depth]))[part]
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                problems.append(f"'{dotted}' is a section; set one of its keys, e.g. '{dotted}.{dataclasses.fields(tp)[0].name}=...'")
                return
            node[part] = _Override(value)
            return
        if typing.get_origin(tp) is dict and depth == len(parts) - 2:  # one entry of a mapping: eval.weights.chexbert=...
            entries = node.setdefault(part, {})
            if not isinstance(entries, dict):
                problems.append(f"'{'.'.join(parts[: depth + 1])}' must be a mapping")
                return
            entries[parts[-1]] = _Override(value)
            return
        if not dataclasses.is_dataclass(tp):
            problems.append(f"'{'.'.join(parts[: depth + 1])}' is not a section, so '{dotted}' does not exist")
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append(f"'{'.'.join(parts[: depth + 1])}' must be a mapping")
            return
        current = tp


class _Override(str):
    """A command-line value (a string to parse by the field's type)."""


def _build_mixed(cls: type[C], data: Any, prefix: str, problems: list[str]) -> C:
    """Like ``_build`` but parses only the values that came from the command line."""
    if not isinstance(data, dict):
        return _build(cls, data, prefix, problems)
    hints = _hints(cls, prefix)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    yaml_part: dict[str, Any] = {}
    for key, value in data.items():
        if key in names and dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build_mixed(hints[key], value, f"{prefix}.{key}" if prefix else key, problems)
        elif isinstance(value, _Override) and key in names:
            dotted = f"{prefix}.{key}" if prefix else key
            try:
                kwargs[key] = _coerce(str(value), hints[key], from_string=True)
            except _Mismatch:
                problems.append(f"'{dotted}' must be {_type_name(hints[key])}, got {str(value)!r}")
        else:
            yaml_part[key] = value
    base = _build(cls, yaml_part, prefix, problems)
    return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]


def list_presets(preset_dir: Path = PRESET_DIR) -> list[str]:
    """Names of the YAML presets shipped in ``mrg/configs`` (or another preset folder, e.g. ``mrg/configs/vq``)."""
    return sorted(p.stem for p in preset_dir.glob("*.yaml"))


def read_config_file(path: Path) -> Any:
    """A YAML config file's contents; every failure is one ConfigError naming the file (and line and column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}; fix the syntax or start from 'mrg config show tiny'") from None
    if data is None:
        raise ConfigError(f"{path} is empty; a config file needs at least one section (data, model, train, ...)")
    return data


def resolve_config_source(source: str, *, preset_dir: Path = PRESET_DIR) -> Path:
    """The YAML file behind ``source``: a preset name from ``preset_dir`` (``mrg/configs``) or a path to a YAML file."""
    candidate = Path(source)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"--config {source}: file not found; give a preset ({', '.join(list_presets(preset_dir))}) or a YAML path")
        return candidate
    preset = preset_dir / f"{source}.yaml"
    if preset.is_file():
        return preset
    presets = list_presets(preset_dir)
    close = difflib.get_close_matches(source, presets, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"--config {source}: unknown preset.{hint} Presets: {', '.join(presets) or 'none'}; or give a path to a YAML file"
    )


def parse_overrides(overrides: list[str] | tuple[str, ...] | None) -> list[tuple[str, str]]:
    """Split ``key=value`` strings, rejecting anything else with a message that shows the expected form."""
    pairs: list[tuple[str, str]] = []
    for item in overrides or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. train.lr=3e-4)")
        pairs.append((key.strip(), value.strip()))
    return pairs


def build_config(cls: type[C], data: dict[str, Any] | None = None, overrides: list[str] | None = None, *,
                 resolve_stages: bool = True) -> C:
    """Build a config dataclass from a mapping (YAML-typed values) plus ``key=value`` override strings.

    For a ``RunConfig`` the ``method`` section is built with the options class of ``model.method``, and every
    stage of the method is resolved (``stage_config``) so that a bad per-stage setting fails now.

    Raises:
        ConfigError: every problem found, in one message.
    """
    problems: list[str] = []
    tree: dict[str, Any] = copy.deepcopy(dict(data or {}))  # overrides are merged in; never touch the caller's dict
    method = None
    if cls is RunConfig:
        method = _method_for(_requested_method(tree, overrides), problems)
        tree.setdefault("method", {})  # always built with the method's options class, defaults included
    token = _SECTION_TYPES.set({"method": method.options} if method is not None else {})
    try:
        for key, value in parse_overrides(overrides):
            _set_dotted(tree, key, value, cls, problems)
        cfg = _build_mixed(cls, tree, "", problems)
        # a value that failed above stands at its default here, so the checks below still see a whole config
        problems.extend(p for p in validate(cfg) if p not in problems)
        if isinstance(cfg, RunConfig) and method is not None and resolve_stages:
            cfg, stage_problems = _resolve_stages(cfg, method, known=problems)
            problems.extend(stage_problems)
    finally:
        _SECTION_TYPES.reset(token)
    if problems:
        err = ConfigError("; ".join(problems))
        err.problems = problems  # type: ignore[attr-defined]  # each apart, so a stage can leave out the run's
        raise err
    return cfg


def _requested_method(tree: dict[str, Any], overrides: list[str] | None) -> str:
    """``model.method`` as the overrides (last one wins) or the mapping set it; the default otherwise."""
    name = None
    for key, value in parse_overrides(overrides):
        if key == "model.method":
            name = value
    if name is None:
        model = tree.get("model")
        name = model.get("method") if isinstance(model, dict) else None
    return str(name) if name is not None else ModelConfig.method


def _method_for(name: str, problems: list[str]) -> Any:
    """The registered method ``name`` (``mrg.methods``), or None with the problem recorded."""
    from mrg.methods.registry import get_method

    try:
        return get_method(name, option="model.method")
    except ConfigError as err:
        problems.append(str(err))
        return None


def _resolve_stages(cfg: RunConfig, method: Any, known: Sequence[str] = ()) -> tuple[RunConfig, list[str]]:
    """Resolve every stage of ``method`` (each must build, and its ``train.select`` must suit its validation)
    and store the ``stages`` section with typed values. A stage's problems already among ``known`` (the run's
    own) are not repeated."""
    from mrg.metrics.registry import selection_problems

    problems: list[str] = []
    names = [stage.name for stage in method.stages]
    for stage in cfg.stages:
        if stage not in names:
            problems.append(f"'stages.{stage}': method {method.name} has no stage '{stage}'; its stages: "
                            f"{', '.join(names)}." + _suggest(stage, names).split(" Valid keys")[0])
    typed: dict[str, dict[str, Any]] = {}
    for stage in method.stages:
        section = cfg.stages.get(stage.name, {})
        if not isinstance(section, dict):
            problems.append(f"'stages.{stage.name}' must be a mapping of sections, e.g. {{train: {{lr: 5.0e-5}}}}")
            continue
        model_part = section.get("model")
        if "stages" in section or (isinstance(model_part, dict) and "method" in model_part):
            problems.append(f"'stages.{stage.name}' cannot set stages or model.method; a stage keeps the run's method")
            continue
        try:
            resolved = stage_config(cfg, stage.name, _section=section)
        except ConfigError as err:
            own = [p for p in getattr(err, "problems", [str(err)]) if p not in known]
            if own:
                joined = "; ".join(own)
                problems.append(f"stage {stage.name}: {joined}" if method.multi_stage else joined)
            continue
        if resolved.train.val_every != -1:
            option = f"stages.{stage.name}.train.select" if "select" in section.get("train", {}) else "train.select"
            where = f"stage {stage.name}: " if method.multi_stage else ""
            problems += [where + p for p in selection_problems(resolved.train.select, [stage.task], option=option)]
        if section:
            typed[stage.name] = _pick(section, config_to_dict(resolved))
    return dataclasses.replace(cfg, stages=typed), problems


def _pick(shape: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` at the keys of ``shape`` (nested), e.g. the typed values of a partial section."""
    out: dict[str, Any] = {}
    for key, sub in shape.items():
        if isinstance(sub, dict) and isinstance(values.get(key), dict) and not isinstance(sub, _Override):
            out[key] = _pick(sub, values[key])
        else:
            out[key] = values.get(key)
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, mapping by mapping (``update`` wins on leaves)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in _LEAF_MAPPINGS:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_LEAF_MAPPINGS = frozenset({"select"})
"""Mapping-valued fields replaced as a whole (a preset's ``train.select`` is a complete rule, not a patch)."""


def stage_config(cfg: RunConfig, stage: str, *, _section: dict[str, Any] | None = None) -> RunConfig:
    """The configuration one stage runs with: ``cfg`` with ``cfg.stages[stage]`` merged over it, ``stages`` emptied.

    This is what the stage folder's ``config.yaml`` records and what ``mrg generate`` rebuilds the model from.
    """
    section = cfg.stages.get(stage, {}) if _section is None else _section
    tree = config_to_dict(cfg)
    tree.pop("stages", None)
    merged = deep_merge(tree, section)
    return build_config(RunConfig, merged, resolve_stages=False)


def load_config(source: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a run configuration from a preset name or YAML path plus dotted overrides.

    Layers, later ones winning: the dataclass defaults, the method's defaults (``Method.config_defaults``
    of ``model.method``), the file, the overrides; within a stage, ``stages.<stage>`` wins over all of them.

    Args:
        source: preset name (see ``list_presets()``) or path to a YAML file; None starts from the defaults.
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        ConfigError: unknown preset, file, method or key (with suggestions), wrong value types, inconsistent
            values; every problem found, in one message.
    """
    data = read_config_file(resolve_config_source(source)) if source else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level of a config file must be a mapping of sections")
    problems: list[str] = []
    method = _method_for(_requested_method(data, overrides), problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return build_config(RunConfig, deep_merge(method.config_defaults, data), overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    """YAML text of a config, keys in declaration order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML atomically."""
    write_text_atomic(path, dump_config(cfg))


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config dataclass from a dict saved by ``config_to_dict`` (e.g. from a checkpoint)."""
    return build_config(cls, data)


def diff_configs(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two configs of the same class: (key, a_value, b_value)."""
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(va) and dataclasses.is_dataclass(vb):
            out.extend(diff_configs(va, vb, key))
        elif va != vb:
            out.append((key, va, vb))
    return out


# ------------------------------------------------------------------------------------------- validation


def validate(cfg: Any) -> list[str]:
    """Cross-field checks; returns every problem found (empty when the config is consistent)."""
    problems: list[str] = []
    problems += _section_problems(cfg)
    if isinstance(cfg, RunConfig):
        problems += _size_and_rate_problems(cfg)
        problems += _prompt_problems(cfg.model)
        problems += _schedule_and_sampling_problems(cfg)
        from mrg.methods.registry import get_method

        problems += get_method(cfg.model.method, option="model.method").check(cfg)
    return problems


def _size_and_rate_problems(cfg: RunConfig) -> list[str]:
    """Sizes and counts that must be positive, and the learning rates and token limits that must be ordered."""
    t, m, g = cfg.train, cfg.model, cfg.generate
    problems: list[str] = []
    positive = {
        "train.micro_batch_size": t.micro_batch_size,
        "train.grad_accum_steps": t.grad_accum_steps,
        "train.epochs": t.epochs,
        "data.image_size": cfg.data.image_size,
        "data.max_views": cfg.data.max_views,
        "model.max_report_tokens": m.max_report_tokens,
        "generate.num_beams": g.num_beams,
        "generate.max_new_tokens": g.max_new_tokens,
        "generate.batch_size": g.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            problems.append(f"'{key}' must be at least 1, got {value}")
    if t.max_steps is not None and t.max_steps < 1:
        problems.append(f"'train.max_steps' must be at least 1 or null, got {t.max_steps}")
    if t.lr <= 0:
        problems.append(f"'train.lr' must be positive, got {t.lr}")
    if t.min_lr > t.lr:
        problems.append(f"'train.min_lr' ({t.min_lr}) must not exceed 'train.lr' ({t.lr})")
    if g.min_new_tokens > g.max_new_tokens:
        problems.append(
            f"'generate.min_new_tokens' ({g.min_new_tokens}) must not exceed 'generate.max_new_tokens' ({g.max_new_tokens})"
        )
    return problems


def _prompt_problems(m: ModelConfig) -> list[str]:
    """The promptbook settings, and that the image reaches the LLM (visual tokens or an image-dependent prompt)."""
    problems: list[str] = []
    if m.promptbook.mode != "none" and m.promptbook.num_tokens < 1:
        problems.append(f"'model.promptbook.num_tokens' must be at least 1 with mode {m.promptbook.mode}")
    if m.promptbook.mode == "promptbook-wise" and m.promptbook.book_size < 2:
        problems.append("'model.promptbook.book_size' must be at least 2 for promptbook-wise prompts")
    if not m.visual_tokens and m.promptbook.mode in ("none", "static"):
        problems.append(
            f"'model.visual_tokens' is false with 'model.promptbook.mode' {m.promptbook.mode}: the image would not reach "
            "the LLM; use prompt-wise or promptbook-wise prompts, or keep the visual tokens"
        )
    return problems


def _schedule_and_sampling_problems(cfg: RunConfig) -> list[str]:
    """Non-negative training settings, logging and validation intervals, sampling parameters and trackers."""
    t, g = cfg.train, cfg.generate
    problems: list[str] = []
    non_negative = {
        "train.warmup_steps": t.warmup_steps,
        "train.save_every": t.save_every,
        "train.keep_last": t.keep_last,
        "train.sanity_val_batches": t.sanity_val_batches,
        "train.max_grad_norm": t.max_grad_norm,
        "train.weight_decay": t.weight_decay,
        "train.min_lr": t.min_lr,
    }
    for key, value in non_negative.items():
        if value < 0:
            problems.append(f"'{key}' must not be negative, got {value}")
    if t.log_every < 1:
        problems.append(f"'train.log_every' must be at least 1, got {t.log_every}")
    if t.val_every < -1:
        problems.append(f"'train.val_every' must be -1 (never), 0 (each epoch) or a step count, got {t.val_every}")
    if t.val_subset is not None and t.val_subset < 1:
        problems.append(f"'train.val_subset' must be at least 1 or null (the whole split), got {t.val_subset}")
    if g.strategy == "sample" and g.temperature <= 0:
        problems.append(f"'generate.temperature' must be positive for sampling, got {g.temperature}")
    if not 0 < g.top_p <= 1:
        problems.append(f"'generate.top_p' must be in (0, 1], got {g.top_p}")
    unknown_trackers = sorted(set(t.trackers) - {"csv", "tensorboard"})
    if unknown_trackers:
        problems.append(f"'train.trackers' accepts csv and tensorboard, got {', '.join(unknown_trackers)}")
    return problems


def _section_problems(cfg: Any) -> list[str]:
    """The ``problems()`` of every section of ``cfg`` (single-section checks), depth first."""
    found: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found += _section_problems(value)
    own = getattr(cfg, "problems", None)
    return found + (own() if callable(own) else [])
