"""METEOR 1.5 from the jar shipped in pycocoevalcap, run robustly in one warm JVM per process.

The numbers are the jar's own: every item is sent as ``SCORE ||| ref_1 ||| ... ||| hypothesis``, the jar
answers with its 23 sufficient statistics, and one ``EVAL ||| stats_1 ||| ...`` line returns the per-item
scores and the corpus score pooled from the statistics -- the protocol of pycocoevalcap's ``Meteor``, with
the same command (``-l en -norm``, ``-Xmx2G``) and the same jar and paraphrase table, so the scores are
identical on the same strings. What differs is the plumbing, which fixes the wrapper's known failures:

* **Sanitised input on both sides.** ``|||`` is removed and every run of whitespace (newlines included)
  becomes one space, for hypotheses *and* references. pycocoevalcap cleans only the hypothesis, so a newline
  in a reference desynchronises the protocol (``ValueError: could not convert string to float``) and a
  ``|||`` inside a reference silently splits it into two references.
* **One JVM per process, reused.** Loading the paraphrase table takes about 10 s; ``get_meteor()`` returns a
  module-level scorer whose JVM starts on ``start()`` (non-blocking, so callers start it early) and stays
  warm across calls, e.g. for validation during training.
* **No deadlocks.** The lock is held in a ``with`` block; reading has a watchdog: when a JVM sends nothing
  for ``timeout`` seconds, or dies, it is killed, restarted (the healthy ones stay warm) and the call is
  retried once, then a ``MetricError`` says what happened (with the JVM's last stderr lines).
* **Pipelined and parallel.** All ``SCORE`` lines are written by a writer thread while the caller reads
  answers in large chunks, instead of one round trip per item, so the GIL is taken rarely and other Python
  work (the other metrics, the labeler) runs alongside (``submit()`` scores in a background thread). The
  alignment is CPU-bound and single-threaded in the jar, so with four or more cores a large call is split
  between two JVMs (``jvms``); a segment's statistics do not depend on the JVM that aligned it, and the one
  ``EVAL`` line that pools them goes to the first JVM, so the scores are unchanged (tests compare them).
* **Clean shutdown.** ``close()`` (also registered with ``atexit``) closes stdin and kills the JVM without
  waiting on a lock that an interrupted call could still hold.
* A missing ``java`` is a one-line ``MetricError`` ("install a Java runtime ... or pass --no-meteor").

``meteor_from_stats`` re-implements the jar's scoring of (summed) statistics in numpy, so a bootstrap
resample or a permutation of two systems gets its METEOR without re-running the aligner; it equals the
jar's EVAL output to about 1e-15 (tests compare them).
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from mrg.errors import MetricError
from mrg.metrics.java import find_java, pycocoevalcap_file

STATS_LENGTH = 23
"""Columns of a METEOR 1.5 statistics line (see ``meteor_from_stats``)."""
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
"""Weights of the exact, stem, synonym and paraphrase stages (task 'rank', language 'en')."""
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
"""The jar's default parameters for English ('Task: Ranking')."""
DEFAULT_TIMEOUT = 300.0
"""Seconds without any answer from the JVM before the watchdog restarts it (loading takes ~10-30 s)."""


def sanitize(text: str) -> str:
    """Make a text safe for the jar's line protocol: ``|||`` removed, whitespace runs (newlines too) -> one space."""
    return " ".join(text.replace("|||", "").split())


@dataclass
class MeteorResult:
    """The jar's corpus score, per-item scores and per-item statistics."""

    score: float
    item_scores: np.ndarray
    """(items,) the segment scores of the EVAL answer."""
    stats: np.ndarray
    """(items, 23) the statistics lines of the SCORE answers."""

    def aggregable_stats(self) -> np.ndarray:
        """Statistics to sum over items: a perfectly matched item contributes no chunks (as the jar aggregates)."""
        return aggregable(self.stats)


