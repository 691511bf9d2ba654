"""Reading an input's bytes safely: a file under a source root, or a member of a raw tar shard.

An input is named by its path relative to the source root: ``images/cat.jpg``,
or ``shards/000.tar#000017.jpg`` for a member of a WebDataset-style tar. Every
read is confined to the root (a symlink swapped in after discovery that leaves
the root is refused), capped at `max_bytes`, and checked against the
``[size, mtime_ns, ...]`` stamp discovery recorded: a file that changed since
discovery, or while it was read, is rejected instead of decoded half-old,
half-new. The tar helpers are shared with discovery, so a member discovery
accepted is exactly one this reader will read.

A root may also be a URI (``s3://bucket/prefix``, see `dataengine.storage`). There
are no symlinks on object storage; instead a key must be safe (`check_key`: no
``..`` or ``.`` or empty segments, no backslashes). A remote read is one HEAD (the
stamp check: size, and LastModified to the second) and one GET (ranged for a tar
member); a length that differs from the HEAD's is ``changed_while_reading``.

`check_unchanged` is the stamp check alone (a stat or a HEAD, nothing read): the decode stage
uses it for a manifest whose row discovery already read (`dataengine.manifest_input`).
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path, PurePosixPath

from dataengine import storage
from dataengine.decode.tarlist import Member, TarError, TarReader
from dataengine.errors import RejectError

TAR_EXTS = frozenset({".tar"})
MEMBER_SEP = "#"  # "archive.tar#member"


def split_member(rel: str) -> tuple[str, str | None]:
    """("shards/a.tar", "KEY.jpg") for a tar member reference, (rel, None) for a plain file."""
    head, sep, member = rel.partition(".tar" + MEMBER_SEP)
    if not sep:
        return rel, None
    return head + ".tar", member


def escape_name(name: str) -> str:
    """A printable, UTF-8-safe spelling of a file name that may hold undecodable bytes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def check_member(info: Member, archive_size: int, max_bytes: int) -> tuple[str, str] | None:
    """Why a tar member cannot be an input ((reason, detail)), or None if it can.

    Refuses what would escape an extraction folder or is not plain data:
    absolute paths, ``..`` components, links, devices and fifos; and members
    over the size cap or running past the end of the archive.
    """
    name = info.name
    if name != escape_name(name):
        return "bad_filename", "the member name is not valid UTF-8"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        return "unsafe_member_path", f"member path {name!r} is absolute or climbs out of the archive with '..'"
    if info.issym() or info.islnk():
        return "link_member", f"a {'symbolic' if info.issym() else 'hard'} link to {info.linkname!r}; " \
                              "links in tar shards are not followed"
    if not info.isreg():
        return "special_member", "a device, fifo or other special member, not file data"
    if info.size > max_bytes:
        return "file_too_large", f"{info.size} bytes > decode.max_file_bytes={max_bytes}"
    if info.offset_data + info.size > archive_size:
        return "truncated", f"the member's {info.size} bytes run past the end of the archive ({archive_size} bytes)"
    return None


def member_name(info: Member) -> str:
    """The member's name as inputs refer to it: without leading "./"."""
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    return name


def check_key(rel: str) -> str | None:
    """Why an object-storage key (relative to the source prefix) is unsafe, or None: S3 has no
    folders, so ``a/../b``, ``a//b``, ``./a`` and backslashes are legal keys that must not be inputs."""
    if not rel or rel.startswith("/") or "\\" in rel:
        return f"{rel!r} is empty, absolute or holds a backslash"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return f"{rel!r} has an empty, '.' or '..' segment"
    return None


def open_tar(path) -> TarReader:
    """Open an uncompressed tar (a path, or a seekable binary file object) for listing with the
    bounded header reader (`decode.tarlist`); `RejectError` (truncated / corrupt_archive /
    compressed_archive / empty_file)."""
    try:
        if isinstance(path, (str, os.PathLike)):
            f, owns = open(path, "rb"), True
        else:
            f, owns = path, False
        magic = f.read(6)
        f.seek(0)
    except OSError as exc:
        raise RejectError("unreadable", f"{type(exc).__name__}: {exc}") from None
    if magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")):
        if owns:
            f.close()
        raise RejectError("compressed_archive", "a compressed tar (gzip, bzip2, xz or zstd); shards are read "
                                                "uncompressed, so a compression bomb cannot inflate: decompress it")
    try:
        return TarReader(f, owns=owns)
    except TarError as exc:
        if owns:
            f.close()
        if exc.empty:
            raise RejectError("empty_file", "the tar file has no data") from None
        if exc.truncated:
            raise RejectError("truncated", f"the tar archive ends inside a header: {exc}") from None
        raise RejectError("corrupt_archive", f"not an uncompressed tar archive ({exc}); "
                                             "a .tar shard must be a plain (not gzip) tar") from None
    except OSError as exc:
        if owns:
            f.close()
        raise RejectError("unreadable", f"{type(exc).__name__}: {exc}") from None


