"""Shuffles through files: the driver names folders and counts; workers hand each other buckets.

    mapper m   ─► <folder>/<m>.arrow: one Arrow IPC file, bucket i = record batch i   (write_buckets)
    [combine]  ─► mappers [c*F, (c+1)*F) merged batch by batch into one file per group  (combine)
    reducer i  ─► batch i of every file of the level below                             (read_bucket)

A Ray task's return values are owned by its caller, so a shuffle whose pieces are task returns
makes the driver hold mappers x reducers ObjectRefs (about 2 KB each: 10^10 of them at 10^9
samples). Here a mapper returns at most a few counts; a reducer is told a folder and how many
files it holds, and finds its bucket in each at a fixed index (the IPC footer is the index, and a
memory map reads only that batch). With more than `fan_in` mappers a combine level merges groups
of them first, so a reducer opens ceil(mappers / fan_in) files rather than one per mapper
(Exoshuffle's merge step, done with files); the combined bucket is the same rows, so every
reducer, which sorts or groups what it reads, gives the same output either way.

`run_tasks` submits a stage's tasks with a bounded number in flight and folds each small result
as it lands: what the driver holds grows with that window and the folded totals, never with the
number of tasks. Multi-node clusters put the scratch folder on storage every node mounts.
"""
from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa

FAN_IN = 256  # files a reducer opens at most before a combine level is added (one open costs ~0.1 ms locally)


def path_of(folder, index: int) -> str:
    return os.path.join(str(folder), f"{index:06d}.arrow")


def paths(folder, count: int) -> list[str]:
    return [path_of(folder, i) for i in range(count)]


def write_buckets(path, tables: Iterable[pa.Table], schema: pa.Schema) -> None:
    """One IPC file, table i = batch i (an empty table is an empty batch); written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
            for t in tables:
                batches = t.cast(schema).combine_chunks().to_batches()  # one chunk per column: one batch
                w.write_batch(batches[0] if batches else _empty_batch(schema))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def write_table(path, table: pa.Table, schema: pa.Schema) -> None:
    """A one-bucket file."""
    write_buckets(path, [table], schema)


def num_buckets(path) -> int:
    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_file(src).num_record_batches


def read_bucket(files: Iterable[str], index: int, schema: pa.Schema | None = None) -> pa.Table:
    """Batch `index` of each file, concatenated in file order (`schema`: cast to it; default the files')."""
    batches = []
    for f in files:
        with pa.memory_map(str(f)) as src:
            r = pa.ipc.open_file(src)
            schema = r.schema if schema is None else schema
            if index >= r.num_record_batches:
                raise ValueError(f"{f} holds {r.num_record_batches} buckets; bucket {index} was asked for "
                                 "(mapper and reducer disagree on the bucket count: a planning bug)")
            b = r.get_batch(index)
            if b.num_rows:
                batches.append(b.cast(schema) if b.schema != schema else b)
    # the buffers keep their memory maps alive: a file may be replaced or removed after this returns
    if schema is None:
        raise ValueError("read_bucket: no files and no schema")
    return pa.Table.from_batches(batches, schema=schema).combine_chunks() if batches else schema.empty_table()


def read_table(path, schema: pa.Schema | None = None) -> pa.Table:
    return read_bucket([path], 0, schema)


def combine(inputs: list[str], out, buckets: int, schema: pa.Schema) -> None:
    """One file whose bucket i holds bucket i of every input, read and written a bucket at a time."""
    write_buckets(out, (read_bucket(inputs, i, schema) for i in range(buckets)), schema)


def levels(count: int, fan_in: int = FAN_IN) -> list[list[int]]:
    """Mapper indices per combine group: [] when reducers read the mappers' files directly."""
    if count <= fan_in:
        return []
    return [list(range(s, min(count, s + fan_in))) for s in range(0, count, fan_in)]


def fixed_list(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    """[n, width] array as a fixed-size-list column (signatures of a table of rows)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def from_fixed_list(column, width: int, dtype) -> np.ndarray:
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(col) == 0:
        return np.zeros((0, width), dtype)
    return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, width)


def run_tasks(submit: Callable[[int], object], count: int, fold: Callable[[int, object], None] | None = None,
              *, window: int) -> None:
    """Task i = submit(i) (an ObjectRef) for i in range(count), at most `window` in flight; fold(i, value)
    as each ends, in completion order (so folds must not depend on order)."""
    import ray

    if count <= 0:
        return
    window = max(1, int(window))
    pending: dict = {}
    nxt = 0
    while nxt < count or pending:
        while nxt < count and len(pending) < window:
            pending[submit(nxt)] = nxt
            nxt += 1
        refs = list(pending)
        done, rest = ray.wait(refs, num_returns=1)
        if rest:  # everything else that has ended too: one wake-up per batch of completions
            done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for ref in done:
            i = pending.pop(ref)
            value = ray.get(ref)
            if fold is not None:
                fold(i, value)


def _combine_body(folder: str, start: int, stop: int, out: str, buckets: int, schema: pa.Schema) -> int:
    combine([path_of(folder, m) for m in range(start, stop)], out, buckets, schema)
    return stop - start


@functools.cache
def _combine_task():
    import ray

    return ray.remote(num_cpus=1)(_combine_body)


def merged(folder, count: int, buckets: int, schema: pa.Schema, *, window: int, fan_in: int = FAN_IN
           ) -> tuple[str, int]:
    """(folder, count) of the files a reducer reads: the mappers' own, or, with more than `fan_in` of
    them, a combine level's (one Ray task per group, written to ``<folder>/combined``)."""
    groups = levels(count, fan_in)
    if not groups:
        return str(folder), count
    out = os.path.join(str(folder), "combined")
    task = _combine_task()
    run_tasks(lambda c: task.remote(str(folder), groups[c][0], groups[c][-1] + 1, path_of(out, c), buckets, schema),
              len(groups), window=window)
    return out, len(groups)
