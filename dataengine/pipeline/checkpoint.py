"""Resumable execution: decode + tokenize results committed in parts, so a killed run picks up where it was.

The driver streams result batches into `.OUT.work/parts/part-NNNNNN.parquet`,
each written to a temporary name and renamed (a part is whole or absent). A
unit (sample group) is done when all the rows it produced are in parts: every
row carries `unit_rows`, the number of rows its unit made, because Ray may cut
one unit's rows across batches. A rerun with the same candidates key keeps the
done units and sends only the rest through Ray; a different key (other inputs,
decode settings, tokenizers) starts clean. The folder is removed once OUT is
in place.

Fault injection for tests: `DATAENGINE_KILL_AFTER_PARTS=N` makes the driver
SIGKILL itself right after committing its N-th part.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

KILL_AFTER_PARTS = "DATAENGINE_KILL_AFTER_PARTS"


class WorkDir:
    def __init__(self, output: Path, key: str, schema: pa.Schema, flush_rows: int = 1000):
        self.dir = Path(output).parent / f".{Path(output).name}.work"
        self.schema = schema
        self.flush_rows = flush_rows
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._written = 0
        key_file = self.dir / "key.json"
        try:
            same = json.loads(key_file.read_text()).get("key") == key
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.dir, ignore_errors=True)
            (self.dir / "parts").mkdir(parents=True)
            key_file.write_text(json.dumps({"key": key}) + "\n")
        for tmp in (self.dir / "parts").glob("*.tmp"):  # a part that was being written when killed
            tmp.unlink()
        self._next = len(list((self.dir / "parts").glob("part-*.parquet")))

    def completed(self) -> pa.Table:
        """Rows of every unit whose rows are all committed (partial units are dropped: they rerun)."""
        files = sorted((self.dir / "parts").glob("part-*.parquet"))
        if not files:
            return self.schema.empty_table()
        table = pa.concat_tables([pq.read_table(f).cast(self.schema) for f in files])
        # a retried task (a worker killed mid-batch) must not count twice: one row per (unit, id, path, stage, reason)
        key = pl.from_arrow(table.select(["unit_id", "id", "path", "stage", "reason"]))
        first = key.select(pl.struct(pl.all()).is_first_distinct()).to_series()
        table = table.filter(pa.array(first.to_numpy()))
        ids = pl.from_arrow(table.select(["unit_id", "unit_rows"]))
        counts = ids.group_by("unit_id").agg(pl.len().alias("seen"), pl.col("unit_rows").first())
        complete = counts.filter(pl.col("seen") >= pl.col("unit_rows"))["unit_id"]
        keep = ids["unit_id"].is_in(complete.implode()).to_numpy()
        return table.filter(pa.array(keep))

    def add(self, batch: pa.Table) -> None:
        self._buffer.append(batch.cast(self.schema))
        self._buffered += batch.num_rows
        if self._buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        path = self.dir / "parts" / f"part-{self._next:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd", compression_level=1)
        os.replace(tmp, path)
        self._next += 1
        self._written += 1
        limit = os.environ.get(KILL_AFTER_PARTS)
        if limit and self._written >= int(limit):
            os.kill(os.getpid(), signal.SIGKILL)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
