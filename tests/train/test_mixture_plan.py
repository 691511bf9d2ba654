"""The trainer's loader follows the mixture plan of manifest.json (rows written once, copies made at load time).

Shards come from the real writer and the plan from the real planner (`plan_from_histogram` over train
tokens per group and rank bin), as `dataengine run` does; what is measured is what the loader yields.
"""
import json
import shutil
from collections import Counter, defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataengine.curate.mixture import MixtureConfig, copies_from_plan, rank_bins
from dataengine.errors import RecipeError
from dataengine.train.config import load_config
from dataengine.train.loader import PackedLoader, WorkerStream, epoch_order
from dataengine.train.source import ShardSource
from train.synth_shards import MIXTURE_GROUPS, write_mixture_shards, write_synthetic_shards

TEMPERATURE = MixtureConfig(policy="temperature", temperature=2.0, max_epochs=4.0)
WEIGHTS = MixtureConfig(policy="weights", max_epochs=4.0,
                        weights={"web/text": 0.2, "demo/image": 0.5, "demo/audio": 0.15, "lab/sensor": 0.15})


@pytest.fixture(scope="module")
def temp_out(tmp_path_factory):
    return write_mixture_shards(tmp_path_factory.mktemp("mix-temp") / "out", TEMPERATURE)


@pytest.fixture(scope="module")
def weights_out(tmp_path_factory):
    return write_mixture_shards(tmp_path_factory.mktemp("mix-weights") / "out", WEIGHTS, webdataset=False)


def _mixture(out):
    return json.loads((out / "manifest.json").read_text())["mixture"]


def _rows(out, split="train"):
    """Test-side truth, read straight from the Parquet shards: per (shard, row) id, group, tokens."""
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [s for s in manifest["shards"] if s["split"] == split and s["format"] == "parquet"]
    table = {}
    for i, e in enumerate(entries):
        t = pq.read_table(out / e["path"], columns=["id", "source", "kind", "tokens"]).to_pylist()
        for j, r in enumerate(t):
            table[(i, j)] = (r["id"], f"{r['source']}/{r['kind']}", r["tokens"])
    return table


def _plan_copies(out, rows):
    """Copies per (shard, row) by the plan's rule, computed with the curate library (not the loader)."""
    mix = _mixture(out)
    names = sorted(mix["groups"])
    plan = {"names": names, "full": [mix["groups"][g]["full"] for g in names],
            "cut": [mix["groups"][g]["cut"] for g in names]}
    keys = sorted(rows)
    planned = [k for k in keys if rows[k][1] in mix["groups"]]
    copies = dict.fromkeys(keys, 1)
    got = copies_from_plan([rows[k][1] for k in planned], rank_bins([rows[k][0] for k in planned], mix["seed"]), plan)
    copies.update(zip(planned, got.tolist()))
    return copies


class Recorder:
    """A source that records the tokens of every document (global index) the loader reads."""

    def __init__(self, source):
        self.source, self.tokens = source, {}

    def __len__(self):
        return len(self.source)

    def document(self, gid):
        doc = self.source.document(gid)
        self.tokens[gid] = len(doc[0])
        return doc


def _one_epoch(src, world, workers, seed=7, context=64):
    """Run every (rank, worker) stream through one finite pass of epoch 0; per stream, {gid: tokens read}."""
    reads = []
    for r in range(world):
        for w in range(workers):
            rec = Recorder(src)
            s = WorkerStream(rec, context=context, batch_size=4, seed=seed, rank=r, world=world, worker=w,
                             workers=workers, finite=True)
            while s.next_batch() is not None:
                pass
            assert set(rec.tokens) == set(epoch_order(len(src), seed, 0, r, world, w, workers).tolist())
            reads.append(rec.tokens)
    return reads


@pytest.mark.parametrize("which", ["temperature", "weights"])
def test_loader_epoch_meets_the_plans_target_shares(temp_out, weights_out, which):
    out = temp_out if which == "temperature" else weights_out
    mix, rows = _mixture(out), _rows(out)
    src = ShardSource(out, "train", "parquet")
    reads = _one_epoch(src, world=2, workers=2)
    assert sum(len(x) for x in reads) == len(src)  # disjoint slices, each index read once
    tokens = Counter()
    for read in reads:
        for gid, n in read.items():
            tokens[rows[src.locate(gid)][1]] += n
    total = sum(tokens.values())
    target = {g: e["target_tokens"] for g, e in mix["groups"].items()}
    avail = {g: e["available_tokens"] for g, e in mix["groups"].items()}
    for g in MIXTURE_GROUPS:
        assert tokens[g] == mix["groups"][g]["achieved_tokens"]  # the plan's promise, to the token
        assert abs(tokens[g] / total - target[g] / sum(target.values())) <= 0.02, g
    # the policy does move the mixture away from the natural one (else the check above proves little)
    assert max(abs(tokens[g] / total - avail[g] / sum(avail.values())) for g in MIXTURE_GROUPS) > 0.05
    epochs = {g: e["epochs"] for g, e in mix["groups"].items()}
    assert min(epochs.values()) < 0.9 and max(epochs.values()) > 1.3  # one group down-, one up-sampled
    assert len(src) != len(rows)


@pytest.mark.parametrize("which", ["temperature", "weights"])
def test_down_sampled_rows_and_copies_per_row(temp_out, weights_out, which):
    out = temp_out if which == "temperature" else weights_out
    rows = _rows(out)
    copies = _plan_copies(out, rows)
    src = ShardSource(out, "train", "parquet")
    virtual = Counter(src.locate(g) for g in range(len(src)))
    assert all(virtual[k] == c for k, c in copies.items())      # each row as often as the plan says
    assert set(virtual) <= set(rows)
    distinct, planned_rows, dropped = Counter(), Counter(), Counter()
    for k, c in copies.items():
        planned_rows[rows[k][1]] += c >= 1
        dropped[rows[k][1]] += c == 0
    for k in virtual:
        distinct[rows[k][1]] += 1
    assert distinct == planned_rows
    assert any(dropped.values())                                 # some group is really down-sampled
    assert all(distinct[g] > 0 for g in MIXTURE_GROUPS)


