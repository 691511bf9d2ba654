"""Inputs that are already tables: sample manifests, and img2dataset / video2dataset shard metadata.

Manifests. A file named ``*.manifest.parquet`` or ``*.manifest.jsonl`` (any folder of a source; not
inside a tar) lists samples, one per row (Parquet) or non-blank line (JSONL, a JSON object per line).
The ``.manifest`` infix is what makes it a manifest: a plain ``.jsonl`` still holds text / chat /
interleaved records and a plain ``.parquet`` is still a sensor recording. Columns:

- exactly one media path, in the column that names its modality: ``image``, ``audio``, ``video`` or
  ``sensor``. The path is relative to the SOURCE ROOT (not to the manifest's folder), a file or a tar
  member (``shards/a.tar#KEY.jpg``); its extension must be one of that modality's.
- optional text: ``caption``, ``transcript`` or ``text`` (one of them; inline text, not a path). It is
  the sample's caption exactly as a sibling ``.txt`` would be.
- optional ``label`` (string or integer): ``metadata["label"]``, as in a sensor sidecar.
- optional ``metadata``: a JSON object (a struct / map column, or a JSON string). Every other column
  is copied into the metadata too (nulls and binary values left out; ``metadata``'s own keys win).
  The metadata is the sample's sidecar, exactly as a sibling ``.json`` would be (``rate_hz``,
  ``channels`` and ``label`` of a sensor recording included).

Each row becomes one unit (`discover.Unit` with ``row`` = ``m.manifest.parquet#R<n>``, 0-based row
index, or ``m.manifest.jsonl#L<n>``, 1-based line number, and ``inline`` = the caption and metadata
as JSON) with the same unit id and kind as the file discovered on its own; the decode stage reads
its text from ``inline`` instead of a file. Or it becomes a reject at its row reference, stage
``discover``: ``bad_row`` (a line that is not a JSON object), ``no_media``, ``multiple_media``,
``embedded_media`` (image bytes in the table), ``bad_path``, ``remote_reference`` (a URL),
``unsafe_path`` (absolute, ``..``, backslash), ``hidden_file``, ``unsupported_extension``,
``missing_file`` (no such input under the root), ``not_an_input`` (a manifest or shard metadata
file), ``file_rejected`` (the file itself was rejected at discovery, e.g. ``file_too_large``),
``duplicate_reference`` (an earlier row, of this or another manifest of the source, has the file),
``duplicate_caption``, ``bad_caption``, ``bad_metadata``, ``bad_label``, ``conflicting_label``, and
the sidecar checks (``json_too_large``, ``json_too_deep``). A whole manifest that cannot be read is
one reject at its path (``corrupt_manifest``, ``empty_manifest``, or a `read_input` reason).

No double counting: a file a manifest row takes is not also a sample of its own, and files beside
it that would have been its caption or sidecar (same stem, same folder or tar key) are rejected as
``manifest_sibling`` unless another media file of their group takes them. A unit's stamps hold the
referenced file's and the manifest's [size, mtime]; the decode stage re-checks both.

img2dataset / video2dataset output. Beside a shard ``X.tar`` (or, with ``output_format=files``, a
folder ``X/``), ``X.parquet`` with columns ``key`` and ``status`` lists every sample the downloader
attempted, and ``X_stats.json`` its counts: both are shard METADATA (`Discovered.metadata`), neither
inputs nor rejects. The shard's members are the samples, as for any raw tar. Each row of
``X.parquet`` whose status is not ``success`` is a reject ``download_failed`` at ``X.tar#KEY``
(``X/KEY`` for a folder), with the URL and error message; a ``success`` row whose key has no member
is ``missing_from_shard``. Both count as discovered inputs (`Discovered.files`).
"""
from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import os
from dataclasses import dataclass, field

from dataengine import modalities, storage
from dataengine.decode.sensor import parse_sidecar
from dataengine.decode.source import MEMBER_SEP, TAR_EXTS, read_input, split_member
from dataengine.decode.text import check_reference, loads_json
from dataengine.errors import RejectError

