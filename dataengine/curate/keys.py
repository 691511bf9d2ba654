"""Keys that let curation run on workers: row addresses, order keys, stable buckets.

- `rid`: a candidate row's address, part index << 32 | row index in its part. Only an
  address (to route a verdict back to the part that holds the row); no decision
  depends on it, so how units were cut into parts never changes a result.
- order key (`okey`): one string per candidate that sorts in keep order: 16 hex digits
  of the quality (descending), then the id (ascending), then ":<rid hex>:<kind>".
  The smallest order key of a duplicate cluster is the copy to keep, so connected
  components labelled by their minimum node choose the survivor as they converge.
- `bucket`: a stable hash of a string modulo n (machine, process and version
  independent), used for every shuffle.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate.mixture import stable_rank

SIGN = np.uint64(1 << 63)


def rids(part: int, rows: np.ndarray) -> np.ndarray:
    return (np.int64(part) << np.int64(32)) | np.asarray(rows, dtype=np.int64)


def part_of(rid: np.ndarray) -> np.ndarray:
    return np.asarray(rid, dtype=np.int64) >> np.int64(32)


def _descending_bits(quality: np.ndarray) -> np.ndarray:
    """uint64 whose ascending order is the quality's descending order (IEEE-754 total order of -q)."""
    b = np.ascontiguousarray(-np.asarray(quality, dtype=np.float64)).view(np.uint64)
    return np.where(b & SIGN, ~b, b | SIGN)


def order_keys(ids: list[str], quality: np.ndarray, rid: np.ndarray, kinds: list[str]) -> pa.Array:
    bits = _descending_bits(quality).tolist()
    return pa.array([f"{q:016x}{i}:{r:016x}:{k}" for q, i, r, k in zip(bits, ids, rid.tolist(), kinds)], pa.string())


def parse_order_keys(okeys) -> pl.DataFrame:
    """id, rid, kind of each order key."""
    s = pl.Series("okey", okeys, dtype=pl.String) if not isinstance(okeys, pl.Series) else okeys
    g = s.str.slice(16).str.extract_groups(r"^(.*):([0-9a-f]{16}):([^:]*)$")
    return pl.DataFrame({"id": g.struct.field("1"),
                         "rid": g.struct.field("2").str.to_integer(base=16).cast(pl.Int64),
                         "kind": g.struct.field("3")})


def bucket(values, n: int, salt: int = 0) -> np.ndarray:
    """Stable bucket in [0, n) of each string."""
    if n <= 1:
        return np.zeros(len(values), dtype=np.int64)
    s = values if isinstance(values, pl.Series) else pl.Series("v", values, dtype=pl.String)
    return (stable_rank(s, 0x5EED0000 + salt) % np.uint64(n)).astype(np.int64)


def split_by(table: pa.Table, keys: np.ndarray, n: int) -> list[pa.Table]:
    """`table`'s rows by key in [0, n): n tables (empty ones included), each in the input order."""
    if n == 1:
        return [table]
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n)
    sorted_t = table.take(pa.array(order))
    out, start = [], 0
    for c in counts.tolist():
        out.append(sorted_t.slice(start, c))
        start += c
    return out
