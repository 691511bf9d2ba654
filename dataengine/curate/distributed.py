"""Curation and shard writing as Ray tasks over the candidate parts: the driver plans, workers do.

    parts ─► scan (filters, order keys, MinHash, LSH bands)                      P tasks
          ─► exact by (kind, content_hash) bucket ─► twins by part group          R + G tasks
          ─► bands by band-key bucket ─► attach ─► agree (verified pairs)         R + 2 G tasks
          ─► connected components (Large-Star / Small-Star) over exact + near edges
          ─► route (kept, member) pairs ─► attach ─► agree (Jaccard to the kept copy)
          ─► fate per part (split by the kept id, mixture histogram, id samples)  P tasks
          ─► driver: mixture plan from the summed histogram, id-range boundaries
          ─► finalize per part (sequences by id range, rejects)                   P tasks
          ─► range (sort, pack) ─► driver: shard plan from counts ─► write        ranges + shards

Every table a task makes goes to the scratch folder (`curate.tasks` names the files,
`curate.exchange` buckets them, with a combine level when a reducer would open more than
`fan_in` files); a task returns counts. The driver holds the plan (parts, folder names), a
bounded window of tasks in flight (`exchange.run_tasks`), and what it folds from their
counts: sums, the mixture histogram (groups x 4,096 bins) and a bottom-k sample of ids for the
range boundaries. Never rows, tokens, or a handle per (mapper, reducer). Every decision
depends on the data alone (order keys, hashes, id ranges), never on which part a row landed
in, so the output is the same for any number of parts, nodes or combine levels.
"""
from __future__ import annotations

import functools
import heapq
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate import exchange, shuffle_dedup, verdicts
from dataengine.curate.apply import _sequences, stats_frame
from dataengine.curate.filters import parse_filters
from dataengine.curate.mixture import RANK_BITS, plan_from_histogram, validate_mixture
from dataengine.curate.stats import STAT_FIELDS
from dataengine.shards import plan as shard_plan
from dataengine.curate.tasks import value_counts
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA


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

    from dataengine.curate import tasks

    names = ("scan_part", "exact", "bands", "twins", "attach", "agree", "route", "sizes", "fate", "finalize",
             "range_", "write")
    return {n: ray.remote(num_cpus=1)(getattr(tasks, n)) for n in names}


def shuffle_dir(staging: Path) -> Path:
    """The default scratch folder of `curate_and_write`: ``.<staging>.shuffle`` beside it."""
    return Path(staging).parent / f".{Path(staging).name}.shuffle"


class _Totals:
    """What the driver folds from the tasks' small results: sums, the mixture histogram, a bottom-k id sample."""

    def __init__(self):
        self.scan, self.final, self.pairs, self.verified = {}, {}, {}, {}
        self.hist: dict = {}
        self.samples = {"train": ([], 0), "val": ([], 0)}   # (k smallest (hash, id), rows)
        self.sizes: list[dict] = []

    def fold_scan(self, _, counts):
        _add_nested(self.scan, counts)

    def fold_fate(self, _, value):
        hist, samples = value
        for key, (t, n) in hist.items():
            old = self.hist.get(key, (0, 0))
            self.hist[key] = (old[0] + t, old[1] + n)
        for split, (ids, hashes, rows) in samples.items():
            pool, total = self.samples[split]
            self.samples[split] = (heapq.nsmallest(verdicts.SAMPLES, pool + list(zip(hashes, ids))), total + rows)

    def sample(self, split):
        pool, rows = self.samples[split]
        return ([i for _, i in pool], [h for h, _ in pool], rows) if rows else None


