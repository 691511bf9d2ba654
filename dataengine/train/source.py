"""Random access to the sequences of one split of a `dataengine run` output.

The manifest lists every shard with its row count, so the global index space
of (shard, row) pairs is known without reading a byte of data: that is what
lets WebDataset tars (sequential by nature) join a global permutation. A
shard is read whole, once, on first use (Parquet: only the `tokens`,
`target_spans` and, when filtering, `task` columns, by name; WebDataset:
`KEY.tokens.npy` and `KEY.json`) and kept in a small LRU cache per worker.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataengine.errors import RecipeError
from dataengine.train.pack import document_positions, target_mask


@dataclass
class ShardData:
    tokens: np.ndarray    # int32, all rows end to end
    offsets: np.ndarray   # int64 [rows + 1]
    target: np.ndarray    # bool, like tokens: carries loss
    pos: np.ndarray       # int32, like tokens: position inside its document
    start: np.ndarray     # bool, like tokens: first token of a document
    task: np.ndarray | None = None  # str per row (read only when filtering by task)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.target[a:b], self.pos[a:b], self.start[a:b]


def read_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise RecipeError(f"{root} has no manifest.json; pass --shards the --output folder of `dataengine run`")
    return json.loads(path.read_text())


def _flat_structs(arr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, start, end) of every element of a list<struct<start, end, ...>> column."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    rows = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = pc.list_flatten(arr)
    start = pc.struct_field(inner, "start").to_numpy(zero_copy_only=False).astype(np.int64)
    end = pc.struct_field(inner, "end").to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, start, end


def _from_lists(tokens: pa.Array, spans: pa.Array | None, task: pa.Array | None,
                documents: pa.Array | None = None) -> ShardData:
    """Flat arrays from the list columns; `documents` (pre-packed rows) marks where each document starts."""
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    lengths = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(tokens).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if spans is None:
        target = np.ones(len(flat), dtype=bool)
    else:
        target = target_mask(lengths, *_flat_structs(spans))
    starts = offsets[:-1][lengths > 0]
    if documents is not None:
        rows, start, _ = _flat_structs(documents)
        starts = np.concatenate([starts, offsets[rows] + start])
        starts = starts[starts < len(flat)]
    pos, first = document_positions(len(flat), starts)
    tasks = None if task is None else np.asarray(task.to_pylist(), dtype=object)
    return ShardData(flat, offsets, target, pos.astype(np.int32), first, tasks)


def read_parquet_shard(path: Path, spans: bool, task: bool) -> ShardData:
    names = set(pq.read_schema(path).names)
    docs = "documents" in names  # rows pre-packed by the engine (compose/pack.py)
    cols = ["tokens"] + (["target_spans"] if spans else []) + (["task"] if task else []) + (["documents"] if docs else [])
    t = pq.read_table(path, columns=cols)
    return _from_lists(t.column("tokens"), t.column("target_spans") if spans else None,
                       t.column("task") if task else None, t.column("documents") if docs else None)


def read_webdataset_shard(path: Path, spans: bool, task: bool) -> ShardData:
    """One tar written by `dataengine.shards.writer.write_webdataset`, rows in tar order."""
    tokens, metas, keys = {}, {}, []
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            data = tar.extractfile(m).read()
            if key not in tokens and key not in metas:
                keys.append(key)
            if ext == "tokens.npy":
                tokens[key] = np.load(io.BytesIO(data), allow_pickle=False)
            elif ext == "json":
                metas[key] = json.loads(data)
    missing = [k for k in keys if k not in tokens]
    if missing:
        raise RecipeError(f"{path}: sample {missing[0]!r} has no tokens.npy; rewrite the shards with `dataengine run`")
    tok_arr = pa.array([tokens[k].astype(np.int32) for k in keys], type=pa.list_(pa.int32()))
    span_arr = task_arr = doc_arr = None
    if any("documents" in metas.get(k, {}) for k in keys):
        doc_type = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())]))
        doc_arr = pa.array([[{"start": d["start"], "end": d["end"]} for d in metas[k].get("documents") or []]
                            for k in keys], type=doc_type)
    if spans:
        span_type = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32())]))
        span_arr = pa.array([metas[k].get("target_spans") or [] for k in keys], type=span_type)
    if task:
        task_arr = pa.array([metas[k].get("task") for k in keys], type=pa.string())
    return _from_lists(tok_arr, span_arr, task_arr, doc_arr)


def task_matches(tasks: np.ndarray, patterns: list[str]) -> np.ndarray:
    """bool per row: its task matches one of the patterns (exact names or globs such as `*_instruct`)."""
    names, inverse = np.unique(tasks.astype(str), return_inverse=True)
    hit = np.array([any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names], dtype=bool)
    return hit[inverse] if len(names) else np.zeros(len(tasks), dtype=bool)


class ShardSource:
    """The sequences of one split and format, addressed by a global index 0..len-1."""

    def __init__(self, root: Path, split: str, fmt: str = "parquet", tasks: list[str] | None = None,
                 loss_on: str = "all", cache_shards: int = 64, vocab_size: int | None = None):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        self.entries = [s for s in manifest["shards"] if s["split"] == split and s["format"] == fmt]
        if not self.entries:
            have = sorted({(s["split"], s["format"]) for s in manifest["shards"]})
            raise RecipeError(f"{self.root}/manifest.json has no {fmt} shards of split {split!r} (it has {have}); "
                              "set data.split / data.eval_split / data.format to one of those")
        self.spans = loss_on == "targets"
        self.tasks = list(tasks) if tasks else None
        self.cache_shards = max(1, cache_shards)
        self.vocab_size = vocab_size
        self._cache: OrderedDict[int, ShardData] = OrderedDict()
        self.vocab_sha256 = manifest.get("vocab", {}).get("sha256")
        if self.tasks is None:
            self.rows = [None] * len(self.entries)       # None: every row of the shard
            counts = [int(s["sequences"]) for s in self.entries]
        else:
            self.rows = [np.flatnonzero(task_matches(self._load(i).task, self.tasks)) for i in range(len(self.entries))]
            counts = [len(r) for r in self.rows]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.counts)])
        if self.cum[-1] == 0:
            raise RecipeError(f"no {split} sequences with task in {self.tasks} in {self.root}; "
                              "change data.tasks (or drop it to use every task)")

    def __len__(self) -> int:
        return int(self.cum[-1])

    def fingerprint(self) -> str:
        """sha256 over the shards used (path, checksum, rows), the vocabulary and the task filter."""
        body = {"shards": [[s["path"], s.get("sha256"), s["sequences"]] for s in self.entries],
                "vocab": self.vocab_sha256, "tasks": self.tasks}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def _load(self, i: int) -> ShardData:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        entry = self.entries[i]
        path = self.root / entry["path"]
        if not path.is_file():
            raise RecipeError(f"shard {path} listed in the manifest is missing; rerun `dataengine run`")
        reader = read_parquet_shard if entry["format"] == "parquet" else read_webdataset_shard
        data = reader(path, self.spans, self.tasks is not None)
        n = len(data.offsets) - 1
        if n != int(entry["sequences"]):
            raise RecipeError(f"{path} holds {n} rows but the manifest says {entry['sequences']}; "
                              "the output folder was modified after `dataengine run`")
        if self.vocab_size is not None and data.tokens.size and int(data.tokens.max()) >= self.vocab_size:
            raise RecipeError(f"{path} has token ids >= the vocabulary size {self.vocab_size}; "
                              "the shards and vocab.json come from different runs")
        self._cache[i] = data
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return data

    def locate(self, gid: int) -> tuple[int, int]:
        """Global index -> (shard index, row inside the shard)."""
        shard = int(np.searchsorted(self.cum, gid, side="right") - 1)
        k = int(gid - self.cum[shard])
        rows = self.rows[shard]
        return shard, (k if rows is None else int(rows[k]))

    def document(self, gid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tokens int32, target bool, pos int32, start bool) of the row with global index `gid`."""
        shard, row = self.locate(gid)
        return self._load(shard).row(row)
