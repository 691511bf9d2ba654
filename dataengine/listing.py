"""Listing as Ray tasks: the driver plans shares of each source, workers list them and write unit parts.

    planner task per source: its root's top level (one directory read, or one delimiter listing on S3)
      -> one listing task per top-level folder (its whole subtree), and per chunk of the root's own
         files (ROOT_CHUNK sample keys: ``x.jpg``, ``x.txt``, ``x.json`` and ``x.tar`` with its
         img2dataset ``x.parquet`` and ``x_stats.json`` always land in one chunk), a row span of
         the root's files written by the planner (LISTING/root-<source>.parquet)
      -> each task: `discover(scope=...)`, its units sorted by id -> LISTING/units-<task>.parquet,
         its rejects -> LISTING/rejects-<task>.parquet; it returns counts and a digest, which is all
         the driver keeps (O(tasks), never O(files))

A source is listed by one task over its whole tree when files of different shares could depend on
each other: a manifest table at its root (its rows take files anywhere in the source), or
img2dataset metadata beside a top-level folder (``X.parquet`` next to ``X/``). A manifest found
deeper is only known once it is listed: that source is listed again, as one task. Either way the
units and rejects are exactly those of `discover` over the whole source (tests/test_listing.py).
Work items (`pipeline.items`) are cut from the unit parts in task order.

Limits, for the planners: a root holding millions of entries directly is read by one worker (names
and stamps, once, sorted in its memory); a source with a manifest is listed by one worker.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import pyarrow as pa

from dataengine import manifest_input as MI
from dataengine import storage
from dataengine.decode.source import check_key
from dataengine.discover import Unit, discover
from dataengine.fswalk import folder_problem
from dataengine.shards.schema import REJECT_SCHEMA
from dataengine.spans import read_spans, write_table

ROOT_CHUNK = 1024        # sample keys of a root's own files per listing task (a tar key lists a whole shard)
UNIT_SCHEMA = pa.schema([(f.name, pa.string()) for f in fields(Unit)])


@dataclass(frozen=True)
class ListTask:
    source: str
    root: str                 # resolved local path or normalized URI
    scope: tuple | None       # `discover`'s scope; None: the whole source


@dataclass
class Listing:
    """What the driver keeps of the listing: one summary per task, in plan order."""

    dir: Path
    parts: list[dict]

    @property
    def units(self) -> int:
        return sum(p["units"] for p in self.parts)

    @property
    def rejects(self) -> int:
        return sum(p["rejects"] for p in self.parts)

    @property
    def files(self) -> int:
        return sum(p["files"] for p in self.parts)

    def digest(self) -> str:
        """Every unit's source, id and stamps (size + mtime of its files), in plan order: the cache key's inputs."""
        return hashlib.sha256(json.dumps([p["digest"] for p in self.parts]).encode()).hexdigest()

    def reject_paths(self) -> list[str]:
        return [p["rejects_path"] for p in self.parts if p["rejects"]]

    def inputs(self) -> dict:
        """stats.json's `inputs`: files, sample groups, shard metadata, by kind and by source."""
        by_kind, by_source = Counter(), Counter()
        for p in self.parts:
            by_kind.update(p["by_kind"])
            by_source[p["source"]] += p["files"]
        return {"files": self.files, "sample_groups": self.units,
                "metadata_files": sum(p["metadata"] for p in self.parts),  # img2dataset shard .parquet / _stats.json
                "by_kind": dict(sorted(by_kind.items())),
                "by_source": {k: v for k, v in sorted(by_source.items()) if v}}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


ROOT_SCHEMA = pa.schema([("name", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())])


def plan(sources: list[tuple[str, Path | str]], options: storage.StorageOptions | None, work: Path) -> list[ListTask]:
    """The listing tasks of every source, planned in this process (`run_listing` plans in Ray tasks)."""
    return [t for i, (name, root) in enumerate(sources) for t in plan_source(i, name, root, options, str(work))]


def plan_source(index: int, name: str, root, options: storage.StorageOptions | None, work: str) -> list[ListTask]:
    """One source's listing tasks: its root's top level read once (one directory read, or one delimiter
    listing on S3); the root's own files go to ``<work>/root-<index>.parquet`` ordered by sample key, and
    each chunk task names a row span of it, so a plan holds no file names, whatever the root holds."""
    try:
        if storage.is_remote(root):
            root = storage.normalize(root)
            entries, dirs = storage.list_top(root, options)
            names = [e.rel for e in entries]
        else:
            root = str(Path(storage.local_path(root)).resolve())
            entries, names, dirs = None, [], []
            with os.scandir(root) as it:  # links (to folders too) are checked as files, as os.walk does
                for e in it:
                    (dirs if e.is_dir(follow_symlinks=False) else names).append(e.name)
    except OSError:  # missing, not a folder, cannot be listed: the whole-source task says why
        return [ListTask(name, str(root), None)]
    if entries is not None:
        entries = sorted(entries, key=lambda e: e.rel)
    return _shares(name, root, sorted(names), sorted(dirs), entries, Path(work) / f"root-{index:06d}.parquet")


