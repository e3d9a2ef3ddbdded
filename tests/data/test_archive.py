"""Safe extraction: hostile members are refused, damaged archives detected, interrupted runs redone."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mrg.data import archive as archive_mod
from mrg.data.archive import EXTRACTED_MARKER, iter_archive_members, safe_extract
from mrg.errors import ArchiveError, DataError
from tests.data.conftest import make_tgz

FILES = {"top/a.txt": b"alpha", "top/sub/b.bin": os.urandom(3000), "top/c.xml": b"<x/>"}


def _info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert not any(p.name.endswith(".partial") for p in dest.parent.iterdir())


def test_extracts_tgz_and_skips_a_finished_extraction(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", FILES)
    dest = tmp_path / "out"
    paths = safe_extract(tgz, dest)
    assert [p.relative_to(dest).as_posix() for p in paths] == list(FILES)
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert (dest / EXTRACTED_MARKER).is_file()
    calls = []
    original = archive_mod._iter_members
    archive_mod._iter_members = lambda *a, **k: calls.append(1) or original(*a, **k)  # type: ignore[assignment]
    try:
        assert safe_extract(tgz, dest) == paths
    finally:
        archive_mod._iter_members = original  # type: ignore[assignment]
    assert calls == []  # the marker made the second call a no-op


def test_member_filter_and_filter_id(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", FILES)
    dest = tmp_path / "out"
    paths = safe_extract(tgz, dest, members=lambda n: n.endswith(".xml"), filter_id="xml")
    assert [p.name for p in paths] == ["c.xml"]
    assert not (dest / "top/a.txt").exists()
    paths = safe_extract(tgz, dest, filter_id="all")  # another selection re-extracts
    assert len(paths) == 3


def test_extracts_zip(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
    paths = safe_extract(path, tmp_path / "out")
    assert sorted(p.read_bytes() for p in paths) == sorted(FILES.values())


@pytest.mark.parametrize(
    ("member", "match"),
    [
        ("../evil.txt", "outside the target folder"),
        ("top/../../evil.txt", "outside the target folder"),
        ("/etc/evil.txt", "absolute path"),
    ],
)
def test_traversal_and_absolute_members_are_refused(tmp_path: Path, member: str, match: str) -> None:
    tgz = make_tgz(tmp_path / "evil.tgz", {"top/ok.txt": b"ok", member: b"pwned"})
    dest = tmp_path / "sub" / "out"
    dest.parent.mkdir()
    with pytest.raises(ArchiveError, match=match) as info:
        safe_extract(tgz, dest)
    assert "evil.tgz" in str(info.value) and member in str(info.value)
    _assert_nothing_left(dest)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()


@pytest.mark.parametrize(
    ("info", "match"),
    [
        (_info("top/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (_info("top/hard", tarfile.LNKTYPE, "top/a.txt"), "is a link"),
        (_info("top/dev", tarfile.CHRTYPE), "device"),
        (_info("top/blk", tarfile.BLKTYPE), "device"),
        (_info("top/fifo", tarfile.FIFOTYPE), "device"),
    ],
)
def test_links_and_devices_are_refused(tmp_path: Path, info: tarfile.TarInfo, match: str) -> None:
    tgz = make_tgz(tmp_path / "evil.tgz", {"top/a.txt": b"a"}, extra=[info])
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=match) as err:
        safe_extract(tgz, dest)
    assert info.name in str(err.value)
    _assert_nothing_left(dest)


def test_zip_traversal_and_symlink_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../../evil.txt", b"pwned")
    with pytest.raises(ArchiveError, match=r"\.\./\.\./evil\.txt"):
        safe_extract(path, tmp_path / "out")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("ln")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract(link, tmp_path / "out2")
    _assert_nothing_left(tmp_path / "out")


def test_truncated_tgz_is_detected(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", {"top/big.bin": os.urandom(200_000), "top/z.txt": b"z"})
    data = tgz.read_bytes()
    tgz.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ArchiveError, match="truncated or corrupt.*delete it and download again") as info:
        safe_extract(tgz, tmp_path / "out")
    assert "a.tgz" in str(info.value)
    _assert_nothing_left(tmp_path / "out")
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(iter_archive_members(tgz))


def test_truncation_anywhere_is_detected(tmp_path: Path) -> None:
    files = {f"m/{i}.txt": os.urandom(300 + i) for i in range(30)}
    tgz = make_tgz(tmp_path / "full.tgz", files)
    assert len(list(iter_archive_members(tgz))) == 30
    data = tgz.read_bytes()
    for cut in range(len(data) // 10, len(data), max(1, len(data) // 10)):
        (tmp_path / "cut.tgz").write_bytes(data[:cut])
        with pytest.raises(ArchiveError, match="truncated or corrupt"):
            list(iter_archive_members(tmp_path / "cut.tgz"))
    (tmp_path / "cut.tgz").write_bytes(data[:-4])  # only the gzip trailer (size) is missing
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(iter_archive_members(tmp_path / "cut.tgz"))
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    raw = plain.read_bytes()
    assert len(list(iter_archive_members(plain))) == 30
    first_member_end = 512 + ((300 + 511) // 512) * 512  # a cut exactly at the second member's header
    (tmp_path / "cut.tar").write_bytes(raw[:first_member_end])
    with pytest.raises(ArchiveError, match="end-of-archive marker"):
        list(iter_archive_members(tmp_path / "cut.tar"))


def test_garbage_and_corrupt_zip_are_detected(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"neither gzip nor tar, " * 40)
    with pytest.raises(ArchiveError, match="junk.tgz: truncated or corrupt"):
        safe_extract(junk, tmp_path / "o1")
    for page in (b"  <!DOCTYPE html><html>Log in</html>", b"<html><body>503</body></html>", b"<?xml version='1.0'?><e/>"):
        junk.write_bytes(page)
        with pytest.raises(ArchiveError, match=r"junk\.tgz: is a web page or XML document, not an archive \(the server "
                                               "sent an error or login page"):
            safe_extract(junk, tmp_path / "o1")
    empty = tmp_path / "empty.tgz"
    empty.write_bytes(b"")
    with pytest.raises(ArchiveError, match=r"empty\.tgz: the file is empty \(0 bytes\), not an archive"):
        safe_extract(empty, tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.bin", os.urandom(50_000))
    data = bytearray(path.read_bytes())
    data[100:400] = bytes(300)  # damage the compressed data, keep the central directory
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="c.zip: truncated or corrupt"):
        safe_extract(path, tmp_path / "o2")
    _assert_nothing_left(tmp_path / "o2")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bytes(data[:200]))
    with pytest.raises(ArchiveError, match="cut.zip: truncated or corrupt"):
        safe_extract(cut, tmp_path / "o3")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not found"):
        safe_extract(tmp_path / "nope.tgz", tmp_path / "out")


def test_interrupted_extraction_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", FILES)
    dest = tmp_path / "out"
    original = archive_mod._iter_members

    def interrupted(*args, **kwargs):
        for i, item in enumerate(original(*args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(archive_mod, "_iter_members", interrupted)
    with pytest.raises(KeyboardInterrupt):
        safe_extract(tgz, dest)
    assert not dest.exists()
    # a crash (no clean-up at all) leaves a partial folder: the next run must not trust it
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "junk").write_bytes(b"half")
    monkeypatch.setattr(archive_mod, "_iter_members", original)
    paths = safe_extract(tgz, dest)
    assert len(paths) == 3 and not partial.exists()


def test_changed_archive_is_re_extracted_and_foreign_folder_refused(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", FILES)
    dest = tmp_path / "out"
    safe_extract(tgz, dest)
    make_tgz(tgz, {"only.txt": b"new content here"})
    paths = safe_extract(tgz, dest)
    assert [p.name for p in paths] == ["only.txt"] and not (dest / "top").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not empty and was not made by mrg"):
        safe_extract(tgz, foreign)
    assert (foreign / "mine.txt").read_text() == "keep"


def test_iter_archive_members_streams_selected_files(tmp_path: Path) -> None:
    tgz = make_tgz(tmp_path / "a.tgz", FILES)
    got = dict(iter_archive_members(tgz, members=lambda n: n.startswith("top/") and not n.endswith(".bin")))
    assert got == {"top/a.txt": b"alpha", "top/c.xml": b"<x/>"}
    evil = make_tgz(tmp_path / "e.tgz", {"../x": b"1"})
    with pytest.raises(ArchiveError, match="outside"):
        list(iter_archive_members(evil))


def test_plain_tar_and_dot_members(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in {"./x/y.txt": b"y", "x/./z.txt": b"z"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    paths = safe_extract(path, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == ["x/y.txt", "x/z.txt"]
