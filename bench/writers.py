"""Our shard writers (`dataengine.shards.writer`) vs plain `pyarrow.parquet.write_table` and `webdataset.ShardWriter`.

    .venv/bin/python bench/writers.py --rows 20000

Sequences: ``--shards OUT``: the train rows of a `dataengine run` output (real
tokens and metadata), repeated with suffixed ids up to ``--rows`` rows (what
`make bench` uses). Or ``--rows`` deterministic synthetic rows of the real
`SEQUENCE_SCHEMA` (seed ``--seed``): token counts lognormal around
``--mean-tokens``, Zipf-distributed ids over a 16k vocabulary, spans, lineage,
JSON side/meta, a few quality stats.

Both sides write the same rows into shards of ``--shard-rows``:

- Parquet. Ours: `write_split(..., webdataset=False)` (cast to the schema,
  zstd level 3, row groups of 2048, then sha256 and size of every shard for the
  manifest). Plain: `pq.write_table` of the same slices with the same
  compression, level and row-group size (pyarrow's other defaults).
- WebDataset. Ours: `write_webdataset` of each slice plus its sha256 (the
  webdataset half of `write_split`). Plain: `wds.ShardWriter(maxcount=shard_rows)`
  fed one dict per row: ``tokens.npy`` (int32 array) and ``json`` (the other
  columns), built from the same table inside the timing.

Each time is the median of ``--repeat`` runs (after one warm-up), the two sides
alternating. Ratio = plain seconds / our seconds (>= 0.8: ours at most 25% slower).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import benchlib
from benchlib import log

TARGET = 0.8


def synthetic_sequences(rows: int, mean_tokens: int, seed: int) -> pa.Table:
    from dataengine.curate.stats import STAT_FIELDS
    from dataengine.shards.schema import SEQUENCE_SCHEMA

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_tokens), 0.8, rows).astype(np.int64), 8, 16 * mean_tokens)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    values = (rng.zipf(1.3, int(offsets[-1])) % 16384).astype(np.int32)  # token ids are Zipf-like, not uniform
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    kinds = np.array(["text", "image", "audio", "video", "sensor", "chat"])[rng.integers(0, 6, rows)]
    stat_names = [k for k, t in STAT_FIELDS.items() if pa.types.is_floating(t)][:4]
    cols = {
        "id": [f"{h:024x}" for h in rng.integers(0, 2**62, rows)],
        "split": ["train"] * rows, "source": ["demo"] * rows,
        "task": [f"{k}_to_caption" for k in kinds], "kind": kinds.tolist(),
        "modalities": [[k, "text"] for k in kinds], "tokens": tokens, "num_tokens": lengths.astype(np.int32),
        "spans": [[{"modality": k, "start": 2, "end": int(n) // 2}, {"modality": "text", "start": int(n) // 2 + 1,
                   "end": int(n) - 1}] for k, n in zip(kinds, lengths)],
        "target_spans": [[{"start": int(n) // 2, "end": int(n)}] for n in lengths],
        "side": [json.dumps([{"grid": [8, 8], "frames": int(n) % 7}]) for n in lengths],
        "lineage": [[{"path": f"images/photo_{i:05d}.jpg", "sha256": f"{i:064x}", "role": "media"},
                     {"path": f"images/photo_{i:05d}.txt", "sha256": f"{i + 1:064x}", "role": "caption"}]
                    for i in range(rows)],
        "meta": [json.dumps({"text": f"A caption of item {i} with some words in it.", "width": 640, "height": 480,
                             "compose": {"task": "image_to_caption", "template": None}}) for i in range(rows)],
        "content_hash": [f"{h:064x}" for h in rng.integers(0, 2**62, rows)],
        "stats": [{k: float(v) for k, v in zip(stat_names, rng.random(len(stat_names)))} for _ in range(rows)],
        "dup_cluster": [None] * rows, "repeat": np.zeros(rows, np.int32), "documents": [[]] * rows,
    }
    table = pa.table({f.name: cols[f.name] for f in SEQUENCE_SCHEMA}, schema=SEQUENCE_SCHEMA)
    return table.sort_by([("id", "ascending")])


def shard_sequences(shards: Path, rows: int) -> pa.Table:
    """The train rows of a run's output, repeated (ids suffixed `-cK`) up to `rows` rows."""
    from dataengine.shards.schema import SEQUENCE_SCHEMA

    files = sorted((Path(shards) / "parquet").glob("train-*.parquet"))
    if not files:
        raise SystemExit(f"no train shards under {shards}/parquet; pass the output folder of `dataengine run`")
    table = pa.concat_tables([pq.read_table(f) for f in files]).cast(SEQUENCE_SCHEMA)
    copies = []
    for k in range(-(-rows // table.num_rows)):
        ids = pa.compute.binary_join_element_wise(table.column("id"), pa.scalar(f"c{k}"), "-")
        copies.append(table.set_column(0, "id", ids))
    return pa.concat_tables(copies).slice(0, rows).sort_by([("id", "ascending")])


# ------------------------------------------------------------------------------------------- the four writers
def ours_parquet(table: pa.Table, out: Path, shard_rows: int) -> None:
    from dataengine.shards.writer import write_split

    write_split(table, "train", out, shard_rows=shard_rows, compression="zstd", webdataset=False)


def plain_parquet(table: pa.Table, out: Path, shard_rows: int) -> None:
    from dataengine.shards.writer import PARQUET_ROW_GROUP

    (out / "parquet").mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, table.num_rows, shard_rows)):
        pq.write_table(table.slice(start, shard_rows), out / "parquet" / f"train-{k:06d}.parquet",
                       compression="zstd", compression_level=3, row_group_size=PARQUET_ROW_GROUP)


