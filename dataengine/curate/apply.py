"""Curation on the driver: filters, dedup, split, mixture, over the tokenized candidates.

    candidates (ok rows) --filters--> --dedup--> --split by cluster--> --mixture (train)--> sequences

Each step is columnar (Polars / NumPy over Arrow) and returns the rows it
drops with a stage, a reason and a detail, so every candidate ends in exactly
one place: a written sequence or a row of `rejects.parquet`. The per-step
summaries go to `stats.json` under `curate`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate.dedup import dedup
from dataengine.curate.filters import apply_filters, parse_filters, quality_score
from dataengine.curate.mixture import plan_mixture, validate_mixture
from dataengine.curate.stats import STAT_FIELDS
from dataengine.shards.schema import DOCUMENT, SEQUENCE_SCHEMA, STATS_TYPE

DROP_SCHEMA = {"id": pl.String, "stage": pl.String, "reason": pl.String, "detail": pl.String}


@dataclass
class Curated:
    sequences: pa.Table      # SEQUENCE_SCHEMA, split filled, repeats expanded
    drops: pl.DataFrame      # id, stage, reason, detail (filter | dedup | mixture)
    report: dict             # stats.json["curate"]


def stats_frame(ok: pa.Table) -> pl.DataFrame:
    """`id` plus one typed column per stat, parsed from the rows' stats JSON."""
    dtype = pl.Struct({name: pl.from_arrow(pa.array([], t)).dtype for name, t in STAT_FIELDS.items()})
    raw = pl.from_arrow(ok.select(["id", "stats"]))
    return raw.with_columns(pl.col("stats").str.json_decode(dtype)).unnest("stats")


def curate(ok: pa.Table, recipe) -> Curated:
    c = recipe.curate
    drops: list[pl.DataFrame] = []
    report: dict = {}
    stats = stats_frame(ok)

    # 1. filters: thresholds over precomputed stats
    rules = parse_filters(c.filters, STAT_FIELDS)
    dropped = apply_filters(stats, rules)
    drops.append(dropped.with_columns(pl.lit("filter").alias("stage")))
    report["filters"] = {"rules": {r.stat: {k: v for k, v in r.__dict__.items() if k != "stat" and v is not None}
                                   for r in rules},
                         "dropped": _counts(dropped["reason"])}
    ok, stats = _without(ok, stats, dropped["id"])

    # 2. dedup: exact by content hash, near by MinHash-LSH over token n-grams; keep the best copy
    frame = pl.from_arrow(ok.select(["id", "kind", "content_hash", "tokens", "spans"])).with_columns(
        pl.Series("quality", quality_score(stats)))
    dd = dedup(frame, c.dedup)
    drops.append(dd.drops.select(["id", "reason", "detail"]).with_columns(pl.lit("dedup").alias("stage")))
    report["dedup"] = dd.summary
    cluster = dict(zip(dd.cluster["id"].to_list(), dd.cluster["cluster"].to_list()))
    ok, stats = _without(ok, stats, dd.drops["id"])
    clusters = [cluster.get(i, i) for i in ok.column("id").to_pylist()]

    # 3. split by near-duplicate cluster: the cluster's kept id decides, so copies never straddle
    split = ["val" if int(k[:8], 16) / 0x1_0000_0000 < recipe.output.val_fraction else "train" for k in clusters]

    # 4. mixture over the train split: token budget per source x kind
    groups = pl.DataFrame({
        "id": ok.column("id").to_pylist(),
        "group": [f"{s}/{k}" for s, k in zip(ok.column("source").to_pylist(), ok.column("kind").to_pylist())],
        "num_tokens": ok.column("num_tokens").to_numpy().astype(np.int64),
        "split": split,
    })
    train = groups.filter(pl.col("split") == "train").drop("split")
    validate_mixture(c.mixture, train["group"].unique().to_list())  # weight keys against the groups present
    plan = plan_mixture(train, c.mixture)
    drops.append(plan.drops.select(["id", "reason", "detail"]).with_columns(pl.lit("mixture").alias("stage")))
    report["mixture"] = plan.report
    repeats = dict(zip(plan.repeats["id"].to_list(), plan.repeats["repeats"].to_list()))
    copies = np.array([repeats.get(i, 1) if sp == "train" else 1
                       for i, sp in zip(ok.column("id").to_pylist(), split)], dtype=np.int64)

    seqs = _sequences(ok, stats, split, clusters, copies)
    all_drops = pl.concat([d.select(list(DROP_SCHEMA)).cast(DROP_SCHEMA) for d in drops])
    return Curated(sequences=seqs, drops=all_drops, report=report)


def _sequences(ok: pa.Table, stats: pl.DataFrame, split: list[str], clusters: list[str],
               copies: np.ndarray) -> pa.Table:
    """Result rows -> SEQUENCE_SCHEMA rows; an up-sampled row appears `copies` times (ids `ID-r1`, ...)."""
    struct = pa.StructArray.from_arrays(
        [stats[name].to_arrow().cast(t) if name in stats.columns else pa.nulls(len(stats), t)
         for name, t in STAT_FIELDS.items()], fields=list(STATS_TYPE))
    cols = {name: ok.column(name) for name in SEQUENCE_SCHEMA.names if name in ok.column_names and name != "stats"}
    cols["stats"] = struct
    cols["split"] = pa.array(split, pa.string())
    cols["dup_cluster"] = pa.array(clusters, pa.string())
    cols["repeat"] = pa.array(np.zeros(ok.num_rows, np.int32))
    cols["documents"] = pa.nulls(ok.num_rows, pa.list_(DOCUMENT))
    base = pa.table({name: cols[name] for name in SEQUENCE_SCHEMA.names}).cast(SEQUENCE_SCHEMA)
    index = np.repeat(np.arange(ok.num_rows), copies)
    if len(index) == ok.num_rows:
        return base.set_column(base.schema.get_field_index("documents"), "documents", _documents(base))
    out = base.take(pa.array(index))
    rep = np.concatenate([np.arange(n) for n in copies]).astype(np.int32) if len(copies) else np.zeros(0, np.int32)
    ids = [i if r == 0 else f"{i}-r{r}" for i, r in zip(out.column("id").to_pylist(), rep)]
    out = out.set_column(out.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    out = out.set_column(out.schema.get_field_index("repeat"), "repeat", pa.array(rep, pa.int32()))
    return out.set_column(out.schema.get_field_index("documents"), "documents", _documents(out))


def _documents(t: pa.Table) -> pa.Array:
    """One document per unpacked row: the whole sequence."""
    return pa.array([[{"id": i, "start": 0, "end": n}] for i, n in
                     zip(t.column("id").to_pylist(), t.column("num_tokens").to_pylist())], pa.list_(DOCUMENT))


def _without(ok: pa.Table, stats: pl.DataFrame, ids: pl.Series) -> tuple[pa.Table, pl.DataFrame]:
    """Both tables (row-aligned) without the rows whose id is in `ids`."""
    keep = ~pl.Series(ok.column("id").to_pylist(), dtype=pl.String).is_in(ids.implode())
    return ok.filter(pa.array(keep.to_numpy())), stats.filter(keep)


def _counts(s: pl.Series) -> dict:
    vc = s.value_counts()
    return {str(k): int(v) for k, v in sorted(zip(vc[vc.columns[0]].to_list(), vc["count"].to_list()))}