def _stamp(stamps, rel: str) -> list | None:
    if not stamps:
        return None
    if isinstance(stamps, str):
        stamps = json.loads(stamps)
    return stamps.get(rel)


def _open_confined(root: Path, rel: str) -> int:
    """An fd for root/rel, refused if the real path it opened leaves the root."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ".." in parts:
        raise RejectError("unsafe_path", f"{rel!r} is absolute or climbs out of the input root")
    real_root = os.path.realpath(root)
    try:
        fd = os.open(os.path.join(real_root, rel), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RejectError("vanished", "the file was deleted or moved after discovery") from None
    except OSError as exc:
        reason = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
        raise RejectError(reason, f"{type(exc).__name__}: {exc}") from None
    try:
        proc = f"/proc/self/fd/{fd}"
        real = os.readlink(proc) if os.path.exists(proc) else os.path.realpath(os.path.join(real_root, rel))
        if os.path.commonpath([real, real_root]) != real_root:
            raise RejectError("symlink_outside_root", f"resolves to {real}, outside the input root {real_root}")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RejectError("not_a_file", "not a regular file (device, socket or fifo)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_exact(fd: int, offset: int, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = os.pread(fd, min(size - got, 1 << 24), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino)


def _find_member(fd: int, archive: str, member: str, max_bytes: int) -> tuple[int, int]:
    """(data offset, size) of `member`, by listing the tar (used when discovery left no stamp)."""
    with open(os.dup(fd), "rb") as f:
        return _find_member_in(f, os.fstat(fd).st_size, archive, member, max_bytes)


def _find_member_in(f, size: int, archive: str, member: str, max_bytes: int) -> tuple[int, int]:
    """(data offset, size) of `member` in the open tar `f` of `size` bytes."""
    try:
        tf = TarReader(f)
        found = []
        for info in iter(tf.next, None):
            if member_name(info) == member:
                problem = check_member(info, size, max_bytes)
                if problem:
                    raise RejectError(*problem)
                found.append((info.offset_data, info.size))
    except TarError as exc:
        raise RejectError("corrupt_archive", f"{archive}: {exc}") from None
    if len(found) != 1:
        raise RejectError("vanished" if not found else "duplicate_member",
                          f"{archive} holds {len(found)} members named {member!r}")
    return found[0]


def read_input(root: str | Path, rel: str, max_bytes: int, stamps: str | dict | None = None,
               options: storage.StorageOptions | None = None) -> bytes:
    """The bytes of input `rel` under `root` (a file, or ``archive.tar#member``), at most `max_bytes`.

    `root` is a folder or a URI (``s3://bucket/prefix``); `options` say how to reach object
    storage (None: this process's AWS variables; see `dataengine.storage`).

    `stamps` is the unit's ``stamps`` (JSON or dict, from discovery): ``{rel:
    [size, mtime_ns]}`` for a file, ``{rel: [size, archive_mtime_ns, data_offset,
    archive_size]}`` for a tar member.

    Reject reasons: ``vanished``, ``changed_since_discovery``,
    ``changed_while_reading``, ``file_too_large``, ``empty_file``,
    ``unsafe_path``, ``symlink_outside_root``, ``symlink_loop``,
    ``not_a_file``, ``unreadable``, ``truncated``, ``duplicate_member``,
    and the member checks of `check_member`.
    """
    path, member = split_member(rel)
    stamp = _stamp(stamps, rel)
    if storage.is_remote(root):
        return _read_remote(str(root), path, member, max_bytes, stamp, options)
    fd = _open_confined(Path(storage.local_path(root)), path)
    try:
        before = os.fstat(fd)
        if member is None:
            if stamp is not None and (before.st_size, before.st_mtime_ns) != tuple(stamp[:2]):
                raise RejectError("changed_since_discovery", f"discovery saw {stamp[0]} bytes (mtime {stamp[1]}), "
                                                             f"now {before.st_size} bytes (mtime {before.st_mtime_ns})")
            data = _read_exact(fd, 0, max_bytes + 1)
            expect = before.st_size
        else:
            if stamp is not None:
                if (before.st_size, before.st_mtime_ns) != (stamp[3], stamp[1]):
                    raise RejectError("changed_since_discovery", f"the archive {path} changed after discovery")
                offset, size = stamp[2], stamp[0]
            else:
                offset, size = _find_member(fd, path, member, max_bytes)
            if size > max_bytes:
                raise RejectError("file_too_large", f"{size} bytes > decode.max_file_bytes={max_bytes}")
            data = _read_exact(fd, offset, size)
            expect = size
            if len(data) < size:
                raise RejectError("truncated", f"the archive ends {size - len(data)} bytes into the member")
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _changed(before, after) or (member is None and len(data) != expect and len(data) <= max_bytes):
        raise RejectError("changed_while_reading", "the file changed while it was being read; rerun once it is complete")
    if len(data) > max_bytes:
        raise RejectError("file_too_large", f"more than decode.max_file_bytes={max_bytes} bytes")
    if not data:
        raise RejectError("empty_file", "the file has zero bytes")
    return data


def check_unchanged(root: str | Path, rel: str, stamps: str | dict | None,
                    options: storage.StorageOptions | None = None) -> None:
    """Refuse file `rel` if it no longer matches its discovery stamp (size and mtime), without reading it.

    No stamp for `rel`: nothing to check. Reject reasons: ``changed_since_discovery``, ``vanished``,
    ``not_a_file``, ``unsafe_path``, ``symlink_outside_root``, ``symlink_loop``, ``unreadable``."""
    stamp = _stamp(stamps, rel)
    if stamp is None:
        return
    if storage.is_remote(root):
        problem = check_key(rel)
        if problem:
            raise RejectError("unsafe_path", f"{problem}: not an input key under the source prefix")
        fs, key = storage.resolve(storage.join(root, rel), options)
        try:
            info = fs.get_file_info(key)  # one HEAD
        except OSError as exc:
            raise RejectError("unreadable", f"{type(exc).__name__}: {exc}") from None
        if info.type == storage.pafs.FileType.NotFound:
            raise RejectError("vanished", "the object was deleted or moved after discovery")
        if info.type != storage.pafs.FileType.File:
            raise RejectError("not_a_file", "a prefix (folder), not an object")
        size, mtime = info.size, info.mtime_ns or 0
        same = size == stamp[0] and storage.same_mtime(mtime, stamp[1])
    else:
        fd = _open_confined(Path(storage.local_path(root)), rel)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        size, mtime = st.st_size, st.st_mtime_ns
        same = (size, mtime) == tuple(stamp[:2])
    if not same:
        raise RejectError("changed_since_discovery", f"{rel}: discovery saw {stamp[0]} bytes (mtime {stamp[1]}), "
                                                     f"now {size} bytes (mtime {mtime})")


def _read_remote(root: str, path: str, member: str | None, max_bytes: int, stamp: list | None,
                 options: storage.StorageOptions | None) -> bytes:
    """`read_input` for an object under a URI root: the same checks and reject reasons."""
    problem = check_key(path)
    if problem:
        raise RejectError("unsafe_path", f"{problem}: not an input key under the source prefix")
    fs, key = storage.resolve(storage.join(root, path), options)
    try:
        f = fs.open_input_file(key)  # one HEAD: size and Last-Modified
    except OSError as exc:
        try:
            kind = fs.get_file_info(key).type
        except OSError:
            kind = None
        if kind == storage.pafs.FileType.Directory:
            raise RejectError("not_a_file", "a prefix (folder), not an object") from None
        if isinstance(exc, FileNotFoundError) or kind == storage.pafs.FileType.NotFound:
            raise RejectError("vanished", "the object was deleted or moved after discovery") from None
        raise RejectError("unreadable", f"{type(exc).__name__}: {exc}") from None
    try:
        with f:
            size, mtime = f.size(), storage.file_mtime_ns(f, fs, key)
            if member is None:
                if stamp is not None and (size != stamp[0] or not storage.same_mtime(mtime, stamp[1])):
                    raise RejectError("changed_since_discovery", f"discovery saw {stamp[0]} bytes (mtime {stamp[1]}), "
                                                                 f"now {size} bytes (mtime {mtime})")
                if size > max_bytes:  # refused from the HEAD alone: nothing is downloaded
                    raise RejectError("file_too_large", f"more than decode.max_file_bytes={max_bytes} bytes")
                offset, expect = 0, size
            else:
                if stamp is not None:
                    if size != stamp[3] or not storage.same_mtime(mtime, stamp[1]):
                        raise RejectError("changed_since_discovery", f"the archive {path} changed after discovery")
                    offset, expect = stamp[2], stamp[0]
                else:
                    offset, expect = _find_member_in(storage.ReadAhead(f), size, path, member, max_bytes)
                if expect > max_bytes:
                    raise RejectError("file_too_large", f"{expect} bytes > decode.max_file_bytes={max_bytes}")
                if offset + expect > size:
                    raise RejectError("truncated", f"the archive ends {offset + expect - size} bytes into the member")
            data = f.read_at(expect, offset) if expect else b""  # one GET: a consistent object version
    except OSError as exc:
        raise RejectError("unreadable", f"{type(exc).__name__}: {exc}") from None
    if len(data) != expect:
        raise RejectError("changed_while_reading", "the object changed while it was being read; "
                                                   "rerun once it is complete")
    if not data:
        raise RejectError("empty_file", "the file has zero bytes")
    return data
