"""Random-weight models in each metric's checkpoint format, for the tests (TINY) and benchmarks (BASE).

* ``build_chexbert``: ``chexbert.pth`` (``{"model_state_dict": {"module.bert.*", "module.linear_heads.*"}}``,
  as CheXbert's training script saves it) with ``config.json`` and a WordPiece tokenizer beside it;
* ``build_roberta``: a 6-layer RoBERTa with a byte-level BPE tokenizer (``save_pretrained`` folder);
* ``build_radgraph``: a RadGraph/DyGIE++ folder: ``config.json``, ``vocabulary/`` (allennlp's files) and
  ``weights.th`` (the DyGIE++ state dict keys), plus the encoder's config + tokenizer in ``transformer/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.metrics.model_based.texts import CORPUS


def _wordpiece(folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=220, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    vocab = tok.get_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    # vocab.txt for transformers 4 (and the original CheXbert code), tokenizer.json for transformers 5
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    try:
        tokenizer = BertTokenizer(vocab=vocab)
    except TypeError:  # transformers 4: the slow tokenizer takes a file
        tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(folder))
    return tokenizer


@dataclass(frozen=True)
class Size:
    """Encoder and head sizes: TINY for the tests, BASE (bert-base / distilroberta-base shapes) for benchmarks."""

    hidden: int = 32
    layers: int = 2
    heads: int = 2
    intermediate: int = 64
    vocab_size: int = 0  # 0: the trained tokenizer's size
    init: float = 0.5  # large, so that random models tell texts apart
    span_width: int = 4
    feature: int = 8
    ff_hidden: int = 16
    max_length: int = 24


TINY = Size()
BASE = Size(hidden=768, layers=12, heads=12, intermediate=3072, vocab_size=30522, init=0.02, span_width=12,
            feature=20, ff_hidden=150, max_length=512)


def _bert_config(vocab_size: int, size: Size = TINY):
    from transformers import BertConfig

    return BertConfig(vocab_size=size.vocab_size or vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                      num_attention_heads=size.heads, intermediate_size=size.intermediate,
                      max_position_embeddings=512 if size.max_length > 64 else 128, initializer_range=size.init)


def build_chexbert(model_root: Path, size: Size = TINY) -> Path:
    """``chexbert/chexbert.pth`` with config.json and a WordPiece tokenizer beside it."""
    import torch
    from transformers import BertModel

    folder = model_root / "chexbert"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(0)
    config = _bert_config(len(tokenizer), size)
    bert = BertModel(config)
    config.to_json_file(str(folder / "config.json"))
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    for index in range(14):
        head = torch.nn.Linear(size.hidden, 2 if index == 13 else 4)
        state[f"module.linear_heads.{index}.weight"] = head.weight.detach() * 8  # spread the argmax
        state[f"module.linear_heads.{index}.bias"] = head.bias.detach()
    torch.save({"model_state_dict": state, "epoch": 3}, folder / "chexbert.pth")
    return folder


def build_roberta(model_root: Path, size: Size = TINY) -> Path:
    """A 6-layer RoBERTa (distilroberta-base's shape at BASE) with a byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = model_root / "distilroberta"
    folder.mkdir(parents=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    spec = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    (folder / "vocab.json").write_text(json.dumps(spec["vocab"]), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    try:
        tokenizer = RobertaTokenizer(vocab=spec["vocab"], merges=merges)
    except TypeError:  # transformers 4
        tokenizer = RobertaTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(1)
    RobertaModel(RobertaConfig(
        vocab_size=50265 if size.vocab_size else len(tokenizer), hidden_size=size.hidden, num_hidden_layers=6,
        num_attention_heads=size.heads, intermediate_size=size.intermediate, max_position_embeddings=514,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=size.init)).save_pretrained(str(folder))
    return folder


def build_bert6(model_root: Path) -> Path:
    """A tiny 6-layer BERT (WordPiece) for BERTScore: bert-score takes the non-RoBERTa path for it."""
    import torch
    from transformers import BertModel

    folder = model_root / "bert6"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(3)
    config = _bert_config(len(tokenizer))
    config.num_hidden_layers = 6
    BertModel(config).save_pretrained(str(folder))
    return folder


def build_radgraph(model_root: Path, size: Size = TINY) -> Path:
    """A RadGraph folder: config.json, vocabulary/, weights.th (DyGIE++ keys), encoder files in transformer/."""
    import torch
    from transformers import BertModel

    folder = model_root / "radgraph"
    transformer = folder / "transformer"
    tokenizer = _wordpiece(transformer)
    torch.manual_seed(2)
    config = _bert_config(len(tokenizer), size)
    config.save_pretrained(str(transformer))
    bert = BertModel(config)
    width, feature, hidden = size.span_width, size.feature, size.ff_hidden
    span_dim = 2 * size.hidden + feature
    config_json = {
        "dataset_reader": {"type": "dygie", "max_span_width": width, "token_indexers": {"bert": {
            "type": "pretrained_transformer_mismatched", "model_name": str(transformer), "max_length": size.max_length}}},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": {"type": "pretrained_transformer_mismatched",
                                                      "model_name": str(transformer), "max_length": size.max_length}}},
            "initializer": {}, "module_initializer": {},
            "feature_size": feature, "max_span_width": width, "target_task": "relation",
            "feedforward_params": {"num_layers": 2, "hidden_dims": hidden, "dropout": 0.4},
            "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "modules": {"ner": {}, "coref": {"spans_per_word": 0.3, "max_antecedents": 10},
                        "relation": {"spans_per_word": 0.5, "positive_label_weight": 1.0},
                        "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                   "loss_weights": {"trigger": 1.0, "arguments": 0.5}}},
        },
    }
    (folder / "config.json").write_text(json.dumps(config_json, indent=1), encoding="utf-8")
    vocab = folder / "vocabulary"
    vocab.mkdir()
    (vocab / "radgraph__ner_labels.txt").write_text("\nANAT-DP\nOBS-DP\nOBS-U\nOBS-DA\n", encoding="utf-8")
    (vocab / "radgraph__relation_labels.txt").write_text("located_at\nmodify\nsuggestive_of\n", encoding="utf-8")
    (vocab / "non_padded_namespaces.txt").write_text("*tags\n*labels\n", encoding="utf-8")

    def linear(prefix: str, n_in: int, n_out: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
        layer = torch.nn.Linear(n_in, n_out)
        return {prefix + "weight": layer.weight.detach() * scale, prefix + "bias": layer.bias.detach()}

    def feedforward(prefix: str, n_in: int) -> dict[str, torch.Tensor]:
        return {**linear(prefix + "_linear_layers.0.", n_in, hidden), **linear(prefix + "_linear_layers.1.", hidden, hidden)}

    state = {f"_embedder.token_embedder_bert._matched_embedder.transformer_model.{k}": v
             for k, v in bert.state_dict().items()}
    state["_endpoint_span_extractor._span_width_embedding.weight"] = torch.randn(width, feature)
    ner = "_ner._ner_scorers.radgraph__ner_labels."
    state.update(feedforward(ner + "0._module.", span_dim))
    state.update(linear(ner + "1._module.", hidden, 4, scale=6.0))
    state[ner + "1._module.bias"] = state[ner + "1._module.bias"] - 1.0  # some spans stay null
    rel = "radgraph__relation_labels"
    state.update(feedforward(f"_relation._mention_pruners.{rel}._scorer.0._module.", span_dim))
    state.update(linear(f"_relation._mention_pruners.{rel}._scorer.1._module.", hidden, 1))
    state.update(feedforward(f"_relation._relation_feedforwards.{rel}.", 3 * span_dim))
    state.update(linear(f"_relation._relation_scorers.{rel}.", hidden, 3, scale=6.0))
    # parts DyGIE++ builds but RadGraph never runs (coref, events): present in real checkpoints too
    state["_coref._distance_embedding.weight"] = torch.randn(10, feature)
    state["_events._distance_embedding.weight"] = torch.randn(10, feature)
    torch.save(state, folder / "weights.th")
    return folder


RATE_LABELS = ["O", *(f"{bio}-{kind}" for kind in ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
                      for bio in ("B", "I"))]


def build_rate_ner(model_root: Path, size: Size = TINY) -> Path:
    """RaTEScore's NER model: a BERT token classifier over O and B-/I- of the five entity types."""
    import torch
    from transformers import BertForTokenClassification

    folder = model_root / "rate-ner"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(4)
    config = _bert_config(len(tokenizer), size)
    config.id2label = dict(enumerate(RATE_LABELS))
    config.label2id = {label: index for index, label in enumerate(RATE_LABELS)}
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(8.0)  # spread the argmax over the labels
        model.classifier.bias[0] += 1.0  # and keep some tokens O
    model.save_pretrained(str(folder))
    return folder


def build_rate_encoder(model_root: Path, size: Size = TINY) -> Path:
    """RaTEScore's entity encoder (BioLORD's role): a BERT encoder whose [CLS] state is the embedding."""
    import torch
    from transformers import BertModel

    folder = model_root / "rate-embed"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(5)
    BertModel(_bert_config(len(tokenizer), size)).save_pretrained(str(folder))
    return folder


def build_llama(model_root: Path, hidden: int = 32, layers: int = 2, intermediate: int = 64) -> Path:
    """A tiny random Llama causal LM (GREEN's judge architecture) with a byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from mrg.metrics.model_based.green import make_prompt

    folder = model_root / "llama"
    folder.mkdir(parents=True)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [*CORPUS, make_prompt(CORPUS[0], CORPUS[1]), "<|user|>\n<|assistant|>\n[Matched Findings]: 1."]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.model_max_length = 4096
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(6)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=intermediate,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder
