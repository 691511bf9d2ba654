"""Per-item quality stats, computed once at decode time (stats first, thresholds second).

Each stat is a flat, modality-prefixed name in `STAT_FIELDS`. The decode stage
stores an item's stats as a JSON object (absent key = null) computed on the
FULL-resolution decode, before the resize to the tokenizer's size; the
tokenize stage adds the ``token_*`` stats from `token_stats`. Filters read the
stats back as typed columns (`stats_table`) and apply the recipe's thresholds,
so changing a threshold never re-decodes.

Text stats are for text documents and records (kinds text and chat; a chat is
measured on its message contents joined by newlines). Captions, transcripts
and labels of media items are not measured: they are judged with their media.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import unicodedata

import numpy as np
import pyarrow as pa

from dataengine import modalities

F, B, S = pa.float64(), pa.bool_(), pa.string()
# the on-disk order of format 1: the file-backed item's, each media modality's (registry order), the text
# backbone's, then the tokenizer-derived ones (every modality; merged in by the tokenize stage)
STAT_FIELDS: dict[str, pa.DataType] = {
    "media_bytes": F,            # size of the media file, bytes (for one content, more bytes = less lossy)
    **{k: t for m in modalities.media() for k, t in m.stat_fields.items()},
    **modalities.get(modalities.TEXT).stat_fields,
    "token_unique_ratio": F,     # distinct codes / codes in the item's media span
    "token_codebook_usage": F,   # distinct codes / codebook size
    "token_recon_mse": F,        # reconstruction MSE at the tokenizer's resolution (null: it does not decode)
}
STATS_SCHEMA = pa.schema([pa.field(k, t) for k, t in STAT_FIELDS.items()])
def token_stats(codes: np.ndarray, codebook_size: int, recon_mse: float | None) -> dict:
    """Unique-code ratio and codebook usage of one item's media codes, plus its reconstruction MSE."""
    codes = np.asarray(codes).reshape(-1)
    out: dict = {}
    if codes.size:
        unique = len(np.unique(codes))
        out["token_unique_ratio"] = unique / codes.size
        if codebook_size > 0:
            out["token_codebook_usage"] = unique / codebook_size
    if recon_mse is not None and math.isfinite(recon_mse):
        out["token_recon_mse"] = float(recon_mse)
    return out


def item_stats(kind: str, arrays: dict, meta: dict) -> dict:
    """The stats of one decoded item, keys from STAT_FIELDS (absent = null), JSON-ready values.

    `arrays` are the FULL-resolution decoded arrays, `meta` what else the kind's modality needs
    (its `Decoded.stats_meta`; a text document {"text"}, a chat {"messages"}): the modality's `stats` hook.
    """
    hook = modalities.for_kind(kind).stats
    if hook is None:
        raise ValueError(f"modality {modalities.for_kind(kind).name!r} (kind {kind!r}) has no stats hook")
    return clean_stats(hook(arrays, meta))


def clean_stats(stats: dict) -> dict:
    """Plain-Python values of STAT_FIELDS' types; None and non-finite numbers dropped (null)."""
    out = {}
    for key, value in stats.items():
        kind = STAT_FIELDS.get(key)
        if kind is None:
            raise KeyError(f"{key!r} is not in STAT_FIELDS; declare it there (name, type, unit)")
        if value is None:
            continue
        if kind == F:
            value = float(value)
            if not math.isfinite(value):
                continue
        out[key] = bool(value) if kind == B else str(value) if kind == S else value
    return out


def stats_json(stats: dict) -> str:
    """The `stats` column's JSON text of one item (sorted keys, strict JSON)."""
    return json.dumps(clean_stats(stats), sort_keys=True, allow_nan=False)


def stats_table(stats_column: list[str] | pa.Array | pa.ChunkedArray) -> pa.Table:
    """Typed columns (STATS_SCHEMA) from a column of stats JSON strings, one row per string."""
    import pyarrow.json as pj  # noqa: PLC0415

    values = stats_column.to_pylist() if isinstance(stats_column, (pa.Array, pa.ChunkedArray)) else stats_column
    if not values:
        return STATS_SCHEMA.empty_table()
    data = "\n".join(v if v else "{}" for v in values).encode()
    opts = pj.ParseOptions(explicit_schema=STATS_SCHEMA, unexpected_field_behavior="error")
    return pj.read_json(io.BytesIO(data), parse_options=opts).select(STATS_SCHEMA.names)


def content_hash(arrays: dict[str, np.ndarray] | None = None, text: str | None = None) -> str:
    """sha256 hex of a decoded payload: each array's name, dtype, shape and bytes (sorted by
    name), or the NFC-normalised text. Same pixels/samples -> same hash, whatever the file."""
    h = hashlib.sha256()
    if text is not None:
        h.update(b"text\0" + unicodedata.normalize("NFC", text).encode("utf-8", "surrogatepass"))
    for name in sorted(arrays or {}):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()


__all__ = ["STATS_SCHEMA", "STAT_FIELDS", "clean_stats", "content_hash", "item_stats", "stats_json", "stats_table",
           "token_stats"]
