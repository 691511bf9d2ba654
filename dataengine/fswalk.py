"""Local folders for discovery: an iterative walk (any depth, any path length) and the checks
that say why a file or folder is not an input (`discover` records the reason as a reject row)."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dataengine.decode.source import MEMBER_SEP, TAR_EXTS


def walk(top: str, on_error):
    """`os.walk(top)` (top-down, links not followed; the caller prunes `dirnames` in place) without
    recursion, so any depth is walked; a folder that cannot be listed goes to `on_error(path, exc)`."""
    stack = [top]
    while stack:
        here = stack.pop()
        dirs, files = [], []
        try:
            with os.scandir(here) as it:
                for e in it:
                    try:
                        isdir = e.is_dir()
                    except OSError:
                        isdir = False
                    (dirs if isdir else files).append(e.name)
        except OSError as exc:
            on_error(here, exc)
            continue
        yield here, dirs, files
        stack.extend(os.path.join(here, d) for d in reversed(dirs))


def islink(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:  # a path past the system's limit: not a link; listing it says why
        return False


def folder_problem(d: str) -> tuple[str, str] | None:
    """Why the folder named `d` is not walked (one reject row stands for it), or None."""
    if d.startswith("."):
        return "hidden_folder", "hidden folders are not walked; rename it without the leading dot to include its files"
    if ".tar" + MEMBER_SEP in d:
        return "reserved_name", f"'.tar{MEMBER_SEP}' names a tar member; rename the folder"
    return None


def os_problem(exc: OSError, what: str) -> tuple[str, str]:
    if exc.errno == errno.ENAMETOOLONG:
        return "path_too_long", f"the {what}'s path is longer than the system allows; move it nearer the root"
    return "unreadable", f"the {what} cannot be read: {type(exc).__name__}: {exc}"


def check_file(root: Path, path: Path, rel: str, max_file_bytes: int) -> os.stat_result | tuple[str, str]:
    """The file's stat if it can be an input, else (reason, detail)."""
    if rel != path.relative_to(root).as_posix():
        return "bad_filename", "the file name is not valid UTF-8; rename it (e.g. convmv -t utf-8)"
    if path.name.startswith("."):
        return "hidden_file", "hidden files are skipped; rename it without the leading dot to include it"
    if MEMBER_SEP in path.name and ".tar" + MEMBER_SEP in rel:
        return "reserved_name", f"'.tar{MEMBER_SEP}' names a tar member; rename the file"
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(root):
                return "symlink_outside_root", f"points to {target}, outside the input root {root}"
            st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink_loop", "the symlink points (through other links) back to itself"
        if exc.errno == errno.ENOENT:
            return "broken_symlink", f"the symlink points to {os.readlink(path)!r}, which does not exist"
        return os_problem(exc, "file")
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file", "not a regular file (device, socket or fifo)"
    if st.st_size > max_file_bytes and path.suffix.lower() not in TAR_EXTS:  # a shard's cap is per member
        return "file_too_large", f"{st.st_size} bytes > decode.max_file_bytes={max_file_bytes}"
    return st
