import numpy as np
import pytest
import torch

from dataengine.errors import RecipeError
from dataengine.train.loader import PackedLoader, WorkerStream, epoch_order
from dataengine.train.source import ShardSource


class Logged:
    """A source that records which sequences were read."""

    def __init__(self, source):
        self.source, self.seen = source, set()

    def __len__(self):
        return len(self.source)

    def document(self, gid):
        self.seen.add(gid)
        return self.source.document(gid)


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 3), (4, 2)])
def test_every_sample_once_per_epoch_across_ranks_and_workers(synth, world, workers):
    src = ShardSource(synth, "train", "parquet")
    n = len(src)
    for epoch in (0, 1):
        slices = [epoch_order(n, 7, epoch, r, world, w, workers) for r in range(world) for w in range(workers)]
        flat = np.concatenate(slices)
        assert sorted(flat.tolist()) == list(range(n))
    assert not np.array_equal(epoch_order(n, 7, 0), epoch_order(n, 7, 1))  # reshuffled every epoch
    # and the packed streams read exactly their slice in one pass
    seen = []
    for r in range(world):
        for w in range(workers):
            log = Logged(src)
            s = WorkerStream(log, context=40, batch_size=2, seed=7, rank=r, world=world, worker=w, workers=workers,
                             finite=True)
            while s.next_batch() is not None:
                pass
            assert log.seen == set(epoch_order(n, 7, 0, r, world, w, workers).tolist())
            seen.append(log.seen)
    assert sum(len(x) for x in seen) == n and set().union(*seen) == set(range(n))


def _take(loader, k):
    return [next(loader) for _ in range(k)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_loader_state_round_trips_in_process(synth):
    src = ShardSource(synth, "train", "parquet")
    make = lambda: PackedLoader(src, context=32, batch_size=3, seed=1, workers=3, processes=False)  # noqa: E731
    a = make()
    _take(a, 7)
    state = a.state_dict()
    rest = _take(a, 8)
    b = make()
    b.load_state_dict(state)
    _same(_take(b, 8), rest)
    assert b.state_dict() == a.state_dict()


def test_worker_processes_give_the_same_batches_and_exact_state(synth):
    src = ShardSource(synth, "train", "parquet")
    ref = PackedLoader(src, context=32, batch_size=2, seed=3, workers=2, processes=False)
    expect = _take(ref, 9)
    par = PackedLoader(src, context=32, batch_size=2, seed=3, workers=2, processes=True)
    got = _take(par, 5)                      # the DataLoader has prefetched beyond batch 5 by now
    state = par.state_dict()
    resumed = PackedLoader(src, context=32, batch_size=2, seed=3, workers=2, processes=False)
    resumed.load_state_dict(state)           # restarting at an odd batch rotates the round-robin
    _same(got + _take(resumed, 4), expect)


def test_webdataset_and_parquet_give_identical_batches(synth):
    kw = dict(context=32, batch_size=2, seed=5, workers=1)
    pq_b = _take(PackedLoader(ShardSource(synth, "train", "parquet", loss_on="targets"), **kw), 6)
    wds_b = _take(PackedLoader(ShardSource(synth, "train", "webdataset", loss_on="targets"), **kw), 6)
    _same(pq_b, wds_b)


def test_ranks_get_disjoint_data_and_state_is_checked(synth):
    src = ShardSource(synth, "train", "parquet")
    r0 = PackedLoader(src, context=32, batch_size=2, seed=0, rank=0, world=2)
    r1 = PackedLoader(src, context=32, batch_size=2, seed=0, rank=1, world=2)
    assert not torch.equal(next(r0)["inputs"], next(r1)["inputs"])
    with pytest.raises(RecipeError, match="rank"):
        r1.load_state_dict(r0.state_dict())
    other = ShardSource(synth, "train", "parquet", tasks=["chat"])
    with pytest.raises(RecipeError, match="fingerprint"):
        PackedLoader(other, context=32, batch_size=2, seed=0).load_state_dict(
            PackedLoader(src, context=32, batch_size=2, seed=0).state_dict())


def test_task_filter_with_globs(synth):
    chat = ShardSource(synth, "train", "parquet", tasks=["chat"])
    media = ShardSource(synth, "train", "parquet", tasks=["*a*"])  # image, audio, chat
    assert len(chat) == 24 and len(media) == 72
    with pytest.raises(RecipeError, match="data.tasks"):
        ShardSource(synth, "train", "parquet", tasks=["nope"])
    with pytest.raises(RecipeError, match="data.split"):
        ShardSource(synth, "test", "parquet")
