"""Resumable, verified HTTP downloads with the standard library only.

``download_file`` writes into ``<dest>.part`` beside the destination, resumes an interrupted transfer
with an HTTP ``Range`` request, retries connection errors, time-outs and 5xx answers with exponential
back-off, and renames the file into place only after its size and checksums match. A destination that
already exists and verifies is not downloaded again.

Credentials (HTTP basic auth) go into a request header only: they never appear in messages, logs or
files, and they are not forwarded when a redirect leads to another host.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrg
from mrg.console import make_progress
from mrg.errors import AuthError, ChecksumError, DataError, DownloadError

__all__ = [
    "DownloadJob",
    "download_file",
    "download_many",
    "file_checksums",
    "redact_url",
    "verify_file",
]

_CHUNK = 1 << 20
_USER_AGENT = f"mrg/{mrg.__version__} (+python-urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
# Answers worth another try: the server or something in between is busy or broken for now.
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retry(Exception):
    """A transient failure: try again after a back-off (``progressed`` = bytes arrived in this attempt)."""

    def __init__(self, reason: str, *, progressed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed


class _Cancelled(Exception):
    """Another download of the same batch failed; this one stops early."""


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _split_credentials(url: str, auth: tuple[str, str] | None) -> tuple[str, tuple[str, str] | None]:
    """Move a ``user:password@`` part of the URL into ``auth`` (urllib cannot send it from the URL)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, auth
    if auth is None and parts.username is not None:
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return redact_url(url), auth


