"""Tiny randomly initialised backbones (``random:<kind>`` specs) for tests and the ``tiny`` preset.

No weights can be downloaded in CI, so every model path in the tiny preset is a spec such as
``random:vit`` or ``random:llama``. A spec is turned into a real Hugging Face folder once: the model
is built from a small config with a fixed seed, saved with ``save_pretrained`` (the LLM together with
a tokenizer) into ``$MRG_CACHE_DIR/random/<hash>`` (default ``~/.cache/mrg/random/<hash>``), and from
then on loaded by path exactly like a hub checkpoint. So the code path that loads Swin-B and
Llama-2-7B is the one the tests exercise.

Spec grammar: ``random:<kind>`` optionally followed by ``?key=value&key=value`` overriding fields of
the kind's config (e.g. ``random:vit?image_size=32&hidden_size=48``). Tokenizer options of LLM kinds:
``bos=false`` / ``eos=false`` / ``pad=false`` leave that special token out (to test error messages),
``chat=true`` adds a chat template.

The tokenizer is a byte-level BPE (so any text encodes, no ``<unk>``) with ``vocab_size`` 1024 by
default, trained deterministically on a built-in list of radiology phrases. Common report words are
single tokens, so a 60-word report is about 70 tokens, as with a real LLM tokenizer; a byte-level
tokenizer without merges would make it ~350 tokens and tiny runs needlessly slow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mrg.errors import ConfigError

RANDOM_PREFIX = "random:"
RECIPE_VERSION = 1
"""Bump when a default below changes, so cached folders built by an older recipe are not reused."""

SEED = 1234

# kind -> default config fields
ENCODER_KINDS: dict[str, dict[str, Any]] = {
    # 64 px, 16 px patches -> 16 patch tokens + CLS
    "vit": {"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    # 64 px, 8 px patches -> 8x8, one merge -> 4x4 = 16 tokens of 32 channels
    "swin": {"image_size": 64, "patch_size": 8, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 4},
    # stem /4 -> 16x16, second stage /2 -> 8x8 = 64 tokens of 32 channels
    "resnet": {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"},
    "convnext": {"patch_size": 4, "num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1]},
    "dinov2": {"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2},
    # full CLIP / SigLIP checkpoints (text + vision towers): the encoder must take the vision tower
    "clip": {"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "siglip": {"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}
LLM_KINDS: dict[str, dict[str, Any]] = {
    "llama": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "vocab_size": 1024,
        # 5x Llama's 0.02: a random LM initialised at 0.02 gives near-uniform logits whatever its input,
        # so soft prompts could barely move the loss; at 0.1 its output depends on its input as a trained LM's does
        "initializer_range": 0.1,
        "bos": True,
        "eos": True,
        "pad": True,
        "chat": False,
    },
}
LLM_KINDS["llama-chat"] = {**LLM_KINDS["llama"], "chat": True}
# text encoders (TRRG's image-text pre-training): a BERT with a byte-level BPE tokenizer that pads
TEXT_KINDS: dict[str, dict[str, Any]] = {
    "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 128, "vocab_size": 512, "bos": False, "eos": False, "pad": True},
}

# A Llama-2-like chat template, small enough to read: BOS, the user turn in [INST] ... [/INST].
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'system' %}{{ '<<SYS>>' + message['content'] + '<</SYS>> ' }}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# Phrases written for this project; common radiology report vocabulary in lower case with spaced
# punctuation, as the R2Gen cleaners produce it.
RADIOLOGY_CORPUS: tuple[str, ...] = (
    "the heart size is normal . the lungs are clear . no pleural effusion or pneumothorax .",
    "heart size and mediastinal contours are within normal limits . no focal consolidation .",
    "the cardiomediastinal silhouette is normal in size and contour . no acute osseous abnormality .",
    "there is no focal airspace disease . no pleural effusion . no pneumothorax .",
    "mild cardiomegaly . small left pleural effusion . bibasilar atelectasis .",
    "moderate right pleural effusion with adjacent atelectasis . stable cardiomegaly .",
    "the lungs are hyperexpanded consistent with emphysema . no acute cardiopulmonary disease .",
    "degenerative changes of the thoracic spine . calcified granuloma in the right upper lobe .",
    "there is a nodular opacity in the left lower lobe . recommend followup ct .",
    "patchy opacity at the right lung base may represent pneumonia or aspiration .",
    "pulmonary vascular congestion with mild interstitial edema . small bilateral effusions .",
    "endotracheal tube terminates above the carina . nasogastric tube courses below the diaphragm .",
    "right internal jugular central venous catheter tip in the superior vena cava .",
    "left chest wall pacemaker with leads in the right atrium and right ventricle .",
    "sternotomy wires and mediastinal clips are intact . postoperative changes .",
    "the aorta is tortuous and calcified . the trachea is midline .",
    "no evidence of pneumothorax . the visualized osseous structures are unremarkable .",
    "interval improvement of the left basilar opacity . residual linear atelectasis .",
    "increased interstitial markings bilaterally . possible fibrosis .",
    "a rounded mass in the right hilum . lymphadenopathy is not excluded .",
    "fracture of the left lateral sixth rib . no displaced fracture .",
    "lung volumes are low . crowding of the bronchovascular markings .",
    "the costophrenic angles are sharp . the hemidiaphragms are normal .",
    "enlarged cardiac silhouette . prominent pulmonary arteries .",
    "consolidation in the right middle lobe compatible with pneumonia .",
    "lungs are clear bilaterally . normal heart size . normal mediastinum .",
    "no acute disease . stable appearance of the chest compared to prior exam .",
    "frontal and lateral views of the chest were obtained .",
    "xxxx opacity is seen , likely scarring . no suspicious pulmonary nodule .",
    "unchanged mild enlargement of the cardiac silhouette with a left ventricular configuration .",
    "support devices are unchanged in position . lung support devices .",
    "hiatal hernia is noted . the upper abdomen is unremarkable .",
    "findings : impression : comparison : indication : history : technique :",
    "generate a comprehensive and detailed diagnosis report for this chest xray image .",
    "human : assistant : img image report findings impression",
    "atelectasis cardiomegaly consolidation edema enlarged cardiomediastinum fracture lung lesion",
    "lung opacity no finding pleural effusion pleural other pneumonia pneumothorax support devices",
    "normal abnormal stable unchanged improved worsened new increased decreased resolved",
    "left right upper lower middle bilateral basilar apical perihilar retrocardiac",
    "small moderate large mild severe minimal trace subtle slight marked",
    "0 1 2 3 4 5 6 7 8 9 10 cm mm . , : ; ( ) - / ?",
)


def is_random_spec(name_or_path: str) -> bool:
    """Whether a model name is a ``random:<kind>`` spec rather than a hub id or path."""
    return name_or_path.startswith(RANDOM_PREFIX)


def cache_root() -> Path:
    """Where materialised random models live (``$MRG_CACHE_DIR/random`` or ``~/.cache/mrg/random``)."""
    base = os.environ.get("MRG_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "mrg") / "random"


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``random:<kind>?k=v&k=v`` into the kind and its config fields (defaults filled in).

    Raises:
        ConfigError: unknown kind or field, or a value that is not valid YAML.
    """
    body = spec[len(RANDOM_PREFIX) :]
    kind, _, query = body.partition("?")
    kinds = {**ENCODER_KINDS, **LLM_KINDS, **TEXT_KINDS}
    if kind not in kinds:
        raise ConfigError(f"model spec {spec!r}: unknown random model kind {kind!r}; choose one of {', '.join(sorted(kinds))}")
    fields = dict(kinds[kind])
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"model spec {spec!r}: {item!r} is not of the form key=value")
        try:
            fields[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"model spec {spec!r}: cannot parse the value of {key!r}: {value!r}") from None
    return kind, fields


