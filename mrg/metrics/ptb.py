"""The Stanford PTB tokenizer of the COCO caption protocol, as pycocoevalcap runs it, without its side effects.

pycocoevalcap's ``PTBTokenizer.tokenize`` writes its input to a temporary file *inside the installed
package* (which fails on a read-only install) and relies on ``java`` being on PATH. This module runs the
same command on the same bytes -- ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase FILE`` with the captions joined by newlines -- from a private temporary folder,
then removes the same punctuation tokens, so the output is identical.

Kept on purpose: the tokenizer lower-cases *before* pycocoevalcap filters punctuation, so ``-lrb-`` and
``-rrb-`` survive (the filter lists ``-LRB-``); ``½`` becomes ``1/2``; quotes become `````` and ``''``
and are removed. One fix: pycocoevalcap replaces only ``\\n`` inside a caption, but the tokenizer also
breaks lines at ``\\r``, form feeds and Unicode line separators, which shifts every later caption onto
the wrong id; here all of them become spaces first.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mrg.errors import MetricError
from mrg.metrics.java import find_java, pycocoevalcap_file

PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens pycocoevalcap removes after tokenizing (its list, case-sensitive as in the original)."""
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
TIMEOUT = 600.0


def _command(path: Path) -> list[str]:
    java = find_java("The PTB tokenizer (--protocol coco)", "or use --protocol r2gen or raw")
    jar = pycocoevalcap_file("tokenizer", "stanford-corenlp-3.4.1.jar")
    return [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(path)]


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenize ``texts`` as pycocoevalcap's ``PTBTokenizer`` does (lower-cased, punctuation tokens removed).

    Raises:
        MetricError: Java or the jar is missing, or the tokenizer failed.
    """
    if not texts:
        return []
    sentences = "\n".join(_LINE_BREAKS.sub(" ", text) for text in texts)
    with tempfile.TemporaryDirectory(prefix="mrg-ptb-") as folder:
        path = Path(folder) / "captions.txt"
        path.write_bytes(sentences.encode("utf-8"))
        command = _command(path)
        try:
            done = subprocess.run(command, cwd=folder, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise MetricError(f"the PTB tokenizer did not finish within {TIMEOUT:g} s") from None
        except OSError as err:
            raise MetricError(f"could not start Java for the PTB tokenizer ({err.strerror or err})") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise MetricError(f"the PTB tokenizer failed (exit code {done.returncode}): {tail[0]}")
    lines = done.stdout.decode("utf-8", "replace").split("\n")
    if len(lines) < len(texts):
        raise MetricError(f"the PTB tokenizer returned {len(lines)} lines for {len(texts)} texts")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[: len(texts)]]


def ptb_tokenize_many(*groups: Sequence[str]) -> list[list[str]]:
    """Tokenize several groups (e.g. predictions and references) in parallel JVMs, one group per call."""
    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        return list(pool.map(ptb_tokenize, groups))
