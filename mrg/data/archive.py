"""Safe extraction and streaming reads of .tar/.tgz/.tar.gz and .zip archives.

Every member is checked before anything is written: a name that is absolute or whose normalised
path leaves the target folder (``..``), a symbolic or hard link, a device or a FIFO makes the whole
archive refused with an ``ArchiveError`` naming the archive and the member. A truncated or corrupt
archive is reported as such. Extraction goes into a temporary sibling folder that is renamed onto
the target only when complete, together with a marker file, so an interrupted extraction is never
mistaken for a finished one and is redone by the next run.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from mrg.errors import ArchiveError, DataError
from mrg.files import read_json, write_json_atomic

__all__ = ["EXTRACTED_MARKER", "archive_kind", "iter_archive_members", "safe_extract", "safe_member_name"]

EXTRACTED_MARKER = ".mrg-extracted.json"
_CHUNK = 1 << 20
MemberFilter = Callable[[str], bool]
# What a damaged archive raises while it is read (gzip's BadGzipFile is an OSError).
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError)


def _corrupt(archive: Path, err: BaseException) -> ArchiveError:
    return ArchiveError(
        f"{archive}: truncated or corrupt archive ({type(err).__name__}: {err}); delete it and download again"
    )


def archive_kind(archive: Path) -> str:
    """``zip`` or ``tar`` (plain or compressed), from the file's content.

    Raises:
        ArchiveError: the file is missing or neither a zip nor a tar archive.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found; check the path or download it again")
    if archive.stat().st_size == 0:
        raise ArchiveError(f"{archive}: the file is empty (0 bytes), not an archive; delete it and download again")
    if zipfile.is_zipfile(archive):
        return "zip"
    with open(archive, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"\xef\xbb\xbf", b"<!doctype html", b"<html", b"<?xml")):  # (a BOM starts text, too)
        raise ArchiveError(f"{archive}: is a web page or XML document, not an archive (the server sent an error or "
                           "login page instead of the file); delete it and download again")
    name = archive.name.lower()
    if name.endswith(".zip"):
        raise ArchiveError(f"{archive}: truncated or corrupt zip archive (no central directory); delete it and download again")
    try:
        with _open_tar(archive) as (tar, _raw):
            tar.next()
        return "tar"
    except _CORRUPT as err:
        raise _corrupt(archive, err) from None


@contextmanager
def _open_tar(archive: Path) -> Iterator[tuple[tarfile.TarFile, IO[bytes]]]:
    """A streaming TarFile over the decompressed bytes, and that decompressed stream.

    The decompression is done here rather than by tarfile because tarfile's own gzip reader does not
    check the gzip trailer, so an archive cut short at a member boundary would pass as complete.
    """
    with open(archive, "rb") as handle:
        magic = handle.read(6)
        handle.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            raw: IO[bytes] = gzip.GzipFile(fileobj=handle, mode="rb")
        elif magic.startswith(b"BZh"):
            raw = bz2.BZ2File(handle, mode="rb")
        elif magic.startswith(b"\xfd7zXZ\x00"):
            raw = lzma.LZMAFile(handle, mode="rb")
        else:
            raw = handle
        with raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            yield tar, raw


