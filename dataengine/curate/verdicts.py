"""Curation's last two maps over a part: every row's fate, then its sequences and rejects.

    fate:      filter drops + dedup verdicts (kept id, exact twin, Jaccard) ─► split by the kept id
               ─► train rows' tokens and rows per (group, rank bin) for the mixture plan; id samples
    finalize:  the part's rows + fate ─► SEQUENCE_SCHEMA rows by (split, id range), each kept row once
               (the mixture is a plan in the manifest), reject rows (drops with their captions, sidecars)

Both run in Ray tasks on one part; what they return to the driver is a sparse
histogram, a few sample ids and counts.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataengine.curate import keys
from dataengine.curate.mixture import rank_bins, stable_rank
from dataengine.shards.schema import REJECT_SCHEMA

FATE = {"rid": pl.Int64, "id": pl.String, "group": pl.String, "num_tokens": pl.Int64, "split": pl.String,
        "cluster": pl.String, "stage": pl.String, "reason": pl.String, "kept": pl.String, "twin": pl.String,
        "jaccard": pl.Float64, "detail": pl.String}
SAMPLES = 1024  # bottom-k ids per part and split for the id-range boundaries
SAMPLE_SALT = 0x1D5


def split_of(cluster: pl.Series, val_fraction: float) -> pl.Series:
    """val when the first 8 hex digits of the kept id, as a fraction of 2**32, fall below val_fraction."""
    frac = cluster.str.slice(0, 8).str.to_integer(base=16, strict=False).fill_null(0).cast(pl.Float64) / 2**32
    return pl.Series("split", np.where((frac < val_fraction).to_numpy(), "val", "train"), dtype=pl.String)


def fate(part: int, meta: pa.Table, drops: pa.Table, verdicts: list[pa.Table], twins: list[pa.Table],
         val_fraction: float, seed: int) -> tuple[pl.DataFrame, dict, dict]:
    """(fate of every ok row of the part, sparse mixture histogram {(group, bin): (tokens, rows)}, id samples)."""
    m = pl.from_arrow(meta)
    v = [pl.from_arrow(t) for t in verdicts if t.num_rows]
    v = pl.concat(v) if v else pl.DataFrame(schema={"a": pl.String, "b": pl.String, "kind": pl.String,
                                                    "jaccard": pl.Float64})
    v = v.rename({"a": "kept_okey", "b": "okey"})  # pairs were (label, node)
    v = v.filter(keys.part_of(keys.parse_order_keys(v["okey"])["rid"].to_numpy()) == part) if v.height else v
    tw = [pl.from_arrow(t) for t in twins if t.num_rows]
    tw = pl.concat(tw).rename({"node": "okey"}) if tw else pl.DataFrame(schema={"okey": pl.String, "twin": pl.String})
    m = m.join(v.select("okey", "kept_okey", "jaccard"), on="okey", how="left").join(tw, on="okey", how="left")
    kept_id = keys.parse_order_keys(m["kept_okey"].fill_null(""))["id"] if m.height else pl.Series([], dtype=pl.String)
    twin_id = keys.parse_order_keys(m["twin"].fill_null(""))["id"] if m.height else pl.Series([], dtype=pl.String)
    m = m.with_columns(kept=pl.when(pl.col("kept_okey").is_null()).then(None).otherwise(kept_id),
                       twin=pl.when(pl.col("twin").is_null()).then(None).otherwise(twin_id))
    m = m.with_columns(cluster=pl.coalesce("kept", "id"),
                       stage=pl.when(pl.col("kept").is_null()).then(None).otherwise(pl.lit("dedup")),
                       reason=pl.when(pl.col("kept").is_null()).then(None)
                       .when(pl.col("twin").is_not_null()).then(pl.lit("exact_duplicate"))
                       .otherwise(pl.lit("near_duplicate")))
    m = m.with_columns(split_of(m["cluster"], val_fraction), pl.lit(None, pl.String).alias("detail"))
    d = pl.from_arrow(drops)
    filt = d.select("rid", "id", pl.lit("filter").alias("stage"), "reason", "detail")
    out = pl.concat([m.select(list(FATE)).cast(FATE),
                     filt.with_columns(*[pl.lit(None, FATE[c]).alias(c) for c in FATE if c not in filt.columns])
                     .select(list(FATE)).cast(FATE)])
    kept = out.filter(pl.col("stage").is_null())
    train = kept.filter(pl.col("split") == "train")
    bins = rank_bins(train["id"], seed) if train.height else np.zeros(0, np.int64)
    h = train.select("group", "num_tokens").with_columns(bin=pl.Series(bins)).group_by(["group", "bin"]).agg(
        pl.col("num_tokens").sum(), pl.len().alias("rows"))
    hist = {(g, int(b)): (int(t), int(n)) for g, b, t, n in h.iter_rows()}
    samples = {}
    for split in ("train", "val"):  # bottom-k by a hash of the id: merged, the same sample for any parts
        ids = kept.filter(pl.col("split") == split)["id"]
        if ids.len():
            rank = stable_rank(ids, SAMPLE_SALT)
            low = np.argsort(rank, kind="stable")[:SAMPLES]
            samples[split] = (ids.gather(low).to_list(), rank[low].tolist(), ids.len())
    return out, hist, samples


def finalize(path: str, part: int, fate_df: pl.DataFrame, boundaries: dict, ngram: dict, stats_frame,
             sequences) -> tuple[dict, pa.Table, dict]:
    """({(split, range): sequence rows}, reject rows, counts) of one part."""
    t = pq.read_table(path)
    t = t.append_column("rid", pa.array(keys.rids(part, np.arange(t.num_rows)), pa.int64()))
    rejected = t.filter(pc.equal(t.column("status"), "reject")).select(REJECT_SCHEMA.names)
    ok = t.filter(pc.equal(t.column("status"), "ok"))
    f = pl.from_arrow(ok.select(["rid"])).join(fate_df, on="rid", how="left")
    if f["split"].null_count() and f.filter(pl.col("stage").is_null())["split"].null_count():
        raise RuntimeError(f"part {part}: {f['split'].null_count()} rows have no fate (a curation routing bug)")
    keep = f["stage"].is_null().to_numpy()
    drops = _drop_rows(ok, f, ngram)
    survivors = ok.filter(pa.array(keep))
    fs = f.filter(pl.Series(keep))
    seqs = sequences(survivors, stats_frame(survivors), fs["split"].to_list(), fs["cluster"].to_list(),
                     np.ones(survivors.num_rows, dtype=np.int64))  # written once: copies are the mixture plan
    pieces = {}
    for split in ("train", "val"):
        part_t = seqs.filter(pc.equal(seqs.column("split"), split))
        bounds = boundaries.get(split) or []
        rng = np.searchsorted(np.asarray(bounds, dtype=object), np.asarray(part_t.column("id").to_pylist(), dtype=object),
                              side="right") if bounds else np.zeros(part_t.num_rows, np.int64)
        for k, piece in enumerate(keys.split_by(part_t, rng.astype(np.int64), len(bounds) + 1)):
            pieces[(split, k)] = piece
    rejects = pa.concat_tables([rejected.cast(REJECT_SCHEMA), drops])
    dd = f.with_columns(pl.Series("kind", ok.column("kind").to_pylist(), dtype=pl.String)).filter(
        pl.col("stage") == "dedup")
    counts = {"dedup": dict(Counter(dd["reason"].to_list())),
              "dedup_by_kind": dict(Counter((dd["kind"] + "/" + dd["reason"]).to_list()))}
    return pieces, rejects, counts


def _drop_rows(ok: pa.Table, f: pl.DataFrame, ngram: dict) -> pa.Table:
    """Every dropped row (filter, dedup) and its caption / sidecar, as reject rows."""
    f = f.with_columns(pl.Series("content_hash", ok.column("content_hash").to_pylist(), dtype=pl.String),
                       pl.Series("kind", ok.column("kind").to_pylist(), dtype=pl.String))
    sel = np.flatnonzero(f["stage"].is_not_null().to_numpy())
    if not len(sel):
        return REJECT_SCHEMA.empty_table()
    rows = []
    sources, paths, lineage = (ok.column("source").to_pylist(), ok.column("path").to_pylist(),
                               ok.column("lineage").to_pylist())
    fd = f[sel.tolist()]
    for i, r in zip(sel.tolist(), fd.iter_rows(named=True)):
        if r["stage"] == "filter":
            stage, reason, detail = "filter", r["reason"], r["detail"] or r["reason"]
        else:
            stage, reason, detail = "dedup", r["reason"], _dedup_detail(r, ngram)
        rows.append({"source": sources[i], "path": paths[i], "stage": stage, "reason": reason, "detail": detail})
        for lin in lineage[i] or []:  # a dropped item takes its caption and sidecar with it
            if lin["path"] != paths[i]:
                rows.append({"source": sources[i], "path": lin["path"], "stage": stage, "reason": "media_dropped",
                             "detail": f"its media {paths[i]} was dropped ({reason})"})
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


def _dedup_detail(r: dict, ngram: dict) -> str:
    k, j = r["kept"], r["jaccard"] if r["jaccard"] is not None else 1.0
    if r["twin"] is not None and r["twin"] == k:
        return f"identical content (content_hash {r['content_hash'][:16]}) to kept id {k}"
    if r["twin"] is not None:
        return (f"identical content (content_hash {r['content_hash'][:16]}) to {r['twin']}, a near-duplicate "
                f"of kept id {k} (estimated Jaccard {j:.3f})")
    return f"near-duplicate of kept id {k}: estimated Jaccard {j:.3f} over {r['kind']} token {ngram.get(r['kind'])}-grams"
