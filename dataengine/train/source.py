"""Random access to the sequences of one split of a `dataengine run` output.

The manifest lists every shard with its row count, so the global index space
of (shard, row) pairs is known without reading a byte of data: that is what
lets WebDataset tars (sequential by nature) join a global permutation. A
shard is read whole, once, on first use (Parquet: only the `tokens`,
`target_spans` and `documents` columns, by name; WebDataset: `KEY.tokens.npy`
and `KEY.json`) and kept in a small LRU cache per worker. The task filter
reads the `task` column of every shard once at init (that column only).

The mixture is a plan the loader follows (`manifest["mixture"]`, written by
`dataengine run`): a train row of group `source/kind` counts `full[g] +
(rank_bin(id) < cut[g])` times per epoch. The global index space is the
virtual rows: every row repeated by its copies (0 copies: absent), so the
loader's permutation spreads a row's copies over the epoch. Rows of a group
missing from the plan, or of another split, count once. `id`, `source`,
`kind` (and `task` when filtering, `num_tokens` to check the plan) are read
once at init (Parquet: those columns only; WebDataset: `KEY.json`).
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
    task: np.ndarray | None = None  # str per row (only when a reader is asked for it)

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


def read_row_meta(path: Path, fmt: str, columns: list[str]) -> dict[str, np.ndarray]:
    """The named metadata columns of one shard (object arrays, None where absent), rows in shard order."""
    if fmt == "parquet":
        names = set(pq.read_schema(path).names)
        present = [c for c in columns if c in names]
        t = pq.read_table(path, columns=present)
        n = t.num_rows
        return {c: (np.asarray(t.column(c).to_pylist(), dtype=object) if c in names
                    else np.full(n, None, dtype=object)) for c in columns}
    metas, keys = {}, []
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key not in metas:
                keys.append(key)
                metas[key] = {}
            if ext == "json":
                metas[key] = json.loads(tar.extractfile(m).read())
    return {c: np.asarray([metas[k].get(c) for k in keys] + [None], dtype=object)[:-1] for c in columns}


MIXTURE_FORMAT = "dataengine.mixture/1"
MIXTURE_MODES = ("manifest", "none")


def mixture_plan(manifest: dict, mode: str = "manifest") -> dict | None:
    """`manifest["mixture"]`, checked, when `mode` is "manifest" and the manifest has one; else None."""
    if mode not in MIXTURE_MODES:
        raise RecipeError(f"data.mixture={mode!r} is unknown; use manifest (follow the mixture plan in "
                          "manifest.json) or none (every row once)")
    plan = manifest.get("mixture")
    if mode == "none" or plan is None:
        return None
    fix = "rerun `dataengine run`, or set data.mixture: none to read every row once"
    if not isinstance(plan, dict) or plan.get("format") != MIXTURE_FORMAT:
        got = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise RecipeError(f"manifest.json has a mixture of format {got!r}, this trainer reads "
                          f"{MIXTURE_FORMAT!r}; {fix}")
    bits, seed, groups = plan.get("rank_bits"), plan.get("seed"), plan.get("groups")
    if not isinstance(bits, int) or not 1 <= bits <= 32 or not isinstance(seed, int) \
            or not isinstance(plan.get("split"), str) or not isinstance(groups, dict):
        raise RecipeError(f"manifest.json mixture needs split (str), seed (int), rank_bits (1..32) and "
                          f"groups (a mapping); {fix}")
    for g, e in groups.items():
        full, cut = (e.get("full"), e.get("cut")) if isinstance(e, dict) else (None, None)
        if not (isinstance(full, int) and full >= 0 and isinstance(cut, int) and 0 <= cut <= 1 << bits):
            raise RecipeError(f"manifest.json mixture group {g!r}: full must be an int >= 0 and cut an int in "
                              f"[0, {1 << bits}], got full={full!r} cut={cut!r}; {fix}")
    return plan


def plan_copies(plan: dict, ids: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Copies per epoch of each row (`ids`, `groups` = "source/kind") under `plan`: full + (rank bin < cut)."""
    copies = np.ones(len(ids), dtype=np.int64)
    if not len(ids):
        return copies
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    entries = [plan["groups"].get(n) for n in names]
    planned = np.array([e is not None for e in entries])[inverse]
    if not planned.any():
        return copies
    full = np.array([e["full"] if e else 1 for e in entries], dtype=np.int64)[inverse[planned]]
    cut = np.array([e["cut"] if e else 0 for e in entries], dtype=np.int64)[inverse[planned]]
    chosen = ids[planned]
    if any(i is None for i in chosen):
        raise RecipeError("a row of a group in the manifest's mixture plan has no id; rerun `dataengine run`")
    # polars: imported only when a plan is followed
    from dataengine.curate.mixture import RANK_BITS, rank_bins, stable_rank

    bits = int(plan["rank_bits"])
    if bits == RANK_BITS:
        bins = rank_bins(list(chosen), int(plan["seed"]))
    else:
        bins = (stable_rank(list(chosen), int(plan["seed"])) >> np.uint64(64 - bits)).astype(np.int64)
    copies[planned] = full + (bins < cut)
    return copies


