"""Connected components of a string-labelled graph whose edge list lives in files (`curate.exchange`).

Algorithm: alternating Large-Star / Small-Star rounds of Kiveris, Lattanzi, Mirrokni, Rastogi and
Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014). With G(u) the
neighbours of u, G+(u) = G(u) | {u}, and nodes ordered as strings (UTF-8 bytes = code points =
Polars' default string sort):

  Large-Star  every node u replaces each edge (u, v) with v > u by (v, m), m = min G+(u)
  Small-Star  every node u with N = {v in G(u) : v < u} non-empty replaces its edges to N by
              (v, m) for v in N | {u}, m = min N

Both keep every component connected and only ever move edges towards smaller nodes; alternated,
they reach, in O(log^2 n) rounds (a 2000-node path: 18-24 here), a fixpoint where every
component is a star centred on its smallest node. That centre is the label, so the caller's
encoded order ("<quality bits><id>...") decides which node of a component is the representative.

Execution, every step a Ray task exchanging files; the driver holds folder names and a few
integers per round (never one handle per mapper and reducer):
  map      one task per edge file: rows -> (lo, hi), lo < hi (self-loops dropped), keyed by the
           node whose neighbourhood the next step needs (Large: both ends, Small: hi), written as
           P buckets by `partition_of(key)` (a combine level when there are many map files).
  reduce   one task per partition: dedupe, apply the star step per key, write the new edge
           partition and return a digest (count, sum mod 2**64 of a 64-bit hash, #keys) of its
           *input* edges. All rows of a key meet in one reducer, so the sum of the P digests is
           exactly the digest of the round's input edge set E_r.
  stop     when E_{r-2}, E_{r-1}, E_r have equal digests: a Large and a Small round in a row
           changed nothing, which is the fixpoint (3 rounds after the stars formed).
  label    star edges keyed by leaf (hi) meet every node of the input (keyed by node):
           label(leaf) = centre; centres and nodes seen only in self-loops label themselves.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate import exchange
from dataengine.curate.keys import split_by

TASK_CPUS = 0.5  # small, so the shuffle fits beside other work on a 2-CPU cluster
OUTPUT_SCHEMA = pa.schema([("node", pa.string()), ("label", pa.string())])
_KEYED = {"key": pl.String, "other": pl.String}

_U = np.uint64


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (NumPy array arithmetic wraps mod 2**64)."""
    x = x + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def stable_hash(nodes: pa.Array | pa.ChunkedArray | pl.Series) -> np.ndarray:
    """uint64 hash of each string that depends on its UTF-8 bytes only (no seed, no library hash):
    h(s) = mix64(mix64(len s) ^ sum_k mix64(k * 256 + s[k]) mod 2**64). Vectorised over the
    Arrow data buffer; the only Python-level work is per call, not per string or byte."""
    if isinstance(nodes, pl.Series):
        nodes = nodes.to_arrow()
    if isinstance(nodes, pa.ChunkedArray):
        nodes = nodes.combine_chunks()
    if not (pa.types.is_string(nodes.type) or pa.types.is_large_string(nodes.type)
            or pa.types.is_string_view(nodes.type)):
        raise TypeError(f"node ids must be strings, got {nodes.type}")
    if nodes.null_count:
        raise ValueError("node ids must not be null")
    n = len(nodes)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    arr = nodes.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=8 * arr.offset)
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8)[offsets[0]:offsets[-1]] if buf else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)  # byte index in its string
    per_byte = _mix64((pos.astype(np.uint64) << _U(8)) | data.astype(np.uint64))
    csum = np.concatenate([np.zeros(1, np.uint64), np.cumsum(per_byte, dtype=np.uint64)])
    sums = csum[starts + lengths] - csum[starts]  # wrapping differences = per-string sums
    return _mix64(sums ^ _mix64(lengths.astype(np.uint64)))


def partition_of(nodes: pa.Array | pa.ChunkedArray | pl.Series, num_partitions: int) -> np.ndarray:
    """Partition index (int64 in [0, num_partitions)) of each node string: `stable_hash` mod P.
    The same on every machine, process and library version."""
    return (stable_hash(nodes) % _U(num_partitions)).astype(np.int64)


# ---- task bodies (module level so Ray pickles them by reference) -------------------------------

