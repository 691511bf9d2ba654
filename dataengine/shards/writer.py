"""Shard writers: Parquet and WebDataset, deterministic to the byte.

Rows arrive sorted by id; each split is cut into shards of `shard_rows` rows
named `{split}-NNNNNN`. Parquet uses fixed writer settings (no creation time);
tars are written with mtime 0, fixed owner and mode, so two runs over the same
inputs give identical checksums.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
    """One sample per sequence: `KEY.tokens.npy` (int32) and `KEY.json` (all other columns).

    Byte for byte what `webdataset.TarWriter(encoder=False, mtime=0, user/group "dataengine",
    mode 0o444)` writes, built directly: headers from `tarfile`, the .npy header cached per
    length, tokens sliced from the column's flat buffer (no per-row Arrow scalars).
    """
    cols = [c for c in table.column_names if c != "tokens"]
    meta_rows = table.select(cols).to_pylist()
    tokens = table.column("tokens").combine_chunks()
    offsets = tokens.offsets.to_numpy()
    values = pc.list_flatten(tokens).to_numpy(zero_copy_only=False).astype("<i4", copy=False)
    offsets = offsets - offsets[0]
    chunk: list[bytes] = []
    written = 0
    with open(path, "wb") as f:
        for i, meta in enumerate(meta_rows):
            key = meta["id"]
            body = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()
            arr = values[offsets[i]:offsets[i + 1]]
            npy = _npy_header(len(arr)) + arr.tobytes()
            for name, data in ((key + ".json", body), (key + ".tokens.npy", npy)):  # TarWriter: sorted suffixes
                header, pad = _tar_header(name, len(data)), b"\0" * (-len(data) % 512)
                chunk += (header, data, pad)
                written += len(header) + len(data) + len(pad)
            if len(chunk) > 3000:
                f.write(b"".join(chunk))
                chunk = []
        chunk.append(b"\0" * (2 * 512))  # end of archive, then padded to a whole tar record (tarfile.close)
        written += 2 * 512
        chunk.append(b"\0" * (-written % tarfile.RECORDSIZE))
        f.write(b"".join(chunk))


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "dataengine", "dataengine"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_HEADER = _tarfile_header("", 0)  # every field but name (0:100), size (124:136) and checksum (148:156) is fixed
_HEADER_SUM = 256 + sum(_HEADER[100:124]) + sum(_HEADER[136:148]) + sum(_HEADER[156:])  # checksum field as spaces


def _tar_header(name: str, size: int) -> bytes:
    """`_tarfile_header(name, size)`, filled into a fixed template when the name is short ASCII (5x faster)."""
    if len(name) >= 100 or not name.isascii() or size >= 8**11:
        return _tarfile_header(name, size)  # long or non-ASCII names get a PAX header
    raw, digits = name.encode("ascii"), b"%011o\0" % size
    checksum = _HEADER_SUM + sum(raw) + sum(digits)
    return (raw + bytes(100 - len(raw)) + _HEADER[100:124] + digits + _HEADER[136:148]
            + b"%06o\0 " % checksum + _HEADER[156:])


@functools.lru_cache(maxsize=65536)
def _npy_header(n: int) -> bytes:
    """The header `np.save` writes for an int32 vector of length n."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i4", "fortran_order": False, "shape": (n,)})
    return buf.getvalue()


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