def safe_member_name(archive: Path, name: str) -> str:
    """The member's normalised relative POSIX path, or an ``ArchiveError`` if it could leave the target folder."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract this archive")
    parts = [p for p in PurePosixPath(cleaned).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} points outside the target folder ('..'); refusing to extract this archive")
    return "/".join(parts)


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> str:
    name = safe_member_name(archive, member.name)
    if member.issym() or member.islnk():
        raise ArchiveError(f"{archive}: member {member.name!r} is a link (to {member.linkname!r}); refusing to extract this archive")
    if member.ischr() or member.isblk() or member.isfifo() or not (member.isreg() or member.isdir()):
        raise ArchiveError(f"{archive}: member {member.name!r} is a device or special file; refusing to extract this archive")
    return name


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> str:
    name = safe_member_name(archive, info.filename)
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix type (a plain file)
    if file_type == stat.S_IFLNK:
        raise ArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract this archive")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"{archive}: member {info.filename!r} is a device or special file; refusing to extract this archive")
    return name


def _iter_members(archive: Path, members: MemberFilter | None) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    """Yield ``(name, is_dir, readable)`` for every checked member in archive order, reading the archive once.

    ``readable`` is None for directories and for files rejected by ``members``; it is valid only until the
    next item. Corruption anywhere (also after the last yielded member) raises ``ArchiveError``.
    """
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = _check_zip_member(archive, info)
                    if not name:
                        continue
                    if info.is_dir():
                        yield name, True, None
                    elif members is None or members(name):
                        with zf.open(info) as handle:
                            yield name, False, handle
                    else:
                        yield name, False, None
            return
        with _open_tar(archive) as (tar, raw):
            for member in tar:
                name = _check_tar_member(archive, member)
                if not name:
                    continue
                if member.isdir():
                    yield name, True, None
                elif members is None or members(name):
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file always has data
                    yield name, False, handle
                else:
                    yield name, False, None
            # tarfile ends quietly when the data stops at a header; a whole archive ends with a zero block
            if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:  # type: ignore[union-attr]
                raise tarfile.ReadError("the archive ends without its end-of-archive marker")
            while raw.read(_CHUNK):  # read to the end so that the compressed stream's checksum is verified
                pass
    except _CORRUPT as err:
        raise _corrupt(archive, err) from None


def iter_archive_members(archive: Path, *, members: MemberFilter | None = None) -> Iterator[tuple[str, bytes]]:
    """Stream ``(normalised name, bytes)`` of the regular files of an archive without extracting it.

    Meant for small members (e.g. the XML reports of a tgz): each selected member is read into memory.
    Every member name is checked as for ``safe_extract``, so a hostile archive is refused here too.

    Args:
        archive: a .tar/.tgz/.tar.gz or .zip file.
        members: keep only the members whose normalised name this returns True for.

    Raises:
        ArchiveError: a truncated/corrupt archive, or a member that may not be extracted.
    """
    archive = Path(archive)
    for name, is_dir, handle in _iter_members(archive, members):
        if is_dir or handle is None:
            continue
        try:
            data = handle.read()
        except _CORRUPT as err:
            raise _corrupt(archive, err) from None
        yield name, data


def _archive_identity(archive: Path, filter_id: str | None) -> dict[str, object]:
    info = archive.stat()
    return {"archive": archive.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "filter": filter_id}


def _completed(dest: Path, identity: dict[str, object]) -> list[Path] | None:
    marker = dest / EXTRACTED_MARKER
    if not marker.is_file():
        return None
    try:
        record = read_json(marker)
    except DataError:
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in identity.items()):
        return None
    paths = [dest / name for name in record.get("files", [])]
    return paths if all(p.is_file() for p in paths) else None


def _clear_destination(dest: Path, archive: Path) -> None:
    """Remove an absent-or-replaceable ``dest``: empty, or an earlier extraction by this module; refuse anything else."""
    if dest.exists():
        if not dest.is_dir():
            raise DataError(f"{dest}: exists and is not a folder; remove it so {archive.name} can be extracted there")
        if (dest / EXTRACTED_MARKER).is_file():
            shutil.rmtree(dest)  # our own extraction of another archive version or selection: replace it
        elif any(dest.iterdir()):
            raise DataError(f"{dest}: folder is not empty and was not made by mrg; remove it or choose another folder")
        else:
            dest.rmdir()


def _extract_into(archive: Path, members: MemberFilter | None, partial: Path, names: list[str]) -> None:
    """Write the (selected) members of ``archive`` under ``partial``, appending each regular file's name to ``names``."""
    root = partial.resolve()
    for name, is_dir, handle in _iter_members(archive, members):
        target = partial / name
        if not target.resolve().is_relative_to(root):  # belt and braces after the name check
            raise ArchiveError(f"{archive}: member {name!r} points outside the target folder; refusing to extract this archive")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if handle is None:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_member(archive, handle, target)
        names.append(name)


def _copy_member(archive: Path, handle: IO[bytes], target: Path) -> None:
    """Copy one member's bytes to ``target`` in chunks; a read error means the archive is corrupt."""
    try:
        out = open(target, "wb")
    except OSError as err:
        raise DataError(f"{target}: cannot write ({err.strerror}); check permissions and free space") from None
    with out:
        while True:
            try:
                chunk = handle.read(_CHUNK)
            except _CORRUPT as err:
                raise _corrupt(archive, err) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as err:
                raise DataError(f"{target}: cannot write ({err.strerror}); check free disk space") from None


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    members: MemberFilter | None = None,
    filter_id: str | None = None,
) -> list[Path]:
    """Extract an archive into ``dest`` safely and atomically; a finished extraction is not redone.

    The files are written into ``.<dest name>.partial`` beside ``dest`` and that folder is renamed onto
    ``dest`` with a marker (archive name, size, mtime and ``filter_id``) when everything is extracted.
    A later call with the same archive and ``filter_id`` returns the recorded files without reading the
    archive. A leftover partial folder of an interrupted run is deleted and the extraction redone.

    Args:
        archive: a .tar/.tgz/.tar.gz or .zip file.
        dest: the folder to create; it must be absent, empty, or an earlier extraction made by this function.
        members: extract only the members whose normalised name this returns True for (all are still checked).
        filter_id: a name for ``members`` recorded in the marker, so a different selection is re-extracted.

    Returns:
        The extracted regular files (under ``dest``), in archive order.

    Raises:
        ArchiveError: the archive is truncated/corrupt or holds an absolute, ``..``, link or device member;
            nothing is left in ``dest``.
        DataError: ``dest`` holds other files, or cannot be written.
    """
    archive, dest = Path(archive), Path(dest)
    kind_check = archive_kind(archive)  # missing / not an archive: fail before touching dest
    del kind_check
    identity = _archive_identity(archive, filter_id)
    done = _completed(dest, identity)
    if done is not None:
        return done
    _clear_destination(dest, archive)
    partial = dest.with_name(f".{dest.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted earlier extraction
    partial.mkdir(parents=True)
    names: list[str] = []
    try:
        _extract_into(archive, members, partial, names)
        write_json_atomic(partial / EXTRACTED_MARKER, {**identity, "files": names}, indent=None)
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [dest / name for name in names]