EDGE_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])
KEYED_SCHEMA = pa.schema([("key", pa.string()), ("other", pa.string())])
NODE_SCHEMA = pa.schema([("key", pa.string())])


def _frame(table: pa.Table, schema: dict) -> pl.DataFrame:
    return pl.from_arrow(table) if table.num_rows else pl.DataFrame(schema=schema)


def _shuffle(src: str, mode: str, num_partitions: int, out: str) -> int:
    """Map: key the rows of one edge file for `mode` and write them as P buckets.
    mode "large": (lo, hi) under both ends; "small": under hi; "nodes": every distinct node."""
    df = pl.from_arrow(exchange.read_table(src, EDGE_SCHEMA))
    if mode == "nodes":
        keyed = pl.concat([df.select(key="a"), df.select(key="b")]).unique()
    else:
        a, b = pl.col("a"), pl.col("b")
        edges = df.select(lo=pl.when(a <= b).then(a).otherwise(b),
                          hi=pl.when(a <= b).then(b).otherwise(a)).filter(pl.col("lo") != pl.col("hi"))
        keyed = edges.select(key="hi", other="lo")
        if mode == "large":
            keyed = pl.concat([keyed, edges.select(key="lo", other="hi")])
    table = keyed.to_arrow()
    exchange.write_buckets(out, split_by(table, partition_of(keyed["key"], num_partitions), num_partitions),
                           NODE_SCHEMA if mode == "nodes" else KEYED_SCHEMA)
    return keyed.height


def _edge_digest(lo: pl.Series, hi: pl.Series) -> int:
    """Order-independent digest of a set of (lo, hi) edges: sum mod 2**64 of a 64-bit edge hash."""
    return int(_mix64(_mix64(stable_hash(lo)) ^ stable_hash(hi)).sum(dtype=np.uint64))


def _star(mode: str, folder: str, count: int, j: int, out: str) -> tuple[int, int, int]:
    """Reduce: one Large- or Small-Star step over the keys of partition j; writes the new edges."""
    df = _frame(exchange.read_bucket(exchange.paths(folder, count), j, KEYED_SCHEMA), _KEYED).unique()
    key, other = pl.col("key"), pl.col("other")
    own = df.filter(key < other) if mode == "large" else df  # each input edge counted once
    lo, hi = (own["key"], own["other"]) if mode == "large" else (own["other"], own["key"])
    digest = (own.height, _edge_digest(lo, hi), df["key"].n_unique())
    m = df.group_by("key").agg(m=other.min())
    if mode == "large":  # m = min G+(u); larger neighbours hang off m
        m = m.with_columns(m=pl.when(pl.col("m") < key).then("m").otherwise(key))
        new = df.join(m, on="key").filter(other > key).select(a="m", b="other")
    else:  # every row has other < key: N = smaller neighbours, m = min N; N | {u} hang off m
        joined = df.join(m, on="key")
        new = pl.concat([joined.filter(other != pl.col("m")).select(a="m", b="other"),
                         m.select(a="m", b="key")])
    exchange.write_table(out, new.unique().to_arrow(), EDGE_SCHEMA)
    return digest


def _label(nodes_at: tuple[str, int], leaves_at: tuple[str, int], j: int, out: str) -> int:
    """Final reduce: every node of partition j with its component's smallest node."""
    nodes = _frame(exchange.read_bucket(exchange.paths(*nodes_at), j, NODE_SCHEMA), {"key": pl.String}).unique()
    leaves = _frame(exchange.read_bucket(exchange.paths(*leaves_at), j, KEYED_SCHEMA), _KEYED).unique()
    if leaves["key"].is_duplicated().any():  # (leaf, centre) of the converged stars
        raise RuntimeError("connected_components: a node has two centres; the star fixpoint was not reached")
    labels = (nodes.join(leaves, on="key", how="left")
              .select(node="key", label=pl.coalesce("other", "key")).sort("node"))
    exchange.write_table(out, labels.to_arrow(), OUTPUT_SCHEMA)
    return labels.height


@functools.cache
def _tasks() -> SimpleNamespace:
    """The Ray remote functions, built on first use so importing this module needs no Ray."""
    import ray

    remote = ray.remote(num_cpus=TASK_CPUS)
    return SimpleNamespace(shuffle=remote(_shuffle), star=remote(_star), label=remote(_label))