def ours_webdataset(table: pa.Table, out: Path, shard_rows: int) -> None:
    from dataengine.shards.writer import sha256_file, write_webdataset

    (out / "wds").mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, table.num_rows, shard_rows)):
        path = out / "wds" / f"train-{k:06d}.tar"
        write_webdataset(table.slice(start, shard_rows), path)
        sha256_file(path)


def plain_webdataset(table: pa.Table, out: Path, shard_rows: int) -> None:
    import webdataset as wds

    (out / "wds").mkdir(parents=True, exist_ok=True)
    meta = table.drop_columns(["tokens"]).to_pylist()
    tokens = table.column("tokens")
    with wds.ShardWriter(str(out / "wds" / "train-%06d.tar"), maxcount=shard_rows, verbose=0, mtime=0) as sink:
        for i, m in enumerate(meta):
            arr = tokens[i].values.to_numpy(zero_copy_only=False).astype(np.int32)
            sink.write({"__key__": m["id"], "tokens.npy": arr, "json": m})


def timed(fn, table: pa.Table, root: Path, shard_rows: int) -> tuple[float, int]:
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    fn(table, out, shard_rows)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return seconds, size


def compare(table: pa.Table, ours, plain, repeat: int, root: Path, shard_rows: int) -> dict:
    timed(ours, table, root, shard_rows)  # warm-up: imports, page cache, allocator
    timed(plain, table, root, shard_rows)
    t_ours, t_plain = [], []
    for _ in range(repeat):  # alternate, so a change of machine load hits both
        t, size_ours = timed(ours, table, root, shard_rows)
        t_ours.append(t)
        t, size_plain = timed(plain, table, root, shard_rows)
        t_plain.append(t)
    o, p = statistics.median(t_ours), statistics.median(t_plain)
    mib = table.nbytes / 2**20
    return {"ours_s": round(o, 4), "plain_s": round(p, 4), "ratio": round(p / o, 3),
            "ours_mib_per_s": round(mib / o, 1), "plain_mib_per_s": round(mib / p, 1),
            "ours_rows_per_s": round(table.num_rows / o, 1), "plain_rows_per_s": round(table.num_rows / p, 1),
            "ours_bytes": size_ours, "plain_bytes": size_plain,
            "ours_runs_s": [round(t, 4) for t in t_ours], "plain_runs_s": [round(t, 4) for t in t_plain]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000, help="synthetic sequences (default 20000)")
    ap.add_argument("--mean-tokens", type=int, default=400, help="median tokens per synthetic sequence")
    ap.add_argument("--shards", help="use the train rows of this `dataengine run` output instead, repeated "
                    "(ids suffixed) up to --rows")
    ap.add_argument("--shard-rows", type=int, default=4096, help="rows per shard (the demo recipe's)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help=f"scratch folder (default {benchlib.DEFAULT_WORK})")
    ap.add_argument("--name", default="writers", help="results file bench/results/NAME.json")
    ap.add_argument("--results", default=str(benchlib.RESULTS))
    args = ap.parse_args(argv)

    table = shard_sequences(Path(args.shards), args.rows) if args.shards else \
        synthetic_sequences(args.rows, args.mean_tokens, args.seed)
    root = benchlib.work_dir(args.work) / "writers"
    root.mkdir(parents=True, exist_ok=True)
    res = {}
    for fmt, ours, plain in (("parquet", ours_parquet, plain_parquet),
                             ("webdataset", ours_webdataset, plain_webdataset)):
        res[fmt] = compare(table, ours, plain, args.repeat, root, args.shard_rows)
        r = res[fmt]
        log(f"{fmt:<11} ours {r['ours_s']:.3f}s ({r['ours_mib_per_s']} MiB/s)  plain {r['plain_s']:.3f}s "
            f"({r['plain_mib_per_s']} MiB/s)  plain/ours {r['ratio']:.3f}")
    ratio = min(res["parquet"]["ratio"], res["webdataset"]["ratio"])
    result = {"target": TARGET, "ratio": ratio, "pass": bool(ratio >= TARGET),
              "sequences": {"rows": table.num_rows, "tokens": int(pa.compute.sum(table.column("num_tokens")
                                                                                  .cast(pa.int64())).as_py()),
                            "arrow_mib": round(table.nbytes / 2**20, 2),
                            "source": f"{args.shards} (train rows, repeated)" if args.shards else f"synthetic (seed {args.seed}, mean {args.mean_tokens} tokens)"},
              "shard_rows": args.shard_rows, "repeat": args.repeat, **res}
    print(f"writers: plain/ours parquet {res['parquet']['ratio']:.3f}, webdataset {res['webdataset']['ratio']:.3f} "
          f"(target >= {TARGET})")
    benchlib.write_result(args.name, result, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
