"""Discover: walk input folders and group files into sample groups ("units").

Files that share a stem in one folder form one group. A group with a media file
(image, audio, video, sensor) becomes one unit per media file, with the group's
`.txt`/`.md` as caption or transcript and its `.json` as sidecar metadata; when
several media files share a stem, none gets them (each input lands in one place):
the caption and sidecar are rejected as `shared_caption` / `shared_sidecar`. A
`.txt`/`.md` with no media sibling is a text document; a `.jsonl` holds records.

A file's extension may be compound (a modality registers ``.depth.png``; the longest registered suffix
wins, `modalities.split_name`), and a modality that aligns with another (depth with image) joins its
group's one host file as ``Unit.aligned`` instead of being a sample of its own: ``scene.jpg`` +
``scene.depth.png`` + ``scene.txt`` is one sample, captioned.

A `.tar` is a shard of raw samples (img2dataset / WebDataset style): its
members are grouped by key (the member path up to the first dot of its base
name) exactly as files in a folder are grouped by stem, and referenced as
``shard.tar#KEY.jpg``. Members that are links, devices, absolute paths or climb
out with ``..`` are rejected, never followed (`decode.source.check_member`). Tar
headers are read by the bounded reader `decode.tarlist`, never by `tarfile`.

Every file or member found ends up in a unit or in a discovery reject
(unsupported extension, hidden file, symlink leaving the root or looping, a
name that is not UTF-8, a sidecar with no media, a file over the size cap, an
unsafe tar member, a path past the system's limit); a folder that is not walked
(hidden, or named like a tar member ``d.tar#x``) is one reject row that stands for
everything in it. The walk is iterative (`fswalk.walk`), so any depth is listed; only
shard metadata is neither unit nor reject (`Discovered.metadata`).
Each unit carries the size and mtime discovery saw (`stamps`), so the decoder
can refuse a file that changed in between.
`dataengine run` runs discovery as Ray tasks, one per share of a source (`dataengine.listing`,
the `scope` argument); `discover` over a whole source is the same listing in one process.

A source root may be a URI (``s3://bucket/prefix``, anything `dataengine.storage`
reaches): its listing is grouped exactly like the same files on disk (same unit
ids, kinds, captions, sidecars, tar members, rejects), in the same order. Object
stores have no symlinks; a key with ``..``/``.``/empty segments or a backslash is
rejected (``unsafe_path``, `decode.source.check_key`), keys under a folder whose
name starts with a dot are skipped like hidden folders on disk, and a stamp is
[size, LastModified in ns]. Tar shards are listed with ranged reads of the
headers (`storage.ReadAhead`), never downloaded whole unless their members are small.

Interleaved documents (`.jsonl` records with ``"interleaved"`` segments, see
`decode.text`) reference images and audio by path relative to the source root.
Discovery does not read records, so it stamps only the `.jsonl` itself; the
references are still covered: a reference must name a file discovery takes as
media (hidden names and other extensions are refused at decode), so every
referenced file is also a unit of its own here, with its own stamp in the
candidates cache key (`pipeline.cache`). Changing a picture therefore re-decodes
the documents that show it, and the picture also stays its own image sample (or the
sample of the manifest row that lists it).

Tables (`dataengine.manifest_input`): a ``*.manifest.parquet`` / ``*.manifest.jsonl`` gives one
unit per row (``Unit.row``, ``Unit.inline``), and a file a row takes is no sample of its own;
img2dataset shard metadata goes to `Discovered.metadata`. A source's groups are formed once its
whole listing is known (`_flush`: same order, same rejects), so a manifest may take any file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from dataengine import fswalk as FS
from dataengine import manifest_input as MI
from dataengine import modalities
from dataengine import storage
from dataengine.decode.source import (
    MEMBER_SEP,
    TAR_EXTS,
    check_key,
    check_member,
    escape_name,
    member_name,
    open_tar,
)
from dataengine.decode.tarlist import TarError
from dataengine.errors import RejectError

CAPTION_EXTS = frozenset({".txt", ".md"})
SIDECAR_EXTS = frozenset({".json"})


@dataclass
class Unit:
    unit_id: str
    source: str
    root: str                # absolute path of the source root, or its URI (s3://bucket/prefix)
    kind: str                # a modality (image, audio, ...; `dataengine.modalities`) or jsonl (records)
    media: str               # relpath (posix) of the primary file
    caption: str | None = None   # relpath of the .txt/.md sibling
    sidecar: str | None = None   # relpath of the .json sibling
    # JSON {relpath: [size, mtime_ns]} of each file as discovery saw it
    # (tar member: [size, archive mtime_ns, data offset, archive size]); see decode.source.read_input
    stamps: str = ""
    # a manifest row's sample (manifest_input): the row ("m.manifest.parquet#R3"), and its caption and
    # metadata as JSON {"caption": str, "metadata": {...}} (read instead of a caption / sidecar file)
    row: str | None = None
    inline: str | None = None
    # files of aligned modalities in the group, JSON {modality: relpath} (scene.depth.png beside scene.jpg)
    aligned: str | None = None

    def files(self) -> list[tuple[str, str]]:
        out = [("media", self.media)]
        if self.caption:
            out.append(("caption", self.caption))
        if self.sidecar:
            out.append(("sidecar", self.sidecar))
        if self.row:
            out.append(("manifest", self.row))
        out.extend(json.loads(self.aligned).items() if self.aligned else ())
        return out

    def to_row(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Discovered:
    units: list[Unit] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # (source, relpath) of every file seen
    # (source, relpath) of shard metadata read but not an input (img2dataset X.parquet, X_stats.json)
    metadata: list[tuple[str, str]] = field(default_factory=list)
    manifests: int = 0  # manifest tables seen (their rows may take files anywhere in the source)
    # per source while it is listed: (len(rejects) then, entry) of each group / manifest / shard table
    pending: list = field(default_factory=list, repr=False, compare=False)


def unit_id(source: str, relpath: str) -> str:
    """Stable id: no dots or slashes, so it is a valid WebDataset key."""
    return hashlib.sha256(f"{source}\0{relpath}".encode()).hexdigest()[:24]


def discover(sources: list[tuple[str, Path | str]], *, max_file_bytes: int,
             options: storage.StorageOptions | None = None, scope: tuple | None = None) -> Discovered:
    """List every file under each (name, root) and group it; deterministic order.

    A root is a folder, a ``file://`` URI or a remote URI (``s3://bucket/prefix``);
    `options` say how to reach object storage (None: this process's AWS variables).
    `scope` (a listing task's share of one source, `dataengine.listing`): ("tree", folder) lists
    only the subtree of the root's folder `folder`; ("files", names, entries) only the root's own
    entries `names` (no descent; `entries`: their `storage.Entry` rows under a URI root)."""
    out = Discovered()
    for name, root in sources:
        if storage.is_remote(root):
            _discover_remote(name, storage.normalize(root), max_file_bytes, out, options, scope)
            continue
        root = Path(storage.local_path(root)).resolve()
        if not root.is_dir():
            out.rejects.append(_reject(name, ".", "missing_source", f"{root} is not a folder"))
            continue
        start = len(out.rejects)

        def unlisted(path: str, exc: OSError, name=name, root=root) -> None:
            rel = escape_name(Path(path).relative_to(root).as_posix())
            out.rejects.append(_reject(name, rel, *FS.os_problem(exc, "folder")))

        if scope is None:
            walk = FS.walk(str(root), unlisted)
        elif scope[0] == "tree":
            walk = FS.walk(str(root / scope[1]), unlisted)
        else:  # the root's own files (and links), and its hidden folders: its other folders are other tasks'
            walk = iter([(str(root), list(scope[3]) if len(scope) > 3 else [], list(scope[1]))])
        for dirpath, dirnames, filenames in walk:
            _list_folder(name, root, Path(dirpath), dirnames, filenames, max_file_bytes, out)
        _flush(name, root, start, max_file_bytes, out, None)
    return out


def _list_folder(name: str, root: Path, here: Path, dirnames: list[str], filenames: list[str],
                 max_file_bytes: int, out: Discovered) -> None:
    """One folder of an os.walk: its files grouped by stem; `dirnames` pruned to the folders to descend."""
    dirnames.sort()
    links = {d for d in dirnames if FS.islink(here / d)}
    folder = escape_name(here.relative_to(root).as_posix()) if here != root else ""
    shards = MI.shard_stems(folder, [escape_name(f) for f in filenames],
                            [escape_name(d) for d in dirnames if d not in links])
    groups: dict[str, list[tuple[str, str]]] = {}
    stamps: dict[str, list[int]] = {}
    for fname in sorted(filenames + sorted(links)):
        rel = escape_name((here / fname).relative_to(root).as_posix())
        out.files.append((name, rel))
        checked = FS.check_file(root, here / fname, rel, max_file_bytes)
        if not isinstance(checked, os.stat_result):
            out.rejects.append(_reject(name, rel, *checked))
            continue
        stem, ext = modalities.split_name(fname)
        if ext.lower() in TAR_EXTS:
            out.files.pop()  # the archive is a container: its members are the inputs
            _list_tar(name, root, rel, max_file_bytes, out)
            continue
        stamp = [checked.st_size, checked.st_mtime_ns]
        if _table_input(name, root, rel, stamp, shards, max_file_bytes, out, None):
            continue
        stamps[rel] = stamp
        groups.setdefault(stem, []).append((ext.lower(), rel))
    for d in dirnames:
        problem = FS.folder_problem(d) if d not in links else None
        if problem:
            out.rejects.append(_reject(name, escape_name(f"{folder}/{d}" if folder else d), *problem))
    dirnames[:] = [d for d in dirnames if d not in links and not FS.folder_problem(d)]
    for stem in sorted(groups):
        _defer(name, root, groups[stem], stamps, out)


def _discover_remote(name: str, root: str, max_file_bytes: int, out: Discovered,
                     options: storage.StorageOptions | None, scope: tuple | None = None) -> None:
    """`discover` for a URI root: the listing walked folder by folder in the order os.walk gives."""
    try:
        if scope is None:
            entries = storage.walk(root, options)
        elif scope[0] == "tree":
            entries = [e._replace(rel=f"{scope[1]}/{e.rel}") for e in storage.walk(storage.join(root, scope[1]), options)]
        else:
            entries = list(scope[2])
        if scope is None and not entries and not storage.is_dir(root, options):
            out.rejects.append(_reject(name, ".", "missing_source", f"{root} is not a folder or a prefix with objects"))
            return
    except OSError as exc:  # no such bucket, access denied, endpoint down
        out.rejects.append(_reject(name, ".", "missing_source",
                                   f"{root} cannot be listed: {type(exc).__name__}: {exc}"))
        return
    start = len(out.rejects)
    tree: dict[str, tuple[list, set]] = {"": ([], set())}  # folder -> (files [(name, entry)], subfolders)
    for e in entries:
        problem = check_key(e.rel)
        if problem:
            out.files.append((name, e.rel))
            out.rejects.append(_reject(name, e.rel, "unsafe_path", f"{problem}; rename the object"))
            continue
        parts = e.rel.split("/")
        stop = next((i for i, p in enumerate(parts[:-1]) if FS.folder_problem(p)), None)
        for i in range(len(parts) - 1 if stop is None else stop + 1):
            tree.setdefault("/".join(parts[:i]), ([], set()))[1].add(parts[i])
        if stop is None:  # inside a hidden (or reserved) folder: not walked, as on disk
            tree.setdefault("/".join(parts[:-1]), ([], set()))[0].append((parts[-1], e))
    if scope is not None and scope[0] == "files":
        tree[""][1].update(scope[3] if len(scope) > 3 else ())
    stack = [""]
    while stack:
        here = stack.pop()
        files, subdirs = tree[here]
        groups: dict[str, list[tuple[str, str]]] = {}
        stamps: dict[str, list[int]] = {}
        shards = MI.shard_stems(here, [f for f, _ in files], [d for d in subdirs if not d.startswith(".")])
        for fname, e in sorted(files):
            out.files.append((name, e.rel))
            if fname.startswith("."):
                problem = ("hidden_file", "hidden files are skipped; rename it without the leading dot to include it")
            elif MEMBER_SEP in fname and ".tar" + MEMBER_SEP in e.rel:
                problem = ("reserved_name", f"'.tar{MEMBER_SEP}' names a tar member; rename the file")
            elif e.size > max_file_bytes and os.path.splitext(fname)[1].lower() not in TAR_EXTS:
                problem = ("file_too_large", f"{e.size} bytes > decode.max_file_bytes={max_file_bytes}")
            else:
                problem = None
            if problem:
                out.rejects.append(_reject(name, e.rel, *problem))
                continue
            stem, ext = modalities.split_name(fname)
            if ext.lower() in TAR_EXTS:
                out.files.pop()  # the archive is a container: its members are the inputs
                _list_tar(name, root, e.rel, max_file_bytes, out, remote=(e, options))
                continue
            if _table_input(name, root, e.rel, [e.size, e.mtime_ns], shards, max_file_bytes, out, options):
                continue
            stamps[e.rel] = [e.size, e.mtime_ns]
            groups.setdefault(stem, []).append((ext.lower(), e.rel))
        for d in sorted(subdirs):
            problem = FS.folder_problem(d)
            if problem:
                out.rejects.append(_reject(name, f"{here}/{d}" if here else d, *problem))
        for stem in sorted(groups):
            _defer(name, root, groups[stem], stamps, out)
        stack.extend(f"{here}/{d}" if here else d for d in sorted(subdirs, reverse=True) if not FS.folder_problem(d))
    _flush(name, root, start, max_file_bytes, out, options)


def _list_tar(source: str, root: Path | str, rel: str, max_file_bytes: int, out: Discovered,
              remote: tuple[storage.Entry, storage.StorageOptions | None] | None = None) -> None:
    """Group the members of the raw tar shard `rel` into units (headers only; no member is read).

    `remote`: (listing entry, options) of an object under a URI root, read with ranged GETs."""
    path = None
    try:
        if remote is None:
            path = root / rel
            tf = open_tar(path)
            st = os.stat(path)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        else:
            path = storage.ReadAhead(storage.open_input(storage.join(root, rel), remote[1]), owns=True)
            size, mtime_ns = remote[0].size, remote[0].mtime_ns
            tf = open_tar(path)
    except (RejectError, OSError) as exc:
        if isinstance(exc, OSError):
            exc = RejectError("unreadable", f"{type(exc).__name__}: {exc}")
        if isinstance(path, storage.ReadAhead):
            path.close()
        out.files.append((source, rel))
        out.rejects.append(_reject(source, rel, exc.reason, exc.detail))
        return
    seen: dict[str, list[tuple[str, str] | list[int]]] = {}
    broken, past_end = "", False
    errors = (TarError, OSError) if remote else TarError  # OSError: the network failed
    with tf:
        while True:
            try:
                info = tf.next()
            except errors as exc:  # a member ran past the end, or a damaged header
                broken = str(exc)
                break
            if info is None:
                break
            past_end |= info.offset_data + info.size > size
            if info.isdir():
                continue
            ref = f"{rel}{MEMBER_SEP}{escape_name(member_name(info))}"
            out.files.append((source, ref))
            seen.setdefault(ref, []).append(
                check_member(info, size, max_file_bytes) or [info.size, mtime_ns, info.offset_data, size])
        end = tf.offset
    tail = b""
    if not broken:  # what follows the last header must be the zero end-of-archive blocks
        if remote is None:
            with open(path, "rb") as f:
                f.seek(end)
                tail = f.read(1024)
        else:
            try:
                path.seek(end)
                tail = path.read(1024)
            except OSError as exc:
                broken = str(exc)
    if remote is not None:
        path.close()
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
            groups.setdefault(key, []).append((modalities.split_name(base)[1].lower() if "." in base else "", ref))
            stamps[ref] = fates[0]
    for key in sorted(groups):
        _defer(source, root, groups[key], stamps, out)
    if broken:
        if not past_end:  # a member that runs past the end explains the stop, and is rejected itself
            out.rejects.append(_reject(source, rel, "corrupt_archive", f"reading stopped at offset {end}: {broken}"))
        return
    if tail.strip(b"\0"):
        out.rejects.append(_reject(source, rel, "corrupt_archive", f"the data after offset {end} is not a tar "
                                   "header; members after it were not read"))


def _table_input(source: str, root: Path | str, rel: str, stamp: list[int], shards: dict[str, str],
                 max_file_bytes: int, out: Discovered, options: storage.StorageOptions | None) -> bool:
    """True when `rel` is a manifest (read once the listing is complete) or shard metadata, not a group file."""
    what = MI.classify(root, rel, stamp, shards, max_file_bytes, options)
    if what is None:
        return False
    out.files.pop()  # a manifest is a container (its rows are the inputs); shard metadata is no input
    if what[0] != "manifest":
        out.metadata.append((source, rel))
    else:
        out.manifests += 1
    if what[1] is not None:
        out.pending.append((len(out.rejects), what))
    return True


def _defer(source: str, root: Path | str, files: list[tuple[str, str]], stamps: dict, out: Discovered) -> None:
    """Group `files` once the source's manifests are read (`_flush`), in this place of the order."""
    out.pending.append((len(out.rejects), ("group", source, root, files, stamps)))


def _flush(source: str, root: Path | str, start: int, max_file_bytes: int, out: Discovered,
           options: storage.StorageOptions | None) -> None:
    """Form the source's pending groups, manifests and shard tables; `start`: its first reject."""
    pending, out.pending = out.pending, []
    walk = out.rejects[start:]  # listing rejects; each pending entry's own go where it was deferred
    del out.rejects[start:]
    metadata = {rel for s, rel in out.metadata if s == source}
    results, claimed = MI.plan_tables(source, root, pending, walk, metadata, max_file_bytes, options)
    pos = 0
    for i, (at, e) in enumerate(pending):
        out.rejects.extend(walk[pos:at - start])
        pos = at - start
        if e[0] == "group":
            _group(*e[1:], out, claimed)
            continue
        units, rejects = results[i]
        out.units.extend(Unit(unit_id(source, u["media"]), source, str(root), **u) for u in units)
        out.rejects.extend(rejects)
        out.files.extend([(source, r["path"]) for r in rejects] + [(source, u["row"]) for u in units])
    out.rejects.extend(walk[pos:])


def _group(source: str, root: Path | str, files: list[tuple[str, str]], stamps: dict, out: Discovered,
           claimed: dict[str, str] | None = None) -> None:
    taken = [rel for _, rel in files if rel in claimed] if claimed else []
    if taken:  # a manifest row has this file: it is that row's sample, not one of this group's
        files = [(ext, rel) for ext, rel in files if rel not in claimed]
    media, captions, sidecars, docs = [], [], [], []
    for ext, rel in files:
        kind = modalities.kind_of(ext)
        if kind not in (None, modalities.TEXT, "jsonl"):
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
    aligned = _aligned(media)
    if taken and not media:  # the row gives the caption and metadata: these have no sample left
        for rel in captions + sidecars:
            out.rejects.append(_reject(source, rel, "manifest_sibling", f"its media {taken[0]} is the sample of "
                                       f"{claimed[taken[0]]}, whose caption and metadata come from the manifest; "
                                       "move the text into the manifest row or remove the file"))
        captions, sidecars = [], []
    if len(media) > 1 and (captions or sidecars):  # whose caption? a guess would double or misplace it
        names = ", ".join(rel for _, rel in media)
        for rel in captions + sidecars:
            what = "caption" if rel in captions else "sidecar"
            out.rejects.append(_reject(source, rel, f"shared_{what}", f"{len(media)} media files share its stem "
                                       f"({names}); give each its own stem and {what} (a.jpg + a.txt, "
                                       f"b.wav + b.txt); the media files are kept without it"))
        captions, sidecars = [], []
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
                                  _stamps(stamps, rel, caption, sidecar, *aligned.values()),
                                  aligned=json.dumps(aligned, sort_keys=True) if aligned else None))
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


def _aligned(media: list[tuple[str, str]]) -> dict[str, str]:
    """Take out of `media` the files that align with the group's one host file ({modality: relpath}): a
    depth map beside exactly one image. With two images, or two depth maps, each stays its own sample."""
    found: dict[str, str] = {}
    for kind, rel in list(media):
        hosts = [k for k, _ in media if k in modalities.get(kind).aligns_with]
        if len(hosts) == 1 and len(media) == 2:
            found[kind] = rel
            media.remove((kind, rel))
    return found


def _stamps(stamps: dict, *rels: str | None) -> str:
    return json.dumps({r: stamps[r] for r in rels if r and r in stamps}, sort_keys=True)


def _reject(source: str, path: str, reason: str, detail: str) -> dict:
    return {"source": source, "path": path, "stage": "discover", "reason": reason, "detail": detail}