MANIFEST_SUFFIXES = {".manifest.parquet": "parquet", ".manifest.jsonl": "jsonl"}
MEDIA_COLUMNS = tuple(m.name for m in modalities.media())  # a row names its one media file by its modality
TEXT_COLUMNS = ("caption", "transcript", "text")
RESERVED_COLUMNS = frozenset(MEDIA_COLUMNS + TEXT_COLUMNS + ("label", "metadata"))
SHARD_TABLE_COLUMNS = frozenset({"key", "status"})
STATS_SUFFIX = "_stats.json"


def manifest_format(name: str) -> str | None:
    """"parquet" / "jsonl" for a manifest's file name, else None."""
    lower = name.lower()
    return next((fmt for suffix, fmt in MANIFEST_SUFFIXES.items() if lower.endswith(suffix) and
                 len(lower) > len(suffix)), None)


def manifest_of(row_ref: str) -> str:
    """The manifest's relpath of a row reference ``dir/m.manifest.jsonl#L3``."""
    return row_ref.rpartition(MEMBER_SEP)[0]


def shard_stems(folder: str, names, subfolders) -> dict[str, str]:
    """{stem: shard relpath} for the tars (``X.tar``) and subfolders (``X/``) of one folder."""
    join = (lambda n: f"{folder}/{n}") if folder else (lambda n: n)
    out = {d: join(d) for d in subfolders}
    for n in names:
        stem, ext = os.path.splitext(n)
        if ext.lower() in TAR_EXTS:
            out[stem] = join(n)
    return out


def classify(root, rel: str, stamp: list, shards: dict[str, str], max_bytes: int,
             options: storage.StorageOptions | None) -> tuple | None:
    """What discovery makes of the listed file `rel` (`shards`: `shard_stems` of its folder).

    ("manifest", rel, format, stamp) for a manifest; ("shard_table", ShardTable) or ("shard_stats", None)
    for shard metadata; None for an ordinary input (a .parquet without the downloader's columns too)."""
    name = rel.rsplit("/", 1)[-1]
    fmt = manifest_format(name)
    if fmt:
        return "manifest", rel, fmt, stamp
    found = shard_metadata(name, shards)
    if found is None:
        return None
    if found[0] == "stats":
        return "shard_stats", None
    table = read_shard_table(root, rel, found[1], max_bytes, stamp, options)
    return None if table is None else ("shard_table", table)


def plan_tables(source: str, root, pending: list, walk: list[dict], metadata: set[str], max_bytes: int,
                options: storage.StorageOptions | None) -> tuple[dict[int, tuple[list, list]], dict[str, str]]:
    """Read a source's manifests and shard tables once its listing is complete.

    `pending`: discovery's (position, entry) list, entries ("group", source, root, files, stamps),
    ("manifest", rel, fmt, stamp) or ("shard_table", ShardTable); `walk`: the listing's rejects.
    Returns ({entry index: (units as dicts of Unit fields, rejects)}, {file taken: row ref})."""
    results: dict[int, tuple[list, list]] = {}
    if all(e[0] == "group" for _, e in pending):
        return results, {}
    stamps = {rel: e[4][rel] for _, e in pending if e[0] == "group" for _, rel in e[3] if rel in e[4]}
    rejected = {r["path"]: r["reason"] for r in walk}
    claims = Claims(stamps, rejected, metadata | {e[1] for _, e in pending if e[0] == "manifest"})
    for i, (_, e) in enumerate(pending):  # in listing order: the first row to list a file has it
        if e[0] == "manifest":
            try:
                results[i] = plan_manifest(source, read_manifest(root, e[1], e[2], max_bytes, e[3], options),
                                           claims, e[1], e[3])
            except RejectError as exc:  # all or nothing: rows read before a damaged part give their files back
                claims.release(e[1])
                results[i] = [], [_reject(source, e[1], exc.reason, exc.detail)]
    present: dict[str, set[str]] = {e[1].shard: set() for _, e in pending if e[0] == "shard_table"}
    if present:  # the sample keys each shard holds, in one pass over the source's inputs
        for ref in [*stamps, *rejected]:
            archive, member = split_member(ref)
            shard = archive if member is not None else ref.rpartition("/")[0]
            if shard in present and (key := sample_key(ref, shard)):
                present[shard].add(key)
    for i, (_, e) in enumerate(pending):
        if e[0] == "shard_table":
            results[i] = [], shard_table_rejects(source, e[1], present[e[1].shard], e[1].shard in rejected)
    return results, claims.claimed


