"""``mrg prepare mimic-cxr`` end to end against a PhysioNet-like loopback server that requires basic auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.mimic_fixtures import PhysioNetServer, SyntheticRelease, assert_no_secret, build_release

USER, PASSWORD = "cli-user-Xq71", "cli-pass-W9!zz"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRelease:
    return build_release(tmp_path_factory.mktemp("mimic-cli") / "release", seed=11)


@pytest.fixture
def server(release: SyntheticRelease, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real ~/.netrc or ~/.cache is touched
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("PHYSIONET_USERNAME", raising=False)
    monkeypatch.delenv("PHYSIONET_PASSWORD", raising=False)
    srv = PhysioNetServer(release.root, USER, PASSWORD)
    yield srv
    srv.close()


def _download_args(server: PhysioNetServer, tmp_path: Path, *extra: str) -> list[str]:
    return ["prepare", "mimic-cxr", "--out", str(tmp_path / "out"), "--base-url", server.base_url,
            "--cache-dir", str(tmp_path / "cache"), "--workers", "2", *extra]


GOOD = {"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": PASSWORD}


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_download_r2gen_protocol(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 0, result.output
    expected = release.r2gen_entries()
    annotation = json.loads((tmp_path / "out" / "annotation.json").read_text())
    assert {s: [(e["id"], e["report"], e["image_path"][0]) for e in rows] for s, rows in annotation.items()} == expected
    assert "R2Gen's published annotation has 270,790 / 2,130 / 3,858" in result.stdout
    assert "left out:" in result.stdout and "protocol: name=r2gen" in result.stdout
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["counts"] == {s: len(v) for s, v in expected.items()}
    assert all(ok for _, ok in server.requests)
    assert_no_secret((USER, PASSWORD), texts=(result.output,), folders=(tmp_path,))

    again = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert again.exit_code == 0 and "already prepared" in _flat(again.stdout)


def test_credentials_never_appear_in_output_records_or_files(release: SyntheticRelease, server: PhysioNetServer,
                                                             tmp_path: Path, run_cli) -> None:
    import base64
    import os
    import subprocess
    import sys
    import urllib.parse

    wrong = PASSWORD + "-but-wrong"
    secrets = (USER, PASSWORD, wrong, urllib.parse.quote(PASSWORD, safe=""),
               *(base64.b64encode(f"{USER}:{pw}".encode()).decode() for pw in (PASSWORD, wrong)))
    outputs = []
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["source"]["base_url"] == server.base_url  # the config record keeps the URL, never who fetched it
    # failures name URLs and files; with MRG_DEBUG=1 they print a traceback: still no credential in any of it
    env = {**os.environ, **GOOD, "MRG_DEBUG": "1", "HOME": str(tmp_path / "home")}
    zip_path = "/files/mimic-cxr/2.1.0/mimic-cxr-reports.zip"
    server.replace[zip_path] = b"PK\x05\x06" + b"\0" * 18
    (tmp_path / "cache" / "physionet" / "mimic-cxr" / "2.1.0" / "mimic-cxr-reports.zip").unlink()
    for extra_env in ({}, {"PHYSIONET_PASSWORD": wrong}):
        failed = subprocess.run([sys.executable, "-m", "mrg", *_download_args(server, tmp_path, "--force")],
                                env={**env, **extra_env}, capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1 and "Traceback" in failed.stderr, failed.stderr
        outputs.append(failed.stdout + failed.stderr)
    assert any("ChecksumError" in text for text in outputs) and any("AuthError" in text for text in outputs)
    assert_no_secret(secrets, texts=tuple(outputs), folders=(tmp_path,))


def test_wrong_password(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    result = run_cli(*_download_args(server, tmp_path), env={"PHYSIONET_USERNAME": USER, "PHYSIONET_PASSWORD": "wrong-pw-123"})
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "PhysioNet refused the credentials (from environment)" in line
    assert "check the username and password" in line and "data use agreement" in line
    assert "https://physionet.org/content/mimic-cxr-jpg/2.1.0/" in line
    assert not (tmp_path / "out" / "prepare.json").exists()
    assert_no_secret((USER, "wrong-pw-123"), texts=(result.output,), folders=(tmp_path,))


def test_no_credentials_and_no_terminal(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    result = run_cli(*_download_args(server, tmp_path))
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "PHYSIONET_USERNAME and PHYSIONET_PASSWORD" in line and "machine 127.0.0.1" in line
    assert server.requests == []


def test_netrc_credentials(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    result = run_cli(*_download_args(server, tmp_path, "--skip-images"), env={"NETRC": str(netrc)})
    assert result.exit_code == 0, result.output
    netrc.unlink()
    assert_no_secret((USER, PASSWORD), texts=(result.output,), folders=(tmp_path,))


def test_checksum_mismatch(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    server.replace["/files/mimic-cxr/2.1.0/mimic-cxr-reports.zip"] = b"PK\x05\x06" + b"\0" * 18  # an empty zip
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "mimic-cxr-reports.zip" in line and "sha256 is" in line and "expected" in line
    assert not (tmp_path / "cache" / "physionet" / "mimic-cxr" / "2.1.0" / "mimic-cxr-reports.zip").exists()
    assert not (tmp_path / "out" / "prepare.json").exists()


def test_file_missing_from_sha256sums(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    sums = (release.jpg_dir / "SHA256SUMS.txt").read_text().splitlines(keepends=True)
    server.replace["/files/mimic-cxr-jpg/2.1.0/SHA256SUMS.txt"] = "".join(
        line for line in sums if "chexpert" not in line).encode()
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "mimic-cxr-2.0.0-chexpert.csv.gz is not listed in" in line and "SHA256SUMS.txt" in line
    assert not server.served("chexpert.csv.gz")

    kept = release.kept()[0]
    image = f"files/{kept.image_rel(kept.dicom_ids[0])}"
    server.replace["/files/mimic-cxr-jpg/2.1.0/SHA256SUMS.txt"] = "".join(line for line in sums if image not in line).encode()
    (tmp_path / "cache" / "physionet" / "mimic-cxr-jpg" / "2.1.0" / "SHA256SUMS.txt").unlink()
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 1 and f"{image} is not listed" in _one_error_line(result.stderr)


def test_login_page_instead_of_sha256sums(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    server.replace["/files/mimic-cxr-jpg/2.1.0/SHA256SUMS.txt"] = b"<!DOCTYPE html><html>Log in</html>"
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "sent a web page" in line and "data use agreement" in line
    assert not (tmp_path / "cache" / "physionet" / "mimic-cxr-jpg" / "2.1.0" / "SHA256SUMS.txt").exists()
    del server.replace["/files/mimic-cxr-jpg/2.1.0/SHA256SUMS.txt"]
    assert run_cli(*_download_args(server, tmp_path), env=GOOD).exit_code == 0


def test_limit_studies_downloads_only_the_subset(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path,
                                                 run_cli) -> None:
    result = run_cli(*_download_args(server, tmp_path, "--limit-studies", "1", "--unit", "study"), env=GOOD)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["counts"] == {"train": 1, "val": 1, "test": 1}
    first = {split: min((s for s in release.kept() if s.prepared_split == split), key=lambda s: int(s.study_id))
             for split in ("train", "val", "test")}
    assert server.served(".jpg") == sum(len(s.dicom_ids) for s in first.values())
    assert server.served("metadata.csv.gz") == 1  # --unit study needs the view positions
    assert "not R2Gen's" in result.stdout and "published annotation" not in result.stdout


def test_interrupted_run_then_rerun(release: SyntheticRelease, server: PhysioNetServer, tmp_path: Path, run_cli,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mrg.data.sources.mimic_cxr as mimic

    real, calls = mimic._link_or_copy, []

    def interrupted(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(mimic, "_link_or_copy", interrupted)
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 130
    out = tmp_path / "out"
    assert not (out / "prepare.json").exists() and (out / ".mrg-prepare.json").exists()
    assert len(list((out / "images").rglob("*.jpg"))) == 2

    monkeypatch.setattr(mimic, "_link_or_copy", real)
    before = {suffix: server.served(suffix) for suffix in ("reports.zip", "split.csv.gz", ".jpg")}
    result = run_cli(*_download_args(server, tmp_path), env=GOOD)
    assert result.exit_code == 0, result.output
    assert {suffix: server.served(suffix) for suffix in before} == before  # nothing fetched twice
    assert (out / "prepare.json").is_file() and not (out / ".mrg-prepare.json").exists()
    assert len(list((out / "images").rglob("*.jpg"))) == sum(len(v) for v in release.r2gen_entries().values())


def test_force_redoes_and_other_options_are_refused(server: PhysioNetServer, tmp_path: Path, run_cli) -> None:
    assert run_cli(*_download_args(server, tmp_path, "--skip-images"), env=GOOD).exit_code == 0
    other = run_cli(*_download_args(server, tmp_path, "--skip-images", "--section", "impression"), env=GOOD)
    assert other.exit_code == 1
    assert "--out" in _one_error_line(other.stderr) and "--force" in other.stderr
    forced = run_cli(*_download_args(server, tmp_path, "--skip-images", "--section", "impression", "--force"), env=GOOD)
    assert forced.exit_code == 0 and "already prepared" not in _flat(forced.stdout)
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["protocol"]["section"] == "impression"


def test_local_source_and_annotation_import(release: SyntheticRelease, tmp_path: Path, run_cli) -> None:
    local = run_cli("prepare", "mimic-cxr", "--out", tmp_path / "local", "--source", release.root, "--labels", "negbio")
    assert local.exit_code == 0, local.output
    imported = run_cli("prepare", "mimic-cxr", "--out", tmp_path / "imported", "--from-annotation",
                       tmp_path / "local" / "annotation.json", "--images", tmp_path / "local" / "images",
                       "--image-size", "16")
    assert imported.exit_code == 0, imported.output
    for name in ("annotation.json",):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "imported" / name).read_bytes()
    record = json.loads((tmp_path / "imported" / "prepare.json").read_text())
    assert record["images"]["resized_to"] == 16 and record["source"]["mode"] == "r2gen-annotation"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"train": [', "annotation.json: invalid JSON at line 1, column 12: Expecting value"),
        (b"", "annotation.json: invalid JSON at line 1, column 1: Expecting value"),
        (b"\xff\xfe{}", "annotation.json: not UTF-8 text"),
        (b"[1, 2]", "annotation.json: expected R2Gen's {\"train\": [...], \"val\": [...], \"test\": [...]}, found list"),
        (b'{"training": []}', "found training"),
        (b'{"train": {"id": "a"}}', "annotation.json: 'train' must be a list of entries"),
        (b'{"train": [{"id": "a", "report": "ok"}]}', "train[0]: an entry needs 'id', 'report' and 'image_path'"),
        (b'{"train": [{"id": "a", "report": "ok", "image_path": ["x.jpg"]}], "test": [{"id": "a", "report": "ok", '
         b'"image_path": ["y.jpg"]}]}', "annotation.json: test[0]: id a appears twice; ids must be unique"),
    ],
)
def test_bad_annotation_file(tmp_path: Path, run_cli, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad" / "annotation.json"
    bad.parent.mkdir()
    bad.write_bytes(content)
    out = tmp_path / "out"
    result = run_cli("prepare", "mimic-cxr", "--out", out, "--from-annotation", bad, "--skip-images")
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert needle in line and str(bad) in line, line
    assert "Traceback" not in result.output
    assert not (out / "prepare.json").exists() and not (out / "annotation.json").exists()
    good = tmp_path / "good" / "annotation.json"  # the corrected file goes into the same --out, no --force needed
    good.parent.mkdir()
    good.write_text(json.dumps({"train": [{"id": "a", "report": "No effusion.", "image_path": ["p10/a.jpg"]}],
                                "val": [], "test": []}))
    again = run_cli("prepare", "mimic-cxr", "--out", out, "--from-annotation", good, "--skip-images")
    assert again.exit_code == 0, again.output
    assert (out / "prepare.json").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--unit", "patient"], "--unit"),
        (["--section", "history"], "--section"),
        (["--limit-studies", "0"], "--limit-studies"),
        (["--source", "/nonexistent-mimic-dir"], "--source /nonexistent-mimic-dir"),
        (["--from-annotation", "/nonexistent.json"], "--from-annotation /nonexistent.json"),
        (["--images", "/x"], "--images"),
        (["--version", "latest"], "--version 'latest'"),
    ],
)
def test_bad_options(tmp_path: Path, run_cli, args: list[str], needle: str) -> None:
    result = run_cli("prepare", "mimic-cxr", "--out", tmp_path / "out", "--skip-images", *args)
    assert result.exit_code == 1
    assert needle in _one_error_line(result.stderr)
    assert not (tmp_path / "out" / "prepare.json").exists()
