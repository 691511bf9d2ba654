"""Curation and shard writing as Ray tasks over the candidate parts: the driver plans, workers do.

    parts ─► scan (filters, order keys, MinHash, LSH bands)                      P tasks
          ─► exact_reduce by (kind, content_hash) bucket                          R tasks
          ─► band_reduce by band-key bucket ─► attach ─► agree (verified pairs)   3 x R tasks
          ─► connected components (Large-Star / Small-Star) over exact + near edges
          ─► (kept, member) pairs ─► attach ─► agree (Jaccard to the kept copy)
          ─► fate per part (split by the kept id, mixture histogram, id samples)  P tasks
          ─► driver: mixture plan from the summed histogram, id-range boundaries
          ─► finalize per part (sequences by id range, rejects)                   P tasks
          ─► range_reduce (sort, pack) ─► driver: shard plan from counts ─► write_shard

Sequences and rejects travel as files in a scratch folder (`dataengine.spans`): a finalize task
writes its part's sequences ordered by (split, id range) and returns the piece sizes, a range
reducer reads its spans of every part and writes its range, a shard writer reads its slices of
ranges. The driver holds object refs, the mixture histogram (groups x 4,096 bins), a few
sample ids per part and counts; never rows or tokens. Every decision
depends on the data alone (order keys, hashes, id ranges), never on which part
a row landed in, so the output is the same for any number of parts or nodes.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate import scan, shuffle_dedup, verdicts
from dataengine.curate.apply import _sequences, stats_frame
from dataengine.curate.filters import parse_filters
from dataengine.curate.mixture import RANK_BITS, plan_from_histogram, validate_mixture
from dataengine.curate.stats import STAT_FIELDS
from dataengine.shards import plan as shard_plan
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA
from dataengine.spans import cut as shard_plan_spans


@dataclass
class Written:
    shards: list[dict]        # manifest entries
    shard_stats: list[dict]   # per-shard additive stats (shards.plan.merge_stats)
    rejects: list[str]        # reject files (one per part), in `scratch`
    scratch: Path             # the shuffle files: remove once the rejects are written
    report: dict              # stats.json["curate"]
    mixture: dict | None      # manifest.json["mixture"]: the plan the trainer's loader follows
    timings: dict             # seconds per phase, up to each point where the driver waits (bench/)


@functools.cache
def _tasks():
    import ray

    def r(fn):
        return ray.remote(num_cpus=1)(fn)

    return {
        "scan": r(_scan),
        "exact": r(_exact),
        "bands": r(_bands),
        "attach": r(_attach),
        "agree": r(lambda strict, n, *a: shuffle_dedup.agree(list(a[:n]), list(a[n:]), strict)),
        "verify": r(_verify),
        "route": r(_route),
        "sizes": r(_sizes),
        "fate": r(_fate),
        "finalize": r(_finalize),
        "range": r(_range),
        "write": r(_write),
    }


# Task bodies: each returns a flat tuple, one Ray return value per element (num_returns >= 2 everywhere)
def _scan(path, p, rules, dd, buckets):
    s = scan.scan_part(path, p, rules, dd, buckets, stats_frame)
    return (s.meta, s.drops, s.counts, s.sig, *s.exact, *s.bands)


def _exact(groups, *pieces):
    edges, twins = shuffle_dedup.exact_reduce(list(pieces), groups)
    return (edges, *twins)


def _bands(max_partners, groups, *pieces):
    pairs, _ = shuffle_dedup.band_reduce(list(pieces), max_partners, groups)
    return (*pairs, None)


def _attach(groups, strict, n, *args):
    out, counts = shuffle_dedup.attach(list(args[:n]), list(args[n:]), groups, strict)
    return (*out, counts)


def _verify(thresholds: dict, table: pa.Table) -> tuple[pa.Table, dict]:
    df = pl.from_arrow(table)
    ok = df.filter(pl.col("jaccard") >= pl.col("kind").replace_strict(thresholds, default=2.0))
    return ok.select("a", "b").to_arrow().cast(shuffle_dedup.EDGES), dict(_value_counts(ok["kind"]))


def _value_counts(s: pl.Series) -> dict:
    return {str(k): int(v) for k, v in s.value_counts().iter_rows()}


def _route(groups: int, buckets: int, labels: pa.Table):
    """(kept, member) pairs of every non-kept node by part group of the kept copy; labels by bucket of label."""
    from dataengine.curate import keys

    df = pl.from_arrow(labels)
    drop = df.filter(pl.col("node") != pl.col("label"))
    pairs = pa.table({"a": drop["label"].to_arrow(), "b": drop["node"].to_arrow(),
                      "kind": keys.parse_order_keys(drop["node"])["kind"].to_arrow() if drop.height
                      else pa.array([], pa.string())}).cast(shuffle_dedup.PAIRS)
    by_label = keys.split_by(df.select("label").to_arrow(), keys.bucket(df["label"], buckets, salt=3), buckets)
    return (*keys.split_by(pairs, shuffle_dedup.group_of(drop["label"], groups), groups), *by_label)


def _sizes(*pieces: pa.Table) -> dict:
    """Clusters of one label bucket: how many have > 1 member, per kind, and the 10 largest."""
    from dataengine.curate import keys

    ts = [t for t in pieces if t.num_rows]
    if not ts:
        return {"clusters": {}, "largest": []}
    s = pl.from_arrow(pa.concat_tables(ts)).group_by("label").len().filter(pl.col("len") > 1)
    parsed = keys.parse_order_keys(s["label"])
    s = s.with_columns(kept_id=parsed["id"], kind=parsed["kind"])
    top = s.sort(["len", "kept_id"], descending=[True, False]).head(10)
    return {"clusters": _value_counts(s["kind"]),
            "largest": [{"kept_id": r["kept_id"], "kind": r["kind"], "size": int(r["len"])}
                        for r in top.iter_rows(named=True)]}


def _fate(part, meta, drops, n_verdicts, *rest):
    val_fraction, seed = rest[-2], rest[-1]
    fate_df, hist, samples = verdicts.fate(part, meta, drops, list(rest[:n_verdicts]), list(rest[n_verdicts:-2]),
                                           val_fraction, seed)
    return fate_df, hist, samples


def _finalize(path, part, fate_df, bounds, ngram, scratch):
    """Writes the part's sequences, ordered by (split, range), and its rejects; returns the piece sizes."""
    from dataengine.spans import write_table

    pieces, rejects, counts = verdicts.finalize(path, part, fate_df, bounds, ngram, stats_frame, _sequences)
    keys_ = [(s, k) for s in ("train", "val") for k in range(len(bounds.get(s) or []) + 1)]
    seqs, rej = Path(scratch) / f"seq-{part:06d}.parquet", Path(scratch) / f"rej-{part:06d}.parquet"
    write_table(pa.concat_tables([SEQUENCE_SCHEMA.empty_table()] + [pieces[k].cast(SEQUENCE_SCHEMA) for k in keys_]),
                seqs)
    write_table(rejects.cast(REJECT_SCHEMA), rej)
    return str(rej), counts, [pieces[k].num_rows for k in keys_]


