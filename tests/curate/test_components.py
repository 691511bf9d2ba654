"""Connected components on Ray (dataengine.curate.components) against scipy's csgraph."""
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from dataengine.curate.components import (connected_components, connected_components_with_stats,
                                          partition_of, stable_hash)


def _names(rng, n, style):
    """Node strings with shared prefixes ('n1' < 'n10' < 'n100'), non-hex and non-ASCII characters."""
    i = rng.permutation(n)
    if style == "quality":  # what dedup passes: "<16 hex quality><item id>:<16 hex address>"
        q = rng.integers(0, 4, n)
        return [f"{q[j]:016x}item-{j}:{(int(j) * 2654435761) % 2**64:016x}" for j in i]
    if style == "mixed":
        return [("n", "N", "é", "node_z", "n-")[j % 5] + str(j) for j in i]
    return [f"{style}{j}" for j in i]


def _graph(seed):
    """Disjoint union of a sparse random graph, a 2000-node path, a star, a clique and
    self-loop-only nodes, with duplicate, reversed and self-loop edges, rows shuffled."""
    rng = np.random.default_rng(seed)
    names = _names(rng, 8000, "quality" if seed % 2 else "mixed")
    rand, path, star, clique, alone = (names[:3000], names[3000:5000], names[5000:5300],
                                       names[5300:5330], names[5330:5380])
    pairs = [(rand[x], rand[y]) for x, y in rng.integers(0, 3000, (2400, 2))]
    pairs += list(zip(path[:-1], path[1:]))
    pairs += [(star[0], leaf) for leaf in star[1:]]  # centre is a random node, usually not the min
    pairs += [(clique[x], clique[y]) for x in range(30) for y in range(x)]
    pairs += [(v, v) for v in alone] + [(v, v) for v in rand[:20]]
    pick = rng.choice(len(pairs), len(pairs) // 5, replace=False)
    pairs += [pairs[k] for k in pick[::2]] + [pairs[k][::-1] for k in pick[1::2]]
    order = rng.permutation(len(pairs))
    return [pairs[k][0] for k in order], [pairs[k][1] for k in order]


def _split(a, b, num_refs, rng, ray):
    cuts = np.sort(rng.integers(0, len(a) + 1, num_refs - 1))
    bounds = [0, *cuts.tolist(), len(a)]
    return [ray.put(pa.table({"a": pa.array(a[s:e], pa.string()), "b": pa.array(b[s:e], pa.string())}))
            for s, e in zip(bounds[:-1], bounds[1:])]


def _expected(a, b):
    """node -> smallest node string of its scipy component (np.unique sorts by code point)."""
    nodes, idx = np.unique(np.array(a + b), return_inverse=True)
    n, m = len(nodes), len(a)
    graph = coo_matrix((np.ones(m), (idx[:m], idx[m:])), shape=(n, n))
    _, comp = scipy_components(graph, directed=False)
    first = np.full(comp.max() + 1, n)
    np.minimum.at(first, comp, np.arange(n))  # nodes are sorted: smallest index = smallest string
    return dict(zip(nodes.tolist(), nodes[first[comp]].tolist()))


def _check(refs, ray, num_partitions):
    """Schema, partitioning and sort order of the result; returns {node: label}."""
    tables = ray.get(refs)
    assert len(tables) == num_partitions
    out = {}
    for j, t in enumerate(tables):
        assert t.schema == pa.schema([("node", pa.string()), ("label", pa.string())])
        nodes = t.column("node").to_pylist()
        assert nodes == sorted(nodes)
        assert (partition_of(t.column("node"), num_partitions) == j).all()
        out.update(zip(nodes, t.column("label").to_pylist()))
    assert sum(t.num_rows for t in tables) == len(out)  # every node exactly once
    return out


@pytest.mark.parametrize("seed,num_refs,num_partitions", [(0, 3, 4), (1, 5, 8), (2, 1, 3)])
def test_matches_scipy(ray_local, seed, num_refs, num_partitions):
    a, b = _graph(seed)
    refs = _split(a, b, num_refs, np.random.default_rng(seed), ray_local)
    out, stats = connected_components_with_stats(refs, num_partitions)
    got = _check(out, ray_local, num_partitions)
    want = _expected(a, b)
    assert got == want
    assert len(set(want.values())) > 100  # many components, not one giant one
    assert stats.rounds < 40


def test_label_is_smallest_string_not_number(ray_local):
    a = ["9", "10", "1a", "b", "B", "é", "z", "zz", "q", "q", "x"]
    b = ["10", "1a", "9", "B", "é", "z", "zz", "b", "q", "q", "x"]
    refs = [ray_local.put(pa.table({"a": a[:4], "b": b[:4]})),
            ray_local.put(pa.table({"a": a[4:], "b": b[4:]}))]
    got = _check(connected_components(refs, 2), ray_local, 2)
    assert got == {"9": "10", "10": "10", "1a": "10", "b": "B", "B": "B", "é": "B", "z": "B", "zz": "B",
                   "q": "q", "x": "x"}


def test_deterministic_across_inputs_and_partitions(ray_local):
    a, b = _graph(3)
    rng = np.random.default_rng(3)
    results = []
    for num_refs, num_partitions in [(1, 1), (4, 3), (7, 8)]:
        refs = _split(a, b, num_refs, rng, ray_local)
        results.append(_check(connected_components(refs, num_partitions), ray_local, num_partitions))
    assert results[0] == results[1] == results[2] == _expected(a, b)


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_rounds_stay_small_on_long_path(ray_local, monkeypatch, order):
    names = sorted(f"p{i:05d}" for i in range(2000))
    if order == "shuffled":
        names = [names[k] for k in np.random.default_rng(7).permutation(2000)]
    refs = _split(names[:-1], names[1:], 3, np.random.default_rng(0), ray_local)
    fetched = []
    real_get = ray_local.get

    def spy(obj, *args, **kwargs):  # the driver may only fetch digests, never edge tables
        value = real_get(obj, *args, **kwargs)
        fetched.extend(value if isinstance(value, list) else [value])
        return value

    monkeypatch.setattr(ray_local, "get", spy)
    out, stats = connected_components_with_stats(refs, 4)
    monkeypatch.undo()
    assert fetched and all(isinstance(d, tuple) and len(d) == 3 and all(isinstance(x, int) for x in d)
                           for d in fetched)
    assert stats.rounds == len(stats.edges) < 40
    assert stats.nodes == 2000 and stats.edges[0] == 1999
    got = _check(out, ray_local, 4)
    assert set(got.values()) == {"p00000"} and len(got) == 2000


def test_max_rounds_exceeded_names_graph_size(ray_local):
    names = [f"v{i}" for i in range(500)]
    refs = [ray_local.put(pa.table({"a": names[:-1], "b": names[1:]}))]
    with pytest.raises(RuntimeError, match="500 nodes and 499 distinct edges"):
        connected_components(refs, 2, max_rounds=3)


def test_empty_and_self_loop_only_inputs(ray_local):
    empty = pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())})
    loops = pa.table({"a": ["s", "t", "s"], "b": ["s", "t", "s"]})
    tables = ray_local.get(connected_components([ray_local.put(empty)], 3))
    assert [t.num_rows for t in tables] == [0, 0, 0]
    got = _check(connected_components([ray_local.put(empty), ray_local.put(loops)], 3), ray_local, 3)
    assert got == {"s": "s", "t": "t"}
    with pytest.raises(ValueError):
        connected_components([ray_local.put(empty)], 0)