def file_checksums(path: Path, algorithms: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file for several algorithms in one read."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _mismatch(path: Path, expected_size: int | None, sha256: str | None, md5: str | None) -> str | None:
    """A description of how ``path`` differs from the expected size/checksums, or None when it matches."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size is {size:,} bytes, expected {expected_size:,}"
    wanted = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
    if wanted:
        got = file_checksums(path, tuple(wanted))
        for name, value in wanted.items():
            if got[name] != value:
                return f"{name} is {got[name]}, expected {value}"
    return None


def verify_file(path: Path, *, expected_size: int | None = None, sha256: str | None = None, md5: str | None = None) -> None:
    """Check a file's size and checksums.

    Raises:
        ChecksumError: naming the file, what was expected and what was found.
    """
    problem = _mismatch(Path(path), expected_size, sha256, md5)
    if problem:
        raise ChecksumError(f"{path}: {problem}; the file is corrupt or a different version: delete it and download again")


class _AuthRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the Authorization header only to the host that was asked first."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old_host = urllib.parse.urlsplit(req.full_url).netloc.rsplit("@", 1)[-1]
            new_host = urllib.parse.urlsplit(new.full_url).netloc.rsplit("@", 1)[-1]
            if old_host.lower() != new_host.lower():
                for name in list(new.headers):
                    if name.lower() == "authorization":
                        del new.headers[name]
        return new


_OPENER = urllib.request.build_opener(_AuthRedirectHandler)


def _request(url: str, offset: int, auth: tuple[str, str] | None) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    return request


@dataclass
class _Display:
    """Where byte counts go: an optional rich Progress task for this file and one for the whole batch."""

    progress: Any = None
    task: Any = None
    overall: Any = None

    def start(self, total: int | None, completed: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=total, completed=completed)

    def advance(self, count: int) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.advance(self.task, count)
        if self.overall is not None:
            self.progress.advance(self.overall, count)


def _attempt(
    url: str,
    part: Path,
    *,
    expected_size: int | None,
    auth: tuple[str, str] | None,
    timeout: float,
    display: _Display,
    cancel: threading.Event | None,
) -> None:
    """One HTTP request that continues ``part`` to the end of the resource; raises ``_Retry`` on transient failure."""
    shown = redact_url(url)
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # longer than the file can be: it is not a prefix of it
        offset = 0
    if expected_size is not None and offset == expected_size:
        return  # transferred completely before an interruption; only the verification is left
    try:
        response = _OPENER.open(_request(url, offset, auth), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        _raise_for_http_error(err, shown, offset, part)
        return  # HTTP 416 for a resumed request whose partial file already holds every byte
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _Retry(f"{type(err).__name__}: {reason}") from None

    with response:
        offset, total, mode = _answered_range(response, shown, part, offset, expected_size)
        display.start(total if total is not None else expected_size, offset)
        received = _write_body(response, part, mode, offset, display, cancel)
        if total is not None and offset + received < total:
            raise _Retry(f"connection closed after {offset + received:,} of {total:,} bytes", progressed=received > 0)


def _raise_for_http_error(err: urllib.error.HTTPError, shown: str, offset: int, part: Path) -> None:
    """Raise the error (or ``_Retry``) an HTTP error answer means; returns only when ``part`` is already complete."""
    if err.code in (401, 403):
        raise AuthError(
            f"{shown}: the server refused access (HTTP {err.code}); check the credentials and that the data use "
            "agreement for this dataset is signed with that account"
        ) from None
    if err.code == 416 and offset:
        match = _UNSATISFIED_RANGE.search(err.headers.get("Content-Range", "") if err.headers else "")
        if match and int(match.group(1)) == offset:
            return  # the partial file already holds every byte
        part.unlink(missing_ok=True)  # the partial file does not fit this resource: start again
        raise _Retry(f"HTTP 416 for a resumed request; restarting {shown} from the beginning") from None
    if err.code in _RETRY_STATUS:
        raise _Retry(f"HTTP {err.code} {err.reason}") from None
    if err.code == 404:
        raise DownloadError(f"{shown}: not found (HTTP 404); check the URL or --base-url") from None
    raise DownloadError(f"{shown}: the server answered HTTP {err.code} {err.reason}; check the URL") from None


def _answered_range(
    response: Any, shown: str, part: Path, offset: int, expected_size: int | None
) -> tuple[int, int | None, str]:
    """(offset the body starts at, total size if known, file mode) of an answer; checks a resume and the size."""
    status = response.status
    length = response.headers.get("Content-Length")
    total: int | None = None
    if status == 206:
        match = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)
            raise _Retry(f"the server resumed {shown} at the wrong position; restarting from the beginning")
        total = int(match.group(3)) if match.group(3) != "*" else None
        mode = "ab"
    elif status == 200:
        offset = 0  # a full answer (the server ignored Range, or this is the first request): start over
        total = int(length) if length and length.isdigit() else None
        mode = "wb"
    else:
        raise DownloadError(f"{shown}: unexpected HTTP status {status}; check the URL")
    if expected_size is not None and total is not None and total != expected_size:
        raise ChecksumError(
            f"{shown}: the server reports {total:,} bytes but {expected_size:,} are expected; the remote file "
            "changed or the URL is wrong (check --base-url); nothing was saved"
        )
    return offset, total, mode


def _write_body(
    response: Any, part: Path, mode: str, offset: int, display: _Display, cancel: threading.Event | None
) -> int:
    """Append (``mode`` "ab") or write the body to ``part`` chunk by chunk; the bytes received."""
    received = 0
    try:
        handle = open(part, mode)
    except OSError as err:
        raise DataError(f"{part}: cannot write ({err.strerror}); check the folder's permissions and free space") from None
    with handle:
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            try:
                chunk = response.read(_CHUNK)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as err:
                raise _Retry(f"connection lost after {offset + received:,} bytes ({type(err).__name__})",
                             progressed=received > 0) from None
            if not chunk:
                break
            try:
                handle.write(chunk)
            except OSError as err:
                raise DataError(f"{part}: cannot write ({err.strerror}); check free disk space") from None
            received += len(chunk)
            display.advance(len(chunk))
    return received


def download_file(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    auth: tuple[str, str] | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: Any = None,
    description: str | None = None,
    cancel: threading.Event | None = None,
    overall_task: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``dest``, resuming and verifying; skip it when ``dest`` exists and verifies.

    Args:
        url: an http(s) URL; a ``user:password@`` part is never shown in messages.
        dest: the final file; the transfer goes to ``<dest>.part`` beside it and is renamed at the end.
        expected_size: the size in bytes, when known; checked before and after the transfer.
        sha256: expected SHA-256 hex digest, when known.
        md5: expected MD5 hex digest, when known.
        auth: ``(username, password)`` for HTTP basic authentication.
        retries: how many consecutive failed attempts (without any new bytes) are retried.
        backoff: seconds before the first retry; doubles with each further retry.
        timeout: seconds a connection may stay silent before the attempt counts as failed.
        progress: a running ``rich.progress.Progress`` to add this file's bar to (one is made when None).
        description: the label of the progress bar (default: the file name).
        cancel: an event that, when set, stops the transfer between chunks (used by ``download_many``).
        overall_task: a task of ``progress`` that is advanced by every byte too (a batch total).
        sleep: the function that waits between retries (tests pass a no-op).

    Returns:
        ``dest``.

    Raises:
        DownloadError: the server kept failing after ``retries`` attempts, or answered 404 or another 4xx.
        AuthError: the server answered 401/403.
        ChecksumError: the downloaded bytes have the wrong size or checksum (the partial file is removed).
    """
    dest = Path(dest)
    url, auth = _split_credentials(url, auth)
    shown = redact_url(url)
    if dest.is_file():
        if _mismatch(dest, expected_size, sha256, md5) is None:
            return dest
        # a stale or damaged copy: download a fresh one, which replaces it only once verified
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fetch_part(url, part, label=description or dest.name, expected_size=expected_size, auth=auth, retries=retries,
                backoff=backoff, timeout=timeout, progress=progress, cancel=cancel, overall_task=overall_task,
                sleep=sleep)
    _verify_and_move(part, dest, shown, expected_size, sha256, md5)
    return dest


def _fetch_part(
    url: str, part: Path, *, label: str, expected_size: int | None, auth: tuple[str, str] | None, retries: int,
    backoff: float, timeout: float, progress: Any, cancel: threading.Event | None, overall_task: Any,
    sleep: Callable[[float], None],
) -> None:
    """Transfer ``url`` into ``part`` with a progress bar (on ``progress``, or one made here), retrying failures."""
    shown = redact_url(url)
    owns_progress = progress is None
    progress_cm = make_progress(transfer=True) if owns_progress else nullcontext(progress)
    failures = 0
    with progress_cm as shown_progress:
        task = shown_progress.add_task(label, total=expected_size)
        display = _Display(shown_progress, task, overall_task)
        try:
            while True:
                try:
                    _attempt(url, part, expected_size=expected_size, auth=auth, timeout=timeout, display=display,
                             cancel=cancel)
                    break
                except _Retry as retry:
                    if retry.progressed:
                        failures = 0  # the connection broke after new bytes arrived: resume at once
                        continue
                    failures += 1
                    if failures > retries:
                        raise DownloadError(
                            f"{shown}: download failed after {retries} retries ({retry.reason}); check the network "
                            "connection and run the command again: it resumes from the partial file"
                        ) from None
                    sleep(backoff * (2 ** (failures - 1)))
                except _Cancelled:
                    raise DownloadError(f"{shown}: stopped because another download of the batch failed") from None
        finally:
            if not owns_progress:
                shown_progress.remove_task(task)


def _verify_and_move(
    part: Path, dest: Path, shown: str, expected_size: int | None, sha256: str | None, md5: str | None
) -> None:
    """Rename a verified ``part`` to ``dest``; a part with the wrong size or checksum is deleted."""
    problem = _mismatch(part, expected_size, sha256, md5)
    if problem:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{dest.name} from {shown}: {problem}; the partial download was deleted, run the command again to "
            "download it afresh (if it fails again, the remote file has changed: check --base-url)"
        )
    os.replace(part, dest)