def _range(pack, out, spans):
    from dataengine.spans import read_spans, write_table

    t, n = shard_plan.range_reduce([read_spans(spans, SEQUENCE_SCHEMA)], pack)
    write_table(t, out)
    return n


def _write(out, split, index, spans, compression, webdataset, vocab_path):
    from dataengine.spans import read_spans

    part = read_spans(spans, SEQUENCE_SCHEMA)
    return shard_plan.write_shard(out, split, index, [(0, part.num_rows)], [part],
                                  compression=compression, webdataset=webdataset, vocab_path=vocab_path)


def shuffle_dir(staging: Path) -> Path:
    """The default scratch folder of `curate_and_write`: ``.<staging>.shuffle`` beside it."""
    return Path(staging).parent / f".{Path(staging).name}.shuffle"


def curate_and_write(parts: list[str], recipe, staging: Path, *, cpus: float, log=print,
                     scratch: Path | None = None) -> Written:
    """Curate the candidate parts and write the shards into `staging`; returns what the driver needs.

    `scratch` (default: ``.<staging>.shuffle`` beside it) holds the shuffle files; it is emptied first."""
    import shutil

    import ray

    scratch = Path(scratch or shuffle_dir(staging))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)

    T = _tasks()
    t0, marks = time.time(), {}
    c = recipe.curate
    P = len(parts)
    R = G = max(1, min(P, int(2 * cpus)))      # reducers per shuffle, part groups per join
    rules = parse_filters(c.filters, STAT_FIELDS)
    dd = c.dedup
    # 1. scan every part
    scans = [T["scan"].options(num_returns=4 + 2 * R).remote(path, p, rules, dd, R) for p, path in enumerate(parts)]
    meta, drops, counts, sigs = ([s[i] for s in scans] for i in range(4))
    counts = ray.get(counts)
    marks["scan"] = time.time()
    # 2. exact: every copy -> the best one
    ex = [T["exact"].options(num_returns=1 + G).remote(G, *[s[4 + b] for s in scans]) for b in range(R)]
    exact_edges, twins = [e[0] for e in ex], [[e[1 + g] for e in ex] for g in range(G)]
    # 3. near: LSH buckets -> candidate pairs -> Jaccard (two joins, each holding one part group's signatures)
    bd = [T["bands"].options(num_returns=G + 1).remote(dd.max_partners, G, *[s[4 + R + b] for s in scans])
          for b in range(R)]
    group_sigs = [[sigs[p] for p in range(P) if p % G == g] for g in range(G)]
    near_edges, pair_counts, verified, estimated, ver = [], {}, {}, [], []
    if dd.near:
        estimated = _pair_jaccard([[b[g] for b in bd] for g in range(G)], group_sigs, G, T, pair_counts, strict=True)
        ver = [T["verify"].options(num_returns=2).remote(dict(dd.threshold), t) for t in estimated]
        near_edges = [v[0] for v in ver]
        for v in ray.get([v[1] for v in ver]):
            _add(verified, v)
    # 4. clusters over exact + near edges; the smallest order key of a cluster is its kept copy
    from dataengine.curate.components import connected_components

    labels = connected_components(exact_edges + near_edges, R)
    routed = [T["route"].options(num_returns=G + R).remote(G, R, lab) for lab in labels]
    sizes = ray.get([T["sizes"].remote(*[r[G + b] for r in routed]) for b in range(R)])
    marks["dedup"] = time.time()
    kept_pairs = [[r[g] for r in routed] for g in range(G)]
    member_j = _pair_jaccard(kept_pairs, group_sigs, G, T, None, strict=False)  # by part group of the member
    # 5. fate of every row; the mixture histogram and id samples come back to the driver
    fates = [T["fate"].options(num_returns=3).remote(p, meta[p], drops[p], 1, member_j[p % G], *twins[p % G],
                                                     recipe.output.val_fraction, c.mixture.seed) for p in range(P)]
    hists = ray.get([f[1] for f in fates])
    samples = ray.get([f[2] for f in fates])
    mix = _mixture(hists, c.mixture)
    marks["fate_and_mixture"] = time.time()
    # 6. finalize: sequences by (split, id range), rejects
    rows = {s: sum(smp[s][2] for smp in samples if s in smp) for s in ("train", "val")}
    bounds = {s: shard_plan.boundaries([smp[s] for smp in samples if s in smp],
                                       max(1, min(4 * -(-rows[s] // recipe.output.shard_rows), 4096)))
              for s in ("train", "val")}
    ranges = {s: len(bounds[s]) + 1 for s in ("train", "val")}
    fin = [T["finalize"].options(num_returns=3).remote(parts[p], p, fates[p][0], bounds, dict(dd.ngram), str(scratch))
           for p in range(P)]
    del scans, meta, drops, sigs, group_sigs, ex, exact_edges, twins, bd, estimated, ver, near_edges, labels, routed
    del kept_pairs
    del member_j, fates  # every consumer is submitted: their objects go as soon as those tasks end
    fin_counts, sizes_by_part = ray.get([f[1] for f in fin]), ray.get([f[2] for f in fin])
    marks["finalize"] = time.time()
    pieces = [shard_plan_spans(scratch / f"seq-{p:06d}.parquet", sizes_by_part[p]) for p in range(P)]
    shards, stats = [], []
    offset = 0
    for split in ("train", "val"):
        outs = [scratch / f"range-{split}-{k:06d}.parquet" for k in range(ranges[split])]
        counts_ = ray.get([T["range"].remote(recipe.compose.pack_length, str(outs[k]),
                                             [pieces[p][offset + k] for p in range(P)]) for k in range(ranges[split])])
        offset += ranges[split]
        plan = shard_plan.shard_plan(counts_, recipe.output.shard_rows)
        jobs = [T["write"].remote(str(staging), split, i, [[str(outs[k]), a, b] for k, a, b in sl],
                                  recipe.output.parquet_compression, recipe.output.webdataset,
                                  str(staging / "vocab.json"))
                for i, sl in enumerate(plan)]
        for entries, st in ray.get(jobs):
            shards += entries
            stats.append(st)
    report = {"filters": {"rules": {r.stat: {k: v for k, v in r.__dict__.items() if k != "stat" and v is not None}
                                    for r in rules},
                          "dropped": dict(sorted(_sum([x["filters"] for x in counts]).items()))},
              "dedup": _dedup_summary(counts, fin_counts, sizes, pair_counts, verified, dd),
              "mixture": mix["report"] if mix else {}}
    marks["write"] = time.time()
    timings = {k: round(marks[k] - prev, 3) for prev, k in zip([t0] + [marks[x] for x in list(marks)[:-1]], marks)}
    plan = manifest_plan(mix) if c.mixture.policy != "none" else None  # none: every row once, no plan to follow
    return Written(shards, stats, ray.get([f[0] for f in fin]), scratch, report, plan, timings)


def _pair_jaccard(pairs_by_group, group_sigs, G, T, counts_out, *, strict: bool):
    """Estimated Jaccard of pairs (a, b), given by part group of a; result tables by part group of b."""
    import ray

    att = [T["attach"].options(num_returns=G + 1).remote(G, strict, len(pairs_by_group[g]), *pairs_by_group[g],
                                                         *group_sigs[g]) for g in range(G)]
    if counts_out is not None:
        for cnt in ray.get([a[G] for a in att]):
            _add(counts_out, cnt)
    return [T["agree"].remote(strict, G, *[a[h] for a in att], *group_sigs[h]) for h in range(G)]


def _mixture(hists: list[dict], config) -> dict:
    """The plan from the summed (group, rank bin) histogram; its report counts the rows it leaves out."""
    names = sorted({g for h in hists for g, _ in h})
    validate_mixture(config, names)  # weight keys against the groups present
    index = {g: i for i, g in enumerate(names)}
    tokens, rows = np.zeros((2, len(names), 1 << RANK_BITS))
    for h in hists:
        for (g, b), (t, n) in h.items():
            tokens[index[g], b] += t
            rows[index[g], b] += n
    plan = plan_from_histogram(names, tokens, config)
    left = [int(rows[i, plan["cut"][i]:].sum()) if plan["full"][i] == 0 else 0 for i in range(len(names))]
    copies = [int(plan["full"][i] * rows[i].sum() + rows[i, :plan["cut"][i]].sum()) for i in range(len(names))]
    for i, g in enumerate(names):
        plan["report"]["groups"][g].update(rows=int(rows[i].sum()), rows_left_out=left[i], copies=copies[i])
    plan["report"]["totals"].update(rows_left_out=sum(left), copies=sum(copies), rows=int(rows.sum()))
    return plan


def manifest_plan(plan: dict) -> dict:
    """The mixture as manifest.json records it: per group, whole copies and a rank-bin cut (see loader)."""
    groups = {g: {"full": plan["full"][i], "cut": plan["cut"][i], **plan["report"]["groups"][g]}
              for i, g in enumerate(plan["names"])}
    return {"format": "dataengine.mixture/1", "split": "train", "policy": plan["policy"], "seed": plan["seed"],
            "rank_bits": RANK_BITS, "groups": groups}


def _dedup_summary(counts, fin_counts, sizes, pair_counts, verified, dd) -> dict:
    dropped = _sum([f["dedup"] for f in fin_counts])
    rows = sum(x["ok"] for x in counts) - sum(sum(x["filters"].values()) for x in counts)
    kinds = _sum([x["kinds"] for x in counts])
    by_kind_reason = _sum([f["dedup_by_kind"] for f in fin_counts])
    clusters = _sum([s["clusters"] for s in sizes])
    largest = sorted((x for s in sizes for x in s["largest"]), key=lambda x: (-x["size"], x["kept_id"]))[:10]
    no_content = _sum([x["no_content"] for x in counts])
    return {"rows": rows, "kept": rows - sum(dropped.values()),
            "dropped": {"exact_duplicate": dropped.get("exact_duplicate", 0),
                        "near_duplicate": dropped.get("near_duplicate", 0)},
            "clusters": sum(clusters.values()), "largest_clusters": largest,
            "by_kind": {k or "unknown": {
                "rows": n, "kept": n - by_kind_reason.get(f"{k}/exact_duplicate", 0)
                - by_kind_reason.get(f"{k}/near_duplicate", 0),
                "exact_duplicate": by_kind_reason.get(f"{k}/exact_duplicate", 0),
                "near_duplicate": by_kind_reason.get(f"{k}/near_duplicate", 0),
                **({"ngram": dd.ngram[k], "threshold": dd.threshold[k], "bands": dd.banding(k)[0],
                    "rows_per_band": dd.banding(k)[1], "no_content": no_content.get(k, 0),
                    "candidate_pairs": pair_counts.get(k, 0), "verified_pairs": verified.get(k, 0),
                    "clusters": clusters.get(k, 0)} if dd.near and k in dd.ngram else {})}
                for k, n in sorted(kinds.items())},
            "config": asdict(dd)}


def _add(into: dict, more: dict) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _sum(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        _add(out, d)
    return out


def write_rejects(paths: list[str], path: Path) -> dict:
    """rejects.parquet from reject files (the listing's, the curation's) in a worker task; returns counts
    for stats.json."""
    import ray

    @ray.remote(num_cpus=1)
    def write(paths):
        import pyarrow.parquet as pq

        t = pa.concat_tables([pq.read_table(p).cast(REJECT_SCHEMA) for p in paths] + [REJECT_SCHEMA.empty_table()])
        t = t.sort_by([(c, "ascending") for c in ("source", "path", "stage", "reason", "detail")])
        pq.write_table(t, path, compression="zstd")
        df = pl.from_arrow(t)
        return {"total": df.height, "by_stage": _value_counts(df["stage"]), "by_reason": _value_counts(df["reason"]),
                "by_stage_reason": _value_counts(df["stage"] + "/" + df["reason"])}

    counts = ray.get(write.remote(list(paths)))
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in counts.items()}