def aggregable(stats: np.ndarray) -> np.ndarray:
    """Copy of per-item ``stats`` with the chunk count zeroed where the jar's ``addStats`` skips it."""
    stats = np.array(stats, dtype=np.float64, copy=True)
    if stats.size == 0:
        return stats.reshape(-1, STATS_LENGTH)
    test_total = stats[:, 4:20:4].sum(axis=1) + stats[:, 6:20:4].sum(axis=1)
    ref_total = stats[:, 5:20:4].sum(axis=1) + stats[:, 7:20:4].sum(axis=1)
    perfect = (test_total == stats[:, 0]) & (ref_total == stats[:, 1]) & (stats[:, 20] == 1.0)
    stats[perfect, 20] = 0.0
    return stats


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """METEOR of statistics (..., 23), following the jar's ``MeteorScorer.computeMetrics`` step by step.

    Columns: test length, reference length, test and reference function words, then per stage (exact, stem,
    synonym, paraphrase) the test content, reference content, test function and reference function matches,
    then chunks, test word matches, reference word matches. Pass per-item rows for segment scores, or the
    sum of ``aggregable`` rows for a corpus score.
    """
    stats = np.asarray(stats, dtype=np.float64)
    test_len, ref_len = stats[..., 0], stats[..., 1]
    test_func, ref_func = stats[..., 2], stats[..., 3]
    chunks, test_words, ref_words = stats[..., 20], stats[..., 21], stats[..., 22]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        test_weighted_len = (DELTA * (test_len - test_func)) + ((1.0 - DELTA) * test_func)
        ref_weighted_len = (DELTA * (ref_len - ref_func)) + ((1.0 - DELTA) * ref_func)
        test_matches = np.zeros(stats.shape[:-1])
        ref_matches = np.zeros(stats.shape[:-1])
        test_total = np.zeros(stats.shape[:-1])
        ref_total = np.zeros(stats.shape[:-1])
        for stage, weight in enumerate(MODULE_WEIGHTS):
            test_matches = test_matches + stats[..., 4 + 4 * stage] * weight * DELTA
        for stage, weight in enumerate(MODULE_WEIGHTS):
            ref_matches = ref_matches + stats[..., 5 + 4 * stage] * weight * DELTA
        for stage, weight in enumerate(MODULE_WEIGHTS):
            test_matches = test_matches + stats[..., 6 + 4 * stage] * weight * (1.0 - DELTA)
        for stage, weight in enumerate(MODULE_WEIGHTS):
            ref_matches = ref_matches + stats[..., 7 + 4 * stage] * weight * (1.0 - DELTA)
        for stage in range(len(MODULE_WEIGHTS)):
            test_total = test_total + stats[..., 4 + 4 * stage] + stats[..., 6 + 4 * stage]
            ref_total = ref_total + stats[..., 5 + 4 * stage] + stats[..., 7 + 4 * stage]
        precision = test_matches / test_weighted_len
        recall = ref_matches / ref_weighted_len
        f_mean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall))
        perfect = (test_total == test_len) & (ref_total == ref_len) & (chunks == 1)
        frag = np.where(perfect, 0.0, chunks / ((test_words + ref_words) / 2))
        frag_penalty = GAMMA * np.power(frag, BETA)
        score = f_mean * (1.0 - frag_penalty)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


# ------------------------------------------------------------------------------------------- the JVM


class _JvmFailure(Exception):
    """The JVM stopped answering, died, or answered something that is not a number."""

    def __init__(self, message: str, process: _JvmProcess | None = None) -> None:
        super().__init__(message)
        self.process = process