@dataclass(frozen=True)
class DownloadJob:
    """One file of a ``download_many`` batch."""

    url: str
    dest: Path
    expected_size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    description: str | None = None


def download_many(
    jobs: Iterable[DownloadJob],
    *,
    max_workers: int = 4,
    auth: tuple[str, str] | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    description: str = "download",
    sleep: Callable[[float], None] = time.sleep,
) -> list[Path]:
    """Download several files at once (a thread pool) under one progress display.

    Every file gets ``download_file``'s resume, retry and verification. The first failure stops the
    other transfers (their partial files stay for a resume) and is raised.

    Returns:
        The destination paths, in the order of ``jobs``.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    cancel = threading.Event()
    sizes = [job.expected_size for job in jobs]
    known_total = sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
    with make_progress(transfer=True) as progress:
        overall = progress.add_task(f"{description} ({len(jobs)} files)", total=known_total)
        with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="mrg-download") as pool:
            futures = [
                pool.submit(
                    download_file, job.url, Path(job.dest), expected_size=job.expected_size, sha256=job.sha256,
                    md5=job.md5, auth=auth, retries=retries, backoff=backoff, timeout=timeout, progress=progress,
                    description=job.description, cancel=cancel, overall_task=overall, sleep=sleep,
                )
                for job in jobs
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                cancel.set()
                for future in futures:
                    future.cancel()
                wait(futures)
                # report the root failure, not the "stopped because another failed" of the others
                raise failed[0].exception()  # type: ignore[misc]
            return [future.result() for future in futures]