# ---- driver ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComponentStats:
    rounds: int               # star rounds run (Large + Small), the confirming no-op rounds included
    nodes: int                # nodes with at least one edge to another node
    edges: tuple[int, ...]    # distinct non-loop edges entering each round


def _keyed(t, files: list[str], mode: str, p: int, folder: str, window: int, fan_in: int) -> tuple[str, int]:
    """Every edge file keyed for `mode` into p buckets; (folder, count) the reducers read."""
    exchange.run_tasks(lambda i: t.shuffle.remote(files[i], mode, p, exchange.path_of(folder, i)), len(files),
                       window=window)
    return exchange.merged(folder, len(files), p, NODE_SCHEMA if mode == "nodes" else KEYED_SCHEMA,
                           window=window, fan_in=fan_in)


def connected_components_with_stats(edge_files: list[str], num_partitions: int, work, *, max_rounds: int = 64,
                                    window: int = 64, fan_in: int = exchange.FAN_IN) -> tuple[list[str], ComponentStats]:
    """`connected_components`, plus how many rounds it took and the edge count of each round."""
    import shutil

    if not isinstance(num_partitions, int) or num_partitions < 1:
        raise ValueError(f"num_partitions must be a positive int, got {num_partitions!r}")
    t, p, work = _tasks(), num_partitions, Path(work)
    edges, history, nodes = [str(f) for f in edge_files], [], 0
    for r in range(max_rounds):
        mode = "large" if r % 2 == 0 else "small"
        rnd = work / f"round-{r:03d}"
        at = _keyed(t, edges, mode, p, str(rnd / "keyed"), window, fan_in)
        out = exchange.paths(rnd / "edges", p)
        total = [0, 0, 0]

        def fold(_, d):
            total[0] += d[0]
            total[1] = (total[1] + d[1]) % 2**64
            total[2] += d[2]
        exchange.run_tasks(lambda j: t.star.remote(mode, *at, j, out[j]), p, fold, window=window)
        history.append((total[0], total[1]))
        if r == 0:  # a Large round: its keys are all nodes with a non-loop edge
            nodes = total[2]
        shutil.rmtree(rnd / "keyed", ignore_errors=True)
        if r:
            shutil.rmtree(work / f"round-{r - 1:03d}", ignore_errors=True)  # its edges were this round's input
        edges = out
        if history[-1][0] == 0 or (len(history) >= 3 and history[-3] == history[-2] == history[-1]):
            break
    else:
        raise RuntimeError(f"connected_components: no fixpoint after {max_rounds} rounds on a graph of "
                           f"{nodes} nodes and {history[0][0]} distinct edges; raise max_rounds")
    nodes_at = _keyed(t, [str(f) for f in edge_files], "nodes", p, str(work / "nodes"), window, fan_in)
    leaves_at = _keyed(t, edges, "small", p, str(work / "leaves"), window, fan_in)
    labels = exchange.paths(work / "labels", p)
    exchange.run_tasks(lambda j: t.label.remote(nodes_at, leaves_at, j, labels[j]), p, window=window)
    for d in ("nodes", "leaves", f"round-{len(history) - 1:03d}"):
        shutil.rmtree(work / d, ignore_errors=True)
    return labels, ComponentStats(rounds=len(history), nodes=nodes, edges=tuple(c for c, _ in history))


def connected_components(edge_files: list[str], num_partitions: int, work, *, max_rounds: int = 64,
                         window: int = 64, fan_in: int = exchange.FAN_IN) -> list[str]:
    """edge_files: Arrow IPC files (`exchange.write_table`) of tables with string columns `a`, `b`
    (undirected edges; self-loops and duplicates allowed; a node appearing only in a self-loop is its
    own component). `work`: a scratch folder for the rounds. Returns `num_partitions` files of
    pyarrow.Table(node: string, label: string) in ``<work>/labels``: every node that appears in any
    edge exactly once across all of them, partitioned by a stable hash of `node` (the partition of a
    node is `partition_of(node, num_partitions)`), rows sorted by node; label = smallest node of its
    component."""
    return connected_components_with_stats(edge_files, num_partitions, work, max_rounds=max_rounds, window=window,
                                           fan_in=fan_in)[0]