class _JvmProcess:
    """One running METEOR JVM with a chunked stdout reader and a stderr drain."""

    def __init__(self, command: list[str], cwd: str) -> None:
        try:
            self.proc = subprocess.Popen(
                command, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as err:
            raise MetricError(f"could not start Java for METEOR ({command[0]}: {err.strerror or err})") from None
        self._lines: queue.Queue[list[bytes] | None] = queue.Queue()
        self._pending: collections.deque[bytes] = collections.deque()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._writer: threading.Thread | None = None
        self.killed = False
        self.started = time.monotonic()
        self.ready = False
        """Set once the JVM answered the probe sent at start, i.e. finished loading the paraphrase table."""
        threading.Thread(target=self._pump_stdout, name="meteor-stdout", daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._pump_stderr, name="meteor-stderr", daemon=True)
        self._stderr_thread.start()
        self.write(_PROBE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        partial = b""
        try:
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                *complete, partial = (partial + chunk).split(b"\n")
                if complete:
                    self._lines.put(complete)
        except OSError:
            pass
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    def write(self, data: bytes) -> None:
        """Write in a background thread, so a JVM that stops reading cannot block the caller."""
        self.join_writer(timeout=60)

        def _write() -> None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the JVM died; the reader sees end-of-file and reports it

        self._writer = threading.Thread(target=_write, name="meteor-stdin", daemon=True)
        self._writer.start()

    def join_writer(self, timeout: float | None) -> None:
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None

    def poll_line(self, timeout: float) -> str | None:
        """The next answer line, or None if none came within ``timeout`` s; ``_JvmFailure`` if the JVM exited."""
        if not self._pending:
            try:
                batch = self._lines.get(timeout=timeout)
            except queue.Empty:
                return None
            if batch is None:
                self._lines.put(None)  # keep reporting end-of-file
                try:  # the end of its output usually comes a moment before the process can be reaped
                    code = self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
                raise _JvmFailure(_describe_exit(code), self)
            self._pending.extend(batch)
        return self._pending.popleft().decode("utf-8", "replace").strip()

    def readline(self, timeout: float) -> str:
        """The next answer line; ``_JvmFailure`` when none comes within ``timeout`` s or the JVM exits."""
        line = self.poll_line(timeout)
        if line is None:
            raise _JvmFailure(f"sent nothing for {timeout:g} s", self)
        return line

    def wait_ready(self, timeout: float, give_up: Callable[[], bool]) -> bool:
        """Wait for the answer to the start-up probe; False when ``give_up()`` turns true first.

        Raises:
            _JvmFailure: the JVM exited, answered nonsense, or did not load within ``timeout`` s of its start.
        """
        while not self.ready:
            if give_up():
                return False
            line = self.poll_line(0.05)
            if line is not None:
                _parse_numbers(line, STATS_LENGTH, self)
                self.ready = True
            elif time.monotonic() - self.started > timeout:
                raise _JvmFailure(f"did not finish loading within {timeout:g} s", self)
        return True

    def last_stderr(self, lines: int = 3) -> list[str]:
        """The JVM's last stderr lines (waits briefly for an exited JVM's output to be drained)."""
        if self.proc.poll() is not None:
            self._stderr_thread.join(timeout=2)
        return [line for line in self.stderr_tail if line][-lines:]

    @property
    def alive(self) -> bool:
        return not self.killed and self.proc.poll() is None

    def kill(self) -> None:
        self.killed = True
        for stream in (self.proc.stdin,):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that does not take
            pass


def _describe_exit(code: int | None) -> str:
    """How a JVM that stopped answering ended, in words (a negative code is the signal that killed it)."""
    if code is None:
        return "closed its output"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed ({name})"
    return f"exited (code {code})"


_PROBE = b"SCORE ||| ready ||| ready\n"
"""Sent to every new JVM; its answer means the paraphrase table is loaded and the JVM can take work."""

_INSTANCES: weakref.WeakSet[MeteorScorer] = weakref.WeakSet()


def default_jvms() -> int:
    """JVMs used when not told: two with four or more usable cores, else one.

    A second JVM costs about 15 CPU-seconds more per process (its paraphrase-table load and its own JIT
    warm-up); on two cores that eats the time it saves and takes the core the Python metrics run on.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 4 else 1


_MIN_CHUNK = 32  # items per chunk handed to a JVM at least
PARALLEL_FROM = 1000
"""Calls of at least this many items start the JVMs beyond the first (a test set, not a small validation)."""


class MeteorScorer:
    """METEOR 1.5 in JVMs that start once and serve every call of this process (thread-safe).

    With ``jvms > 1`` the ``SCORE`` lines are split into contiguous blocks aligned in parallel JVMs (the
    statistics of a segment do not depend on which JVM aligned it), and one ``EVAL`` line with all of them
    goes to the first JVM, so the scores are the same as with one JVM.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, memory: str = "2G", retries: int = 1,
                 jvms: int | None = None, parallel_from: int = PARALLEL_FROM) -> None:
        """
        Args:
            timeout: seconds without an answer before the JVMs are killed and restarted.
            memory: the heap limit of each JVM (pycocoevalcap uses 2G; each holds about 0.6 GB once loaded).
            retries: how often a call is retried on restarted JVMs before it fails.
            jvms: parallel JVMs at most (None: ``default_jvms()``).
            parallel_from: the JVMs beyond the first start only for a call of at least this many items.
        """
        self.timeout = float(timeout)
        self.memory = memory
        self.retries = int(retries)
        self.jvms = int(jvms) if jvms else default_jvms()
        self.parallel_from = int(parallel_from)
        self.restarts = 0
        """How many times the watchdog restarted the JVMs (for logs and tests)."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._processes: list[_JvmProcess] = []
        _INSTANCES.add(self)

    # -------------------------------------------------------------------------------- lifecycle

    def command(self) -> tuple[list[str], str]:
        """The JVM command line and working directory (raises ``MetricError`` when Java or the jar is missing)."""
        java = find_java("METEOR", "or pass --no-meteor to skip it")
        jar = pycocoevalcap_file("meteor", "meteor-1.5.jar")
        pycocoevalcap_file("meteor", "data", "paraphrase-en.gz")  # the jar refuses to start without it
        # pycocoevalcap's command plus a fixed input encoding and the serial collector, which holds the loaded
        # paraphrase table in about 0.6 GB instead of 1.0-1.5 GB (same CPU time; GC does not change scores).
        command = [java, "-Dfile.encoding=UTF-8", "-XX:+UseSerialGC", "-jar", f"-Xmx{self.memory}", str(jar),
                   "-", "-", "-stdio", "-l", "en", "-norm"]
        return command, str(jar.parent)

    def start(self, items: int | None = None) -> None:
        """Start JVMs in the background (returns at once; loading continues).

        Starts the first JVM, and all ``jvms`` when ``items`` (the size of the coming call) reaches
        ``parallel_from``: a second JVM costs about 8 CPU-seconds to load, which a small validation set never
        earns back. Running JVMs are kept.
        """
        wanted = self.jvms if items is not None and items >= self.parallel_from else 1
        with self._start_lock:
            keep = [p for p in self._processes if p.alive][: self.jvms]
            for process in self._processes:
                if process not in keep:
                    process.kill()
            if len(keep) < wanted:
                command, cwd = self.command()
                keep += [_JvmProcess(command, cwd) for _ in range(wanted - len(keep))]
            self._processes = keep

    @property
    def pid(self) -> int | None:
        """Process id of the first JVM, the one that also pools the statistics (None when not started)."""
        return self._processes[0].pid if self._processes else None

    @property
    def pids(self) -> list[int]:
        """Process ids of all running JVMs."""
        return [p.pid for p in self._processes]

    def close(self) -> None:
        """Stop the JVMs. Safe to call twice, from ``atexit``, or while a call is stuck."""
        with self._start_lock:
            processes, self._processes = self._processes, []
        for process in processes:
            process.kill()

    def __del__(self) -> None:  # a scorer dropped without close() must not leave its JVMs running
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down what close() uses
            pass

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- scoring

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MeteorResult:
        """Score ``predictions`` against ``references`` (a list of strings per item); blocks until done.

        Raises:
            MetricError: Java or the jar is missing, or the JVMs failed twice in a row.
        """
        if len(predictions) != len(references):
            raise MetricError(f"{len(predictions)} predictions but {len(references)} reference lists; they must pair up")
        if not predictions:
            return MeteorResult(0.0, np.zeros(0), np.zeros((0, STATS_LENGTH)))
        lines = []
        for hypothesis, refs in zip(predictions, references, strict=True):
            if isinstance(refs, str) or not refs:
                raise MetricError("every item needs a non-empty list of references for METEOR")
            lines.append("SCORE ||| " + " ||| ".join(sanitize(r) for r in refs) + " ||| " + sanitize(hypothesis) + "\n")
        with self._lock:
            failures: list[str] = []
            while True:
                self.start(len(lines))
                processes = list(self._processes)
                try:
                    return self._exchange(processes, lines)
                except _JvmFailure as failure:
                    failed = failure.process
                    tails = failed.last_stderr() if failed is not None else []
                    failures.append(str(failure) + (f" (stderr: {' | '.join(tails)})" if tails else ""))
                    # only the failed JVM (and any other that died) is replaced; the others stay warm
                    for process in processes:
                        if process is failed or failed is None or not process.alive:
                            process.kill()
                    if len(failures) > self.retries:
                        self.close()
                        raise MetricError(
                            "METEOR's Java process failed " + f"{len(failures)} times: " + "; ".join(failures)
                            + ". Check that Java works ('java -version') and has 2 GB of memory, or pass --no-meteor"
                        ) from None
                    self.restarts += 1

    def _chunks(self, lines: list[str]) -> list[list[str]]:
        """Consecutive chunks small enough that a JVM still loading never holds back the others for long."""
        size = max(_MIN_CHUNK, -(-len(lines) // (8 * len(self._processes) or 1)))
        return [lines[i : i + size] for i in range(0, len(lines), size)]

    def _exchange(self, processes: list[_JvmProcess], lines: list[str]) -> MeteorResult:
        # Each JVM's worker takes the next chunk as soon as its JVM is loaded, so a JVM that is slow to load
        # (a restarted one, or a busy machine) only contributes less; answers are stored by chunk index.
        chunks = self._chunks(lines)
        answers: list[list[str] | None] = [None] * len(chunks)
        next_chunk = iter(range(len(chunks)))
        taken = threading.Lock()
        remaining = [len(chunks)]
        errors: list[BaseException] = []

        def take() -> int | None:
            with taken:
                if errors:
                    return None
                index = next(next_chunk, None)
                if index is not None:
                    remaining[0] -= 1
                return index

        def nothing_left() -> bool:
            return remaining[0] == 0 or bool(errors)

        def work(process: _JvmProcess) -> None:
            try:
                while process.wait_ready(self.timeout, nothing_left):
                    index = take()
                    if index is None:
                        return
                    process.write("".join(chunks[index]).encode("utf-8"))
                    got = [process.readline(self.timeout) for _ in range(len(chunks[index]))]
                    for line in got:
                        _parse_numbers(line, STATS_LENGTH, process)
                    answers[index] = got
            except BaseException as err:  # noqa: BLE001 - re-raised below in the calling thread
                with taken:
                    errors.append(err)

        helpers = [threading.Thread(target=work, args=(p,), name="meteor-worker", daemon=True) for p in processes[1:]]
        for helper in helpers:
            helper.start()
        work(processes[0])
        for helper in helpers:
            helper.join()
        for error in errors:  # every JVM that failed is replaced, not only the first one reported
            if isinstance(error, _JvmFailure) and error.process is not None:
                error.process.kill()
        if errors:
            raise errors[0]
        if any(a is None for a in answers):  # every worker gave up waiting for its JVM to load
            raise _JvmFailure("no METEOR JVM finished loading")
        stats_lines = [line for chunk in answers for line in chunk]  # type: ignore[union-attr]
        stats = np.array([_parse_numbers(line, STATS_LENGTH) for line in stats_lines], dtype=np.float64)
        pooler = next(p for p in processes if p.ready)
        pooler.write(("EVAL ||| " + " ||| ".join(stats_lines) + "\n").encode("utf-8"))
        item_scores = np.array([_parse_numbers(pooler.readline(self.timeout), 1, pooler)[0] for _ in range(len(lines))])
        score = _parse_numbers(pooler.readline(self.timeout), 1, pooler)[0]
        pooler.join_writer(self.timeout)
        return MeteorResult(score=score, item_scores=item_scores, stats=stats)

    def submit(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Future[MeteorResult]:
        """Score in a background thread; the returned future holds the result or the ``MetricError``."""
        future: Future[MeteorResult] = Future()

        def _run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.score(predictions, references))
            except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(err)

        threading.Thread(target=_run, name="meteor-feeder", daemon=True).start()
        return future


def _parse_numbers(line: str, expected: int, process: _JvmProcess | None = None) -> list[float]:
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        values = []
    if len(values) != expected:
        raise _JvmFailure(f"answered {line[:80]!r} instead of {expected} number(s)", process)
    return values


_SINGLETON: MeteorScorer | None = None
_SINGLETON_LOCK = threading.Lock()


def get_meteor(*, timeout: float | None = None, jvms: int | None = None) -> MeteorScorer:
    """The process-wide scorer (created on first use; its JVMs start on ``start()`` or the first call).

    Args:
        timeout: when given, the watchdog timeout from now on.
        jvms: when given, the number of parallel JVMs from the next start on (running ones are restarted).
    """
    global _SINGLETON
    with _SINGLETON_LOCK:
        if _SINGLETON is None:
            _SINGLETON = MeteorScorer()
        if timeout is not None:
            _SINGLETON.timeout = float(timeout)
        if jvms:
            _SINGLETON.jvms = int(jvms)
        return _SINGLETON


def meteor_score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MeteorResult:
    """METEOR with the process-wide warm JVM."""
    return get_meteor().score(predictions, references)


@atexit.register
def _close_all() -> None:
    for scorer in list(_INSTANCES):
        scorer.close()