def curate_and_write(parts: list[str], recipe, staging: Path, *, cpus: float, log=print,
                     scratch: Path | None = None, fan_in: int = exchange.FAN_IN) -> Written:
    """Curate the candidate parts and write the shards into `staging`; returns what the driver needs.

    `scratch` (default: ``.<staging>.shuffle`` beside it) holds the shuffle files; it is emptied first.
    `fan_in`: files a reducer opens at most before a combine level is added (`curate.exchange`)."""
    import shutil

    scratch = Path(scratch or shuffle_dir(staging))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    S = str(scratch)

    T = _tasks()
    t0, marks = time.time(), {}
    c = recipe.curate
    P = len(parts)
    R = G = max(1, min(P, int(2 * cpus)))      # reducers per shuffle, part groups per join
    W = max(8, int(4 * cpus))                  # tasks in flight per stage: what the driver holds grows with W
    rules = parse_filters(c.filters, STAT_FIELDS)
    dd = c.dedup
    tot = _Totals()

    def run(name, count, make, fold=None):
        exchange.run_tasks(lambda i: T[name].remote(*make(i)), count, fold, window=W)

    def level(*names, files, buckets, schema):
        return exchange.merged(os.path.join(S, *names), files, buckets, schema, window=W, fan_in=fan_in)

    from dataengine.curate import scan as scan_mod
    from dataengine.curate import tasks
    from dataengine.curate.components import connected_components

    # 1. scan every part: filters, order keys, exact and band records, signatures
    run("scan_part", P, lambda p: (S, parts[p], p, rules, dd, R, stats_frame), tot.fold_scan)
    marks["scan"] = time.time()
    # 2. exact: every copy -> the best one; 3. near: LSH buckets -> candidate pairs
    ex_at = level("scan", "exact", files=P, buckets=R, schema=scan_mod.EXACT)
    run("exact", R, lambda b: (S, ex_at, b, G))
    tw_at = level("exact", "twins", files=R, buckets=G, schema=shuffle_dedup.TWINS)
    run("twins", G, lambda g: (S, tw_at, g, P, G))
    edge_files = exchange.paths(os.path.join(S, "exact", "edges"), R)
    if dd.near:
        bd_at = level("scan", "bands", files=P, buckets=R, schema=scan_mod.BANDS)
        run("bands", R, lambda b: (S, bd_at, b, dd.max_partners, G))
        _pair_jaccard(run, level, S, "near", ("bands", "pairs"), R, P, G, dd, tot.pairs, tot.verified,
                      dict(dd.threshold))
        edge_files += exchange.paths(os.path.join(S, "near", "edges"), G)
    # 4. clusters over exact + near edges; the smallest order key of a cluster is its kept copy
    labels = connected_components(edge_files, R, scratch / "cc", window=W, fan_in=fan_in)
    run("route", R, lambda i: (S, labels[i], i, G, R))
    lab_at = level("route", "labels", files=R, buckets=R, schema=tasks.LABELS)
    run("sizes", R, lambda b: (lab_at, b), lambda _, v: tot.sizes.append(v))
    marks["dedup"] = time.time()
    _pair_jaccard(run, level, S, "member", ("route", "kept"), R, P, G, dd, None, None, None)
    # 5. fate of every row; the mixture histogram and id samples are folded on the driver
    run("fate", P, lambda p: (S, p, G, recipe.output.val_fraction, c.mixture.seed), tot.fold_fate)
    mix = _mixture([tot.hist], c.mixture)
    marks["fate_and_mixture"] = time.time()
    # 6. finalize: sequences by (split, id range), rejects
    bounds = {}
    for s in ("train", "val"):
        smp = tot.sample(s)
        rows = smp[2] if smp else 0
        bounds[s] = shard_plan.boundaries([smp] if smp else [],
                                          max(1, min(4 * -(-rows // recipe.output.shard_rows), 4096)))
    ranges = {s: len(bounds[s]) + 1 for s in ("train", "val")}
    run("finalize", P, lambda p: (S, parts[p], p, bounds, dict(dd.ngram), stats_frame, _sequences),
        lambda _, v: _add_nested(tot.final, v))
    marks["finalize"] = time.time()
    seq_at = level("seq", files=P, buckets=sum(ranges.values()), schema=SEQUENCE_SCHEMA)
    shards, stats = [], []
    offset = 0
    for split in ("train", "val"):
        outs = [str(scratch / f"range-{split}-{k:06d}.parquet") for k in range(ranges[split])]
        counts_ = [0] * ranges[split]
        run("range_", ranges[split], lambda k: (seq_at, offset + k, recipe.compose.pack_length, outs[k]),
            lambda k, n: counts_.__setitem__(k, n))
        offset += ranges[split]
        plan = shard_plan.shard_plan(counts_, recipe.output.shard_rows)
        written = [None] * len(plan)
        run("write", len(plan), lambda i: (str(staging), split, i, [[outs[k], a, b] for k, a, b in plan[i]],
                                           recipe.output.parquet_compression, recipe.output.webdataset,
                                           str(staging / "vocab.json")),
            lambda i, v: written.__setitem__(i, v))
        for entries, st in written:
            shards += entries
            stats.append(st)
    report = {"filters": {"rules": {r.stat: {k: v for k, v in r.__dict__.items() if k != "stat" and v is not None}
                                    for r in rules},
                          "dropped": dict(sorted(tot.scan.get("filters", {}).items()))},
              "dedup": _dedup_summary(tot, dd),
              "mixture": mix["report"] if mix else {}}
    marks["write"] = time.time()
    timings = {k: round(marks[k] - prev, 3) for prev, k in zip([t0] + [marks[x] for x in list(marks)[:-1]], marks)}
    plan = manifest_plan(mix) if c.mixture.policy != "none" else None  # none: every row once, no plan to follow
    rejects = [str(scratch / f"rej-{p:06d}.parquet") for p in range(P)]
    return Written(shards, stats, rejects, scratch, report, plan, timings)


def _pair_jaccard(run, level, S, tag, pairs_dir, files, P, G, dd, pair_counts, verified, thresholds):
    """Estimated Jaccard of pairs (a, b) given by part group of a (in `pairs_dir`, `files` mappers): attach
    a's signature in a's group, then compare with b's in b's group. Near: also the verified edges."""
    strict = thresholds is not None
    src = level(*pairs_dir, files=files, buckets=G, schema=shuffle_dedup.PAIRS)
    run("attach", G, lambda g: (S, tag, src, g, P, G, strict, dd.num_perm),
        (lambda _, v: _add(pair_counts, v)) if pair_counts is not None else None)
    from dataengine.curate.tasks import attached_schema

    att = level(tag, "attached", files=G, buckets=G, schema=attached_schema(dd.num_perm))
    run("agree", G, lambda h: (S, tag, att, h, P, G, strict, dd.num_perm, thresholds),
        (lambda _, v: _add(verified, v)) if verified is not None else None)


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


def _dedup_summary(tot: _Totals, dd) -> dict:
    dropped = tot.final.get("dedup", {})
    rows = tot.scan.get("ok", 0) - sum(tot.scan.get("filters", {}).values())
    kinds, by_kind_reason = tot.scan.get("kinds", {}), tot.final.get("dedup_by_kind", {})
    clusters = _sum([s["clusters"] for s in tot.sizes])
    largest = sorted((x for s in tot.sizes for x in s["largest"]), key=lambda x: (-x["size"], x["kept_id"]))[:10]
    no_content, pair_counts, verified = tot.scan.get("no_content", {}), tot.pairs, tot.verified
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


def _add_nested(into: dict, more: dict) -> None:
    """Sum `more` into `into`: numbers add, dicts add key by key."""
    for k, v in more.items():
        if isinstance(v, dict):
            _add_nested(into.setdefault(k, {}), v)
        else:
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
        return {"total": df.height, "by_stage": value_counts(df["stage"]), "by_reason": value_counts(df["reason"]),
                "by_stage_reason": value_counts(df["stage"] + "/" + df["reason"])}

    counts = ray.get(write.remote(list(paths)))
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in counts.items()}
