"""Tables that workers hand each other through files, never through the driver.

A worker writes its table whole (`write_table`: a temporary name, then a rename, or one PUT) and
returns only row counts; the driver turns counts into spans ``[path, start, stop]`` and the next
worker reads just the row groups its spans cover (`read_spans`). This is how the listing hands
units to the work items, and how curation's finalize tasks hand sequences to the range reducers
and those to the shard writers: tokens cross the cluster as files (as in DataTrove and NeMo
Curator), so the driver's memory does not grow with them (a Ray task's small return values live
in its caller's memory: for the driver that would be every sequence).
"""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from dataengine import storage

ROW_GROUP = 256  # a span reads at most two row groups it does not need


def write_table(table: pa.Table, path, row_group_size: int = ROW_GROUP) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=1, row_group_size=row_group_size)
    storage.write_bytes_atomic(path, buf.getvalue())


def cut(path, counts: list[int]) -> list[list]:
    """Spans of consecutive pieces of `path` with these row counts."""
    out, at = [], 0
    for n in counts:
        out.append([str(path), at, at + n])
        at += n
    return out


def read_spans(spans: list[list], schema: pa.Schema) -> pa.Table:
    """The rows of [(path, start, stop)] spans in order, cast to `schema`."""
    tables = [schema.empty_table()]
    for path, start, stop in spans:
        if stop <= start:
            continue
        pf = pq.ParquetFile(path)
        groups, first, at = [], None, 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at < stop and at + n > start:
                groups.append(g)
                first = at if first is None else first
            at += n
        if stop > at:
            raise ValueError(f"{path} has {at} rows; a span asks for rows {start}..{stop}")
        tables.append(pf.read_row_groups(groups).slice(start - first, stop - start).cast(schema))
    return pa.concat_tables(tables)
