"""Discover: walk input folders and group files into sample groups ("units").

Files that share a stem in one folder form one group. A group with a media file
(image, audio, video, sensor) becomes one unit per media file, with the group's
`.txt`/`.md` as caption or transcript and its `.json` as sidecar metadata. A
`.txt`/`.md` with no media sibling is a text document; a `.jsonl` holds records.

A `.tar` is a shard of raw samples (img2dataset / WebDataset style): its
members are grouped by key (the member path up to the first dot of its base
name) exactly as files in a folder are grouped by stem, and referenced as
``shard.tar#KEY.jpg``. Members that are links, devices, absolute paths or climb
out with ``..`` are rejected, never followed (`decode.source.check_member`).

Every file or member found ends up in a unit or in a discovery reject
(unsupported extension, hidden file, symlink leaving the root or looping, a
name that is not UTF-8, a sidecar with no media, a file over the size cap, an
unsafe tar member). Each unit carries the size and mtime discovery saw
(`stamps`), so the decoder can refuse a file that changed in between.
Discovery runs on the driver: it only lists and stats files (and tar headers),
which is cheap next to decoding them.

Interleaved documents (`.jsonl` records with ``"interleaved"`` segments, see
`decode.text`) reference images and audio by path relative to the source root.
Discovery does not read records, so it stamps only the `.jsonl` itself; the
references are still covered: a reference must name a file discovery takes as
media (hidden names and other extensions are refused at decode), so every
referenced file is also a unit of its own here, with its own stamp in the
candidates cache key (`pipeline.cache`). Changing a picture therefore re-decodes
the documents that show it, and the picture also stays its own image sample.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from dataengine.decode import modality_of_ext
from dataengine.decode.source import (
    MEMBER_SEP,
    TAR_EXTS,
    check_member,
    escape_name,
    member_name,
    open_tar,
)
from dataengine.errors import RejectError

CAPTION_EXTS = frozenset({".txt", ".md"})
SIDECAR_EXTS = frozenset({".json"})


@dataclass
class Unit:
    unit_id: str
    source: str
    root: str                # absolute path of the source root
    kind: str                # image | audio | video | sensor | text | jsonl (records: text, chat, interleaved)
    media: str               # relpath (posix) of the primary file
    caption: str | None = None   # relpath of the .txt/.md sibling
    sidecar: str | None = None   # relpath of the .json sibling
    # JSON {relpath: [size, mtime_ns]} of each file as discovery saw it
    # (tar member: [size, archive mtime_ns, data offset, archive size]); see decode.source.read_input
    stamps: str = ""

    def files(self) -> list[tuple[str, str]]:
        out = [("media", self.media)]
        if self.caption:
            out.append(("caption", self.caption))
        if self.sidecar:
            out.append(("sidecar", self.sidecar))
        return out

    def to_row(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Discovered:
    units: list[Unit] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # (source, relpath) of every file seen


def unit_id(source: str, relpath: str) -> str:
    """Stable id: no dots or slashes, so it is a valid WebDataset key."""
    return hashlib.sha256(f"{source}\0{relpath}".encode()).hexdigest()[:24]


def discover(sources: list[tuple[str, Path]], *, max_file_bytes: int) -> Discovered:
    """List every file under each (name, root) and group it; deterministic order."""
    out = Discovered()
    for name, root in sources:
        root = Path(root).resolve()
        if not root.is_dir():
            out.rejects.append(_reject(name, ".", "missing_source", f"{root} is not a folder"))
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            here = Path(dirpath)
            groups: dict[str, list[tuple[str, str]]] = {}
            stamps: dict[str, list[int]] = {}
            for fname in sorted(filenames + [d for d in dirnames if (here / d).is_symlink()]):
                rel = escape_name((here / fname).relative_to(root).as_posix())
                out.files.append((name, rel))
                checked = _check_file(root, here / fname, rel, max_file_bytes)
                if not isinstance(checked, os.stat_result):
                    out.rejects.append(_reject(name, rel, *checked))
                    continue
                stem, ext = os.path.splitext(fname)
                if ext.lower() in TAR_EXTS:
                    out.files.pop()  # the archive is a container: its members are the inputs
                    _list_tar(name, root, rel, max_file_bytes, out)
                    continue
                stamps[rel] = [checked.st_size, checked.st_mtime_ns]
                groups.setdefault(stem, []).append((ext.lower(), rel))
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink()]
            for stem in sorted(groups):
                _group(name, root, groups[stem], stamps, out)
    return out


def _check_file(root: Path, path: Path, rel: str, max_file_bytes: int) -> os.stat_result | tuple[str, str]:
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
        return "unreadable", f"{type(exc).__name__}: {exc}"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file", "not a regular file (device, socket or fifo)"
    if st.st_size > max_file_bytes and path.suffix.lower() not in TAR_EXTS:  # a shard's cap is per member
        return "file_too_large", f"{st.st_size} bytes > decode.max_file_bytes={max_file_bytes}"
    return st


def _list_tar(source: str, root: Path, rel: str, max_file_bytes: int, out: Discovered) -> None:
    """Group the members of the raw tar shard `rel` into units (headers only; no member is read)."""
    path = root / rel
    try:
        tf = open_tar(path)
    except RejectError as exc:
        out.files.append((source, rel))
        out.rejects.append(_reject(source, rel, exc.reason, exc.detail))
        return
    st = os.stat(path)
    seen: dict[str, list[tuple[str, str] | list[int]]] = {}
    broken, past_end = "", False
    with tf:
        while True:
            try:
                info = tf.next()
            except tarfile.ReadError as exc:  # a member ran past the end, or a damaged header
                broken = str(exc)
                break
            if info is None:
                break
            tf.members.clear()  # a shard of a million members must not keep every header
            past_end |= info.offset_data + info.size > st.st_size
            if info.isdir():
                continue
            ref = f"{rel}{MEMBER_SEP}{escape_name(member_name(info))}"
            out.files.append((source, ref))
            seen.setdefault(ref, []).append(
                check_member(info, st.st_size, max_file_bytes) or [info.size, st.st_mtime_ns, info.offset_data, st.st_size])
        end = tf.offset
    groups: dict[str, list[tuple[str, str]]] = {}
    stamps: dict[str, list[int]] = {}
    for ref, fates in seen.items():
        if len(fates) > 1:
            out.rejects.extend(_reject(source, ref, "duplicate_member", f"the archive holds {len(fates)} members "
                                       "with this name; which one is meant is ambiguous") for _ in fates)
        elif isinstance(fates[0], tuple):
            out.rejects.append(_reject(source, ref, *fates[0]))
        else:
            member = ref.split(MEMBER_SEP, 1)[1]
            base = member.rsplit("/", 1)[-1]
            key = member[: len(member) - len(base)] + base.split(".", 1)[0]  # WebDataset: up to the first dot
            groups.setdefault(key, []).append((os.path.splitext(base)[1].lower() if "." in base else "", ref))
            stamps[ref] = fates[0]
    for key in sorted(groups):
        _group(source, root, groups[key], stamps, out)
    if broken:
        if not past_end:  # a member that runs past the end explains the stop, and is rejected itself
            out.rejects.append(_reject(source, rel, "corrupt_archive", f"reading stopped at offset {end}: {broken}"))
        return
    with open(path, "rb") as f:  # what follows the last header must be the zero end-of-archive blocks
        f.seek(end)
        tail = f.read(1024)
    if tail.strip(b"\0"):
        out.rejects.append(_reject(source, rel, "corrupt_archive", f"the data after offset {end} is not a tar "
                                   "header; members after it were not read"))


def _group(source: str, root: Path, files: list[tuple[str, str]], stamps: dict, out: Discovered) -> None:
    media, captions, sidecars, docs = [], [], [], []
    for ext, rel in files:
        kind = modality_of_ext(ext)
        if kind in ("image", "audio", "video", "sensor"):
            media.append((kind, rel))
        elif ext in CAPTION_EXTS:
            captions.append(rel)
        elif ext in SIDECAR_EXTS:
            sidecars.append(rel)
        elif kind == "jsonl":
            docs.append(("jsonl", rel))
        else:
            out.rejects.append(
                _reject(source, rel, "unsupported_extension",
                        f"extension {ext or '(none)'!r} is not an image, audio, video, sensor or text type")
            )
    caption = captions[0] if captions else None
    sidecar = sidecars[0] if sidecars else None
    for extra in captions[1:]:
        if media:
            out.rejects.append(_reject(source, extra, "duplicate_caption", f"the group already uses {caption}"))
        else:
            docs.append(("text", extra))
    for extra in sidecars[1:]:
        out.rejects.append(_reject(source, extra, "duplicate_sidecar", f"the group already uses {sidecar}"))
    if media:
        for kind, rel in media:
            out.units.append(Unit(unit_id(source, rel), source, str(root), kind, rel, caption, sidecar,
                                  _stamps(stamps, rel, caption, sidecar)))
    else:
        if caption:
            docs.insert(0, ("text", caption))
        if sidecar:
            out.rejects.append(
                _reject(source, sidecar, "orphan_sidecar",
                        "a .json sidecar needs a media file with the same stem in the same folder")
            )
    for kind, rel in docs:
        out.units.append(Unit(unit_id(source, rel), source, str(root), kind, rel, stamps=_stamps(stamps, rel)))


def _stamps(stamps: dict, *rels: str | None) -> str:
    return json.dumps({r: stamps[r] for r in rels if r and r in stamps}, sort_keys=True)


def _reject(source: str, path: str, reason: str, detail: str) -> dict:
    return {"source": source, "path": path, "stage": "discover", "reason": reason, "detail": detail}
