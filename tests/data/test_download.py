"""Resumable, verified downloads against a real loopback HTTP server (tests/data/conftest.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mrg.data.download import DownloadJob, download_file, download_many, redact_url, verify_file
from mrg.errors import AuthError, ChecksumError, DownloadError

DATA = os.urandom(3 * (1 << 20) + 12345)  # several read chunks, not a multiple of the chunk size
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


def no_sleep(_: float) -> None:
    pass


def test_plain_download_verifies_and_renames(file_server, tmp_path: Path) -> None:
    url = file_server.add("data/file.bin", DATA)
    dest = tmp_path / "cache" / "file.bin"
    assert download_file(url, dest, expected_size=len(DATA), sha256=SHA, md5=MD5) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("file.bin.part").exists()


def test_existing_verified_file_is_not_downloaded_again(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    dest = tmp_path / "f.bin"
    download_file(url, dest, sha256=SHA)
    download_file(url, dest, sha256=SHA)
    assert len(file_server.requests_for("f.bin")) == 1


def test_damaged_existing_file_is_replaced(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    download_file(url, dest, expected_size=len(DATA), sha256=SHA)
    assert dest.read_bytes() == DATA


def test_interrupted_download_resumes_with_range(file_server, tmp_path: Path) -> None:
    url = file_server.add("big.bin", DATA)
    file_server.drop_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    download_file(url, dest, expected_size=len(DATA), sha256=SHA, sleep=no_sleep)
    assert dest.read_bytes() == DATA
    ranges = [r["range"] for r in file_server.requests_for("big.bin")]
    assert ranges[0] is None
    assert len(ranges) == 2 and ranges[1] is not None and ranges[1] != "bytes=0-"
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) >= len(DATA) // 4


def test_resume_without_known_size_uses_content_length(file_server, tmp_path: Path) -> None:
    url = file_server.add("big.bin", DATA)
    file_server.drop_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    download_file(url, dest, sleep=no_sleep)  # nothing recorded: completeness comes from Content-Length
    assert dest.read_bytes() == DATA
    assert len(file_server.requests_for("big.bin")) == 2


def test_partial_file_from_earlier_run_is_resumed(file_server, tmp_path: Path) -> None:
    url = file_server.add("big.bin", DATA)
    dest = tmp_path / "big.bin"
    dest.with_name("big.bin.part").write_bytes(DATA[:1000])
    download_file(url, dest, expected_size=len(DATA), sha256=SHA)
    assert dest.read_bytes() == DATA
    assert file_server.requests_for("big.bin")[0]["range"] == "bytes=1000-"


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path: Path) -> None:
    url = file_server.add("big.bin", DATA)
    file_server.ignore_range = True
    dest = tmp_path / "big.bin"
    dest.with_name("big.bin.part").write_bytes(b"x" * 5000)  # not even a prefix of the file
    download_file(url, dest, expected_size=len(DATA), sha256=SHA)
    assert dest.read_bytes() == DATA


def test_complete_partial_file_gets_416_and_finishes(file_server, tmp_path: Path) -> None:
    url = file_server.add("small.bin", DATA[:5000])
    dest = tmp_path / "small.bin"
    dest.with_name("small.bin.part").write_bytes(DATA[:5000])
    download_file(url, dest)  # size unknown: the server's 416 "bytes */5000" says the partial file is whole
    assert dest.read_bytes() == DATA[:5000]


def test_oversized_partial_file_is_discarded(file_server, tmp_path: Path) -> None:
    url = file_server.add("small.bin", DATA[:5000])
    dest = tmp_path / "small.bin"
    dest.with_name("small.bin.part").write_bytes(DATA[:7000])
    download_file(url, dest, sleep=no_sleep)  # 416 with another total: start again
    assert dest.read_bytes() == DATA[:5000]


def test_wrong_bytes_are_refused_and_nothing_is_left(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    file_server.wrong_bytes["/f.bin"] = bytes(len(DATA))
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as info:
        download_file(url, dest, expected_size=len(DATA), sha256=SHA)
    message = str(info.value)
    assert "f.bin" in message and SHA in message and "expected" in message and "again" in message
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()


def test_md5_mismatch_is_refused(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    with pytest.raises(ChecksumError, match="md5"):
        download_file(url, tmp_path / "f.bin", md5="0" * 32)
    assert not (tmp_path / "f.bin").exists()


def test_server_size_differing_from_record_is_refused(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    with pytest.raises(ChecksumError, match="server reports"):
        download_file(url, tmp_path / "f.bin", expected_size=len(DATA) + 1)


def test_500_then_success_is_retried(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    file_server.fail_times["/f.bin"] = 2
    waits: list[float] = []
    download_file(url, tmp_path / "f.bin", sha256=SHA, backoff=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]  # exponential back-off
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_gives_up_after_retries_with_a_clear_message(file_server, tmp_path: Path) -> None:
    url = file_server.add("f.bin", DATA)
    file_server.fail_times["/f.bin"] = 100
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "f.bin", retries=2, sleep=no_sleep)
    assert "after 2 retries" in str(info.value) and "HTTP 500" in str(info.value) and url in str(info.value)
    assert len(file_server.requests_for("f.bin")) == 3


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="run the command again"):
        download_file(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, sleep=no_sleep, timeout=2)


def test_404_is_not_retried(file_server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        download_file(file_server.url("missing.bin"), tmp_path / "m", sleep=no_sleep)
    assert len(file_server.requests_for("missing.bin")) == 1


def test_basic_auth_good_and_bad_credentials(file_server, tmp_path: Path) -> None:
    url = file_server.add("secret.bin", DATA[:2000])
    file_server.auth = ("alice", "s3cr3t-pw")
    download_file(url, tmp_path / "ok.bin", auth=("alice", "s3cr3t-pw"))
    assert (tmp_path / "ok.bin").read_bytes() == DATA[:2000]
    with pytest.raises(AuthError) as info:
        download_file(url, tmp_path / "bad.bin", auth=("alice", "wrong-pw"))
    message = str(info.value)
    assert "401" in message and "credentials" in message and "data use agreement" in message
    assert "wrong-pw" not in message and "alice" not in message
    assert not (tmp_path / "bad.bin").exists()


def test_403_says_to_check_the_agreement(file_server, tmp_path: Path) -> None:
    url = file_server.add("gated.bin", b"x")
    file_server.forbidden.add("/gated.bin")
    with pytest.raises(AuthError, match="403.*data use agreement"):
        download_file(url, tmp_path / "g", auth=("bob", "pw"))


def test_credentials_in_url_are_used_and_never_shown(file_server, tmp_path: Path) -> None:
    file_server.auth = ("carol", "hunter2")
    file_server.add("ok.bin", b"abc")
    download_file(file_server.url("ok.bin").replace("http://", "http://carol:hunter2@"), tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == b"abc"
    url = file_server.url("missing.bin").replace("http://", "http://carol:hunter2@")
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "m", sleep=no_sleep)
    assert "hunter2" not in str(info.value) and "carol" not in str(info.value)
    assert redact_url("https://u:p@host/x?y=1") == "https://host/x?y=1"


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    verify_file(path, expected_size=3, sha256=hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(ChecksumError, match="size is 3 bytes, expected 4"):
        verify_file(path, expected_size=4)


def test_download_many_in_parallel(file_server, tmp_path: Path) -> None:
    file_server.auth = ("u", "p")
    jobs = []
    for i in range(5):
        data = DATA[i * 1000 : i * 1000 + 50_000]
        url = file_server.add(f"files/{i}.bin", data)
        jobs.append(DownloadJob(url, tmp_path / "out" / f"{i}.bin", expected_size=len(data),
                                sha256=hashlib.sha256(data).hexdigest()))
    file_server.drop_once.add("/files/3.bin")
    paths = download_many(jobs, max_workers=3, auth=("u", "p"), sleep=no_sleep)
    assert paths == [job.dest for job in jobs]
    for i, path in enumerate(paths):
        assert path.read_bytes() == DATA[i * 1000 : i * 1000 + 50_000]


def test_download_many_raises_the_first_failure(file_server, tmp_path: Path) -> None:
    good = file_server.add("good.bin", DATA[:1000])
    bad = file_server.add("bad.bin", DATA[:1000])
    file_server.wrong_bytes["/bad.bin"] = b"y" * 1000
    jobs = [DownloadJob(good, tmp_path / "good.bin"), DownloadJob(bad, tmp_path / "bad.bin", sha256=SHA)]
    with pytest.raises(ChecksumError, match="bad.bin"):
        download_many(jobs, max_workers=2)
    assert not (tmp_path / "bad.bin").exists()
