"""The in-project domain LM (``mrg train-lm``): a small causal LM and BPE tokenizer trained on a dataset's reports.

The result is a Hugging Face folder (``save_pretrained``) that ``mrg train`` loads by path exactly
like a hub LLM, frozen. It is the demo's language model (no pretrained LLM can be downloaded here)
and a domain-LM baseline for users.

Why the context: a frozen LM pre-trained on reports alone learns to ignore everything in front of the
report, so no soft prompt can steer it once frozen (measured in ../shared/notes: micro-F1 0.00). Real
hub LLMs follow their context because they were trained on context-dependent text. So each training
sequence here has the report model's layout,

    [BOS] Human: <Img> {context} </Img> {instruction} \\nAssistant: {report} [EOS]

with the template pieces tokenized exactly as ``mrg.model.llm.build_template`` tokenizes them, the
context (tag tokens for the findings the in-project labeler reads in the report, e.g.
``<Cardiomegaly> <Pleural_Effusion?>``) where the visual tokens will sit, and nothing where the
prompt will sit. The context is dropped from a share of the sequences. At report-generation time no
context is given: the visual tokens and the customised prompt have to supply it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrg.config import LMConfig, config_to_dict
from mrg.console import info, make_progress
from mrg.data.chexpert import OBSERVATIONS
from mrg.data.dataset import QUESTION_FORMAT
from mrg.data.prepared import Study, load_prepared_dataset
from mrg.errors import DataError, OutputDirError
from mrg.files import read_json, write_json_atomic
from mrg.metrics.labeler import LABELER_NAME, LABELER_VERSION, label_reports
from mrg.model.llm import build_template
from mrg.optim import adamw, warmup_cosine
from mrg.provenance import provenance

STAMP_NAME = "lm.json"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IGNORE_INDEX = -100


def context_tag(observation: str, value: float) -> str:
    """The tag token of one labelled observation: ``<Pleural_Effusion>``, or ``<Pleural_Effusion?>`` if uncertain."""
    name = observation.replace(" ", "_")
    return f"<{name}?>" if value < 0 else f"<{name}>"


CONTEXT_TAGS: tuple[str, ...] = tuple(context_tag(o, v) for o in OBSERVATIONS for v in (1.0, -1.0))


def context_tags(labels: dict[str, float]) -> list[str]:
    """Tags of the positive and uncertain observations of one report, in CheXpert order."""
    return [context_tag(obs, labels[obs]) for obs in OBSERVATIONS if labels.get(obs) in (1.0, -1.0)]


@dataclass
class LMResult:
    """What ``train_report_lm`` produced."""

    out_dir: Path
    record: dict[str, Any]
    skipped: bool = False


# ------------------------------------------------------------------------------------------ tokenizer


def train_tokenizer(texts: list[str], cfg: LMConfig) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, with BOS/EOS/PAD and the context tags as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=[PAD, BOS, EOS, *CONTEXT_TAGS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(CONTEXT_TAGS),
        clean_up_tokenization_spaces=False,
    )


# ------------------------------------------------------------------------------------------ sequences


@dataclass
class Sequences:
    """Token sequences with the report model's layout and their loss masks."""

    inputs: list[list[int]]
    labels: list[list[int]]


def build_sequences(
    tokenizer: Any, template: Any, reports: list[str], contexts: list[list[str]], max_report_tokens: int
) -> Sequences:
    """Lay out ``[template with context at the image slot] + report + EOS``; loss only on report and EOS."""
    report_ids = tokenizer(reports, add_special_tokens=False, truncation=True, max_length=max_report_tokens - 1)["input_ids"]
    inputs, labels = [], []
    for ids, tags in zip(report_ids, contexts, strict=True):
        prefix: list[int] = []
        for segment in template.segments:
            if segment.kind == "text":
                prefix.extend(segment.ids)
            elif segment.kind == "image":
                prefix.extend(tokenizer.convert_tokens_to_ids(tags))
            # the prompt slot stays empty: the report model's learnable prompt goes there
        target = [*ids, tokenizer.eos_token_id]
        inputs.append(prefix + target)
        labels.append([IGNORE_INDEX] * len(prefix) + target)
    return Sequences(inputs, labels)


