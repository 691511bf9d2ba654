"""What the report needs, computed by Ray tasks at the end of a run: aggregates and a deterministic sample.

    parquet shards    ─► per group of shards: lengths by kind and task, the smallest and largest ids per kind
    rejects.parquet   ─► one task: counts by stage/reason x file modality, examples, the largest dedup
                         clusters, the dropped twins of the rows the lineage shows
    candidate parts   ─► per part: items per kind, tokens per source x modality, where the clusters' kept
                         copies came from, and a sample of (id, source, kind, stats) rows

The driver merges small dicts: O(parts + shards + kinds), never O(rows). A candidate row is in the sample
when the hash of its id (`stable_rank`) falls below a rate fixed from the item count, so the sample is
uniform, about `SAMPLE_ROWS` rows whatever the corpus, and the same on every run. Written as
OUT/report_digest.json and OUT/report_sample.parquet; `dataengine report OUT` reads those, manifest.json,
stats.json and only the few shards that hold the rows it shows.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

DIGEST_NAME, SAMPLE_NAME = "report_digest.json", "report_sample.parquet"
SAMPLE_ROWS = 20_000   # candidate rows behind the stat histograms: plots look the same from here on
FIRST_IDS = 8          # per kind, the smallest ids (the gallery shows up to this many per kind)
MAX_CLUSTERS, MAX_MEMBERS = 8, 6
SHARDS_PER_TASK = 64
SAMPLE_SEED = 0x5A3B1E
SAMPLE_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("kind", pa.string()),
                           ("status", pa.string()), ("stats", pa.string())])
KEPT_RE = re.compile(r"kept id ([0-9A-Za-z_-]+)")


def build_digest(out: Path, parts: list[str], shards: list[dict], items: int, log=None) -> dict:
    """Write OUT/report_digest.json and OUT/report_sample.parquet for the run in `out`; returns the digest.

    `shards`: the manifest's shard entries; `items`: decoded and tokenized candidates (sets the sample rate)."""
    import ray

    task = lambda fn: ray.remote(num_cpus=1)(fn)  # noqa: E731
    out = Path(out)
    parquet = sorted(s["path"] for s in shards if s["format"] == "parquet")
    groups = [parquet[i:i + SHARDS_PER_TASK] for i in range(0, len(parquet), SHARDS_PER_TASK)]
    seq = merge_sequences(ray.get([task(sequences_digest).remote(str(out), g) for g in groups]))
    lineage_ids = [v["id"] for v in seq["last"].values()]
    rej = ray.get(task(rejects_digest).remote(str(out / "rejects.parquet"), lineage_ids))
    kept = [c["kept"] for c in rej["clusters"]]
    rate = 1.0 if items <= SAMPLE_ROWS else SAMPLE_ROWS / items
    got = ray.get([task(candidates_digest).remote(p, rate, str(out / "vocab.json"), kept) for p in parts])
    sample = pa.concat_tables([SAMPLE_SCHEMA.empty_table()] + [g.pop("sample") for g in got]).sort_by("id")
    pq.write_table(sample, out / SAMPLE_NAME, compression="zstd")
    cand = {"ok": sum(g["ok"] for g in got), "ok_by_kind": _sum_counts([g["ok_by_kind"] for g in got]),
            "tokens_by_source_modality": {s: _sum_counts([g["tokens"].get(s, {}) for g in got])
                                          for s in sorted({s for g in got for s in g["tokens"]})},
            "where": {k: v for g in got for k, v in g["where"].items()},
            "sample": {"rows": sample.num_rows, "rate": rate}}
    digest = {"format": "dataengine.report_digest/1", "candidates": cand, "sequences": seq, "rejects": rej}
    (out / DIGEST_NAME).write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
    if log:
        log(f"report digest: {len(groups)} shard tasks, {len(parts)} part tasks, {sample.num_rows} sampled rows")
    return digest


def sequences_digest(out: str, shards: list[str]) -> dict:
    """Lengths (tokens -> sequences) by kind and by task, and per kind the FIRST_IDS smallest and the
    largest id, with the shard and row that hold it: one digest per shard, merged."""
    return merge_sequences([_shard_digest(out, shard) for shard in shards])


def _shard_digest(out: str, shard: str) -> dict:
    t = pl.read_parquet(Path(out) / shard, columns=["id", "kind", "task", "num_tokens"]).with_row_index("row")
    lengths = {f"{col}:{key}": [] for col in ("kind", "task") for key in t[col].unique().to_list()}
    for col in ("kind", "task"):
        for key, n, c in t.group_by([col, "num_tokens"]).len().rows():
            lengths[f"{col}:{key}"].append((int(n), int(c)))
    first, last = {}, {}
    for (kind,), part in t.group_by("kind"):
        part = part.sort("id").select("id", "row")
        first[kind] = [{"id": i, "shard": shard, "row": int(r)} for i, r in part.head(FIRST_IDS).rows()]
        i, r = part.row(-1)
        last[kind] = {"id": i, "shard": shard, "row": int(r)}
    return {"lengths": lengths, "first": first, "last": last}


