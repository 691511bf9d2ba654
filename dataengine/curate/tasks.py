"""Curation's Ray task bodies: each reads its inputs from the scratch folder, writes its outputs
there (`curate.exchange`) and returns only counts, so no table passes through the driver.

    scan/{exact,bands}/<part>    R buckets        scan/{meta,drops,sig}/<part>
    exact/{edges,twins}/<b>      1, G buckets     bands/pairs/<b>             G buckets
    twins/<g>                    a bucket per part of group g (part // G)
    near/attached/<g>            G buckets        near/edges/<h>  (verified pairs)
    cc/labels/<i>  ─► route/kept/<i> (G buckets), route/labels/<i> (R buckets)
    member/attached/<g>          G buckets        member/agreed/<h>           a bucket per part of group h
    fate/<part>  ─► seq/<part> (a bucket per (split, id range)), rej-<part>.parquet
    range-<split>-<k>.parquet ─► shards

A part group is `part % G`; its parts are g, g + G, ... so part p is bucket p // G of its group's file.
"""
from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate import exchange as X
from dataengine.curate import keys, scan, shuffle_dedup, verdicts
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA

AGREED = shuffle_dedup.PAIRS.append(pa.field("jaccard", pa.float64()))
LABELS = pa.schema([("label", pa.string())])
FATE_SCHEMA = pl.DataFrame(schema=verdicts.FATE).to_arrow().schema


def sig_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("rid", pa.int64()), ("sig", pa.list_(pa.uint32(), num_perm))])


def attached_schema(num_perm: int) -> pa.Schema:
    return pa.schema([*shuffle_dedup.PAIRS, ("sig_a", pa.list_(pa.uint32(), num_perm)), ("found_a", pa.bool_())])


def at(scratch: str, *names) -> str:
    return os.path.join(scratch, *names)


def group_parts(g: int, parts: int, groups: int) -> range:
    return range(g, parts, groups)


def _sigs(scratch: str, g: int, parts: int, groups: int, num_perm: int) -> list[dict]:
    """Signatures of the parts of group g (shuffle_dedup's form)."""
    out = []
    for p in group_parts(g, parts, groups):
        t = X.read_table(X.path_of(at(scratch, "scan", "sig"), p), sig_schema(num_perm))
        out.append({"rid": t.column("rid").to_numpy(), "sig": X.from_fixed_list(t.column("sig"), num_perm, np.uint32)})
    return out


def _by_part_of_group(table: pa.Table, okeys: pl.Series, g: int, parts: int, groups: int) -> list[pa.Table]:
    """Rows by the part (within group g) of their order key's row: bucket p // G for part p."""
    n = len(group_parts(g, parts, groups))
    idx = keys.part_of(keys.parse_order_keys(okeys)["rid"].to_numpy()) // groups if table.num_rows else \
        np.zeros(0, np.int64)
    return keys.split_by(table, idx.astype(np.int64), n) if n > 1 else [table]


def scan_part(scratch, path, p, rules, dd, buckets, stats_frame) -> dict:
    s = scan.scan_part(path, p, rules, dd, buckets, stats_frame)
    X.write_buckets(X.path_of(at(scratch, "scan", "exact"), p), s.exact, scan.EXACT)
    X.write_buckets(X.path_of(at(scratch, "scan", "bands"), p), s.bands, scan.BANDS)
    X.write_table(X.path_of(at(scratch, "scan", "meta"), p), s.meta, s.meta.schema)
    X.write_table(X.path_of(at(scratch, "scan", "drops"), p), s.drops, s.drops.schema)
    sig = pa.table({"rid": pa.array(s.sig["rid"], pa.int64()), "sig": X.fixed_list(s.sig["sig"], dd.num_perm)})
    X.write_table(X.path_of(at(scratch, "scan", "sig"), p), sig, sig_schema(dd.num_perm))
    return s.counts


def exact(scratch, src, b, groups) -> int:
    edges, twins = shuffle_dedup.exact_reduce([X.read_bucket(X.paths(*src), b, scan.EXACT)], groups)
    X.write_table(X.path_of(at(scratch, "exact", "edges"), b), edges, shuffle_dedup.EDGES)
    X.write_buckets(X.path_of(at(scratch, "exact", "twins"), b), twins, shuffle_dedup.TWINS)
    return edges.num_rows


def bands(scratch, src, b, max_partners, groups) -> int:
    pairs, n = shuffle_dedup.band_reduce([X.read_bucket(X.paths(*src), b, scan.BANDS)], max_partners, groups)
    X.write_buckets(X.path_of(at(scratch, "bands", "pairs"), b), pairs, shuffle_dedup.PAIRS)
    return n


def twins(scratch, src, g, parts, groups) -> int:
    t = X.read_bucket(X.paths(*src), g, shuffle_dedup.TWINS)
    X.write_buckets(X.path_of(at(scratch, "twins"), g), _by_part_of_group(t, pl.from_arrow(t.column("node")), g, parts,
                                                                           groups), shuffle_dedup.TWINS)
    return t.num_rows


def attach(scratch, tag, src, g, parts, groups, strict, num_perm) -> dict:
    pairs = X.read_bucket(X.paths(*src), g, shuffle_dedup.PAIRS)
    out, counts = shuffle_dedup.attach([pairs], _sigs(scratch, g, parts, groups, num_perm), groups, strict)
    tables = [o["pairs"].append_column("sig_a", X.fixed_list(o["sig_a"].astype(np.uint32), num_perm))
              .append_column("found_a", pa.array(o["found_a"], pa.bool_())) for o in out]
    X.write_buckets(X.path_of(at(scratch, tag, "attached"), g), tables, attached_schema(num_perm))
    return counts