def qa_sequences(tokenizer: Any, template: Any, pairs: list[tuple[str, str]], contexts: list[list[str]]) -> Sequences:
    """``[template with context] + Question: q Answer: + answer + EOS`` with the ids the ``vqa`` task's collate step
    makes (``mrg.data.dataset.task_tensors``); loss on the answer and EOS only."""
    from mrg.data.dataset import question_ids

    questions = question_ids(tokenizer, [q for q, _ in pairs])
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False)["input_ids"]
    base = build_sequences(tokenizer, template, ["" for _ in pairs], contexts, 2)
    inputs, labels = [], []
    for prefix, q_ids, a_ids in zip(base.inputs, questions, answers, strict=True):
        head = prefix[:-1]  # build_sequences' empty report left only its EOS after the template
        target = [*a_ids, tokenizer.eos_token_id]
        inputs.append(head + q_ids + target)
        labels.append([IGNORE_INDEX] * (len(head) + len(q_ids)) + target)
    return Sequences(inputs, labels)


def _training_questions(cfg: LMConfig, train: list[Study]) -> tuple[list[tuple[str, str]], list[int]]:
    """(question, normalised answer) of the training questions of ``cfg.vqa_root`` and their studies' indices."""
    if not cfg.vqa_root:
        return [], []
    from mrg.data.vqa import load_vqa_set, normalize_answer

    index = {s.id: i for i, s in enumerate(train)}
    chosen = [q for q in load_vqa_set(cfg.vqa_root).split("train") if q.study_id in index]
    if not chosen:
        raise DataError(f"lm.vqa_root {cfg.vqa_root}: none of its training questions is about this dataset's training studies")
    return [(q.question, normalize_answer(q.answer)) for q in chosen], [index[q.study_id] for q in chosen]


def _with_questions(seqs: Sequences, bare: Sequences, tokenizer: Any, template: Any, pairs: list[tuple[str, str]],
                    asked: list[int], contexts: list[list[str]], held: set[int]) -> tuple[Sequences, Sequences]:
    """The report sequences plus the questions' (with and without context); questions about held-out studies stay
    out, so the held-out losses measure what they did."""
    kept = [k for k, i in enumerate(asked) if i not in held]
    qa = qa_sequences(tokenizer, template, [pairs[k] for k in kept], [contexts[asked[k]] for k in kept])
    qa_bare = qa_sequences(tokenizer, template, [pairs[k] for k in kept], [[] for _ in kept])
    return (Sequences(seqs.inputs + qa.inputs, seqs.labels + qa.labels),
            Sequences(bare.inputs + qa_bare.inputs, bare.labels + qa_bare.labels))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@torch.no_grad()
def mean_report_loss(model: Any, seqs: Sequences, pad_id: int, batch_size: int = 64) -> float:
    """Token-weighted cross-entropy of the report tokens (and EOS) of ``seqs``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(seqs.inputs), batch_size):
        inputs = _pad(seqs.inputs[start : start + batch_size], pad_id)
        labels = _pad(seqs.labels[start : start + batch_size], IGNORE_INDEX)
        logits = model(input_ids=inputs).logits[:, :-1]  # right padding cannot reach real positions
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += float(loss)
        count += int((target != IGNORE_INDEX).sum())
    return total / max(count, 1)


# ------------------------------------------------------------------------------------------ training


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _studies(root: Path, split: str) -> tuple[list[Study], str]:
    dataset = load_prepared_dataset(root)
    studies = dataset.split(split)
    if not studies:
        raise DataError(f"{root}: the {split} split is empty; 'mrg train-lm' needs training reports")
    return studies, dataset.normalize


def _claim_output(out_dir: Path, source: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The existing record when ``out_dir`` already holds this LM (skip), else None; refuses foreign folders."""
    stamp = out_dir / STAMP_NAME
    if stamp.is_file() and not force:
        record = read_json(stamp)
        if record.get("source") == source:
            return record
        raise OutputDirError(
            f"--out {out_dir}: holds an LM trained with other data or settings; choose another --out or pass --force"
        )
    if out_dir.exists() and any(out_dir.iterdir()) and not stamp.is_file():
        raise OutputDirError(f"--out {out_dir}: directory is not empty and holds no {STAMP_NAME}; choose a new folder")
    return None


