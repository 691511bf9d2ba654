"""Discover: walk input folders and group files into sample groups ("units").

Files that share a stem in one folder form one group. A group with a media file
(image, audio, video, sensor) becomes one unit per media file, with the group's
`.txt`/`.md` as caption or transcript and its `.json` as sidecar metadata. A
`.txt`/`.md` with no media sibling is a text document; a `.jsonl` holds records.

Every file found ends up in a unit or in a discovery reject (unsupported
extension, hidden file, symlink leaving the root, a sidecar with no media, a
file over the size cap). Discovery runs on the driver: it only lists and stats
files, which is cheap next to decoding them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from dataengine.decode import modality_of_ext

CAPTION_EXTS = frozenset({".txt", ".md"})
SIDECAR_EXTS = frozenset({".json"})


@dataclass
class Unit:
    unit_id: str
    source: str
    root: str                # absolute path of the source root
    kind: str                # image | audio | video | sensor | text | jsonl
    media: str               # relpath (posix) of the primary file
    caption: str | None = None   # relpath of the .txt/.md sibling
    sidecar: str | None = None   # relpath of the .json sibling

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
            for fname in sorted(filenames + [d for d in dirnames if (here / d).is_symlink()]):
                rel = (here / fname).relative_to(root).as_posix()
                out.files.append((name, rel))
                problem = _check_file(root, here / fname, max_file_bytes)
                if problem:
                    out.rejects.append(_reject(name, rel, *problem))
                    continue
                stem, ext = os.path.splitext(fname)
                groups.setdefault(stem, []).append((ext.lower(), rel))
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink()]
            for stem in sorted(groups):
                _group(name, root, groups[stem], out)
    return out


def _check_file(root: Path, path: Path, max_file_bytes: int) -> tuple[str, str] | None:
    if path.name.startswith("."):
        return "hidden_file", "hidden files are skipped; rename it without the leading dot to include it"
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            return "symlink_outside_root", f"points to {target}, outside the input root {root}"
        if not target.is_file():
            return "not_a_file", f"symlink to {target}, which is not a regular file"
    elif not path.is_file():
        return "not_a_file", "not a regular file (device, socket or fifo)"
    size = path.stat().st_size
    if size > max_file_bytes:
        return "file_too_large", f"{size} bytes > decode.max_file_bytes={max_file_bytes}"
    return None


def _group(source: str, root: Path, files: list[tuple[str, str]], out: Discovered) -> None:
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
            out.units.append(Unit(unit_id(source, rel), source, str(root), kind, rel, caption, sidecar))
    else:
        if caption:
            docs.insert(0, ("text", caption))
        if sidecar:
            out.rejects.append(
                _reject(source, sidecar, "orphan_sidecar",
                        "a .json sidecar needs a media file with the same stem in the same folder")
            )
    for kind, rel in docs:
        out.units.append(Unit(unit_id(source, rel), source, str(root), kind, rel))


def _reject(source: str, path: str, reason: str, detail: str) -> dict:
    return {"source": source, "path": path, "stage": "discover", "reason": reason, "detail": detail}
