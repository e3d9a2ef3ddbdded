"""Speed of the model-based metric families on CPU with full-size random-weight models, cold and warm cache.

Models (random weights, real shapes, built by ``tests/metrics/model_based/builders.py`` with ``BASE``):
CheXbert = bert-base + 14 heads; BERTScore = distilroberta-base's shape (6 layers, 768, layer 5 used);
RadGraph = bert-base encoder + DyGIE++ heads (span width 12, feed-forward 150); RaTEScore = two bert-base shaped
models (NER token classifier in DeBERTa-v3-base's place, entity encoder in BioLORD's). Tokenizers are trained on
the report sentences, so token counts are realistic for reports; speed does not depend on the weights' values,
except through the number of entities RaTEScore's random NER finds.

GREEN is measured with a **tiny random Llama** (2 layers, hidden 32, BPE vocabulary 600) in place of the 7B
judge, on ``--green-pairs`` pairs with the package's max_length (2048 tokens; in the recorded run the random
model did not stop early): the number is the pipeline's cost (prompting, tokenizing, ~1400 greedy steps per batch, parsing), not the
speed of GREEN-radllama2-7b, which needs a GPU.

Texts: ``--pairs`` synthetic report pairs (5 to 9 sentences from ``bench_labeler``'s sentence bank; 2 x pairs
texts, nearly all distinct). Each family is scored twice with the same cache folder: "cold" computes every
text (model loading included, printed separately), "warm" reads everything from the cache. texts/s counts
the texts scored (predictions + references).

Run:  python benchmarks/bench_model_metrics.py [--pairs 200] [--batch-size 32] [--threads 2] [--green-pairs 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_labeler import SENTENCES  # noqa: E402

from mrg.metrics.model_based import FAMILIES, ModelMetricOptions  # noqa: E402
from tests.metrics.model_based import builders  # noqa: E402


def reports(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, rng.randint(5, 9))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--families", default="chexbert,bertscore,radgraph,radcliq,ratescore,green")
    parser.add_argument("--green-pairs", type=int, default=8, help="pairs for GREEN (the tiny judge generates ~1400 "
                        "tokens per batch)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    predictions, references = reports(args.pairs, 0), reports(args.pairs, 1)
    words = sum(len(t.split()) for t in predictions + references) / (2 * args.pairs)
    print(f"{args.pairs} pairs, {words:.0f} words per report, batch {args.batch_size}, {args.threads} threads, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="mrg-bench-mm-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        chexbert = builders.build_chexbert(root, builders.BASE) / "chexbert.pth"
        roberta = builders.build_roberta(root, builders.BASE)
        radgraph = builders.build_radgraph(root, builders.BASE)
        ner, embed = builders.build_rate_ner(root, builders.BASE), builders.build_rate_encoder(root, builders.BASE)
        llama = builders.build_llama(root)  # tiny: see the docstring
        print(f"built random models in {time.perf_counter() - t:.1f} s")
        weights = {"chexbert": str(chexbert), "bertscore": str(roberta), "radgraph": str(radgraph),
                   "radcliq": f"chexbert={chexbert},radgraph={radgraph},bertscore={roberta}",
                   "ratescore": f"ner={ner},embed={embed}", "green": str(llama)}
        print(f"{'family':<16} {'pairs':>5} {'cold s':>8} {'cold texts/s':>13} {'warm s':>8} {'warm texts/s':>13}")
        for name in args.families.split(","):
            n = args.green_pairs if name == "green" else args.pairs
            cache = str(root / f"cache-{name}")  # each family cold on its own (radcliq recomputes its parts)
            options = ModelMetricOptions(weights[name], "cpu", args.batch_size, cache)
            t = time.perf_counter()
            cold = FAMILIES[name].score(predictions[:n], references[:n], options)
            cold_s = time.perf_counter() - t
            t = time.perf_counter()
            warm = FAMILIES[name].score(predictions[:n], references[:n], options)
            warm_s = time.perf_counter() - t
            assert warm.corpus == cold.corpus
            label = "green (tiny LM)" if name == "green" else name
            print(f"{label:<16} {n:>5} {cold_s:>8.2f} {2 * n / cold_s:>13.2f} {warm_s:>8.3f} {2 * n / warm_s:>13.1f}")


if __name__ == "__main__":
    main()