def _lm_source(data_root: Path, cfg: LMConfig) -> dict[str, Any]:
    """What identifies an LM: the dataset folder, its studies checksum and the LM settings."""
    dataset_info = read_json(data_root / "prepare.json")
    return {
        "data": str(data_root.resolve()),
        "data_checksum": dataset_info.get("checksums", {}).get("studies.jsonl"),
        # without questions the record stays what earlier versions wrote, so their LM folders are reused
        "config": {k: v for k, v in config_to_dict(cfg).items() if k != "vqa_root" or v},
    }


def _split_heldout(count: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """(held-out, fit) indices: 5% of the training reports are held out to measure how much the LM uses its context."""
    order = list(range(count))
    rng.shuffle(order)
    num_held = max(1, len(order) // 20) if len(order) >= 20 else 0
    return order[:num_held], order[num_held:]


def _check_sequence_length(seqs: Sequences, cfg: LMConfig) -> None:
    longest = max(len(s) for s in seqs.inputs)
    if longest > cfg.max_position_embeddings:
        raise DataError(
            f"lm.max_position_embeddings ({cfg.max_position_embeddings}) is shorter than the longest training sequence "
            f"({longest} tokens); raise it or lower lm.max_report_tokens"
        )


def _new_causal_lm(tokenizer: Any, cfg: LMConfig) -> Any:
    """A freshly initialised Llama-style causal LM sized by ``cfg`` for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
    )


def _tokenizer_and_template(reports: list[str], cfg: LMConfig, rng: random.Random, out_dir: Path) -> tuple[Any, Any]:
    """The BPE tokenizer trained on the shuffled reports and template text, and the report model's template."""
    corpus = reports + [cfg.instruction, "Human: <Img></Img> \nAssistant:"]
    rng.shuffle(corpus)
    tokenizer = train_tokenizer(corpus, cfg)
    template = build_template(
        tokenizer, instruction=cfg.instruction, chat_template="r2gengpt", position=cfg.position, has_prompt=True,
        model_name=str(out_dir),
    )
    return tokenizer, template


def _set_generation_config(model: Any, tokenizer: Any) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


def _fit_lm(model: Any, seqs: Sequences, bare: Sequences, pad_id: int, cfg: LMConfig, rng: random.Random) -> list[float]:
    """Train ``model`` for ``cfg.steps`` steps on random batches of ``seqs`` (with context dropout); the loss per step."""
    # weight decay on matrices only: biases, norms and the (tied) embedding table are exempt
    no_decay = {n for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)}
    optimizer = adamw(model.named_parameters(), no_decay=no_decay, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      what="the domain LM")
    scheduler = warmup_cosine(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, min_ratio=0.01)

    losses: list[float] = []
    model.train()
    with make_progress() as progress:
        task = progress.add_task("train-lm", total=cfg.steps)
        for _ in range(cfg.steps):
            batch = [rng.randrange(len(seqs.inputs)) for _ in range(cfg.batch_size)]
            # context dropout: some sequences show the report with an empty image slot
            rows = [bare if rng.random() < cfg.context_dropout else seqs for _ in batch]
            inputs = _pad([r.inputs[i] for r, i in zip(rows, batch, strict=True)], pad_id)
            targets = _pad([r.labels[i] for r, i in zip(rows, batch, strict=True)], IGNORE_INDEX)
            # right padding after the last real token cannot influence real positions: no mask needed
            loss = model(input_ids=inputs, labels=targets).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            progress.advance(task)
    return losses


def _lm_record(
    *, source: dict[str, Any], normalize: str, template: Any, cfg: LMConfig, model: Any, tokenizer: Any,
    num_fit: int, num_held: int, losses: list[float], heldout_losses: tuple[float, float], started: float,
) -> dict[str, Any]:
    """The ``lm.json`` record: where the LM came from, its sizes, losses (held out with and without context), timing."""
    return {
        "source": source,
        "normalize": normalize,
        "template": template.text,
        "labeler": {"name": LABELER_NAME, "version": LABELER_VERSION} if cfg.context == "labels" else None,
        "num_train_reports": num_fit,
        "num_heldout_reports": num_held,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "heldout_loss_with_context": heldout_losses[0],
        "heldout_loss_without_context": heldout_losses[1],
        "seconds": round(time.perf_counter() - started, 1),
        "loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 50)]],
        "provenance": provenance(),
    }


def _save_lm(out_dir: Path, model: Any, tokenizer: Any, record: dict[str, Any]) -> None:
    """Write model, tokenizer and stamp to a temporary sibling folder, then rename it to ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / STAMP_NAME, record)  # the stamp goes in last
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes the folder private; the LM is an ordinary output
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train_report_lm(data_root: str | Path, out_dir: str | Path, cfg: LMConfig, *, force: bool = False) -> LMResult:
    """Train the tokenizer and the causal LM on the train split of a prepared dataset and save them.

    Args:
        data_root: a folder written by ``mrg prepare``.
        out_dir: where the Hugging Face folder goes (written to a temporary folder, then renamed).
        cfg: the LM settings.
        force: retrain even when ``out_dir`` already holds an LM trained with the same data and settings.

    Returns:
        The output folder and its ``lm.json`` record (losses with and without context, sizes, timing).

    Raises:
        DataError: the dataset is missing, unfinished or has no training reports.
        OutputDirError: ``out_dir`` holds something else.
    """
    from mrg.model.build import quiet_hub_progress

    quiet_hub_progress()

    data_root, out_dir = Path(data_root), Path(out_dir)
    train, normalize = _studies(data_root, "train")
    source = _lm_source(data_root, cfg)
    existing = _claim_output(out_dir, source, force)
    if existing is not None:
        return LMResult(out_dir, existing, skipped=True)

    started = time.perf_counter()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    reports = [s.report_clean for s in train]
    labels = label_reports([s.report for s in train]) if cfg.context == "labels" else [{} for _ in train]
    contexts = [context_tags(lab) for lab in labels]

    pairs, asked = _training_questions(cfg, train)
    extra = [text for q, a in pairs for text in (QUESTION_FORMAT.format(question=q), a)]
    tokenizer, template = _tokenizer_and_template(reports + extra, cfg, rng, out_dir)

    def sequences(indices: list[int], with_context: bool) -> Sequences:
        tags = [contexts[i] if with_context else [] for i in indices]
        return build_sequences(tokenizer, template, [reports[i] for i in indices], tags, cfg.max_report_tokens)

    held, fit = _split_heldout(len(reports), rng)
    seqs, bare = sequences(fit, True), sequences(fit, False)
    if pairs:
        seqs, bare = _with_questions(seqs, bare, tokenizer, template, pairs, asked, contexts, set(held))
    _check_sequence_length(seqs, cfg)

    model = _new_causal_lm(tokenizer, cfg)
    losses = _fit_lm(model, seqs, bare, tokenizer.pad_token_id, cfg, rng)

    loss_with = mean_report_loss(model, sequences(held, True), tokenizer.pad_token_id) if held else float("nan")
    loss_without = mean_report_loss(model, sequences(held, False), tokenizer.pad_token_id) if held else float("nan")
    _set_generation_config(model, tokenizer)

    record = _lm_record(
        source=source, normalize=normalize, template=template, cfg=cfg, model=model, tokenizer=tokenizer,
        num_fit=len(fit), num_held=len(held), losses=losses, heldout_losses=(loss_with, loss_without), started=started,
    )
    _save_lm(out_dir, model, tokenizer, record)
    info(f"saved the LM to {out_dir}")
    return LMResult(out_dir, record)
