"""Packing: short sequences concatenated into rows of at most a target length.

Greedy first-fit in id order (deterministic: the same rows give the same
packs): each sequence goes into the first open row with room for it, or opens a
new one. A sequence longer than the target stays alone, unchanged. Every output
row records its documents as ``[{id, start, end}]`` (the token range of each
packed sequence, covering the row exactly once), and the spans and target spans
of each document are shifted by its offset, so loss masks and decoding work on
the packed row as on the originals. Each packed sequence keeps its own
``<|bos|> ... <|eos|>``; a trainer that wants no attention across documents
reads the boundaries from `documents`.

Packing runs after split and mixture: `group_by` keeps rows of different
splits (or any other key) out of one pack.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

import numpy as np
import pyarrow as pa

from dataengine.jsonable import numpy_default
from dataengine.shards.schema import DOCUMENT
# columns rebuilt from the documents; every other column is per document (kept in meta.documents)
STRUCTURAL = ("id", "tokens", "num_tokens", "spans", "target_spans", "side", "lineage", "modalities", "meta",
              "documents")


def plan_packs(lengths: np.ndarray | list[int], length: int) -> list[list[int]]:
    """First-fit over `lengths` in the given order: lists of indices, in order of each pack's first item.

    An item longer than `length` gets a pack of its own, which nothing joins.
    """
    if length < 1:
        raise ValueError(f"pack length must be >= 1, got {length}")
    lengths = np.asarray(lengths, dtype=np.int64)
    room = np.full(len(lengths), -1, dtype=np.int64)  # remaining room of each pack (-1: closed)
    packs: list[list[int]] = []
    for i, n in enumerate(lengths.tolist()):  # one step per sequence; the search is vectorised
        if n <= length:
            fits = np.flatnonzero(room[: len(packs)] >= n)
            if fits.size:
                room[fits[0]] -= n
                packs[fits[0]].append(i)
                continue
            room[len(packs)] = length - n
        packs.append([i])
    return packs


def pack_sequences(rows: list[dict], length: int, *, group_by: Iterable[str] = ("split",)) -> list[dict]:
    """Pack sequence rows (dicts with the `SEQUENCE_SCHEMA` columns) into rows of <= `length` tokens.

    Rows are taken in id order within each `group_by` value. Output rows, in
    (group, first id) order, all carry `documents`. A pack of one row is that
    row unchanged (same id); a pack of several gets a new id (a hash of its
    documents' ids), task and kind "packed", the union of modalities, lineage
    and side in document order, and `meta = {"documents": [...]}` holding each
    document's own per-row columns (source, task, kind, meta, ...). A per-row
    column outside `STRUCTURAL` (source, split, content_hash, ...) keeps its
    value when every document agrees, else "mixed" (strings) or None.
    """
    keys = tuple(group_by)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)
    out: list[dict] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r["id"])
        lengths = [_num_tokens(r) for r in members]
        for pack in plan_packs(lengths, length):
            out.append(_merge([members[i] for i in pack]))
    return out


def pack_table(table: pa.Table, length: int, *, group_by: Iterable[str] = ("split",)) -> pa.Table:
    """`pack_sequences` over an Arrow table; the result has the table's columns plus `documents`."""
    schema = table.schema
    if "documents" not in schema.names:
        schema = schema.append(pa.field("documents", pa.list_(DOCUMENT)))
    packed = pack_sequences(table.to_pylist(), length, group_by=[k for k in group_by if k in table.schema.names])
    return pa.Table.from_pylist(packed, schema=schema)


def _num_tokens(r: dict) -> int:
    return len(r["tokens"])


def _merge(docs: list[dict]) -> dict:
    if len(docs) == 1:
        r = dict(docs[0])
        r["documents"] = [{"id": r["id"], "start": 0, "end": _num_tokens(r)}]
        return r
    lengths = np.array([_num_tokens(d) for d in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.concatenate([np.asarray(d["tokens"], dtype=np.int32) for d in docs])
    spans, targets, side, lineage, documents, per_doc = [], [], [], [], [], []
    for d, off, end in zip(docs, offsets[:-1].tolist(), offsets[1:].tolist()):
        spans += [{**s, "start": s["start"] + off, "end": s["end"] + off} for s in d.get("spans") or []]
        targets += [{**t, "start": t["start"] + off, "end": t["end"] + off} for t in d.get("target_spans") or []]
        side += json.loads(d.get("side") or "[]")
        lineage += list(d.get("lineage") or [])
        documents.append({"id": d["id"], "start": off, "end": end})
        extra = {k: v for k, v in d.items() if k not in STRUCTURAL}
        per_doc.append({"id": d["id"], **extra, "meta": json.loads(d.get("meta") or "{}")})
    merged = {k: _common([d.get(k) for d in docs]) for k in docs[0] if k not in STRUCTURAL}
    merged.update({
        "id": hashlib.sha256(("pack\n" + "\n".join(d["id"] for d in docs)).encode()).hexdigest()[:24],
        "tokens": tokens.tolist(), "num_tokens": int(len(tokens)),
        "spans": spans, "target_spans": targets, "side": json.dumps(side),
        "lineage": lineage, "modalities": sorted({m for d in docs for m in d.get("modalities") or []}),
        "meta": json.dumps({"documents": per_doc}, default=numpy_default), "documents": documents,
    })
    if "task" in merged:
        merged["task"] = "packed"
    if "kind" in merged:
        merged["kind"] = "packed"
    return merged


def _common(values: list):
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    return "mixed" if isinstance(first, str) else None
