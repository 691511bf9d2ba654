"""Curation's map over one candidate part: filters, keep order, and the keys that dedup shuffles.

    part (tokens, stats, ...) ─► filters (thresholds over the stats columns) ─► drops with reasons
        ─► survivors: quality ─► order key ─► exact records (kind, content_hash) by bucket
                      ─► MinHash signature per kind ─► LSH band records by bucket

Runs in a Ray task; returns only small tables (meta, drops, records) and the
signatures (uint32 [rows, num_perm]), which stay in the object store for the
pair-verification joins. The tokens never leave the worker.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataengine.curate import keys, minhash
from dataengine.curate.dedup import DedupConfig, content_segments, media_salts, salt_shingles
from dataengine.curate.filters import apply_filters, quality_score

SCAN_COLUMNS = ["id", "source", "kind", "status", "content_hash", "stats", "tokens", "spans", "num_tokens"]
EXACT = pa.schema([("kind", pa.string()), ("content_hash", pa.string()), ("okey", pa.string())])
BANDS = pa.schema([("kind", pa.string()), ("band", pa.int32()), ("key", pa.uint64()), ("okey", pa.string())])


@dataclass
class Scanned:
    meta: pa.Table            # survivors of the filters: rid, id, group, kind, okey, num_tokens
    drops: pa.Table           # rid, id, reason, detail (filters)
    exact: list[pa.Table]     # EXACT rows per bucket
    bands: list[pa.Table]     # BANDS rows per bucket
    sig: dict                 # {"rid": int64 [S] ascending, "sig": uint32 [S, num_perm]}: rows with content
    counts: dict              # {"ok": n, "filters": {reason: n}, "no_content": {kind: n}}


def scan_part(path: str, part: int, rules: list, dedup: DedupConfig, buckets: int, stats_frame) -> Scanned:
    t = pq.read_table(path, columns=SCAN_COLUMNS)
    rid_all = keys.rids(part, np.arange(t.num_rows))
    ok_mask = pc.equal(t.column("status"), "ok")
    ok = t.filter(ok_mask)
    rid = rid_all[np.asarray(ok_mask.to_numpy(zero_copy_only=False), dtype=bool)] if t.num_rows else rid_all
    stats = stats_frame(ok)
    dropped = apply_filters(stats, rules)
    keep = ~stats["id"].is_in(dropped["id"].implode()).to_numpy()
    drop_rid = pl.DataFrame({"id": ok.column("id").to_pylist(), "rid": rid},
                            schema={"id": pl.String, "rid": pl.Int64}).join(dropped, on="id")
    drops = pa.table({"rid": pa.array(drop_rid["rid"].to_numpy(), pa.int64()), "id": drop_rid["id"].to_arrow(),
                      "reason": drop_rid["reason"].to_arrow(), "detail": drop_rid["detail"].to_arrow()})
    ok, stats, rid = ok.filter(pa.array(keep)), stats.filter(pl.Series(keep)), rid[keep]
    ids = ok.column("id").to_pylist()
    kinds = ok.column("kind").to_pylist()
    okey = keys.order_keys(ids, quality_score(stats), rid, kinds)
    meta = pa.table({"rid": pa.array(rid, pa.int64()), "id": ok.column("id"),
                     "group": pa.array([f"{s}/{k}" for s, k in zip(ok.column("source").to_pylist(), kinds)]),
                     "kind": ok.column("kind"), "okey": okey,
                     "num_tokens": ok.column("num_tokens").cast(pa.int64())})
    counts = {"ok": int(t.num_rows and pc.sum(ok_mask.cast(pa.int64())).as_py() or 0),
              "filters": dict(Counter(dropped["reason"].to_list())), "no_content": {}, "kinds": dict(Counter(kinds))}
    exact = _exact_records(ok, okey, dedup, buckets)
    bands, sig = _band_records(ok, okey, rid, dedup, buckets, counts)
    return Scanned(meta, drops, exact, bands, sig, counts)


def _exact_records(ok: pa.Table, okey: pa.Array, dedup: DedupConfig, buckets: int) -> list[pa.Table]:
    rec = pa.table({"kind": ok.column("kind"), "content_hash": ok.column("content_hash"), "okey": okey})
    if not dedup.exact:
        rec = rec.slice(0, 0)
    rec = rec.filter(pc.invert(pc.equal(pc.fill_null(rec.column("content_hash"), ""), "")))
    k = pl.from_arrow(rec.select(["kind", "content_hash"]))
    b = keys.bucket(k["kind"] + "\0" + k["content_hash"], buckets, salt=1) if rec.num_rows else np.zeros(0, np.int64)
    return keys.split_by(rec.cast(EXACT), b, buckets)


def _band_records(ok: pa.Table, okey: pa.Array, rid: np.ndarray, dedup: DedupConfig, buckets: int,
                  counts: dict) -> tuple[list[pa.Table], dict]:
    """Signatures of rows with content (per kind, its n-gram size) and their LSH band keys."""
    empty_sig = {"rid": np.zeros(0, np.int64), "sig": np.zeros((0, dedup.num_perm), np.uint32)}
    if not dedup.near or ok.num_rows == 0:
        return [BANDS.empty_table()] * buckets, empty_sig
    df = pl.from_arrow(ok.select(["tokens", "spans"]))
    base = pl.DataFrame({"kind": ok.column("kind").to_pylist()}, schema={"kind": pl.String})
    tokens, seg_row, seg_start, seg_len = content_segments(df, base)
    salts = media_salts(df, base)
    kinds = np.asarray(base["kind"].to_list(), dtype=object)
    hasher = minhash.MinHasher(dedup.num_perm, dedup.seed, dedup.hash_family)
    tables, sig_rows, sigs = [], [], []
    for kind in sorted(set(kinds.tolist()) - {""}):
        if kind not in dedup.ngram:
            from dataengine.errors import RecipeError

            raise RecipeError(f"dedup: no n-gram size for kind {kind!r}; add it to dedup.ngram and "
                              f"dedup.threshold (known kinds: {sorted(dedup.ngram)})")
        rows = np.flatnonzero(kinds == kind)
        local = np.full(ok.num_rows, -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        sel = local[seg_row] >= 0
        lens = seg_len[sel]
        values = tokens[np.repeat(seg_start[sel], lens) + minhash._ragged_arange(lens)]
        hashes, seg_counts = minhash.shingle_hashes(values, lens, dedup.ngram[kind])
        hashes = salt_shingles(hashes, seg_counts, salts[seg_row[sel]])
        per_row = np.bincount(local[seg_row[sel]], weights=seg_counts, minlength=len(rows)).astype(np.int64)
        has = np.flatnonzero(per_row > 0)
        counts["no_content"][kind] = int(len(rows) - len(has))
        sig = hasher.signatures(hashes, per_row)[has]
        bands, rws = dedup.banding(kind)
        bk = minhash.band_keys(sig, bands, rws)                           # [R, bands] uint64
        members = rows[has]
        sig_rows.append(rid[members])
        sigs.append(sig)
        n = len(members)
        tables.append(pa.table({
            "kind": pa.array([kind] * (n * bands), pa.string()),
            "band": pa.array(np.tile(np.arange(bands, dtype=np.int32), n)),
            "key": pa.array(bk.ravel()),
            "okey": okey.take(pa.array(np.repeat(members, bands))),
        }))
    rec = pa.concat_tables(tables).cast(BANDS) if tables else BANDS.empty_table()
    b = (rec.column("key").to_numpy() % np.uint64(buckets)).astype(np.int64) if rec.num_rows else np.zeros(0, np.int64)
    if sigs:
        r = np.concatenate(sig_rows)
        order = np.argsort(r)
        sig = {"rid": r[order], "sig": np.concatenate(sigs)[order]}
    else:
        sig = empty_sig
    return keys.split_by(rec, b, buckets), sig
