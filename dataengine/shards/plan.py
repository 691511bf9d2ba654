"""Shards written by workers: id ranges, a shard plan from their counts, per-shard stats.

    finalize pieces (split, id range) ─► range_reduce: sorted by id (packed when asked) ─► counts
    driver: shard i of a split = rows [i * shard_rows, (i + 1) * shard_rows) in id order ─► slices of ranges
    write_shard: Parquet + WebDataset with the existing writers ─► manifest entry + stats of its rows

Range boundaries come from a sample of ids (`boundaries`), so ranges are near equal
whatever the ids look like; shard sizes are exact either way, because the plan cuts
by counts. With packing, a pack never crosses a range, and a range's packed rows
are sorted by their new ids.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataengine.shards.schema import SEQUENCE_SCHEMA
from dataengine.shards.writer import shard_name, sha256_file, write_parquet, write_webdataset
from dataengine.vocab import Vocab, token_modality_counts


def boundaries(samples: list[tuple[list[str], list[int], int]], ranges: int, k: int = 1024) -> list[str]:
    """ranges - 1 ids that cut the rows into near-equal id ranges, from each part's bottom-k sample
    (ids with the k smallest hashes, their hashes, rows): merged, the k smallest of all are a uniform
    sample that does not depend on how rows were cut into parts, so neither do the ranges."""
    if ranges <= 1 or not samples:
        return []
    pool = sorted((h, i) for ids, hashes, _ in samples for i, h in zip(ids, hashes))[:k]
    ids = sorted(i for _, i in pool)
    cuts = [ids[min(len(ids) - 1, (j * len(ids)) // ranges)] for j in range(1, ranges)]
    return sorted(set(cuts))


def range_reduce(pieces: list[pa.Table], pack_length: int) -> tuple[pa.Table, int]:
    from dataengine.compose.pack import pack_table

    pieces = [p for p in pieces if p.num_rows]
    t = pa.concat_tables(pieces).cast(SEQUENCE_SCHEMA) if pieces else SEQUENCE_SCHEMA.empty_table()
    t = t.sort_by([("id", "ascending")])
    if pack_length > 0 and t.num_rows:
        t = pack_table(t, pack_length).cast(SEQUENCE_SCHEMA).sort_by([("id", "ascending")])
    return t, t.num_rows


def shard_plan(counts: list[int], shard_rows: int) -> list[list[tuple[int, int, int]]]:
    """Per shard, its slices (range index, start, stop) of the ranges in order."""
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(starts[-1])
    plan = []
    for lo in range(0, total, shard_rows):
        hi = min(lo + shard_rows, total)
        slices = []
        for k, n in enumerate(counts):
            a, b = max(lo, starts[k]), min(hi, starts[k] + n)
            if a < b:
                slices.append((k, int(a - starts[k]), int(b - starts[k])))
        plan.append(slices)
    return plan


def write_shard(out: str, split: str, index: int, slices: list[tuple[int, int]], tables: list[pa.Table], *,
                compression: str, webdataset: bool, vocab_path: str) -> tuple[list[dict], dict]:
    """Write shard `index` of `split` from slices of range tables; (manifest entries, stats of its rows)."""
    part = pa.concat_tables([t.slice(a, b - a) for t, (a, b) in zip(tables, slices)]).cast(SEQUENCE_SCHEMA)
    root = Path(out)
    entries = []
    for fmt, ext in [("parquet", "parquet")] + ([("wds", "tar")] if webdataset else []):
        rel = Path(fmt) / shard_name(split, index, ext)
        (root / fmt).mkdir(parents=True, exist_ok=True)
        (write_parquet(part, root / rel, compression) if fmt == "parquet" else write_webdataset(part, root / rel))
        entries.append({
            "path": rel.as_posix(), "format": "parquet" if fmt == "parquet" else "webdataset",
            "split": split, "sequences": part.num_rows,
            "tokens": int(pc.sum(part.column("num_tokens").cast(pa.int64())).as_py() or 0),
            "bytes": (root / rel).stat().st_size, "sha256": sha256_file(root / rel),
            "first_id": part.column("id")[0].as_py(), "last_id": part.column("id")[-1].as_py(),
        })
    return entries, shard_stats(part, Vocab.load(Path(vocab_path)))


def shard_stats(t: pa.Table, vocab) -> dict:
    """Additive counts of one shard's rows; `merge_stats` sums them into stats.json's sections."""
    seq = pl.from_arrow(t.select(["split", "task", "kind", "source", "num_tokens", "tokens"]))
    n = seq["num_tokens"].cast(pl.Int64)
    return {
        "by_split": dict(Counter(seq["split"].to_list())), "by_task": dict(Counter(seq["task"].to_list())),
        "by_kind": dict(Counter(seq["kind"].to_list())), "by_source": dict(Counter(seq["source"].to_list())),
        "by_source_modality": token_modality_counts(seq["tokens"], seq["source"], vocab),
        "tokens_by_task": {k: int(v) for k, v in seq.group_by("task").agg(n.sum()).iter_rows()},
        "lengths": {int(k): int(v) for k, v in Counter(n.to_list()).items()},
    }


def merge_stats(parts: list[dict]) -> tuple[dict, dict, dict]:
    """(sequences, tokens, length) sections of stats.json from per-shard stats."""
    total = sum(sum(p["by_split"].values()) for p in parts)
    if not total:
        return {"total": 0}, {"total": 0}, {}
    add = lambda key: dict(sorted(sum((Counter(p[key]) for p in parts), Counter()).items()))  # noqa: E731
    by_sm: dict[str, Counter] = {}
    for p in parts:
        for src, mods in p["by_source_modality"].items():
            by_sm.setdefault(src, Counter()).update(mods)
    by_mod = sum(by_sm.values(), Counter())
    lengths = sum((Counter(p["lengths"]) for p in parts), Counter())
    values = np.array(sorted(lengths), dtype=np.int64)
    cum = np.cumsum([lengths[v] for v in values])
    quantile = lambda q: int(values[min(np.searchsorted(cum, round(q * (total - 1)), side="right"), len(values) - 1)])  # noqa: E731
    mean = sum(v * c for v, c in lengths.items()) / total
    sequences = {"total": total, "by_split": add("by_split"), "by_task": add("by_task"), "by_kind": add("by_kind"),
                 "by_source": add("by_source")}
    tokens = {"total": int(sum(v * c for v, c in lengths.items())), "by_modality": dict(sorted(by_mod.items())),
              "by_source_modality": {s: dict(sorted(c.items())) for s, c in sorted(by_sm.items())},
              "by_task": add("tokens_by_task")}
    length = {"min": int(values[0]), "max": int(values[-1]), "mean": round(float(mean), 2),
              "p50": quantile(0.5), "p95": quantile(0.95)}
    return sequences, tokens, length
