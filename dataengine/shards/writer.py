"""Shard writers: Parquet and WebDataset, deterministic to the byte.

Rows arrive sorted by id; each split is cut into shards of `shard_rows` rows
named `{split}-NNNNNN`. Parquet uses fixed writer settings (no creation time);
tars are written with mtime 0, fixed owner and mode, so two runs over the same
inputs give identical checksums.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import webdataset as wds

from dataengine.shards.schema import SEQUENCE_SCHEMA

PARQUET_ROW_GROUP = 2048  # a few thousand rows per group: small reads stay cheap (NOTES)


def shard_name(split: str, index: int, ext: str) -> str:
    return f"{split}-{index:06d}.{ext}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_parquet(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    table = table.cast(SEQUENCE_SCHEMA)
    pq.write_table(
        table, path,
        compression=None if compression == "none" else compression,
        compression_level=3 if compression == "zstd" else None,
        row_group_size=PARQUET_ROW_GROUP,
        write_statistics=True,
        use_dictionary=["split", "source", "task", "kind"],
    )


def write_webdataset(table: pa.Table, path: Path) -> None:
    """One sample per sequence: `KEY.tokens.npy` (int32) and `KEY.json` (all other columns)."""
    cols = [c for c in table.column_names if c != "tokens"]
    tokens = table.column("tokens")
    meta_rows = table.select(cols).to_pylist()
    with open(path, "wb") as f:
        with wds.TarWriter(f, encoder=False, mtime=0, user="dataengine", group="dataengine", mode=0o444) as w:
            for i, meta in enumerate(meta_rows):
                arr = tokens[i].values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                w.write({
                    "__key__": meta["id"],
                    "tokens.npy": buf.getvalue(),
                    "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode(),
                })


def write_split(table: pa.Table, split: str, out: Path, *, shard_rows: int, compression: str,
                webdataset: bool) -> list[dict]:
    """Write one split's shards under `out/parquet` and `out/wds`; return their manifest entries."""
    entries = []
    for index, start in enumerate(range(0, table.num_rows, shard_rows)):
        part = table.slice(start, shard_rows)
        targets = [("parquet", "parquet")] + ([("wds", "tar")] if webdataset else [])
        for fmt, ext in targets:
            rel = Path(fmt) / shard_name(split, index, ext)
            (out / fmt).mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                write_parquet(part, out / rel, compression)
            else:
                write_webdataset(part, out / rel)
            entries.append({
                "path": rel.as_posix(), "format": "parquet" if fmt == "parquet" else "webdataset",
                "split": split, "sequences": part.num_rows,
                "tokens": int(pc.sum(part.column("num_tokens").cast(pa.int64())).as_py() or 0),
                "bytes": (out / rel).stat().st_size, "sha256": sha256_file(out / rel),
                "first_id": part.column("id")[0].as_py(), "last_id": part.column("id")[-1].as_py(),
            })
    return entries