def resolve_model_path(name_or_path: str) -> str:
    """The folder to load for ``name_or_path``: random specs are materialised, anything else is returned as is."""
    if not is_random_spec(name_or_path):
        return name_or_path
    return str(materialize(name_or_path))


def materialize(spec: str) -> Path:
    """Build the random model of ``spec`` into the cache (once) and return its folder.

    The folder is written under a temporary name and renamed into place, so concurrent processes
    (several ranks of one run) never see a half-written model.
    """
    kind, fields = parse_spec(spec)
    key = json.dumps({"kind": kind, "fields": fields, "recipe": RECIPE_VERSION}, sort_keys=True)
    target = cache_root() / hashlib.sha256(key.encode()).hexdigest()[:16]
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    import torch

    try:
        # building seeds torch's generator; the caller's state is kept, so a model found in the cache and one
        # built here leave the caller's random draws (e.g. a projector's initial weights) identical
        with torch.random.fork_rng(devices=[]):
            if kind in LLM_KINDS:
                _build_llm(tmp, fields)
            elif kind in TEXT_KINDS:
                _build_text_encoder(tmp, fields)
            else:
                _build_encoder(tmp, kind, fields)
        (tmp / "mrg-random.json").write_text(json.dumps({"spec": spec, "kind": kind, "fields": fields}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # a stale partial folder (or one an older mrg left empty): replace it
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return (folder / "mrg-random.json").is_file() and (folder / "config.json").is_file()


def _save_model(model: Any, out: Path) -> None:
    """``save_pretrained`` that writes on every rank.

    transformers 5 writes nothing on ranks other than 0 once ``torch.distributed`` is initialised; each rank
    builds the cached model in its own temporary folder, so a rank that kept it empty could rename an empty
    model into the cache (the folder would hold no ``config.json``) and break every later load.
    """
    if hasattr(model, "should_save_on_this_rank"):
        model.should_save_on_this_rank = lambda is_main_process: True  # instance attribute: this object only
    model.save_pretrained(out)
    if not (out / "config.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no config.json into {out}")


def _seeded() -> Any:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise for a 100 kB model

    torch.manual_seed(SEED)
    return torch


def _build_encoder(out: Path, kind: str, fields: dict[str, Any]) -> None:
    import transformers as tf

    _seeded()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet
    if kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(**fields), add_pooling_layer=False)
        mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # what google/vit-* processors use
    elif kind == "swin":
        model = tf.SwinModel(tf.SwinConfig(**fields))
    elif kind == "resnet":
        model = tf.ResNetModel(tf.ResNetConfig(**fields))
    elif kind == "convnext":
        model = tf.ConvNextModel(tf.ConvNextConfig(**fields))
    elif kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**fields))
    elif kind == "clip":
        text = {
            "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        }
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=fields, projection_dim=16))
        mean, std = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]  # OpenAI CLIP
    elif kind == "siglip":
        text = {
            "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        }
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=fields))
        mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    else:  # pragma: no cover - parse_spec checked the kind
        raise ConfigError(f"unknown random encoder kind {kind!r}")
    _save_model(model, out)
    size = fields.get("image_size", 64)
    processor = {"image_mean": mean, "image_std": std, "size": {"height": size, "width": size}, "do_normalize": True}
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))


