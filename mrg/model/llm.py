"""The frozen causal language model, its tokenizer, and the prompt template around the soft tokens.

Any ``AutoModelForCausalLM`` loads by hub id or folder. Its weights never train (``requires_grad``
False) and it stays in eval mode, so dropout is off even while the encoder trains; gradients still
flow through it into ``inputs_embeds``. In stage 2 LoRA adapters (peft) are injected into it and only
they train.

The instruction is wrapped in the tokenizer's chat template when it has one (``chat_template:
auto``), else in R2GenGPT's ``Human: <Img>{image}</Img> {instruction} \\nAssistant:``. The template is
rendered once with placeholders for the visual tokens and the customised prompt and cut into
constant text pieces, which are tokenized once (``PromptTemplate``).

Special tokens: an EOS token is required (it ends every training report and stops generation); the
R2GenGPT template starts with BOS, so a tokenizer without one needs a chat template; a tokenizer
without a padding token pads with EOS, which is harmless because padding is masked out of the
loss and the attention by position, not by token id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mrg.errors import ConfigError

IMAGE_PLACEHOLDER = "<ImageHere>"
PROMPT_PLACEHOLDER = "<PromptHere>"
R2GENGPT_TEMPLATE = "Human: {content} \nAssistant:"


@dataclass(frozen=True)
class Segment:
    """One piece of the input before the report: constant text (token ids), the image, or the prompt."""

    kind: Literal["text", "image", "prompt"]
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PromptTemplate:
    """The input layout before the report, e.g. text, image, prompt, text."""

    style: Literal["chat", "r2gengpt"]
    text: str
    """The rendered template with the placeholders, for logs and docs."""
    segments: tuple[Segment, ...]

    @property
    def num_text_tokens(self) -> int:
        """Tokens of constant text (BOS included)."""
        return sum(len(s.ids) for s in self.segments)


def user_content(instruction: str, position: str, has_prompt: bool) -> str:
    """The user turn with placeholders: ``<Img><ImageHere></Img>``, the prompt and the instruction."""
    image = f"<Img>{IMAGE_PLACEHOLDER}</Img>"
    prompt = PROMPT_PLACEHOLDER if has_prompt else ""
    if position == "before-image":
        return f"{prompt}{image} {instruction}"
    if position == "after-instruction":
        return f"{image} {instruction}{prompt}"
    return f"{image}{prompt} {instruction}"  # after-image (default)


def build_template(
    tokenizer: Any,
    *,
    instruction: str,
    chat_template: Literal["auto", "r2gengpt"],
    position: str,
    has_prompt: bool,
    model_name: str,
) -> PromptTemplate:
    """Render and tokenize the input template.

    Raises:
        ConfigError: the R2GenGPT template is needed but the tokenizer has no BOS token.
    """
    content = user_content(instruction, position, has_prompt)
    use_chat = chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))
    if use_chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        # prepend BOS only where the tokenizer itself would (Llama yes, Qwen no) and the template did not
        probe = tokenizer("a")["input_ids"]
        needs_bos = tokenizer.bos_token_id is not None and bool(probe) and probe[0] == tokenizer.bos_token_id
    else:
        if tokenizer.bos_token_id is None:
            raise ConfigError(
                f"model.llm.name_or_path: the tokenizer of {model_name!r} has no BOS token, but the R2GenGPT template "
                "starts with one; set bos_token in its tokenizer_config.json, or use a tokenizer with a chat template "
                "(model.llm.chat_template=auto)"
            )
        text = R2GENGPT_TEMPLATE.format(content=content)
        needs_bos = True
    segments: list[Segment] = []
    for piece in re.split(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(PROMPT_PLACEHOLDER)})", text):
        if piece == IMAGE_PLACEHOLDER:
            segments.append(Segment("image"))
        elif piece == PROMPT_PLACEHOLDER:
            segments.append(Segment("prompt"))
        elif piece:
            ids = tuple(tokenizer(piece, add_special_tokens=False)["input_ids"])
            if ids:
                segments.append(Segment("text", ids))
    kinds = [s.kind for s in segments]
    if kinds.count("image") != 1 or kinds.count("prompt") != int(has_prompt):
        raise ConfigError(
            f"model.llm.name_or_path: the chat template of {model_name!r} dropped the image or prompt placeholder "
            f"(rendered: {text!r}); use model.llm.chat_template=r2gengpt"
        )
    if needs_bos:
        first = segments[0]
        if not (first.kind == "text" and first.ids[:1] == (tokenizer.bos_token_id,)):
            if first.kind == "text":
                segments[0] = Segment("text", (tokenizer.bos_token_id, *first.ids))
            else:
                segments.insert(0, Segment("text", (tokenizer.bos_token_id,)))
    return PromptTemplate(style="chat" if use_chat else "r2gengpt", text=text, segments=tuple(segments))


def load_tokenizer(name_or_path: str, *, model_name: str | None = None) -> Any:
    """Load the LLM's tokenizer and check its special tokens.

    Raises:
        ConfigError: it cannot be loaded, or it has no EOS token.
    """
    from transformers import AutoTokenizer

    shown = model_name or name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model.llm.name_or_path: cannot load the tokenizer of {shown!r} ({first})") from None
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            f"model.llm.name_or_path: the tokenizer of {shown!r} has no EOS token, which ends every training report "
            "and stops generation; set eos_token in its tokenizer_config.json (e.g. \"</s>\")"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked by position, so its id never matters
    return tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(name_or_path: str, *, dtype: str, attn_implementation: str, model_name: str | None = None) -> nn.Module:
    """Load the causal LM by hub id or folder, frozen and in eval mode.

    Raises:
        ConfigError: it cannot be loaded.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": DTYPES.get(dtype, "auto")}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.llm.name_or_path: cannot load the causal LM {model_name or name_or_path!r} ({first}); give a local "
            "folder saved with save_pretrained, a hub id (needs network or the Hugging Face cache), or random:llama"
        ) from None
    model.requires_grad_(False)
    model.eval()
    return model


