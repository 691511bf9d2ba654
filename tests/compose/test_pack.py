import json

import numpy as np
import pyarrow as pa
import pytest

from dataengine.compose.pack import pack_sequences, pack_table, plan_packs


def make_rows(lengths, split="train", seed=0):
    """Sequence rows whose tokens encode (doc index, position), with a target on each row's second half."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(lengths):
        rid = f"{rng.integers(1 << 60):016x}{k:08x}"
        tokens = (np.arange(n) + 1000 * (k + 1)).astype(np.int32)
        rows.append({
            "id": rid, "split": split, "source": "s", "task": "text", "kind": "text", "modalities": ["text"],
            "tokens": tokens.tolist(), "num_tokens": n,
            "spans": [{"modality": "text", "start": 1, "end": n - 1}],
            "target_spans": [{"start": n // 2, "end": n}],
            "side": json.dumps([{"modality": "text", "tokenizer": "text", "doc": k}]),
            "lineage": [{"path": f"f{k}.txt", "sha256": "x", "role": "document"}],
            "meta": json.dumps({"k": k}), "content_hash": f"h{k}",
        })
    return rows


def check_packs(rows, packed, length):
    by_id = {r["id"]: r for r in rows}
    seen = []
    for p in packed:
        docs = p["documents"]
        # boundaries tile the row exactly, in order
        assert docs[0]["start"] == 0 and docs[-1]["end"] == len(p["tokens"]) == p["num_tokens"]
        assert all(a["end"] == b["start"] for a, b in zip(docs, docs[1:]))
        assert len(p["tokens"]) <= length or len(docs) == 1
        toks = np.asarray(p["tokens"])
        shifted = [t for d in docs for t in by_id[d["id"]]["target_spans"]]
        for d in docs:
            src = by_id[d["id"]]
            np.testing.assert_array_equal(toks[d["start"]:d["end"]], src["tokens"])
        # every target span of the pack is its document's span moved by the document's start
        expected = [{"start": t["start"] + d["start"], "end": t["end"] + d["start"]}
                    for d in docs for t in by_id[d["id"]]["target_spans"]]
        assert p["target_spans"] == expected and len(shifted) == len(expected)
        for s, d in zip(p["spans"], docs):
            src = by_id[d["id"]]["spans"][0]
            np.testing.assert_array_equal(toks[s["start"]:s["end"]],
                                          np.asarray(by_id[d["id"]]["tokens"])[src["start"]:src["end"]])
        assert [x["doc"] for x in json.loads(p["side"])] == [json.loads(by_id[d["id"]]["side"])[0]["doc"]
                                                              for d in docs]
        seen += [d["id"] for d in docs]
    assert sorted(seen) == sorted(by_id)  # each document exactly once


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packing_invariants(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=200).tolist() + [150, 300]  # two longer than the target
    rows = make_rows(lengths, seed=seed)
    packed = pack_sequences(rows, 100)
    check_packs(rows, packed, 100)
    assert len(packed) < len(rows) / 2  # it actually packs
    long = [p for p in packed if p["num_tokens"] > 100]
    assert sorted(p["num_tokens"] for p in long) == [150, 300]
    assert all(len(p["documents"]) == 1 and p["id"] in {r["id"] for r in rows} for p in long)


def test_packing_is_deterministic_and_order_free():
    rows = make_rows(np.random.default_rng(4).integers(3, 40, size=80).tolist())
    a = pack_sequences(rows, 64)
    assert a == pack_sequences(rows[::-1], 64)
    assert len({p["id"] for p in a}) == len(a)


def test_first_fit_in_id_order():
    # 6 opens a pack; 5 does not fit beside it; 4 fills the first; 3 and 2 join the second; 11 is alone
    assert plan_packs([6, 5, 4, 3, 2, 11], 10) == [[0, 2], [1, 3, 4], [5]]
    assert plan_packs([4, 4, 4], 10) == [[0, 1], [2]]
    assert plan_packs([], 10) == []


def test_splits_never_share_a_pack_and_packed_rows_summarise_their_documents():
    rows = make_rows([10] * 6, "train") + make_rows([10] * 6, "val", seed=9)
    packed = pack_sequences(rows, 30)
    split_of = {r["id"]: r["split"] for r in rows}
    for p in packed:
        assert {split_of[d["id"]] for d in p["documents"]} == {p["split"]}
        meta = json.loads(p["meta"])
        assert p["task"] == "packed" and p["source"] == "s" and p["content_hash"] == "mixed"
        assert [d["content_hash"] for d in meta["documents"]] == [
            next(r["content_hash"] for r in rows if r["id"] == d["id"]) for d in p["documents"]]
        assert [d["meta"]["k"] for d in meta["documents"]] == [json.loads(next(
            r["meta"] for r in rows if r["id"] == d["id"]))["k"] for d in p["documents"]]
        assert len(p["lineage"]) == len(p["documents"])


def test_pack_table_keeps_the_schema_and_adds_documents():
    rows = make_rows([5, 7, 9, 30])
    table = pa.Table.from_pylist(rows)
    out = pack_table(table, 25)
    assert out.schema.names == table.schema.names + ["documents"]
    assert sum(len(d) for d in out.column("documents").to_pylist()) == 4
    check_packs(rows, out.to_pylist(), 25)