def merge_sequences(parts: list[dict]) -> dict:
    lengths: dict[str, Counter] = {}
    first: dict[str, list] = {}
    last: dict[str, dict] = {}
    for p in parts:
        for k, pairs in p["lengths"].items():
            lengths.setdefault(k, Counter()).update(dict(pairs))
        for kind, entries in p["first"].items():
            first[kind] = sorted(first.get(kind, []) + entries, key=lambda e: e["id"])[:FIRST_IDS]
        for kind, e in p["last"].items():
            if kind not in last or e["id"] > last[kind]["id"]:
                last[kind] = e
    return {"lengths": {k: [[int(n), int(c)] for n, c in sorted(v.items())] for k, v in sorted(lengths.items())},
            "first": dict(sorted(first.items())), "last": dict(sorted(last.items()))}


def rejects_digest(path: str, lineage_ids: list[str]) -> dict:
    """Everything the report shows of rejects.parquet, from one pass in a worker."""
    from dataengine.report.sections import file_modality

    rej = pl.read_parquet(path).sort(["source", "path", "stage", "reason", "detail"])
    by_stage = rej.filter(pl.col("reason") != "media_dropped").group_by("stage").len().rows()
    rej = rej.with_columns(file_modality(rej["path"]).alias("modality"),
                           (pl.col("stage") + "/" + pl.col("reason")).alias("key"))
    keys = []
    for (key,), part in rej.group_by("key"):
        first = part.sort(["source", "path", "detail"]).row(0, named=True)
        keys.append({"stage": first["stage"], "reason": first["reason"], "files": part.height,
                     "by_modality": dict(sorted(part.group_by("modality").len().rows())),
                     "example": {"path": first["path"], "detail": first["detail"][:400]}})
    keys.sort(key=lambda k: (-k["files"], f"{k['stage']}/{k['reason']}"))
    examples = {}
    for (stage,), part in rej.filter(~pl.col("reason").is_in(["media_dropped", "media_rejected"])).group_by("stage"):
        r = part.sort(["source", "path", "detail"]).row(0, named=True)
        examples[stage] = {"source": r["source"], "path": r["path"], "reason": r["reason"], "detail": r["detail"][:400]}
    dedup = rej.filter(pl.col("stage") == "dedup")
    drops = dedup.filter(pl.col("reason").is_in(["exact_duplicate", "near_duplicate"]))
    drops = drops.with_columns(pl.col("detail").str.extract(KEPT_RE.pattern, 1).fill_null("?").alias("kept"))
    sizes = drops.group_by("kept").len().sort(["len", "kept"], descending=[True, False]).head(MAX_CLUSTERS)
    clusters = []
    for kept, n in sizes.rows():
        members = drops.filter(pl.col("kept") == kept).head(MAX_MEMBERS - 1)
        clusters.append({"kept": kept, "dropped": int(n),
                         "members": members.select("source", "path", "reason", "detail").to_dicts()})
    twins = {i: int(dedup["detail"].str.contains(f"kept id {i}", literal=True).sum()) for i in lineage_ids}
    return {"items_by_stage": dict(sorted(by_stage)), "keys": keys, "examples": dict(sorted(examples.items())),
            "clusters": clusters, "twins": twins}


def candidates_digest(path: str, rate: float, vocab_path: str, kept: list[str]) -> dict:
    """One candidate part: items per kind, tokens per source x modality, the kept ids' files, the sample."""
    from dataengine.curate.mixture import stable_rank
    from dataengine.vocab import token_modality_counts
    from dataengine.vocab import Vocab

    t = pl.read_parquet(path, columns=["id", "source", "path", "kind", "status", "stats", "tokens"])
    ok = t.filter(pl.col("status") == "ok")
    tokens = token_modality_counts(ok["tokens"], ok["source"], Vocab.load(Path(vocab_path))) if ok.height else {}
    where = {i: [s, p, k] for i, s, p, k in ok.filter(pl.col("id").is_in(kept)).select("id", "source", "path",
                                                                                      "kind").rows()}
    cut = np.uint64(min(rate, 1.0) * float(2**64 - 1)) if rate < 1 else None
    picked = ok if cut is None or not ok.height else ok.filter(pl.Series(stable_rank(ok["id"], SAMPLE_SEED) <= cut))
    sample = picked.select([f.name for f in SAMPLE_SCHEMA]).to_arrow().cast(SAMPLE_SCHEMA)
    return {"ok": ok.height, "ok_by_kind": dict(ok.group_by("kind").len().rows()), "tokens": tokens,
            "where": where, "sample": sample}


def load_digest(out: Path) -> tuple[dict, pl.DataFrame]:
    out = Path(out)
    return json.loads((out / DIGEST_NAME).read_text()), pl.read_parquet(out / SAMPLE_NAME)


def length_counts(digest: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, sequences) for "kind:K", "task:T", or "all"."""
    seq = digest["sequences"]["lengths"]
    if key == "all":
        c: Counter = Counter()
        for k, pairs in seq.items():
            if k.startswith("kind:"):
                c.update(dict((int(n), int(m)) for n, m in pairs))
        pairs = sorted(c.items())
    else:
        pairs = seq.get(key, [])
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _sum_counts(dicts: list[dict]) -> dict:
    c: Counter = Counter()
    for d in dicts:
        c.update(d)
    return dict(sorted(c.items()))
