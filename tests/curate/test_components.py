"""Connected components on Ray (dataengine.curate.components) against scipy's csgraph."""
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from dataengine.curate import exchange
from dataengine.curate.components import (OUTPUT_SCHEMA, connected_components, connected_components_with_stats,
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


def _files(tables, folder):
    """Edge files as curation writes them (one Arrow IPC bucket each)."""
    out = exchange.paths(folder, len(tables))
    for t, f in zip(tables, out):
        exchange.write_table(f, t, pa.schema([("a", pa.string()), ("b", pa.string())]))
    return out


def _split(a, b, num_files, rng, folder):
    cuts = np.sort(rng.integers(0, len(a) + 1, num_files - 1))
    bounds = [0, *cuts.tolist(), len(a)]
    return _files([pa.table({"a": pa.array(a[s:e], pa.string()), "b": pa.array(b[s:e], pa.string())})
                   for s, e in zip(bounds[:-1], bounds[1:])], folder)


def _expected(a, b):
    """node -> smallest node string of its scipy component (np.unique sorts by code point)."""
    nodes, idx = np.unique(np.array(a + b), return_inverse=True)
    n, m = len(nodes), len(a)
    graph = coo_matrix((np.ones(m), (idx[:m], idx[m:])), shape=(n, n))
    _, comp = scipy_components(graph, directed=False)
    first = np.full(comp.max() + 1, n)
    np.minimum.at(first, comp, np.arange(n))  # nodes are sorted: smallest index = smallest string
    return dict(zip(nodes.tolist(), nodes[first[comp]].tolist()))


def _check(label_files, num_partitions):
    """Schema, partitioning and sort order of the result; returns {node: label}."""
    tables = [exchange.read_table(f, OUTPUT_SCHEMA) for f in label_files]
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


@pytest.mark.parametrize("seed,num_files,num_partitions,fan_in", [(0, 3, 4, 256), (1, 5, 8, 2), (2, 1, 3, 256)])
def test_matches_scipy(ray_local, tmp_path, seed, num_files, num_partitions, fan_in):
    a, b = _graph(seed)
    files = _split(a, b, num_files, np.random.default_rng(seed), tmp_path / "in")
    out, stats = connected_components_with_stats(files, num_partitions, tmp_path / "work", fan_in=fan_in)
    got = _check(out, num_partitions)
    want = _expected(a, b)
    assert got == want
    assert len(set(want.values())) > 100  # many components, not one giant one
    assert stats.rounds < 40


def test_label_is_smallest_string_not_number(ray_local, tmp_path):
    a = ["9", "10", "1a", "b", "B", "é", "z", "zz", "q", "q", "x"]
    b = ["10", "1a", "9", "B", "é", "z", "zz", "b", "q", "q", "x"]
    files = _files([pa.table({"a": a[:4], "b": b[:4]}), pa.table({"a": a[4:], "b": b[4:]})], tmp_path / "in")
    got = _check(connected_components(files, 2, tmp_path / "work"), 2)
    assert got == {"9": "10", "10": "10", "1a": "10", "b": "B", "B": "B", "é": "B", "z": "B", "zz": "B",
                   "q": "q", "x": "x"}


def test_deterministic_across_inputs_and_partitions(ray_local, tmp_path):
    a, b = _graph(3)
    rng = np.random.default_rng(3)
    results = []
    for num_files, num_partitions in [(1, 1), (4, 3), (7, 8)]:
        files = _split(a, b, num_files, rng, tmp_path / f"in{num_files}")
        results.append(_check(connected_components(files, num_partitions, tmp_path / f"w{num_files}"),
                              num_partitions))
    assert results[0] == results[1] == results[2] == _expected(a, b)


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_rounds_stay_small_on_long_path(ray_local, tmp_path, monkeypatch, order):
    names = sorted(f"p{i:05d}" for i in range(2000))
    if order == "shuffled":
        names = [names[k] for k in np.random.default_rng(7).permutation(2000)]
    files = _split(names[:-1], names[1:], 3, np.random.default_rng(0), tmp_path / "in")
    fetched = []
    real_get = ray_local.get

    def spy(obj, *args, **kwargs):  # the driver may only fetch digests and counts, never edge tables
        value = real_get(obj, *args, **kwargs)
        fetched.extend(value if isinstance(value, list) else [value])
        return value

    monkeypatch.setattr(ray_local, "get", spy)
    out, stats = connected_components_with_stats(files, 4, tmp_path / "work")
    monkeypatch.undo()
    digests = [d for d in fetched if isinstance(d, tuple)]
    assert digests and all(len(d) == 3 and all(isinstance(x, int) for x in d) for d in digests)
    assert all(isinstance(d, int) for d in fetched if not isinstance(d, tuple))
    assert stats.rounds == len(stats.edges) < 40
    assert stats.nodes == 2000 and stats.edges[0] == 1999
    got = _check(out, 4)
    assert set(got.values()) == {"p00000"} and len(got) == 2000
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["labels"]  # rounds removed as they end


def test_max_rounds_exceeded_names_graph_size(ray_local, tmp_path):
    names = [f"v{i}" for i in range(500)]
    files = _files([pa.table({"a": names[:-1], "b": names[1:]})], tmp_path / "in")
    with pytest.raises(RuntimeError, match="500 nodes and 499 distinct edges"):
        connected_components(files, 2, tmp_path / "work", max_rounds=3)


def test_empty_and_self_loop_only_inputs(ray_local, tmp_path):
    empty = pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())})
    loops = pa.table({"a": ["s", "t", "s"], "b": ["s", "t", "s"]})
    e, el = _files([empty], tmp_path / "e"), _files([empty, loops], tmp_path / "el")
    tables = [exchange.read_table(f, OUTPUT_SCHEMA) for f in connected_components(e, 3, tmp_path / "w1")]
    assert [t.num_rows for t in tables] == [0, 0, 0]
    got = _check(connected_components(el, 3, tmp_path / "w2"), 3)
    assert got == {"s": "s", "t": "t"}
    with pytest.raises(ValueError):
        connected_components(e, 0, tmp_path / "w3")


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
