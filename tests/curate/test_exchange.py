"""Shuffle files (dataengine.curate.exchange): buckets round-trip, combine levels give the same buckets,
and the task runner keeps a bounded window in flight."""
import numpy as np
import pyarrow as pa
import pytest

from dataengine.curate import exchange

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64()), ("sig", pa.list_(pa.uint32(), 3))])


def _table(rng, n):
    sig = rng.integers(0, 2**32, (n, 3), dtype=np.uint64).astype(np.uint32)
    return pa.table({"k": [f"k{rng.integers(1000)}" for _ in range(n)], "v": rng.integers(0, 99, n),
                     "sig": exchange.fixed_list(sig, 3)}, schema=SCHEMA), sig


def test_buckets_round_trip_with_empty_ones_and_fixed_lists(tmp_path):
    rng = np.random.default_rng(0)
    (a, sig_a), (b, _) = _table(rng, 5), _table(rng, 0)
    chunked = pa.concat_tables([a.slice(0, 2), a.slice(2)])  # several chunks: still one batch per bucket
    path = tmp_path / "m" / "000000.arrow"
    exchange.write_buckets(path, [chunked, b, a.slice(1, 1)], SCHEMA)
    assert exchange.num_buckets(path) == 3
    got = exchange.read_bucket([path], 0, SCHEMA)
    assert got.equals(a) and exchange.read_bucket([path], 1, SCHEMA).num_rows == 0
    assert (exchange.from_fixed_list(got.column("sig"), 3, np.uint32) == sig_a).all()
    assert exchange.read_bucket([path, path], 2).column("v").to_pylist() == [a.column("v")[1].as_py()] * 2
    assert exchange.read_table(path).schema == SCHEMA
    with pytest.raises(ValueError, match="holds 3 buckets; bucket 3"):
        exchange.read_bucket([path], 3, SCHEMA)
    assert [p.name for p in path.parent.iterdir()] == ["000000.arrow"]  # no temp file left


def test_a_failed_write_leaves_no_file(tmp_path):
    bad = pa.table({"k": ["x"], "v": ["not a number"], "sig": exchange.fixed_list(np.zeros((1, 3), np.uint32), 3)})
    with pytest.raises(pa.ArrowInvalid):
        exchange.write_buckets(tmp_path / "000000.arrow", [bad], SCHEMA)
    assert list(tmp_path.iterdir()) == []


def test_combine_groups_hold_the_same_rows_per_bucket(tmp_path, ray_local):
    rng = np.random.default_rng(1)
    maps = tmp_path / "maps"
    for m in range(7):
        exchange.write_buckets(exchange.path_of(maps, m), [_table(rng, int(rng.integers(0, 4)))[0] for _ in range(4)],
                               SCHEMA)
    assert exchange.levels(7, 3) == [[0, 1, 2], [3, 4, 5], [6]] and exchange.levels(7, 7) == []
    folder, count = exchange.merged(maps, 7, 4, SCHEMA, window=2, fan_in=3)
    assert count == 3 and folder.endswith("combined")
    assert exchange.merged(maps, 7, 4, SCHEMA, window=2, fan_in=8) == (str(maps), 7)
    for b in range(4):
        direct = exchange.read_bucket(exchange.paths(maps, 7), b, SCHEMA)
        combined = exchange.read_bucket(exchange.paths(folder, count), b, SCHEMA)
        assert combined.equals(direct)  # contiguous groups: even the order is kept


def test_run_tasks_keeps_a_bounded_window_and_folds_every_result(ray_local):
    @ray_local.remote(num_cpus=0.1)
    def square(i):
        return i * i

    in_flight, peak, got = set(), [0], {}

    def submit(i):
        ref = square.remote(i)
        in_flight.add(i)
        peak[0] = max(peak[0], len(in_flight))
        return ref

    def fold(i, v):
        in_flight.discard(i)
        got[i] = v

    exchange.run_tasks(submit, 40, fold, window=3)
    assert got == {i: i * i for i in range(40)} and peak[0] == 3
    exchange.run_tasks(submit, 0, fold, window=3)  # nothing to run: returns at once