def shard_metadata(name: str, stems: dict[str, str]) -> tuple[str, str] | None:
    """("table" | "stats", shard relpath) when `name` looks like metadata of a shard beside it.

    A "table" is confirmed by its columns (`read_shard_table`); a "stats" file by its name alone."""
    stem, ext = os.path.splitext(name)
    if ext.lower() == ".parquet" and stem in stems:
        return "table", stems[stem]
    if name.endswith(STATS_SUFFIX) and name[: -len(STATS_SUFFIX)] in stems:
        return "stats", stems[name[: -len(STATS_SUFFIX)]]
    return None


@dataclass
class ShardTable:
    rel: str                       # the .parquet
    shard: str                     # the tar (or folder) it describes
    failed: list[tuple[str, str, str, str]] = field(default_factory=list)  # (key, status, url, error)
    ok: list[str] = field(default_factory=list)                             # keys of status "success"


def read_shard_table(root, rel: str, shard: str, max_bytes: int, stamp: list | None,
                     options: storage.StorageOptions | None) -> ShardTable | None:
    """The downloader's per-shard table, or None when `rel` is not one (then it is an ordinary input)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(read_input(root, rel, max_bytes, {rel: stamp} if stamp else None,
                                                       options)))
        names = set(pf.schema_arrow.names)
        if not SHARD_TABLE_COLUMNS <= names:
            return None
        cols = [c for c in ("key", "status", "url", "error_message") if c in names]
        table = pf.read(columns=cols).to_pydict()
    except (RejectError, OSError, ValueError, pa.ArrowException):
        return None
    out = ShardTable(rel, shard)
    n = len(table["key"])
    for i in range(n):
        key, status = table["key"][i], table["status"][i]
        if key is None:
            continue
        if status == "success":
            out.ok.append(str(key))
        else:
            url = table.get("url", [None] * n)[i]
            err = table.get("error_message", [None] * n)[i]
            out.failed.append((str(key), str(status), "" if url is None else str(url), "" if err is None else str(err)))
    return out


def sample_key(ref: str, shard: str) -> str | None:
    """The sample key of input `ref` inside `shard` (``X.tar#KEY.jpg`` or ``X/KEY.jpg``), else None."""
    if shard.lower().endswith(tuple(TAR_EXTS)):
        if not ref.startswith(shard + MEMBER_SEP):
            return None
        member = ref[len(shard) + 1:]
        base = member.rsplit("/", 1)[-1]
        return member[: len(member) - len(base)] + base.split(".", 1)[0]
    if not ref.startswith(shard + "/") or "/" in ref[len(shard) + 1:]:
        return None
    return ref[len(shard) + 1:].split(".", 1)[0]


def shard_table_rejects(source: str, table: ShardTable, present: set[str], shard_rejected: bool) -> list[dict]:
    """download_failed / missing_from_shard rejects for a shard table; `present`: the shard's sample keys."""
    sep = MEMBER_SEP if table.shard.lower().endswith(tuple(TAR_EXTS)) else "/"
    out = []
    for key, status, url, err in table.failed:
        if key not in present:  # a member under a failed key: the member is the truth
            out.append(_reject(source, f"{table.shard}{sep}{key}", "download_failed",
                               f"{table.rel}: status {status!r}" + (f" for {url[:300]}" if url else "")
                               + (f": {err[:500]}" if err else "")))
    if not shard_rejected:  # a rejected archive has no members to miss
        for key in table.ok:
            if key not in present:
                out.append(_reject(source, f"{table.shard}{sep}{key}", "missing_from_shard",
                                   f"{table.rel} lists {key!r} as downloaded (status 'success') but "
                                   f"{table.shard} has no member {key}.*"))
    return out


def read_manifest(root, rel: str, fmt: str, max_bytes: int, stamp: list | None,
                  options: storage.StorageOptions | None):
    """Yield (row ref, row dict | RejectError) of a manifest; raises `RejectError` for the whole file."""
    data = read_input(root, rel, max_bytes, {rel: stamp} if stamp else None, options)
    n = 0
    if fmt == "jsonl":
        data = data.removeprefix(b"\xef\xbb\xbf")
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            n += 1
            try:
                row = loads_json(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                row = RejectError("bad_row", f"line {lineno} is not UTF-8 (byte {exc.start})")
            except ValueError as exc:
                row = RejectError("bad_row", f"line {lineno} is not JSON: {str(exc)[:300]}")
            if not isinstance(row, (dict, RejectError)):
                row = RejectError("bad_row", f"line {lineno} is a JSON {type(row).__name__}, not an object")
            yield f"{rel}{MEMBER_SEP}L{lineno}", row
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(pa.BufferReader(data))
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=4096, row_groups=[group]):
                    for row in batch.to_pylist():
                        yield f"{rel}{MEMBER_SEP}R{n}", row
                        n += 1
        except (OSError, ValueError, pa.ArrowException) as exc:
            if n:
                raise RejectError("corrupt_manifest", f"reading stopped after row {n - 1}: {exc}") from None
            raise RejectError("corrupt_manifest", f"not a readable Parquet file: {exc}") from None
    if not n:
        raise RejectError("empty_manifest", "the manifest lists no samples")


class Claims:
    """Per source: which discovered files a manifest row may take, and which rows took them."""

    def __init__(self, stamps: dict[str, list], rejected: dict[str, str], not_inputs: set[str]):
        self.stamps, self.rejected, self.not_inputs = stamps, rejected, not_inputs
        self.claimed: dict[str, str] = {}  # file relpath -> row ref

    def release(self, manifest: str) -> None:
        """Give back every file the rows of `manifest` took."""
        self.claimed = {ref: row for ref, row in self.claimed.items() if manifest_of(row) != manifest}

    def take(self, ref: str, row: str) -> list:
        """The stamp of input `ref` for row `row`; `RejectError` when the row cannot have it."""
        if ref in self.claimed:
            raise RejectError("duplicate_reference", f"{ref!r} is already the sample of {self.claimed[ref]}; "
                                                     "list each file once")
        if ref in self.stamps:
            self.claimed[ref] = row
            return self.stamps[ref]
        if ref in self.not_inputs:
            raise RejectError("not_an_input", f"{ref!r} is a manifest or shard metadata file, not a sample")
        archive = split_member(ref)[0]
        for path in (ref, archive):
            if path in self.rejected:
                raise RejectError("file_rejected", f"{path!r} was rejected at discovery ({self.rejected[path]})")
        raise RejectError("missing_file", f"no input {ref!r} under the source root (paths are relative to the "
                                          "source root, not to the manifest's folder)")


def plan_manifest(source: str, rows, claims: Claims, manifest_rel: str, manifest_stamp: list | None):
    """(units as dicts of Unit fields, rejects) for the rows of one manifest."""
    units, rejects = [], []
    for ref, row in rows:
        try:
            if isinstance(row, RejectError):
                raise row
            kind, path, inline = _check_row(row)
            stamp = claims.take(path, ref)
        except RejectError as e:
            rejects.append(_reject(source, ref, e.reason, e.detail))
            continue
        stamps = {path: stamp}
        if manifest_stamp:
            stamps[manifest_rel] = manifest_stamp
        units.append({"kind": kind, "media": path, "row": ref,
                      "inline": json.dumps(inline, sort_keys=True, ensure_ascii=False),
                      "stamps": json.dumps(stamps, sort_keys=True)})
    return units, rejects


def _check_row(row: dict) -> tuple[str, str, dict]:
    """(kind, media relpath, {"caption", "metadata"}) of a manifest row, or `RejectError`."""
    media = [(c, row[c]) for c in MEDIA_COLUMNS if row.get(c) is not None]
    if not media:
        raise RejectError("no_media", f"a manifest row needs one of the columns {', '.join(MEDIA_COLUMNS)} "
                                      "(a path relative to the source root); text documents go in a plain "
                                      ".jsonl of {\"text\": ...} records")
    if len(media) > 1:
        raise RejectError("multiple_media", f"the row has {' and '.join(c for c, _ in media)}: one sample is "
                                            "one media file; list each in its own row")
    kind, path = media[0]
    if isinstance(path, (bytes, bytearray)) or (isinstance(path, dict) and path.get("bytes") is not None):
        raise RejectError("embedded_media", f"the {kind!r} column holds the file's bytes; write the files out "
                                            "and list their paths relative to the source root")
    try:
        check_reference(path, kind, modalities.get(kind).extensions)
    except RejectError as e:
        if e.reason == "bad_segment":
            raise RejectError("bad_path", f"the {kind!r} column must be a non-empty path string, "
                                          f"got {path!r}"[:300]) from None
        raise
    texts = [(c, row[c]) for c in TEXT_COLUMNS if row.get(c) is not None]
    if len(texts) > 1:
        raise RejectError("duplicate_caption", f"the row has {' and '.join(c for c, _ in texts)}; keep one")
    caption = None
    if texts:
        if not isinstance(texts[0][1], str):
            raise RejectError("bad_caption", f"{texts[0][0]!r} must be a string, got {type(texts[0][1]).__name__}")
        caption = texts[0][1] if texts[0][1].strip() else None
    metadata = {k: _jsonable(v) for k, v in row.items()
                if k not in RESERVED_COLUMNS and not k.startswith("__") and _jsonable(v) is not None}
    metadata.update(_metadata(row.get("metadata")))
    label = row.get("label")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RejectError("bad_label", f"'label' must be a string or an integer, got {label!r}"[:300])
        if "label" in metadata and metadata["label"] != label:
            raise RejectError("conflicting_label", f"'label' is {label!r} but the metadata says "
                                                   f"{metadata['label']!r}"[:300])
        metadata["label"] = label
    inline: dict = {}
    if caption is not None:
        inline["caption"] = caption
    if metadata:
        try:  # the very checks a sidecar .json gets
            inline["metadata"] = parse_sidecar(json.dumps(metadata, ensure_ascii=False).encode())
        except RejectError as e:
            raise RejectError(e.reason, e.detail.replace("sidecar", "metadata")) from None
    return kind, path, inline


def _metadata(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = loads_json(value)
        except ValueError as exc:
            raise RejectError("bad_metadata", f"'metadata' is not JSON: {str(exc)[:300]}") from None
    elif isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)  # a Parquet map column
    if not isinstance(value, dict):
        raise RejectError("bad_metadata", f"'metadata' must be a JSON object, got {type(value).__name__}")
    return {str(k): _jsonable(v) for k, v in value.items() if _jsonable(v) is not None}


def _jsonable(v):
    """A JSON value for a table cell; None for nothing to keep (null, NaN, bytes)."""
    if v is None or isinstance(v, (bytes, bytearray)) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): x for k, x in ((k, _jsonable(x)) for k, x in v.items()) if x is not None}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (_dt.date, _dt.time, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, (decimal.Decimal, _dt.timedelta)):
        return str(v)
    return str(v)


def _reject(source: str, path: str, reason: str, detail: str) -> dict:
    return {"source": source, "path": path, "stage": "discover", "reason": reason, "detail": detail}
