"""TRRG's contrastive pre-training parts: the loss against a hand computation, gradients, and the gathered
2-process loss against the 1-process loss on the same global batch."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mrg.errors import ConfigError, DataError
from mrg.model.contrastive import ContrastiveHead, multi_positive_info_nce, positive_mask, sentence_keys
from mrg.model.text_encoder import TextEncoder, positives_of, report_sentences


def test_loss_matches_hand_computation() -> None:
    # 2 images, 3 sentences; image 0 owns sentences 0 and 1, image 1 owns sentence 2
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pos = torch.tensor([[True, True, False], [False, False, True]])
    scale = 2.0
    sims = [[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]]
    lse = lambda xs: math.log(sum(math.exp(scale * x) for x in xs))  # noqa: E731
    i2t = ((-(scale * 1.0 - lse(sims[0])) - (scale * 0.6 - lse(sims[0]))) / 2 - (scale * 1.0 - lse(sims[1]))) / 2
    cols = [[sims[0][t], sims[1][t]] for t in range(3)]
    t2i = (-(scale * 1.0 - lse(cols[0])) - (scale * 0.6 - lse(cols[1])) - (scale * 1.0 - lse(cols[2]))) / 3
    expected = (i2t + t2i) / 2
    assert multi_positive_info_nce(image, text, pos, scale).item() == pytest.approx(expected, rel=1e-5)


def test_identical_sentences_are_positives_of_every_image_holding_them() -> None:
    keys = sentence_keys(["No effusion.", "heart is large.", "no  effusion."])
    owner = torch.tensor([0, 0, 1])
    mask = positive_mask(owner, keys, 2)
    assert mask.tolist() == [[True, True, True], [True, False, True]]


def test_gradients_reach_encoders_and_temperature() -> None:
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 8)
    head = ContrastiveHead(8, 5, dim=4)
    loss = head(encoder(torch.randn(3, 6)), torch.randn(4, 5), torch.tensor([0, 1, 1, 2]),
                sentence_keys(["a.", "b.", "c.", "d."]))
    loss.backward()
    for p in [*encoder.parameters(), *head.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int], list[int]]:
    torch.manual_seed(3)
    image, text = torch.randn(4, 6), torch.randn(7, 5)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    keys = sentence_keys(["a.", "b.", "a.", "c.", "d.", "e.", "b."])
    return image, text, owner, keys, [2, 2], [3, 4]  # images and sentences per rank


def _head() -> ContrastiveHead:
    torch.manual_seed(1)
    return ContrastiveHead(6, 5, dim=4)


def _worker(rank: int, port: int, queue: mp.Queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    image, text, owner, keys, n_img, n_txt = _global_batch()
    i0, t0 = sum(n_img[:rank]), sum(n_txt[:rank])
    local_image = image[i0 : i0 + n_img[rank]].clone().requires_grad_()
    local_owner = owner[t0 : t0 + n_txt[rank]] - i0
    loss = _head()(local_image, text[t0 : t0 + n_txt[rank]], local_owner, keys[t0 : t0 + n_txt[rank]])
    loss.backward()
    queue.put((rank, loss.item(), local_image.grad.tolist()))  # plain lists: a tensor would be shared by fd
    dist.destroy_process_group()


def test_two_process_gathered_loss_equals_one_process_loss() -> None:
    image, text, owner, keys, _, _ = _global_batch()
    image.requires_grad_()
    single = _head()(image, text, owner, keys)
    single.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert [r[1] for r in results] == pytest.approx([single.item()] * 2, rel=1e-5)
    # each rank's loss is the global loss, and all_gather's backward sums every rank's gradient into the
    # owner's slice: the local gradient is world_size x the 1-process one (DDP's mean then gives the 1-process step)
    grads = torch.tensor([row for r in results for row in r[2]])
    torch.testing.assert_close(grads, 2 * image.grad, rtol=1e-4, atol=1e-6)


def test_negated_sentences_policy() -> None:
    report = "The heart is enlarged. No pleural effusion. No pneumothorax."
    assert len(report_sentences(report)) == 3
    assert len(positives_of(report, negated="keep")) == 3
    assert positives_of(report, negated="drop") == ["the heart is enlarged."]
    prompts = positives_of(report, negated="prompt")
    assert "no pleural effusion." in prompts and "no pneumothorax." in prompts
    with pytest.raises(ConfigError, match="negated_sentences"):
        positives_of(report, negated="ignore")


def test_random_bert_text_encoder_embeds_sentences() -> None:
    enc = TextEncoder("random:bert")
    out = enc(["no effusion.", "the heart is enlarged in size."])
    assert out.shape == (2, enc.hidden_size)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(DataError, match="no sentences"):
        enc([])


def test_text_encoder_without_tokenizer_is_refused(tmp_path) -> None:
    from mrg.model.random_models import materialize

    src = materialize("random:bert")
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    with pytest.raises(ConfigError, match="no tokenizer"):
        TextEncoder(str(tmp_path))