def _build_tokenizer(fields: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}
    wanted = [tok for name, tok in specials.items() if fields.get(name, True)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(fields["vocab_size"]) - 8,  # room for special tokens that tests may add later
        min_frequency=1,
        special_tokens=wanted,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(RADIOLOGY_CORPUS), trainer=trainer)
    if fields.get("bos", True):  # like Llama's tokenizer: encode() starts with BOS unless told otherwise
        bos = specials["bos"]
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))]
        )
    kwargs = {f"{name}_token": tok for name, tok in specials.items() if fields.get(name, True)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, clean_up_tokenization_spaces=False, **kwargs)
    if fields.get("chat"):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_llm(out: Path, fields: dict[str, Any]) -> None:
    import transformers as tf

    tokenizer = _build_tokenizer(fields)
    config_fields = {k: v for k, v in fields.items() if k not in ("bos", "eos", "pad", "chat")}
    config = tf.LlamaConfig(
        **config_fields,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _seeded()
    model = tf.LlamaForCausalLM(config)
    _save_model(model, out)
    tokenizer.save_pretrained(out)


def _build_text_encoder(out: Path, fields: dict[str, Any]) -> None:
    import transformers as tf

    tokenizer = _build_tokenizer(fields)
    config_fields = {k: v for k, v in fields.items() if k not in ("bos", "eos", "pad", "chat")}
    _seeded()
    model = tf.BertModel(tf.BertConfig(**config_fields, pad_token_id=tokenizer.pad_token_id), add_pooling_layer=False)
    _save_model(model, out)
    tokenizer.save_pretrained(out)
