"""The report model: input layout, loss masking, EOS under truncation, learning, generation, weights API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrg.config import GenerateConfig
from mrg.data.dataset import ReportDataset, collate_studies
from mrg.errors import CheckpointError, ConfigError
from mrg.model.report_model import IGNORE_INDEX
from tests.builders import build_model, with_tokens

GREEDY = GenerateConfig(strategy="greedy", min_new_tokens=1, max_new_tokens=6)


def _tokens(model, reports):
    """(report ids, mask, number of target tokens) as the collate step makes them."""
    from mrg.data.dataset import report_tensors

    out = report_tensors(model.tokenizer, reports, model.max_report_tokens)
    return out["report_ids"], out["report_mask"], out["num_target_tokens"]


def _labels_and_embeds(model, batch):
    visual, token_mask = model.visual_tokens(batch)
    prompt = model.promptbook(visual, token_mask)
    ids, mask, num = _tokens(model, batch["reports"])
    embeds, attn, labels, moved = model.assemble(visual, token_mask, prompt, ids, mask)
    return embeds, attn, labels, ids, mask, num, moved


def test_layout_and_labels(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg())
    embeds, attn, labels, ids, mask, num, moved = _labels_and_embeds(model, tiny_batch)
    tok = model.tokenizer
    text_tokens = model.llm.template.num_text_tokens
    prefix = text_tokens + 17 + 4  # template text + ViT tokens (16 patches + CLS) + 4 prompt tokens
    assert not moved
    assert embeds.shape == (3, prefix + ids.shape[1], 64) and attn.shape == labels.shape == embeds.shape[:2]
    assert torch.all(labels[:, :prefix] == IGNORE_INDEX)  # BOS, template, image and prompt never count
    for row, report in enumerate(tiny_batch["reports"]):
        expected = tok(report, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        target = labels[row][labels[row] != IGNORE_INDEX].tolist()
        assert target == expected  # the report and its EOS, nothing else
        assert labels[row, prefix + len(expected) :].eq(IGNORE_INDEX).all()  # padding
    assert num == int((labels != IGNORE_INDEX).sum())
    assert embeds[0, 0].equal(model.llm.embed(torch.tensor(tok.bos_token_id)))  # starts with BOS


def test_loss_is_cross_entropy_on_report_tokens_only(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg()).eval()
    with torch.no_grad():
        out = model(with_tokens(model, tiny_batch))
        embeds, attn, labels, *_ = _labels_and_embeds(model, tiny_batch)
        logits = model.llm.model(inputs_embeds=embeds, attention_mask=attn.long()).logits  # full, with the padding mask
    reference = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, reference, atol=1e-5)
    assert out.num_target_tokens == int((labels != IGNORE_INDEX).sum())


def test_long_report_keeps_its_eos(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg("model.max_report_tokens=5"))
    ids, mask, num = _tokens(model, ["the heart size is normal . the lungs are clear .", "clear ."])
    eos = model.tokenizer.eos_token_id
    assert ids.shape == (2, 5) and num == 5 + 3
    assert ids[0, -1] == eos and ids[0, :-1].ne(eos).all()  # cut to 4 report tokens + EOS
    assert ids[1, :3].tolist()[-1] == eos and mask[1].tolist() == [True] * 3 + [False] * 2


def test_concat_views_squeeze_out_padded_tokens(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg("model.encoder.views=concat")).eval()
    embeds, attn, labels, ids, mask, num, moved = _labels_and_embeds(model, tiny_batch)
    assert moved
    # study b has one view: 17 fewer tokens, all padding moved behind its report
    lengths = attn.sum(dim=1).tolist()
    assert lengths[0] - lengths[1] == 17 + int(mask[0].sum() - mask[1].sum())
    for row in range(3):
        assert attn[row, : lengths[row]].all() and not attn[row, lengths[row] :].any()  # contiguous, right-padded
        assert (labels[row] != IGNORE_INDEX).sum() == mask[row].sum()
    with torch.no_grad():
        out = model(with_tokens(model, tiny_batch))
        single = model(with_tokens(model, {k: v[1:2] if torch.is_tensor(v) else v[1:2] for k, v in tiny_batch.items()}))
        logits = model.llm.model(inputs_embeds=embeds[1:2, : lengths[1]]).logits
    reference = F.cross_entropy(logits[0, :-1], labels[1, 1 : lengths[1]], ignore_index=IGNORE_INDEX)
    assert torch.allclose(single.loss, reference, atol=1e-5)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("mode", ["none", "static", "prompt-wise", "promptbook-wise"])
def test_loss_falls_for_every_variant(make_cfg, tiny_batch, mode: str) -> None:
    model = build_model(make_cfg(f"model.promptbook.mode={mode}", "model.encoder.trainable=frozen"))
    params = [p for _, p in model.trainable_named_parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(with_tokens(model, tiny_batch)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


@pytest.mark.parametrize("views", ["mean", "concat"])
def test_batched_greedy_equals_one_at_a_time(make_cfg, tiny_batch, views: str) -> None:
    model = build_model(make_cfg(f"model.encoder.views={views}")).eval()
    with torch.no_grad():  # move the zero-initialised head so prompts differ per image
        model.promptbook.head.weight.normal_(0, 0.5)
    batched = model.generate(tiny_batch, GREEDY)
    single = [
        model.generate({"pixel_values": tiny_batch["pixel_values"][i : i + 1], "view_mask": tiny_batch["view_mask"][i : i + 1]}, GREEDY)[0]
        for i in range(3)
    ]
    assert batched == single
    assert all(isinstance(text, str) and text for text in batched)


def test_generation_strategies_and_determinism(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg()).eval()
    beam = GenerateConfig(strategy="beam", num_beams=2, min_new_tokens=2, max_new_tokens=5)
    assert model.generate(tiny_batch, beam) == model.generate(tiny_batch, beam)
    sample = GenerateConfig(strategy="sample", temperature=1.0, top_p=0.9, min_new_tokens=2, max_new_tokens=5, seed=3)
    state = torch.get_rng_state()
    first = model.generate(tiny_batch, sample)
    assert torch.equal(torch.get_rng_state(), state)  # sampling does not disturb the training RNG
    assert model.generate(tiny_batch, sample) == first
    assert len(first) == 3


def test_decode_cuts_at_eos_and_drops_special_tokens(make_cfg) -> None:
    model = build_model(make_cfg())
    tok = model.tokenizer
    words = tok("the heart is normal .", add_special_tokens=False)["input_ids"]
    more = tok("lungs clear", add_special_tokens=False)["input_ids"]
    row = [tok.bos_token_id, *words, tok.eos_token_id, *more]
    assert model.decode(torch.tensor([row])) == ["the heart is normal ."]


def test_trainable_state_dict_roundtrip(make_cfg, tiny_batch) -> None:
    model = build_model(make_cfg())
    state = model.trainable_state_dict()
    assert state and not any(name.startswith("llm.") for name in state)
    assert set(state) == {name for name, _ in model.trainable_named_parameters()}
    counts = model.parameter_counts()
    assert counts["trainable"] == sum(t.numel() for t in state.values())
    assert counts["frozen"] >= sum(p.numel() for p in model.llm.parameters())
    other = build_model(make_cfg("train.seed=7"))
    assert not torch.equal(other.trainable_state_dict()["promptbook.book"], state["promptbook.book"])
    other.load_trainable_state_dict({k: v.clone() for k, v in state.items()})
    assert all(torch.equal(other.trainable_state_dict()[k], v) for k, v in state.items())


def test_load_errors_list_keys_and_shapes(make_cfg) -> None:
    model = build_model(make_cfg())
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    state.pop("promptbook.book")
    state["llm.model.lm_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing 1 trainable tensor\(s\): promptbook\.book; unexpected 1 tensor\(s\): llm\.model\.lm_head\.weight"):
        model.load_trainable_state_dict(state)
    model.load_trainable_state_dict(state | {"promptbook.book": model.promptbook.book.detach().clone()}, strict=False)
    with pytest.raises(CheckpointError, match=r"promptbook\.book has shape \(1,\) but the model's is \(3, 4, 64\)"):
        model.load_trainable_state_dict({"promptbook.book": torch.zeros(1)}, strict=False)


def test_no_decay_names(make_cfg) -> None:
    model = build_model(make_cfg())
    names = model.no_decay_parameter_names()
    assert {"promptbook.book", "projector.proj.bias", "projector.norm.weight", "promptbook.condition.0.weight"} <= names
    assert "projector.proj.weight" not in names and "promptbook.head.weight" not in names
    assert names <= {n for n, _ in model.trainable_named_parameters()}


def test_trains_on_a_prepared_dataset(make_cfg, tiny_prepared) -> None:
    cfg = make_cfg("data.image_size=48")
    model = build_model(cfg)
    ds = ReportDataset(tiny_prepared, "train", image_size=48, max_views=2, normalize="auto", **model.image_settings.kwargs())
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_studies)
    batch = next(iter(loader))
    assert batch["view_mask"].tolist() == [[True, False], [True, True], [True, False], [True, True]]
    out = model(with_tokens(model, batch))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.projector.proj.weight.grad is not None
    model.eval()
    texts = model.generate(batch, GenerateConfig(strategy="beam", num_beams=2, min_new_tokens=1, max_new_tokens=4))
    assert len(texts) == 4


def test_checkpoint_generation_defaults_do_not_leak(make_cfg, tiny_batch) -> None:
    """A generation_config.json asking for sampling (Llama-2-chat's does) must not change our decoding."""
    model = build_model(make_cfg()).eval()
    beam = GenerateConfig(strategy="beam", num_beams=2, min_new_tokens=20, max_new_tokens=20)
    greedy = GenerateConfig(strategy="greedy", min_new_tokens=20, max_new_tokens=20)
    before = model.generate(tiny_batch, beam), model.generate(tiny_batch, greedy)
    defaults = model.llm.model.generation_config
    defaults.do_sample, defaults.temperature, defaults.top_k, defaults.no_repeat_ngram_size = True, 0.6, 3, 1
    defaults.early_stopping = True
    assert (model.generate(tiny_batch, beam), model.generate(tiny_batch, greedy)) == before


@pytest.mark.parametrize("trainable", ["full", "frozen"])
def test_batchnorm_statistics_are_part_of_the_trained_state(make_cfg, tiny_batch, trainable: str) -> None:
    """A CNN encoder's BatchNorm running statistics change in training; a reloaded model must use them."""
    cfg = make_cfg("model.encoder.name_or_path=random:resnet", f"model.encoder.trainable={trainable}")
    model = build_model(cfg)
    stats = dict(model.running_statistics())
    if trainable == "frozen":
        assert not stats  # a frozen encoder stays in eval mode: its statistics never move
        return
    assert any(name.endswith("running_mean") for name in stats) and all(n.startswith("encoder.") for n in stats)
    before = {n: b.clone() for n, b in stats.items()}
    model.train()
    optimizer = torch.optim.SGD([p for _, p in model.trainable_named_parameters()], lr=0.1)
    for _ in range(3):
        model(with_tokens(model, tiny_batch)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(not torch.equal(before[n], b) for n, b in model.running_statistics())
    state = model.trainable_state_dict()
    assert set(before) <= set(state)
    fresh = build_model(cfg)
    fresh.load_trainable_state_dict({k: v.clone() for k, v in state.items()})
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model.visual_tokens(tiny_batch)[0], fresh.visual_tokens(tiny_batch)[0])


def test_without_visual_tokens_the_image_reaches_the_llm_only_through_the_prompt(make_cfg, tiny_batch) -> None:
    """The ablation model.visual_tokens=false: no visual tokens in the input; a customised prompt still sees the image."""
    visual_model = build_model(make_cfg("model.promptbook.mode=prompt-wise"))
    without = build_model(make_cfg("model.promptbook.mode=prompt-wise", "model.visual_tokens=false"))
    visual, mask = visual_model.visual_tokens(tiny_batch)
    prompt = visual_model.promptbook(visual, mask)
    full, *_ = visual_model.assemble(visual, mask, prompt)
    bare, *_ = without.assemble(visual, mask, prompt)
    assert full.shape[1] - bare.shape[1] == visual.shape[1]  # exactly the M visual tokens are left out

    # at initialisation the prompt-wise prompt is the static one, so every image gives the same loss input;
    # after a few steps the customised prompt carries the image into the LLM
    other = dict(tiny_batch, pixel_values=torch.flip(tiny_batch["pixel_values"], dims=[0]))
    without.eval()
    with torch.no_grad():
        assert torch.allclose(without(with_tokens(without, tiny_batch)).loss, without(with_tokens(without, dict(other, reports=tiny_batch["reports"]))).loss)
    without.train()
    optimizer = torch.optim.Adam([p for _, p in without.trainable_named_parameters()], lr=1e-2)
    for _ in range(5):
        without(with_tokens(without, tiny_batch)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    without.eval()
    with torch.no_grad():
        assert not torch.allclose(without(with_tokens(without, tiny_batch)).loss, without(with_tokens(without, dict(other, reports=tiny_batch["reports"]))).loss)


def test_without_visual_tokens_needs_a_customised_prompt(make_cfg) -> None:
    with pytest.raises(ConfigError, match="the image would not reach the LLM"):
        make_cfg("model.promptbook.mode=static", "model.visual_tokens=false")