def test_every_copy_yields_the_rows_tokens_and_copies_are_spread(temp_out):
    rows = _rows(temp_out)
    src = ShardSource(temp_out, "train", "parquet")
    wds = ShardSource(temp_out, "train", "webdataset")          # the plan read from KEY.json gives the same rows
    assert len(wds) == len(src) and all(np.array_equal(a, b) for a, b in zip(src.rows, wds.rows))
    gids = defaultdict(list)
    for g in range(len(src)):
        gids[src.locate(g)].append(g)
    multi = {k: v for k, v in gids.items() if len(v) >= 2}
    assert len(multi) > 100
    for k, v in multi.items():
        for g in v:
            assert src.document(g)[0].tolist() == rows[k][2]
        assert wds.document(v[-1])[0].tolist() == rows[k][2]
    order = epoch_order(len(src), 7, 0)
    where = np.empty(len(src), dtype=np.int64)
    where[order] = np.arange(len(src))
    adjacent, spread = 0, []
    for v in multi.values():
        pos = np.sort(where[v])
        adjacent += bool(np.all(np.diff(pos) == 1))
        spread.append((pos[-1] - pos[0]) / len(src))
    assert adjacent / len(multi) <= 0.05            # a random permutation puts ~2/N of pairs side by side
    assert np.mean(spread) > 0.25                   # copies land apart (uniform pairs: mean gap 1/3)


def test_mixture_none_reads_every_row_once(temp_out):
    rows = _rows(temp_out)
    src = ShardSource(temp_out, "train", "parquet", mixture="none")
    assert len(src) == len(rows)
    assert sorted(src.locate(g) for g in range(len(src))) == sorted(rows)
    reads = _one_epoch(src, world=1, workers=1)
    assert set(reads[0]) == set(range(len(rows)))
    assert load_config(None, ["data.mixture=none"]).data.mixture == "none"
    assert load_config(None, []).data.mixture == "manifest"
    with pytest.raises(RecipeError, match="data.mixture"):
        load_config(None, ["data.mixture=copies"])
    with pytest.raises(RecipeError, match="data.mixture"):
        ShardSource(temp_out, "train", "parquet", mixture="copies")


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 3), (4, 2)])
def test_every_copy_once_per_epoch_across_ranks_and_workers(temp_out, world, workers):
    src = ShardSource(temp_out, "train", "parquet")
    n = len(src)
    for epoch in (0, 1):
        flat = np.concatenate([epoch_order(n, 7, epoch, r, world, w, workers)
                               for r in range(world) for w in range(workers)])
        assert sorted(flat.tolist()) == list(range(n))
    reads = _one_epoch(src, world, workers)
    assert sum(len(x) for x in reads) == n and set().union(*reads) == set(range(n))
    per_row = Counter(src.locate(g) for read in reads for g in read)
    assert per_row == Counter(src.locate(g) for g in range(n))


def test_other_splits_unplanned_groups_and_task_filter(tmp_path, temp_out):
    val = ShardSource(temp_out, "val", "parquet")               # the plan is for split "train" only
    assert len(val) == len(_rows(temp_out, "val"))
    out = write_mixture_shards(tmp_path / "out", TEMPERATURE, unplanned=("lab/sensor",), webdataset=False)
    rows = _rows(out)
    src = ShardSource(out, "train", "parquet")
    assert "lab/sensor" not in _mixture(out)["groups"]
    per_row = Counter(src.locate(g) for g in range(len(src)))
    sensor = [k for k in rows if rows[k][1] == "lab/sensor"]
    assert len(sensor) == MIXTURE_GROUPS["lab/sensor"][0] and all(per_row[k] == 1 for k in sensor)
    copies = _plan_copies(out, rows)
    image = ShardSource(out, "train", "parquet", tasks=["image"])  # the task filter AND the copies
    assert len(image) == sum(c for k, c in copies.items() if rows[k][1] == "demo/image")
    assert {rows[image.locate(g)][1] for g in range(len(image))} == {"demo/image"}


def test_fingerprint_names_the_mixture_and_a_foreign_plan_is_refused(tmp_path, temp_out):
    follow = ShardSource(temp_out, "train", "parquet")
    none = ShardSource(temp_out, "train", "parquet", mixture="none")
    assert follow.fingerprint() != none.fingerprint()
    with pytest.raises(RecipeError, match="fingerprint"):
        PackedLoader(none, context=32, batch_size=2, seed=0).load_state_dict(
            PackedLoader(follow, context=32, batch_size=2, seed=0).state_dict())
    plain = write_synthetic_shards(tmp_path / "plain")              # no plan: both settings read the same
    assert ShardSource(plain, "train", "parquet").fingerprint() == \
        ShardSource(plain, "train", "parquet", mixture="none").fingerprint()
    # a plan that does not fit the shards (another seed: other rows cut) is an error naming the fix
    other = tmp_path / "other"
    shutil.copytree(temp_out, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["mixture"]["seed"] = 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecipeError, match="data.mixture: none"):
        ShardSource(other, "train", "parquet")
    assert len(ShardSource(other, "train", "parquet", mixture="none")) == len(none)
    manifest["mixture"]["format"] = "dataengine.mixture/9"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecipeError, match="format"):
        ShardSource(other, "train", "parquet")