def _reference_hash(s: str) -> int:
    """Pure-Python restatement of stable_hash's documented formula."""
    def mix(x):
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
        return x ^ (x >> 31)
    data = s.encode()
    return mix(mix(len(data)) ^ (sum(mix((k << 8) | c) for k, c in enumerate(data)) % 2**64))


def test_partition_of_is_stable_and_vectorised_correctly():
    strings = ["", "a", "ab", "ba", "é", "n1", "n10", "0000000000000003item-7:00000000deadbeef", "x" * 300]
    arr = pa.array(["pad", *strings], pa.string()).slice(1)  # a non-zero array offset
    want = np.array([_reference_hash(s) for s in strings], dtype=np.uint64)
    for form in (arr, pa.chunked_array([arr[:4], arr[4:]]), arr.cast(pa.large_string()), pl.Series(strings)):
        assert (stable_hash(form) == want).all()
    # pinned: partitions must not move between machines, processes or library versions
    assert int(stable_hash(pa.array(["a"]))[0]) == 10397085232093601426
    assert partition_of(pa.array(strings), 8).tolist() == (want % np.uint64(8)).astype(int).tolist()
    counts = np.bincount(partition_of(pa.array([f"item{i}" for i in range(80000)]), 8), minlength=8)
    assert counts.min() > 9500 and counts.max() < 10500
    with pytest.raises(ValueError):
        stable_hash(pa.array(["a", None]))
