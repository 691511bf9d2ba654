import json

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import webdataset as wds

from dataengine.shards.schema import SCHEMAS, SEQUENCE_SCHEMA, schema_to_json
from dataengine.shards.writer import write_split
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def table(n):
    rows = []
    for i in range(n):
        toks = list(range(64, 64 + (i % 7) + 1))
        rows.append({"id": f"id{i:04d}", "split": "train", "source": "s", "task": "text", "modalities": ["text"],
                     "tokens": toks, "num_tokens": len(toks), "spans": [{"modality": "text", "start": 0, "end": len(toks)}],
                     "target_spans": [{"start": 0, "end": len(toks)}], "side": "[]",
                     "lineage": [{"path": f"f{i}.txt", "sha256": "0" * 64, "role": "document"}], "meta": "{}"})
    return pa.Table.from_pylist(rows, schema=SEQUENCE_SCHEMA)


def test_shards_are_deterministic_and_readable_everywhere(tmp_path):
    t = table(25)
    a = write_split(t, "train", tmp_path / "a", shard_rows=10, compression="zstd", webdataset=True)
    b = write_split(t, "train", tmp_path / "b", shard_rows=10, compression="zstd", webdataset=True)
    assert [e["sha256"] for e in a] == [e["sha256"] for e in b]
    assert [e["path"] for e in a if e["format"] == "parquet"] == [
        "parquet/train-000000.parquet", "parquet/train-000001.parquet", "parquet/train-000002.parquet"]
    assert sum(e["sequences"] for e in a if e["format"] == "webdataset") == 25
    assert sum(e["tokens"] for e in a if e["format"] == "parquet") == sum(t.column("num_tokens").to_pylist())

    back = pl.scan_parquet(str(tmp_path / "a" / "parquet" / "*.parquet")).collect()
    assert back["id"].to_list() == t.column("id").to_pylist()
    n = duckdb.sql(f"select sum(len(tokens)) from read_parquet('{tmp_path / 'a' / 'parquet'}/*.parquet')").fetchall()[0][0]
    assert n == sum(t.column("num_tokens").to_pylist())

    tars = sorted(str(p) for p in (tmp_path / "a" / "wds").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == t.column("id").to_pylist()
    first = samples[3]
    np.testing.assert_array_equal(first["tokens.npy"], np.array(t.column("tokens")[3].as_py(), np.int32))
    assert first["tokens.npy"].dtype == np.int32 and first["json"]["num_tokens"] == len(first["tokens.npy"])


def test_schema_files_match_the_code():
    for name, schema in SCHEMAS.items():
        on_disk = json.loads((ROOT / "schemas" / f"{name}.arrow.json").read_text())
        assert on_disk == {"name": name, "fields": schema_to_json(schema)}, (
            f"schemas/{name}.arrow.json is stale: run `python -m dataengine.shards.schema schemas`")