def task_matches(tasks: np.ndarray, patterns: list[str]) -> np.ndarray:
    """bool per row: its task matches one of the patterns (exact names or globs such as `*_instruct`)."""
    names, inverse = np.unique(tasks.astype(str), return_inverse=True)
    hit = np.array([any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names], dtype=bool)
    return hit[inverse] if len(names) else np.zeros(len(tasks), dtype=bool)


class ShardSource:
    """The sequences of one split and format, addressed by a global index 0..len-1."""

    def __init__(self, root: Path, split: str, fmt: str = "parquet", tasks: list[str] | None = None,
                 loss_on: str = "all", cache_shards: int = 64, vocab_size: int | None = None,
                 mixture: str = "manifest"):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        self.entries = [s for s in manifest["shards"] if s["split"] == split and s["format"] == fmt]
        if not self.entries:
            have = sorted({(s["split"], s["format"]) for s in manifest["shards"]})
            raise RecipeError(f"{self.root}/manifest.json has no {fmt} shards of split {split!r} (it has {have}); "
                              "set data.split / data.eval_split / data.format to one of those")
        self.split = split
        self.spans = loss_on == "targets"
        self.tasks = list(tasks) if tasks else None
        self.cache_shards = max(1, cache_shards)
        self.vocab_size = vocab_size
        self._cache: OrderedDict[int, ShardData] = OrderedDict()
        self.vocab_sha256 = manifest.get("vocab", {}).get("sha256")
        self.mixture = mixture
        self.has_plan = manifest.get("mixture") is not None     # the manifest carries a plan (followed or not)
        plan = mixture_plan(manifest, mixture)
        self.plan = plan if plan is not None and plan["split"] == split else None  # the plan this split follows
        self.rows: list[np.ndarray | None]   # per shard: row of each virtual row (None: every row once)
        if self.tasks is None and self.plan is None:
            self.rows = [None] * len(self.entries)
            counts = [int(s["sequences"]) for s in self.entries]
        else:
            self.rows = self._virtual_rows()
            counts = [len(r) for r in self.rows]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.counts)])
        if self.cum[-1] == 0:
            if self.tasks is not None:
                raise RecipeError(f"no {split} sequences with task in {self.tasks} in {self.root} (after the "
                                  "mixture plan); change data.tasks (or drop it to use every task)")
            raise RecipeError(f"the mixture plan in {self.root}/manifest.json gives no {split} row a copy; "
                              "rerun `dataengine run` with another mixture, or set data.mixture: none")

    def _meta(self, i: int, columns: list[str]) -> dict[str, np.ndarray]:
        entry = self.entries[i]
        path = self.root / entry["path"]
        if not path.is_file():
            raise RecipeError(f"shard {path} listed in the manifest is missing; rerun `dataengine run`")
        meta = read_row_meta(path, entry["format"], columns)
        n = len(meta[columns[0]])
        if n != int(entry["sequences"]):
            raise RecipeError(f"{path} holds {n} rows but the manifest says {entry['sequences']}; "
                              "the output folder was modified after `dataengine run`")
        return meta

    def _virtual_rows(self) -> list[np.ndarray]:
        """Per shard, the shard row of each virtual row: rows matching data.tasks, each repeated by its copies."""
        columns = (["task"] if self.tasks is not None else []) + \
            (["id", "source", "kind", "num_tokens"] if self.plan is not None else [])
        metas = [self._meta(i, columns) for i in range(len(self.entries))]
        keep = [task_matches(m["task"], self.tasks) if self.tasks is not None
                else np.ones(len(m[columns[0]]), dtype=bool) for m in metas]
        if self.plan is None:
            return [np.flatnonzero(k) for k in keep]
        cat = {c: np.concatenate([m[c] for m in metas]) for c in ("id", "source", "kind", "num_tokens")}
        groups = np.array([f"{s}/{k}" for s, k in zip(cat["source"], cat["kind"])], dtype=object)
        copies = plan_copies(self.plan, cat["id"], groups)
        self._check_plan(groups, copies, cat["num_tokens"])
        bounds = np.cumsum([0] + [len(k) for k in keep])
        return [np.repeat(np.flatnonzero(k), copies[a:b][k]) for k, a, b in zip(keep, bounds[:-1], bounds[1:])]

    def _check_plan(self, groups: np.ndarray, copies: np.ndarray, num_tokens: np.ndarray) -> None:
        """The plan's promise (`achieved_tokens`: copies x num_tokens over a group's rows) holds for these shards."""
        tokens = np.array([0 if t is None else int(t) for t in num_tokens], dtype=np.int64) * copies
        names, inverse = np.unique(groups.astype(str), return_inverse=True)
        got = dict(zip(names.tolist(), np.bincount(inverse, weights=tokens, minlength=len(names)).tolist()))
        for g, e in sorted(self.plan["groups"].items()):
            want = e.get("achieved_tokens")
            if want is not None and int(got.get(g, 0)) != int(want):
                raise RecipeError(f"{self.root}/manifest.json: the mixture plan promises {int(want):,} tokens of "
                                  f"group {g!r} per epoch, its {self.split} shards give {int(got.get(g, 0)):,}; "
                                  "the shards and the plan come from different runs: rerun `dataengine run`, "
                                  "or set data.mixture: none to read every row once")

    def __len__(self) -> int:
        return int(self.cum[-1])

    def fingerprint(self) -> str:
        """sha256 over the shards used (path, checksum, rows), the vocabulary, the task filter and, when the
        manifest has a mixture plan, the plan this split follows ("none": every row once)."""
        body = {"shards": [[s["path"], s.get("sha256"), s["sequences"]] for s in self.entries],
                "vocab": self.vocab_sha256, "tasks": self.tasks}
        if self.has_plan:  # a manifest without a plan keeps its fingerprint (and its checkpoints resumable)
            p = self.plan
            body["mixture"] = "none" if p is None else {
                "split": p["split"], "seed": p["seed"], "rank_bits": p["rank_bits"],
                "groups": {g: [e["full"], e["cut"]] for g, e in p["groups"].items()}}
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
        data = reader(path, self.spans, False)
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
        """Global (virtual) index -> (shard index, row inside the shard); a row's copies map to the same row."""
        shard = int(np.searchsorted(self.cum, gid, side="right") - 1)
        k = int(gid - self.cum[shard])
        rows = self.rows[shard]
        return shard, (k if rows is None else int(rows[k]))

    def document(self, gid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tokens int32, target bool, pos int32, start bool) of the row with global index `gid`."""
        shard, row = self.locate(gid)
        return self._load(shard).row(row)
