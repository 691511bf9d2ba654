"""report/digest.py on synthetic parts and shards: the sample is uniform and deterministic, the merges exact."""
import json

import numpy as np
import polars as pl
import pytest

from dataengine.report import digest as D


def _part(path, n, seed=0):
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["image", "text", "audio"], n)
    df = pl.DataFrame({"id": [f"s{seed}-{i:06d}" for i in range(n)], "source": "corpus",
                       "path": [f"f{i}.x" for i in range(n)], "kind": kinds,
                       "status": np.where(rng.random(n) < 0.9, "ok", "error"),
                       "stats": [json.dumps({"text_chars": int(v)}) for v in rng.integers(0, 100, n)],
                       "tokens": [[1, 2, 3]] * n}, schema_overrides={"tokens": pl.List(pl.Int32)})
    df.write_parquet(path)
    return df


@pytest.fixture
def vocab_path(tmp_path):
    from dataengine.vocab import Vocab

    class Tok:  # the smallest tokenizer a vocabulary can be built from
        vocab_size, family, modality = 16, "bpe", "text"

        def level_sizes(self):
            return [16]

        def card(self):
            return {}

    path = tmp_path / "vocab.json"
    Vocab.build({"text": Tok()}).save(path)
    return str(path)


def test_sample_is_a_deterministic_fraction_of_ok_rows(tmp_path, vocab_path):
    df = _part(tmp_path / "p.parquet", 20000)
    ok = df.filter(pl.col("status") == "ok")
    a = D.candidates_digest(str(tmp_path / "p.parquet"), 0.1, vocab_path, kept=[ok["id"][5]])
    b = D.candidates_digest(str(tmp_path / "p.parquet"), 0.1, vocab_path, kept=[])
    assert a["ok"] == ok.height and a["ok_by_kind"] == dict(ok.group_by("kind").len().rows())
    n = a["sample"].num_rows
    assert abs(n - 0.1 * ok.height) < 4 * np.sqrt(0.1 * 0.9 * ok.height)  # binomial, 4 sigma
    assert a["sample"].column("id").to_pylist() == b["sample"].column("id").to_pylist()  # same rows every time
    assert set(a["sample"].column("status").to_pylist()) == {"ok"}
    assert a["where"] == {ok["id"][5]: ["corpus", ok["path"][5], ok["kind"][5]]}
    full = D.candidates_digest(str(tmp_path / "p.parquet"), 1.0, vocab_path, kept=[])
    assert sorted(full["sample"].column("id").to_pylist()) == sorted(ok["id"].to_list())
    # a row's membership depends on its id alone: the sample of a sub-part is the sub-sample
    other = _part(tmp_path / "half.parquet", 10000).filter(pl.col("status") == "ok")  # other rows, some same ids
    half = D.candidates_digest(str(tmp_path / "half.parquet"), 0.1, vocab_path, kept=[])
    both = set(other["id"]) & set(ok["id"])
    assert len(both) > 5000
    assert set(half["sample"].column("id").to_pylist()) & both == set(a["sample"].column("id").to_pylist()) & both


def test_sequence_digests_merge_to_the_whole(tmp_path):
    rng = np.random.default_rng(1)
    frames = []
    for s in range(3):
        n = 300
        df = pl.DataFrame({"id": [f"id-{rng.integers(1e9):09d}" for _ in range(n)],
                           "kind": rng.choice(["image", "text"], n), "task": rng.choice(["a", "b"], n),
                           "num_tokens": rng.integers(5, 50, n).astype(np.int32)}).sort("id")
        (tmp_path / "parquet").mkdir(exist_ok=True)
        df.write_parquet(tmp_path / "parquet" / f"train-{s:06d}.parquet")
        frames.append(df.with_row_index("row").with_columns(pl.lit(f"parquet/train-{s:06d}.parquet").alias("shard")))
    shards = [f"parquet/train-{s:06d}.parquet" for s in range(3)]
    got = D.merge_sequences([D.sequences_digest(str(tmp_path), shards[:1]), D.sequences_digest(str(tmp_path), shards[1:])])
    whole = pl.concat(frames)
    for kind in ("image", "text"):
        part = whole.filter(pl.col("kind") == kind).sort("id")
        assert [(e["id"], e["shard"], e["row"]) for e in got["first"][kind]] == \
            [tuple(r) for r in part.select("id", "shard", "row").head(D.FIRST_IDS).rows()]
        assert got["last"][kind]["id"] == part["id"][-1]
    for task in ("a", "b"):
        v, c = D.length_counts({"sequences": got}, f"task:{task}")
        want = whole.filter(pl.col("task") == task)["num_tokens"].to_numpy()
        assert c.sum() == len(want) and (v * c).sum() == want.sum()
        expanded = np.repeat(v, c)
        from dataengine.report.tokens import _quantile

        for q in (0, 50, 95, 100):
            assert _quantile(v, c, q) == int(np.percentile(expanded, q, method="nearest"))
    v, c = D.length_counts({"sequences": got}, "all")
    assert c.sum() == whole.height
