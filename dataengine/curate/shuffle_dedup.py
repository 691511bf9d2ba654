"""Dedup's reducers: each runs in a Ray task over one bucket of records from every part.

    exact records by bucket of (kind, content_hash) ─► exact_reduce ─► edges loser─best, exact twins
    band records by bucket of the band key         ─► band_reduce  ─► candidate pairs, routed by the
                                                                      part group of their first row
    pairs ─► attach (signature of a, routed by b's part group) ─► agree (signature of b) ─► Jaccard

A pair's Jaccard needs both rows' signatures, which live with their parts; the two
joins move only the pair (and one signature) instead of shuffling every signature.
A part group is `part % groups`: a task holds the signatures of its group's parts.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate import keys

EDGES = pa.schema([("a", pa.string()), ("b", pa.string())])
PAIRS = pa.schema([("a", pa.string()), ("b", pa.string()), ("kind", pa.string())])
TWINS = pa.schema([("node", pa.string()), ("twin", pa.string())])


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pl.DataFrame:
    tables = [t for t in tables if t.num_rows]
    return pl.from_arrow(pa.concat_tables(tables).cast(schema)) if tables else pl.from_arrow(schema.empty_table())


def group_of(okeys: pl.Series, groups: int) -> np.ndarray:
    """Part group of each order key's row."""
    if groups <= 1 or okeys.len() == 0:
        return np.zeros(okeys.len(), dtype=np.int64)
    return keys.part_of(keys.parse_order_keys(okeys)["rid"].to_numpy()) % groups


def exact_reduce(pieces: list[pa.Table], groups: int) -> tuple[pa.Table, list[pa.Table]]:
    """Within each (kind, content_hash): every copy -> the best one. Edges, and twins routed by part group."""
    from dataengine.curate.scan import EXACT

    df = _concat(pieces, EXACT)
    df = df.with_columns(best=pl.col("okey").min().over(["kind", "content_hash"])).filter(
        pl.col("okey") != pl.col("best"))
    edges = pa.table({"a": df["okey"].to_arrow(), "b": df["best"].to_arrow()}).cast(EDGES)
    twins = pa.table({"node": df["okey"].to_arrow(), "twin": df["best"].to_arrow()}).cast(TWINS)
    return edges, keys.split_by(twins, group_of(df["okey"], groups), groups)


def band_reduce(pieces: list[pa.Table], max_partners: int, groups: int) -> tuple[list[pa.Table], int]:
    """Rows sharing an LSH bucket (kind, band, key), each paired with its next `max_partners` in keep order.

    Returns the unique pairs (a < b, as order keys) by part group of a, and their number.
    """
    from dataengine.curate.scan import BANDS

    df = _concat(pieces, BANDS)
    if df.height < 2:
        return [PAIRS.empty_table()] * groups, 0
    df = df.sort(["kind", "band", "key", "okey"])
    run = df.select((pl.struct(["kind", "band", "key"]) != pl.struct(["kind", "band", "key"]).shift(1))
                    .fill_null(True).cum_sum()).to_series().to_numpy()
    okey = df["okey"].to_numpy()
    kind = df["kind"].to_numpy()
    ai, bi = [], []
    for d in range(1, max_partners + 1):  # offsets inside a bucket, vectorised over buckets (as minhash.candidate_pairs)
        same = np.flatnonzero(run[:-d] == run[d:])
        if not same.size:
            break
        ai.append(same)
        bi.append(same + d)
    if not ai:
        return [PAIRS.empty_table()] * groups, 0
    i, j = np.concatenate(ai), np.concatenate(bi)
    pairs = pl.DataFrame({"a": okey[i], "b": okey[j], "kind": kind[i]},
                         schema={"a": pl.String, "b": pl.String, "kind": pl.String}).unique(["a", "b"]).sort(["a", "b"])
    table = pairs.to_arrow().cast(PAIRS)
    return keys.split_by(table, group_of(pairs["a"], groups), groups), pairs.height


def _lookup(sigs: list[dict], rid: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """Signatures [len(rid), num_perm] of rows held by `sigs` (one dict per part of the group), and which
    rows have one (a row with no content has none; `strict`: every row must)."""
    all_rid = np.concatenate([s["rid"] for s in sigs])
    all_sig = np.concatenate([s["sig"] for s in sigs])
    order = np.argsort(all_rid, kind="stable")
    all_rid, all_sig = all_rid[order], all_sig[order]
    pos = np.minimum(np.searchsorted(all_rid, rid), max(len(all_rid) - 1, 0))
    found = (all_rid[pos] == rid) if len(all_rid) else np.zeros(len(rid), dtype=bool)
    if strict and not found.all():
        raise RuntimeError("dedup: a pair names a row whose signature is not in its part group (a routing bug)")
    out = all_sig[pos] if len(all_rid) else np.zeros((len(rid), all_sig.shape[1]), np.uint32)
    return out, found


def attach(pieces: list[pa.Table], sigs: list[dict], groups: int, strict: bool) -> tuple[list[dict], dict]:
    """Pairs whose `a` lies in this group, with a's signature, routed by the part group of `b`; pairs per kind."""
    df = _concat(pieces, PAIRS).unique(["a", "b"]).sort(["a", "b"])  # a pair found in several bands: once
    counts = {str(k): int(v) for k, v in df.group_by("kind").len().iter_rows()}
    sig_a, found = _lookup(sigs, keys.parse_order_keys(df["a"])["rid"].to_numpy(), strict)
    g = group_of(df["b"], groups)
    out = []
    for k in range(groups):
        sel = np.flatnonzero(g == k)
        out.append({"pairs": df[sel.tolist()].to_arrow().cast(PAIRS) if len(sel) else PAIRS.empty_table(),
                    "sig_a": sig_a[sel], "found_a": found[sel]})
    return out, counts


def agree(pieces: list[dict], sigs: list[dict], strict: bool) -> pa.Table:
    """Pairs whose `b` lies in this group, with their estimated Jaccard (signature agreement; NaN when a row
    of the pair has no signature)."""
    pieces = [p for p in pieces if p["pairs"].num_rows]
    if not pieces:
        return PAIRS.append(pa.field("jaccard", pa.float64())).empty_table()
    pairs = pa.concat_tables([p["pairs"] for p in pieces])
    sig_a = np.concatenate([p["sig_a"] for p in pieces])
    found_a = np.concatenate([p["found_a"] for p in pieces])
    sig_b, found_b = _lookup(sigs, keys.parse_order_keys(pl.from_arrow(pairs.column("b")))["rid"].to_numpy(), strict)
    jacc = np.where(found_a & found_b, (sig_a == sig_b).mean(axis=1), np.nan)
    return pairs.append_column("jaccard", pa.array(jacc, pa.float64()))
