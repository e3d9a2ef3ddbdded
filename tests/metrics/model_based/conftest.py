"""Tiny random-weight models in each metric's checkpoint format, built once per test session.

* ``chexbert_dir``: ``chexbert.pth`` (``{"model_state_dict": {"module.bert.*", "module.linear_heads.*"}}``,
  as CheXbert's training script saves it) with ``config.json`` and a WordPiece tokenizer beside it;
* ``bertscore_dir``: a 6-layer RoBERTa with a byte-level BPE tokenizer (``save_pretrained`` folder);
* ``radgraph_dir``: a RadGraph/DyGIE++ folder: ``config.json``, ``vocabulary/`` (allennlp's files) and
  ``weights.th`` (the DyGIE++ state dict keys), plus the encoder's config + tokenizer in ``transformer/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, initializer_range=0.5)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-metrics")


@pytest.fixture(scope="session")
def chexbert_dir(model_root: Path) -> Path:
    import torch
    from transformers import BertModel

    folder = model_root / "chexbert"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(0)
    config = _bert_config(len(tokenizer))
    bert = BertModel(config)
    config.to_json_file(str(folder / "config.json"))
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    for index in range(14):
        head = torch.nn.Linear(32, 2 if index == 13 else 4)
        state[f"module.linear_heads.{index}.weight"] = head.weight.detach() * 8  # spread the argmax
        state[f"module.linear_heads.{index}.bias"] = head.bias.detach()
    torch.save({"model_state_dict": state, "epoch": 3}, folder / "chexbert.pth")
    return folder


@pytest.fixture(scope="session")
def bertscore_dir(model_root: Path) -> Path:
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
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                               eos_token_id=2, initializer_range=0.5)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def bert6_dir(model_root: Path) -> Path:
    """A 6-layer BERT (WordPiece) for BERTScore: bert-score takes the non-RoBERTa path for it."""
    import torch
    from transformers import BertModel

    folder = model_root / "bert6"
    tokenizer = _wordpiece(folder)
    torch.manual_seed(3)
    config = _bert_config(len(tokenizer))
    config.num_hidden_layers = 6
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def radgraph_dir(model_root: Path) -> Path:
    import torch
    from transformers import BertModel

    folder = model_root / "radgraph"
    transformer = folder / "transformer"
    tokenizer = _wordpiece(transformer)
    torch.manual_seed(2)
    config = _bert_config(len(tokenizer))
    config.save_pretrained(str(transformer))
    bert = BertModel(config)
    width, feature, hidden = 4, 8, 16
    span_dim = 2 * 32 + feature
    config_json = {
        "dataset_reader": {"type": "dygie", "max_span_width": width, "token_indexers": {"bert": {
            "type": "pretrained_transformer_mismatched", "model_name": str(transformer), "max_length": 24}}},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": {"type": "pretrained_transformer_mismatched",
                                                      "model_name": str(transformer), "max_length": 24}}},
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


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "metric-cache")