def _shares(name: str, root: str, names: list[str], dirs: list[str], entries, table_path: Path) -> list[ListTask]:
    stems = {d: d for d in dirs}
    remote = entries is not None
    if (not names and not dirs) or any(MI.manifest_format(n) or MI.shard_metadata(n, stems) for n in names) \
            or (remote and any(check_key(d) for d in dirs)):
        return [ListTask(name, root, None)]
    by_key: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        key = n[:-len(MI.STATS_SUFFIX)] if n.endswith(MI.STATS_SUFFIX) else n
        by_key.setdefault(key.split(".", 1)[0], []).append(i)
    keys = sorted(by_key)
    order = [i for k in keys for i in by_key[k]]  # rows by (sample key, name): a chunk of keys is a row span
    write_table(pa.table({"name": [names[i] for i in order],
                          "size": [entries[i].size for i in order] if remote else [None] * len(order),
                          "mtime_ns": [entries[i].mtime_ns for i in order] if remote else [None] * len(order)},
                         schema=ROOT_SCHEMA), table_path)
    ends = [0]
    for k in keys:
        ends.append(ends[-1] + len(by_key[k]))
    tasks = []
    skipped = [d for d in dirs if folder_problem(d)]  # hidden or reserved: one reject row each
    for s in range(0, max(len(keys), 1 if skipped else 0), ROOT_CHUNK):
        span = (str(table_path), ends[s] if keys else 0, ends[min(s + ROOT_CHUNK, len(keys))] if keys else 0)
        tasks.append(ListTask(name, root, ("rows", *span, remote, skipped if s == 0 else [])))
    tasks += [ListTask(name, root, ("tree", d)) for d in dirs if d not in skipped]
    return tasks


def scope_of(task: ListTask) -> tuple | None:
    """`discover`'s scope for a task: a chunk's row span of its root table read back as ("files", names,
    entries, skipped), names in sorted order."""
    sc = task.scope
    if not sc or sc[0] != "rows":
        return sc
    _, path, start, stop, remote, skipped = sc
    t = read_spans([[path, start, stop]], ROOT_SCHEMA).sort_by("name")
    names = t.column("name").to_pylist()
    entries = [storage.Entry(n, z, m) for n, z, m in zip(names, t.column("size").to_pylist(),
                                                         t.column("mtime_ns").to_pylist())] if remote else None
    return ("files", names, entries, skipped)


def run_listing(sources: list[tuple[str, Path | str]], *, max_file_bytes: int, work: Path,
                options: storage.StorageOptions | None = None) -> Listing:
    """List every source as Ray tasks into `work` (emptied first); Ray must be up."""
    import ray

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    planner = ray.remote(num_cpus=0.5)(plan_source)  # a root's names are read by a worker, not the driver
    tasks = [t for ts in ray.get([planner.remote(i, name, root, options, str(work))
                                  for i, (name, root) in enumerate(sources)]) for t in ts]
    task = ray.remote(num_cpus=0.5)(list_share)  # listing waits on the disk or the network more than the CPU
    parts = ray.get([task.remote(i, t, max_file_bytes, options, str(work)) for i, t in enumerate(tasks)])
    again = {t.source for t, p in zip(tasks, parts) if t.scope is not None and p["manifests"]}
    if again:  # a manifest below the root may take files of any share: those sources are listed whole
        final, seen = [], set()
        for t, p in zip(tasks, parts):
            if t.source not in again:
                final.append(p)
            elif t.source not in seen:
                seen.add(t.source)
                final.append(task.remote(len(tasks) + len(seen), ListTask(t.source, t.root, None), max_file_bytes,
                                         options, str(work)))
        for p in parts:
            if p["source"] in again:
                Path(p["units_path"]).unlink(missing_ok=True)
                Path(p["rejects_path"]).unlink(missing_ok=True)
        parts = [p if isinstance(p, dict) else ray.get(p) for p in final]
    for f in work.glob("root-*.parquet"):  # the planners' tables of root files: every chunk task has read its span
        f.unlink()
    return Listing(work, parts)


def list_share(index: int, task: ListTask, max_file_bytes: int, options, out_dir: str) -> dict:
    """One listing task: its share's units (sorted by id) and rejects as two parts; returns their counts."""
    found = discover([(task.source, task.root)], max_file_bytes=max_file_bytes, options=options, scope=scope_of(task))
    units = sorted(found.units, key=lambda u: u.unit_id)
    units_path, rejects_path = Path(out_dir) / f"units-{index:06d}.parquet", Path(out_dir) / f"rejects-{index:06d}.parquet"
    write_table(pa.Table.from_pylist([u.to_row() for u in units], schema=UNIT_SCHEMA), units_path)
    write_table(pa.Table.from_pylist(found.rejects, schema=REJECT_SCHEMA), rejects_path)
    return {"source": task.source, "units": len(units), "files": len(found.files), "rejects": len(found.rejects),
            "metadata": len(found.metadata), "manifests": found.manifests,
            "by_kind": dict(Counter(u.kind for u in units)),
            "digest": hashlib.sha256(json.dumps([[u.source, u.unit_id, u.stamps] for u in units]).encode()).hexdigest(),
            "units_path": str(units_path), "rejects_path": str(rejects_path)}


def read_units(spans: list[list]) -> pa.Table:
    """The units of [(unit part, start, stop)] spans (`spans.read_spans`)."""
    return read_spans(spans, UNIT_SCHEMA)
