"""The LLM's vocabulary extended with image tokens: original ids, embeddings and logits unchanged; new rows train."""

from __future__ import annotations

import pytest
import torch

from mrg.model.vocab import ExtendedVocabulary, ImageVocabulary


@pytest.fixture
def llm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def test_id_layout() -> None:
    vocab = ImageVocabulary(base_size=50, num_codes=8)
    assert (vocab.boi_id, vocab.eoi_id, vocab.size, vocab.num_new) == (50, 51, 60, 10)
    codes = torch.tensor([[[0, 7], [3, 1]]])  # (1, 2, 2)
    seq = vocab.image_sequence(codes)
    assert seq.tolist() == [[50, 52, 59, 55, 53, 51]]
    assert torch.equal(vocab.codes(seq[:, 1:-1]), codes.flatten(1))
    assert vocab.is_code(seq).tolist() == [[False, True, True, True, True, False]]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vocab.code_ids(torch.tensor([8]))


def _logits(llm, ext: ExtendedVocabulary, ids: torch.Tensor) -> torch.Tensor:
    hidden = llm.get_decoder()(inputs_embeds=ext.embed(ids)).last_hidden_state  # after the final norm
    return ext.logits(hidden)


def test_original_ids_keep_their_embeddings_and_logits(llm) -> None:
    ext = ExtendedVocabulary(llm.get_input_embeddings(), llm.get_output_embeddings(), num_codes=8)
    text = torch.tensor([[1, 5, 9, 49, 0]])
    assert torch.equal(ext.embed(text), llm.get_input_embeddings()(text))
    with torch.no_grad():
        extended = _logits(llm, ext, text)
        original = llm(input_ids=text).logits
    assert extended.shape == (1, 5, 60)
    assert torch.allclose(extended[..., :50], original, atol=1e-5)


def test_only_the_new_rows_train(llm) -> None:
    llm.requires_grad_(False)  # the base LLM is frozen; the extension's own rows are the only parameters left
    ext = ExtendedVocabulary(llm.get_input_embeddings(), llm.get_output_embeddings(), num_codes=8)
    trainable = [n for n, p in ext.named_parameters() if p.requires_grad]
    assert trainable == ["new_embeddings", "new_head"]
    base_in = llm.get_input_embeddings().weight.clone()
    base_out = llm.get_output_embeddings().weight.clone()
    new_in, new_out = ext.new_embeddings.detach().clone(), ext.new_head.detach().clone()
    vocab = ext.vocab
    seq = torch.cat([torch.tensor([[3, 4]]), vocab.image_sequence(torch.tensor([[[1, 2], [2, 6]]]))], dim=1)
    optimizer = torch.optim.AdamW([p for p in ext.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        logits = _logits(llm, ext, seq)
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], seq[0, 1:])  # text -> image tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(llm.get_input_embeddings().weight, base_in)
    assert torch.equal(llm.get_output_embeddings().weight, base_out)
    used = torch.tensor([0, 1, 3, 4, 8])  # <boi>, <eoi>, codes 1, 2, 6 -> rows 0, 1, 3, 4, 8
    assert not torch.allclose(ext.new_embeddings.detach()[used], new_in[used])
    assert not torch.allclose(ext.new_head.detach(), new_out)  # every output row gets the softmax gradient


def test_pair_sequences_in_both_directions() -> None:
    from mrg.model.vocab import IGNORE_INDEX, pair_sequence

    vocab = ImageVocabulary(base_size=50, num_codes=8)
    codes = torch.tensor([[1, 2], [3, 4]])
    ids, labels = pair_sequence(vocab, [7, 8, 9], codes, "image-to-report", bos_id=1, eos_id=2)
    assert ids.tolist() == [1, 50, 53, 54, 55, 56, 51, 7, 8, 9, 2]
    assert labels.tolist() == [IGNORE_INDEX] * 7 + [7, 8, 9, 2]
    ids, labels = pair_sequence(vocab, [7, 8, 9], codes, "report-to-image", bos_id=None, eos_id=2)
    assert ids.tolist() == [7, 8, 9, 50, 53, 54, 55, 56, 51]
    assert labels.tolist() == [IGNORE_INDEX] * 4 + [53, 54, 55, 56, 51]
    with pytest.raises(ValueError, match="direction"):
        pair_sequence(vocab, [7], codes, "sideways", bos_id=1, eos_id=2)