class FrozenLLM(nn.Module):
    """The frozen causal LM plus the tokenized template.

    Attributes:
        model: the ``AutoModelForCausalLM`` (LoRA-injected in stage 2).
        hidden_size: D, the width of its input embeddings.
    """

    def __init__(self, model: nn.Module, template: PromptTemplate, *, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.template = template
        self.hidden_size: int = int(model.get_input_embeddings().weight.shape[1])
        text_ids = [i for seg in template.segments for i in seg.ids]
        # the constant template tokens, embedded once per forward for the whole batch
        self.register_buffer("text_ids", torch.tensor(text_ids, dtype=torch.long), persistent=False)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            # non-reentrant checkpointing back-propagates into inputs_embeds with every weight frozen
            enable({"use_reentrant": False})
        import inspect

        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., T) token ids -> (..., T, D) input embeddings of the frozen table."""
        return self.model.get_input_embeddings()(ids)

    def text_embeddings(self) -> list[torch.Tensor]:
        """The (1, T_i, D) embeddings of each text segment, in template order."""
        embeds = self.embed(self.text_ids)  # (T_text, D)
        sizes = [len(s.ids) for s in self.template.segments if s.kind == "text"]
        return [e.unsqueeze(0) for e in embeds.split(sizes)]

    def set_mode(self, training: bool) -> None:
        """Keep the LLM in eval mode; only its LoRA dropout (stage 2) and checkpointing flags follow ``training``."""
        self.model.eval()
        if not training:
            return
        from transformers.modeling_layers import GradientCheckpointingLayer

        for name, module in self.model.named_modules():
            if "lora_dropout" in name:
                module.train(True)
            elif self.gradient_checkpointing and isinstance(module, GradientCheckpointingLayer):
                # transformers checkpoints a layer only when layer.training is True; the layer's own
                # flag gates nothing else (dropout lives in its submodules, which stay in eval mode)
                module.training = True

    def logits(self, inputs_embeds: torch.Tensor, *, attention_mask: torch.Tensor | None, keep_last: int) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, K, V) logits of the last ``keep_last`` positions (all when 0)."""
        kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "use_cache": False}
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = keep_last
        logits = self.model(**kwargs).logits
        return logits if keep_last == 0 or self._accepts_logits_to_keep else logits[:, -keep_last:]


def add_lora(model: nn.Module, *, rank: int, alpha: int, dropout: float, targets: list[str], option: str) -> None:
    """Inject peft LoRA adapters into ``model`` in place (adapter weights in float32).

    Raises:
        ConfigError: no module matches ``targets``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not set(targets) & names:
        raise ConfigError(
            f"{option}={targets}: no linear layer of {type(model).__name__} has these names; "
            f"candidates: {', '.join(sorted(names)[:12])}"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # trainable adapters stay float32 next to bf16 weights
