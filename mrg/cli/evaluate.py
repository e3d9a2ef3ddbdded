"""``mrg evaluate``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and clinical efficacy, exactly as the field computes them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrg.cli.app import app
from mrg.console import console

_PredictionsOpt = Annotated[
    Path | None,
    typer.Option("--predictions", "-p", help="JSONL of {id, prediction, reference?} (mrg generate), R2GenGPT's "
                 "test_result.json, R2Gen's res.csv, or a label-probability CSV (id + the 14 CheXpert columns, "
                 "mrg perceive): label metrics after --threshold and per-class AUROC.", show_default=False),
]
_ImagesOpt = Annotated[
    Path | None,
    typer.Option("--images", help="A folder of synthesized images (<id>.png + <id>.json sidecars, mrg synthesize) "
                 "instead of --predictions: clinical consistency, FID and MS-SSIM beside the mean-image and "
                 "nearest-real baselines (needs --data).", show_default=False),
]
_EncoderOpt = Annotated[
    str | None,
    typer.Option("--encoder", help="--images: FID features: 'classifier' (default: the consistency classifier "
                 "trained on --data's train images) or a vision backbone's hub id, folder or random:<kind> spec.",
                 show_default=False),
]
_OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Output folder for metrics.json, per_sample.csv, metrics.md "
                 "(--images: a folder for metrics.json and metrics.md, or F.json, with F.md beside it).", show_default=False),
]
_OverridesOpt = Annotated[
    list[str] | None,  # noqa: UP007  typer needs typing.Optional here
    typer.Argument(help="eval.key=value overrides, e.g. eval.meteor_timeout=600.", show_default=False),
]
_ReferencesOpt = Annotated[
    Path | None,
    typer.Option("--references", "-r", help="References: JSONL {id, reference}, R2GenGPT's test_refs.json or "
                 "R2Gen's gts.csv (default: the 'reference' fields, or the file R2Gen/R2GenGPT wrote beside the "
                 "predictions).", show_default=False),
]
_DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Prepared dataset folder whose --split reports are the references.", show_default=False),
]
_ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", help="r2gen (default: R2Gen cleaning on both sides, no PTB tokenizer), coco (PTB "
                 "tokenizer) or raw (texts as given).", show_default=False),
]
_NormalizeOpt = Annotated[
    str | None,
    typer.Option("--normalize", help="R2Gen cleaner of the r2gen protocol: r2gen-iu or r2gen-mimic (default: the "
                 "dataset's, else r2gen-iu).", show_default=False),
]
_RefMaxTokensOpt = Annotated[
    int | None,
    typer.Option("--ref-max-tokens", help="Legacy habit: keep the first N reference words (R2Gen: 59 on IU X-ray, "
                 "99 on MIMIC-CXR); recorded in metrics.json.", show_default=False),
]
_BootstrapOpt = Annotated[
    int | None,
    typer.Option("--bootstrap", help="Bootstrap resamples for 95% confidence intervals of every metric (e.g. 1000).",
                 show_default=False),
]
_SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of the bootstrap and the paired test.", show_default=False)
]
_MetricsOpt = Annotated[
    str | None,
    typer.Option("--metrics", help="Model-based metric families to add, comma-separated: chexbert, radgraph, "
                 "bertscore, radcliq, ratescore, green (GPU recommended) (weights: eval.weights.<family>=PATH_OR_HUB_ID; "
                 "RaTEScore: eval.weights.ratescore_ner / ratescore_embed).", show_default=False),
]
_CompareOpt = Annotated[
    Path | None,
    typer.Option("--compare", help="A baseline's predictions for the same ids: paired test per metric (p-value and "
                 "interval of the difference).", show_default=False),
]


@app.command("evaluate")
def evaluate_cmd(
    out: _OutOpt,
    predictions: _PredictionsOpt = None,
    images: _ImagesOpt = None,
    encoder: _EncoderOpt = None,
    classifier_steps: Annotated[int | None, typer.Option("--classifier-steps", help="--images: training steps of the "
                                                         "consistency classifier (default 600).",
                                                         show_default=False)] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="--images: side every image is resized to "
                                                   "(default 128).", show_default=False)] = None,
    overrides: _OverridesOpt = None,
    references: _ReferencesOpt = None,
    data: _DataOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split of --data.")] = "test",
    protocol: _ProtocolOpt = None,
    normalize: _NormalizeOpt = None,
    ref_max_tokens: _RefMaxTokensOpt = None,
    no_meteor: Annotated[bool, typer.Option("--no-meteor", help="Skip METEOR (it needs Java).")] = False,
    no_clinical: Annotated[bool, typer.Option("--no-clinical", help="Skip the labeler and clinical efficacy.")] = False,
    bootstrap: _BootstrapOpt = None,
    seed: _SeedOpt = None,
    metrics: _MetricsOpt = None,
    compare: _CompareOpt = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Label-probability CSVs: P from which a "
                                                    "class is positive (eval.label_threshold, default 0.5).",
                                                    show_default=False)] = None,
) -> None:
    """Score generated reports against references and write metrics.json, per_sample.csv and metrics.md.

    Examples: mrg evaluate -p runs/iu/test.jsonl --data data/iu_xray -o runs/iu/eval;
    mrg evaluate -p new.jsonl --compare baseline.jsonl --bootstrap 1000 -o eval/new-vs-base;
    mrg evaluate --images runs/synth --data data/synthetic -o runs/synth-eval (synthesized images).
    """
    from mrg.config import load_config
    from mrg.errors import ConfigError
    from mrg.evaluate import run_evaluation

    if images is not None:
        if predictions is not None:
            raise ConfigError("--images and --predictions: give one (images to score synthesized images, predictions "
                              "to score reports)")
        for name, value in (("--references", references), ("--compare", compare), ("--metrics", metrics)):
            if value is not None:
                raise ConfigError(f"{name}: not available with --images; drop it")
        if data is None:
            raise ConfigError("--images needs --data: the prepared dataset whose train images train the consistency "
                              "classifier and whose --split images are FID's reference")
        _evaluate_images(images, out, data, split=split, encoder=encoder, steps=classifier_steps,
                         image_size=image_size, seed=seed)
        return
    if predictions is None:
        raise ConfigError("missing --predictions FILE (generated reports) or --images DIR (synthesized images)")
    for name, value in (("--encoder", encoder), ("--classifier-steps", classifier_steps), ("--image-size", image_size)):
        if value is not None:
            raise ConfigError(f"{name}: only for --images; drop it")

    bad = [o for o in overrides or [] if not o.startswith("eval.") or "=" not in o]
    if bad:
        raise ConfigError(f"unexpected argument '{bad[0]}'; overrides look like eval.key=value")
    cfg = load_config(None, list(overrides or [])).eval
    given: dict[str, Any] = {
        "protocol": protocol,
        "normalize": normalize,
        "ref_max_tokens": ref_max_tokens,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    for key, option in (("protocol", "--protocol"), ("normalize", "--normalize")):
        allowed = _literal_options(key)
        if given[key] is not None and given[key] not in allowed:
            raise ConfigError(f"{option} {given[key]!r} is not one of {', '.join(allowed)}")
    if no_meteor:
        given["meteor"] = False
    if no_clinical:
        given["clinical"] = False
    if metrics is not None:
        given["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
        from mrg.metrics.registry import model_family_problems

        problems = model_family_problems(given["metrics"], {})
        if problems:
            raise ConfigError(problems[0].replace("'eval.metrics'", "--metrics"))
    if threshold is not None:
        given["label_threshold"] = threshold
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    from mrg.label_eval import is_label_csv

    if is_label_csv(predictions):
        _evaluate_label_csv(predictions, out, cfg, references=references, data=data, split=split, compare=compare)
        return
    report = run_evaluation(predictions, out, cfg, references=references, data=data, split=split, compare=compare)
    print_evaluation(report.record, report.out_dir)


def _evaluate_images(images: Path, out: Path, data: Path, *, split: str, encoder: str | None, steps: int | None,
                     image_size: int | None, seed: int | None) -> None:
    """Score a folder of synthesized images; write metrics.json and metrics.md into ``out`` and print the table."""
    from mrg.errors import ConfigError
    from mrg.metrics.synthesis import ClassifierConfig, run_synthesis_evaluation

    given = {"steps": steps, "image_size": image_size}
    for key, value in given.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    cfg = ClassifierConfig(**{k: v for k, v in given.items() if v is not None})
    from mrg.console import info

    record = run_synthesis_evaluation(images, data, out, split=split, encoder=encoder or "classifier",
                                      classifier=cfg, seed=seed or 0, progress=info)
    print_synthesis_evaluation(record, out)


def print_synthesis_evaluation(record: dict[str, Any], out_dir: Path | None = None) -> None:
    """The terminal summary of a synthesis evaluation: metric | synthesized | mean image | nearest real | real."""
    from mrg.metrics.registry import display_name
    from mrg.metrics.synthesis import COLUMNS

    cls = record["classifier"]
    console.print(f"[bold]{record['num_images']:,} synthesized images[/] against the real {record['inputs']['split']} "
                  f"split ({record['real']['num_images']:,}); prompt labels: {record['prompt_labels']['gold']} gold, "
                  f"{record['prompt_labels']['labeler']} from the labeler", soft_wrap=True)
    table = Table(show_header=True, header_style="bold")
    for name, justify in (("metric", "left"), ("synthesized", "right"), ("mean image", "right"),
                          ("nearest real", "right"), ("real", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    real = record["real"]
    reference = {"consistency_f1": real["classifier_f1"], "consistency_macro_f1": real["classifier_macro_f1"],
                 "fid": float("nan"), "ms_ssim": real["ms_ssim"]}
    for key in ("consistency_f1", "consistency_macro_f1", "fid", "ms_ssim"):
        cells = [record["columns"][c][key] for c in COLUMNS] + [reference[key]]
        table.add_row(display_name(key), *("–" if v != v else f"{v:.4f}" for v in cells))
    console.print(table)
    console.print(f"real: the classifier's F1 on the real images (the ceiling of consistency) and their own MS-SSIM; "
                  f"lower MS-SSIM = more diverse; FID features: {record['encoder']['name']}; classifier "
                  f"{'trained' if cls['trained'] else 'reused'}: {cls['path']}", soft_wrap=True)
    for name, c in record.get("paired", {}).items():
        console.print(f"synthesized minus {name.replace('_', ' ')}, consistency F1: {c['delta']:+.4f} (95% CI "
                      f"{c['ci_low']:+.4f} to {c['ci_high']:+.4f}, paired p = {c['p_value']:.3f})", soft_wrap=True)
    if out_dir is not None:
        from mrg.metrics.synthesis import synthesis_output_paths

        json_path, md_path = synthesis_output_paths(out_dir)
        console.print(f"written: {json_path}, {md_path}", soft_wrap=True)


def _evaluate_label_csv(predictions: Path, out: Path, cfg: Any, *, references: Path | None, data: Path | None,
                        split: str, compare: Path | None) -> None:
    """Score a label-probability CSV (``mrg perceive``) and print its AUROC and thresholded label metrics."""
    from mrg.errors import ConfigError
    from mrg.label_eval import run_label_evaluation

    if compare is not None:
        raise ConfigError(f"--compare {compare}: not available for a label-probability CSV; drop it")
    if cfg.metrics:
        raise ConfigError("--metrics: model-based metrics score report texts, not a label-probability CSV; drop it")
    report = run_label_evaluation(predictions, out, cfg, references=references, data=data, split=split)
    print_label_evaluation(report.record, report.out_dir)


def print_label_evaluation(record: dict[str, Any], out_dir: Path | None = None) -> None:
    """The terminal summary of a label-probability evaluation: AUROC and the thresholded label metrics."""
    from mrg.metrics.registry import display_name

    protocol = record["protocol"]
    console.print(f"[bold]{protocol['num_items']:,} studies, label probabilities[/] (threshold "
                  f"{record['threshold']}; reference labels: {protocol['labeler']['name']})", soft_wrap=True)
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["auroc", "ce_precision", "ce_recall", "ce_f1", "ce_macro_f1"]
    keys += [k for k in record if k.startswith("auroc/")]
    for key in keys:
        value = record.get(key)
        if isinstance(value, float):
            table.add_row(display_name(key), "–" if value != value else f"{value:.4f}")
    console.print(table)
    if out_dir is not None:
        console.print(f"written: {out_dir}/metrics.json, per_sample.csv, metrics.md", soft_wrap=True)


def _literal_options(key: str) -> tuple[str, ...]:
    import typing

    from mrg.config import EvalConfig

    return tuple(str(a) for a in typing.get_args(typing.get_type_hints(EvalConfig)[key]))


def print_evaluation(record: dict[str, Any], out_dir: Path | None = None) -> None:
    """The terminal summary: metrics with intervals, the comparison, and where the protocol deviates from R2Gen."""
    protocol = record["protocol"]
    intervals = (record.get("bootstrap") or {}).get("intervals", {})
    compare = record.get("compare")
    console.print(f"[bold]{protocol['num_items']:,} items, protocol {protocol['name']}[/] "
                  f"({protocol['tokenization']})", soft_wrap=True)
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if intervals:
        table.add_column(f"{int(round(100 * record['bootstrap']['confidence']))}% CI", justify="right")
    if compare:
        table.add_column("baseline", justify="right")
        table.add_column("Δ", justify="right")
        table.add_column("p", justify="right")
    from mrg.metrics.registry import SUMMARY_METRICS, all_metrics

    model_keys = [m.name for m in all_metrics() if m.family.startswith("model:") and m.name in record]
    keys = [k for k in SUMMARY_METRICS if k in record] + model_keys
    for key in keys:
        row = [key, f"{record[key]:.4f}"]
        if intervals:
            interval = intervals.get(key)
            row.append(f"{interval['low']:.4f}–{interval['high']:.4f}" if interval else "")
        if compare:
            test = compare["metrics"].get(key)
            if test:
                mark = "[green]" if test["p_value"] < 0.05 else ""
                row += [f"{test['b']:.4f}", f"{mark}{test['delta']:+.4f}", f"{mark}{test['p_value']:.3f}"]
            else:
                row += ["", "", ""]
        table.add_row(*row)
    console.print(table)
    labeler = protocol.get("labeler")
    if labeler:
        console.print(f"clinical efficacy: labeler {labeler['name']} {labeler['version']} (not CheXbert); "
                      "all CE variants are in metrics.json", soft_wrap=True)
    if not protocol.get("model_based"):
        console.print("model-based metrics (CheXbert, RadGraph, BERTScore, RadCliQ, RaTEScore, GREEN) not computed: "
                      "add --metrics chexbert,radgraph,bertscore,radcliq,ratescore,green and eval.weights.<family>=PATH "
                      "(docs/metrics.md)", soft_wrap=True)
    for note in protocol["deviations"]:
        console.print(f"[dim]differs from R2Gen:[/] {note}", soft_wrap=True)
    if out_dir is not None:
        console.print(f"written: {out_dir}/metrics.json, per_sample.csv, metrics.md", soft_wrap=True)