def agree(scratch, tag, src, h, parts, groups, strict, num_perm, thresholds: dict | None) -> dict:
    """Jaccard of the pairs whose b lies in group h; near: verified edges too (counts per kind); member:
    a bucket per part of the group."""
    t = X.read_bucket(X.paths(*src), h, attached_schema(num_perm))
    piece = {"pairs": t.select(shuffle_dedup.PAIRS.names), "found_a": t.column("found_a").to_numpy(zero_copy_only=False),
             "sig_a": X.from_fixed_list(t.column("sig_a"), num_perm, np.uint32)}
    est = shuffle_dedup.agree([piece], _sigs(scratch, h, parts, groups, num_perm), strict).cast(AGREED)
    if thresholds is None:
        X.write_buckets(X.path_of(at(scratch, tag, "agreed"), h),
                        _by_part_of_group(est, pl.from_arrow(est.column("b")), h, parts, groups), AGREED)
        return {}
    df = pl.from_arrow(est)  # near: only the verified pairs go on (to connected components)
    ok = df.filter(pl.col("jaccard") >= pl.col("kind").replace_strict(thresholds, default=2.0))
    X.write_table(X.path_of(at(scratch, tag, "edges"), h), ok.select("a", "b").to_arrow(), shuffle_dedup.EDGES)
    return value_counts(ok["kind"])


def value_counts(s: pl.Series) -> dict:
    return {str(k): int(v) for k, v in s.value_counts().iter_rows()}


def route(scratch, label_file, i, groups, buckets) -> int:
    """(kept, member) pairs of every non-kept node by part group of the kept copy; labels by bucket of label."""
    from dataengine.curate.components import OUTPUT_SCHEMA

    df = pl.from_arrow(X.read_table(label_file, OUTPUT_SCHEMA))
    drop = df.filter(pl.col("node") != pl.col("label"))
    pairs = pa.table({"a": drop["label"].to_arrow(), "b": drop["node"].to_arrow(),
                      "kind": keys.parse_order_keys(drop["node"])["kind"].to_arrow() if drop.height
                      else pa.array([], pa.string())}).cast(shuffle_dedup.PAIRS)
    X.write_buckets(X.path_of(at(scratch, "route", "kept"), i),
                    keys.split_by(pairs, shuffle_dedup.group_of(drop["label"], groups), groups), shuffle_dedup.PAIRS)
    lab = df.select("label").to_arrow()
    X.write_buckets(X.path_of(at(scratch, "route", "labels"), i),
                    keys.split_by(lab, keys.bucket(df["label"], buckets, salt=3), buckets), LABELS)
    return drop.height


def sizes(src, b) -> dict:
    """Clusters of one label bucket: how many have > 1 member, per kind, and the 10 largest."""
    t = X.read_bucket(X.paths(*src), b, LABELS)
    if not t.num_rows:
        return {"clusters": {}, "largest": []}
    s = pl.from_arrow(t).group_by("label").len().filter(pl.col("len") > 1)
    parsed = keys.parse_order_keys(s["label"])
    s = s.with_columns(kept_id=parsed["id"], kind=parsed["kind"])
    top = s.sort(["len", "kept_id"], descending=[True, False]).head(10)
    return {"clusters": value_counts(s["kind"]),
            "largest": [{"kept_id": r["kept_id"], "kind": r["kind"], "size": int(r["len"])}
                        for r in top.iter_rows(named=True)]}


def fate(scratch, p, groups, val_fraction, seed) -> tuple[dict, dict]:
    g, k = p % groups, p // groups
    meta = X.read_table(X.path_of(at(scratch, "scan", "meta"), p))
    drops = X.read_table(X.path_of(at(scratch, "scan", "drops"), p))
    member = X.read_bucket([X.path_of(at(scratch, "member", "agreed"), g)], k, AGREED)
    tw = X.read_bucket([X.path_of(at(scratch, "twins"), g)], k, shuffle_dedup.TWINS)
    fate_df, hist, samples = verdicts.fate(p, meta, drops, [member], [tw], val_fraction, seed)
    X.write_table(X.path_of(at(scratch, "fate"), p), fate_df.to_arrow().cast(FATE_SCHEMA), FATE_SCHEMA)
    return hist, samples


def finalize(scratch, path, p, bounds, ngram, stats_frame, sequences) -> dict:
    """Writes the part's sequences, a bucket per (split, id range), and its rejects; returns counts."""
    from dataengine.spans import write_table

    fate_df = pl.from_arrow(X.read_table(X.path_of(at(scratch, "fate"), p), FATE_SCHEMA))
    pieces, rejects, counts = verdicts.finalize(path, p, fate_df, bounds, ngram, stats_frame, sequences)
    keys_ = [(s, k) for s in ("train", "val") for k in range(len(bounds.get(s) or []) + 1)]
    X.write_buckets(X.path_of(at(scratch, "seq"), p), [pieces[k] for k in keys_], SEQUENCE_SCHEMA)
    write_table(rejects.cast(REJECT_SCHEMA), at(scratch, f"rej-{p:06d}.parquet"))
    return counts


def range_(src, index, pack, out) -> int:
    from dataengine.shards import plan as shard_plan
    from dataengine.spans import write_table

    t, n = shard_plan.range_reduce([X.read_bucket(X.paths(*src), index, SEQUENCE_SCHEMA)], pack)
    write_table(t, out)
    return n


def write(out, split, index, spans, compression, webdataset, vocab_path):
    from dataengine.shards import plan as shard_plan
    from dataengine.spans import read_spans

    part = read_spans(spans, SEQUENCE_SCHEMA)
    return shard_plan.write_shard(out, split, index, [(0, part.num_rows)], [part],
                                  compression=compression, webdataset=webdataset, vocab_path=vocab_path)
