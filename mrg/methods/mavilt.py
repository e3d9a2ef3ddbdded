"""``mavilt``: one LLM over text and VQ image tokens, trained in both directions (arXiv 2502.05926).

mrg's reading of MAViLT (``docs/methods/mavilt.md``): a frozen ``mrg train-vq`` tokenizer (``method.vq``) turns
each study's first view into h*w codes; the LLM's vocabulary is extended with ``<boi>``, ``<eoi>`` and the codes
(``mrg.model.vocab.ExtendedVocabulary``: only the new rows train, plus LoRA adapters with ``method.lora``, or
the whole LLM with ``method.train_llm``).

* ``pretrain``: image tokens -> report and report -> image tokens on image-report pairs, weighted by
  ``method.directions``.
* ``finetune``: starts from ``pretrain``; the task mixture of ``data.tasks`` (report, vqa), the same directions,
  plus the language-preservation term ``method.preserve`` (``lm`` / ``kl`` / ``none``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from mrg.config import MethodOptions, RunConfig
from mrg.errors import CheckpointError, ConfigError
from mrg.methods.base import Stage
from mrg.methods.mrg_llm import llm_weight
from mrg.methods.registry import register_method
from mrg.methods.report import ReportMethod

DIRECTION_NAMES = ("image-to-report", "report-to-image")


@dataclass(frozen=True, kw_only=True)
class MAViLTOptions(MethodOptions):
    """Settings of the ``mavilt`` method (the ``method:`` section)."""

    vq: str = ""
    """A ``mrg train-vq`` run (its ``best``), pointer or step folder: the frozen image tokenizer. Required."""
    codebook_size: int = 0
    """Expected codebook size K of ``method.vq`` (0: take the checkpoint's); a different checkpoint is refused."""
    directions: dict[str, float] = field(default_factory=lambda: {"image-to-report": 1.0, "report-to-image": 1.0})
    """Loss weight per direction."""
    preserve: Literal["lm", "kl", "none"] = "lm"
    """Language preservation in ``finetune``: ``lm`` text-only LM loss on reports, ``kl`` KL to the frozen LLM's
    logits, ``none``. Both act only on weights inside the LLM (LoRA adapters with ``method.lora``, all of them with
    ``method.train_llm``, where only ``lm`` applies); with the LLM frozen they are skipped."""
    preserve_weight: float = 0.1
    """Weight of the preservation term."""
    lora: bool = False
    """LoRA adapters on the LLM (``model.llm.lora_*``) train next to the new vocabulary rows."""
    train_llm: bool = False
    """Full fine-tuning: every weight of the LLM trains next to the new rows (checkpoints then hold the LLM).
    With the LLM frozen or LoRA-adapted the report does not reach the image tokens on the synthetic set
    (``docs/methods/mavilt.md``, "Measured: synthesis against the mean image"). Excludes ``method.lora``."""
    cfg_dropout: float = 0.1
    """Probability of a report-to-image row without its report (the unconditional model of classifier-free guidance)."""

    def problems(self) -> list[str]:
        out = []
        if not self.vq:
            out.append("'method.vq' is empty: give a 'mrg train-vq' run (method.vq=RUN)")
        unknown = sorted(set(self.directions) - set(DIRECTION_NAMES))
        if unknown:
            out.append(f"'method.directions' names {', '.join(unknown)}; directions: {', '.join(DIRECTION_NAMES)}")
        if any(w < 0 for w in self.directions.values()):
            out.append("'method.directions' weights must be at least 0")
        if self.preserve_weight < 0:
            out.append("'method.preserve_weight' must be at least 0")
        if not 0.0 <= self.cfg_dropout < 1.0:
            out.append("'method.cfg_dropout' must be within [0, 1)")
        if self.lora and self.train_llm:
            out.append("'method.lora' and 'method.train_llm' are both true: LoRA adapts a frozen LLM, train_llm trains "
                       "all of it; set one of them to false")
        if self.train_llm and self.preserve == "kl":
            out.append("'method.preserve' kl needs method.lora (its reference is the LLM with the adapters off); "
                       "with method.train_llm use method.preserve=lm or none")
        return out


def _options(cfg: RunConfig) -> MAViLTOptions:
    assert isinstance(cfg.method, MAViLTOptions), "the mavilt method's config has MAViLTOptions as its method section"
    return cfg.method


class MAViLT(ReportMethod):
    name = "mavilt"
    summary = ("one LLM over text and VQ image tokens (new vocabulary rows train, LLM frozen or LoRA): stage pretrain "
               "both directions; stage finetune task mixture + language preservation")
    paper = "arXiv 2502.05926"
    options = MAViLTOptions
    architecture_options = ("vq", "codebook_size", "lora", "train_llm")
    stages = (
        Stage("pretrain", "new vocabulary rows (<boi>, <eoi>, codes) train on both directions; the LLM is frozen "
              "(LoRA with method.lora, all of it with method.train_llm)",
              trains=("vocab.new_*", "llm.*lora_*", "llm.*"),
              loss="weighted next-token CE: report after image tokens + image codes after the report",
              data="train split (image codes from method.vq + report); validation: report generation on val"),
        Stage("finetune", "new vocabulary rows (+ LoRA with method.lora, + the LLM with method.train_llm) on the "
              "data.tasks mixture, from pretrain",
              trains=("vocab.new_*", "llm.*lora_*", "llm.*"), starts_from="pretrain",
              loss="the pretrain loss (and the vqa answers) + method.preserve_weight x the preservation term"),
    )
    config_defaults = {"data": {"max_views": 1}, "model": {"promptbook": {"mode": "none"}}}

    def check(self, cfg: RunConfig) -> list[str]:
        problems = super().check(cfg)
        if cfg.model.promptbook.mode != "none":
            problems.append("'model.promptbook.mode' must be none for mavilt (the image reaches the LLM as its tokens)")
        return problems

    def trainable_patterns(self, cfg: RunConfig, stage: Stage) -> list[str]:
        o = _options(cfg)
        return ["vocab.new_*"] + (["llm.*lora_*"] if o.lora else []) + (["llm.*"] if o.train_llm else [])

    def never_trains(self, name: str) -> bool:
        return llm_weight(name) or name.startswith("encoder.")

    def never_trains_under(self, cfg: RunConfig) -> Callable[[str], bool]:
        if _options(cfg).train_llm:
            return lambda name: name.startswith("encoder.")  # the tokenizer stays fixed
        return self.never_trains

    demo_preset = "mavilt-demo"

    def demo_overrides(self, data_dir: Path, out_dir: Path, *, fast: bool) -> list[str]:
        """Train the demo's image tokenizer (``vq/demo`` at 64 px, 128 codes) into ``OUT/vq`` first."""
        from mrg.config import load_vq_config
        from mrg.recipes.vq import train_vq

        steps = 150 if fast else 400
        cfg = load_vq_config("demo", ["model.image_size=64", "model.codebook_size=128", f"train.steps={steps}",
                                      f"train.val_every={steps}", "train.val_images=32"])
        train_vq(data_dir, out_dir / "vq", cfg)
        return [f"method.vq={out_dir / 'vq'}"] + (["stages.finetune.train.max_steps=50"] if fast else [])

    def demo_extras(self, cfg: RunConfig, run_dir: Path, data_dir: Path, out_dir: Path) -> dict[str, Any]:
        """Three test reports synthesized (``OUT/synthesized``) beside their real image's path and reconstruction."""
        from mrg.data.prepared import load_prepared_dataset
        from mrg.synthesize import Prompt, synthesize

        test = load_prepared_dataset(data_dir).split("test")[:3]
        rows = synthesize(run_dir, [Prompt(s.id, s.report, s.id) for s in test], out_dir / "synthesized", seed=0,
                          top_k=32)
        recon = _reconstruct(cfg, data_dir, test, out_dir / "reconstructed")
        return {"synthesized_dir": str(out_dir / "synthesized"), "reconstructed_dir": str(out_dir / "reconstructed"),
                "synthesized": [{"study_id": r["study_id"], "synthesized": str(out_dir / "synthesized" / f"{r['id']}.png"),
                                 "reconstructed": recon.get(r["study_id"]),
                                 "real": str(data_dir / s.image_paths[0])} for r, s in zip(rows, test, strict=True)]}

    def build_model(self, cfg: RunConfig, stage: Stage) -> nn.Module:
        return build_mavilt_model(cfg, preserve=stage.name == "finetune")


def _reconstruct(cfg: RunConfig, data_dir: Path, studies: list[Any], out: Path) -> dict[str, str]:
    """Each study's first view through ``method.vq`` and back: ``OUT/<id>.png``."""
    vq, _ = load_method_vq(_options(cfg))
    return reconstruct_studies(vq, data_dir, studies, out)


def reconstruct_studies(vq: Any, data_dir: Path, studies: list[Any], out: Path) -> dict[str, str]:
    """Each study's first view resized to the tokenizer's size, encoded and decoded by ``vq``: ``OUT/<id>.png``;
    returns study id -> the PNG's path."""
    import numpy as np
    import torch
    from PIL import Image

    from mrg.analysis.png import save_png

    out.mkdir(parents=True, exist_ok=True)
    found = {}
    size = vq.cfg.image_size
    for s in studies:
        image = Image.open(data_dir / s.image_paths[0]).convert("L").resize((size, size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None, None]
        y = vq.decode(vq.encode(x))[0, 0].numpy()
        found[s.id] = str(save_png(Image.fromarray((y * 255).round().clip(0, 255).astype(np.uint8), mode="L"),
                                   out / f"{s.id}.png"))
    return found


def load_method_vq(o: MAViLTOptions):  # noqa: ANN201 - (VQAutoencoder, step dir)
    """The tokenizer of ``method.vq``, checked against ``method.codebook_size``.

    Raises:
        ConfigError: ``method.vq`` missing; CheckpointError: not a tokenizer run, or another codebook size.
    """
    from pathlib import Path

    from mrg.recipes.vq import load_vq_checkpoint

    if not o.vq:
        raise ConfigError("method.vq is empty: train an image tokenizer with 'mrg train-vq' and pass method.vq=RUN")
    if not Path(o.vq).exists():
        raise ConfigError(f"method.vq={o.vq}: no such folder; train one with 'mrg train-vq --data DIR --out {o.vq}'")
    vq, vq_cfg, step_dir = load_vq_checkpoint(o.vq)
    if o.codebook_size and vq_cfg.model.codebook_size != o.codebook_size:
        raise CheckpointError(f"method.vq={o.vq}: model.codebook_size: checkpoint {vq_cfg.model.codebook_size}, "
                              f"config method.codebook_size {o.codebook_size}; set method.codebook_size="
                              f"{vq_cfg.model.codebook_size} (or 0) or give a tokenizer with {o.codebook_size} codes")
    return vq, step_dir


def build_mavilt_model(cfg: RunConfig, *, preserve: bool) -> nn.Module:
    """The unified model of ``cfg``: the report model's LLM (LoRA with ``method.lora``), the frozen tokenizer of
    ``method.vq`` and the extended vocabulary (new rows from ``cfg.train.seed``)."""
    import torch

    from mrg.data.dataset import ImageSettings
    from mrg.model.build import quiet_hub_progress
    from mrg.model.llm import FrozenLLM, add_lora, build_template, load_causal_lm, load_tokenizer
    from mrg.model.mavilt_model import MAViLTModel, VQImageEncoder
    from mrg.model.projector import Projector
    from mrg.model.promptbook import Promptbook
    from mrg.model.random_models import resolve_model_path
    from mrg.model.vocab import ExtendedVocabulary

    quiet_hub_progress()
    o, m = _options(cfg), cfg.model
    vq, _ = load_method_vq(o)
    for p in vq.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        llm_dir = resolve_model_path(m.llm.name_or_path)
        tokenizer = load_tokenizer(llm_dir, model_name=m.llm.name_or_path)
        template = build_template(tokenizer, instruction=m.llm.instruction, chat_template=m.llm.chat_template,
                                  position=m.promptbook.position, has_prompt=False, model_name=m.llm.name_or_path)
        causal_lm = load_causal_lm(llm_dir, dtype=m.llm.dtype, attn_implementation=m.llm.attn_implementation,
                                   model_name=m.llm.name_or_path)
        if o.lora:
            add_lora(causal_lm, rank=m.llm.lora_rank, alpha=m.llm.lora_alpha, dropout=m.llm.lora_dropout,
                     targets=list(m.llm.lora_targets), option="model.llm.lora_targets")
        llm = FrozenLLM(causal_lm, template, gradient_checkpointing=m.llm.gradient_checkpointing)
        dim = llm.hidden_size
        vocab = ExtendedVocabulary(causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings(),
                                   num_codes=vq.cfg.codebook_size, seed=cfg.train.seed)
    return MAViLTModel(
        vocab=vocab, weights=o.directions, preserve=o.preserve if (preserve and (o.lora or o.train_llm)) else "none",
        preserve_weight=o.preserve_weight, cfg_dropout=o.cfg_dropout, encoder=VQImageEncoder(vq),
        projector=Projector(dim, dim, kind="linear", layer_norm=False), promptbook=Promptbook("none", dim, num_tokens=0),
        llm=llm, tokenizer=tokenizer, max_report_tokens=m.max_report_tokens,
        image_settings=ImageSettings(image_mean=(0.0,), image_std=(1.0,), num_channels=1))


register_method(MAViLT())
