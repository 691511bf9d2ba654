"""Curation on Ray tasks over parts equals the in-memory reference, for any number of parts.

Synthetic candidates (no decode, no tokenizer): text documents and image code grids with
planted exact copies (same content hash) and near copies (a few tokens changed), rows that
fail a filter, and decode rejects, cut into 1, 3 or 7 parts. The distributed path must drop
exactly the rows the in-memory `curate.apply.curate` drops, for the same reasons, keep the
same split, and write byte-identical shards whatever the number of parts.
"""
import hashlib
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_factory import tiny_recipe
from dataengine.curate.apply import curate
from dataengine.curate.distributed import curate_and_write, write_rejects
from dataengine.curate.mixture import copies_from_plan, rank_bins
from dataengine.pipeline.tokenize_stage import RESULT_SCHEMA
from dataengine.recipe import load_recipe
from train.synth_shards import synthetic_vocab


def _row(vocab, i: int, kind: str, body: np.ndarray, content: str, chars: int, group: str) -> dict:
    sp = vocab.special
    mod = "text" if kind == "text" else "image"
    toks = np.concatenate([[sp("<|bos|>"), sp(f"<|{mod}_start|>")], body, [sp(f"<|{mod}_end|>"), sp("<|eos|>")]])
    rid = hashlib.sha256(f"{group}{i}".encode()).hexdigest()[:24]
    stats = {"text_chars": chars} if kind == "text" else {"image_width": 64 + i % 3, "image_height": 64}
    return {"id": rid, "source": group, "task": kind, "kind": kind, "modalities": [mod],
            "tokens": toks.astype(np.int32).tolist(), "num_tokens": len(toks),
            "spans": [{"modality": mod, "start": 2, "end": 2 + len(body)}], "target_spans": [],
            "side": "[]", "lineage": [{"path": f"{rid}.{kind}", "sha256": content, "role": "media"},
                                      {"path": f"{rid}.txt", "sha256": "c", "role": "caption"}],
            "meta": "{}", "content_hash": content, "documents": None, "stats": json.dumps(stats),
            "status": "ok", "path": f"{rid}.{kind}", "stage": "", "reason": "", "detail": "",
            "unit_id": rid, "unit_rows": 1}


def _interleaved_row(vocab, i: int, text: np.ndarray, picture: np.ndarray) -> dict:
    sp = vocab.special
    toks = np.concatenate([[sp("<|bos|>"), sp("<|image_start|>")], picture, [sp("<|image_end|>"), sp("<|text_start|>")],
                           text, [sp("<|text_end|>"), sp("<|eos|>")]])
    row = _row(vocab, i, "text", text, f"h{i}", 200, "c")
    return {**row, "kind": "interleaved", "task": "interleaved", "modalities": ["image", "text"],
            "tokens": toks.astype(np.int32).tolist(), "num_tokens": len(toks), "path": f"{row['id']}.jsonl#L1",
            "lineage": [{"path": f"{row['id']}.jsonl#L1", "sha256": f"h{i}", "role": "record"}],
            "spans": [{"modality": "image", "start": 2, "end": 2 + len(picture)},
                      {"modality": "text", "start": 4 + len(picture), "end": 4 + len(picture) + len(text)}]}


def make_candidates(vocab, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for kind, n, length in (("text", 120, 160), ("image", 90, 64)):
        lo, hi = vocab.tokenizer_range("text" if kind == "text" else "image")
        for i in range(n):
            body = rng.integers(lo, hi, length)
            rows.append(_row(vocab, len(rows), kind, body, f"h{len(rows)}", 50 + i, "a" if i % 3 else "b"))
            if i % 4 == 0:   # an exact copy: same content, another name
                rows.append(_row(vocab, len(rows), kind, body, f"h{len(rows) - 1}", 50 + i, "a"))
            if i % 5 == 0:   # a near copy: a few tokens changed
                near = body.copy()
                flip = rng.choice(length, 2 if kind == "image" else 6, replace=False)
                near[flip] = rng.integers(lo, hi, len(flip))
                rows.append(_row(vocab, len(rows), kind, near, f"h{len(rows)}", 40 + i, "a"))
    for r in rows[::17]:     # below the filter's min
        r["stats"] = json.dumps({**json.loads(r["stats"]), "text_chars": 3})
    lo, hi = vocab.tokenizer_range("text")
    ilo, ihi = vocab.tokenizer_range("image")
    for i in range(6):       # interleaved: a copy with the same picture is a near-dup, another picture is not
        text, pic = rng.integers(lo, hi, 120), rng.integers(ilo, ihi, 64)
        edited = text.copy()
        edited[rng.choice(120, 3, replace=False)] = rng.integers(lo, hi, 3)
        for body, picture in ((text, pic), (edited, pic), (text, rng.integers(ilo, ihi, 64))):
            rows.append(_interleaved_row(vocab, len(rows), body, picture))
    rows.append({**rows[0], "id": "", "status": "reject", "stage": "decode", "reason": "corrupt", "detail": "bad",
                 "path": "broken.png", "unit_id": "z" * 24, "content_hash": "", "tokens": [], "num_tokens": 0})
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("dist")
    vocab = synthetic_vocab()
    recipe = load_recipe(tiny_recipe(base, output={"shard_rows": 40, "val_fraction": 0.2},
                                     curate={"filters": {"text_chars": {"min": 10}},
                                             "mixture": {"policy": "temperature", "temperature": 2.0}}))
    cand = make_candidates(vocab)
    runs = {}
    for n_parts, fan_in in ((1, 256), (3, 256), (7, 256), (7, 2)):
        key = n_parts if fan_in == 256 else f"{n_parts}/fan_in={fan_in}"  # fan_in 2: combine levels everywhere
        d = base / f"p{n_parts}-{fan_in}"
        (d / "parts").mkdir(parents=True)
        vocab.save(d / "vocab.json")
        cuts = np.linspace(0, cand.num_rows, n_parts + 1).astype(int)
        if n_parts == 7:  # the last part holds only the decode reject: a part with no candidate at all
            cuts[-2] = cand.num_rows - 1
        paths = []
        for k in range(n_parts):
            paths.append(str(d / "parts" / f"part-{k:06d}.parquet"))
            pq.write_table(cand.slice(cuts[k], cuts[k + 1] - cuts[k]), paths[-1])
        written = curate_and_write(paths, recipe, d, cpus=2, fan_in=fan_in)
        counts = write_rejects(written.rejects, d / "rejects.parquet")
        runs[key] = (d, written, counts)
    return {"cand": cand, "recipe": recipe, "runs": runs}


def test_same_drops_reasons_and_split_as_the_in_memory_reference(setup):
    ok = setup["cand"].filter(pa.compute.equal(setup["cand"].column("status"), "ok"))
    ref = curate(ok, setup["recipe"])
    d, written, _ = setup["runs"][3]
    seq = pl.read_parquet(d / "parquet" / "*.parquet")
    rej = pl.read_parquet(d / "rejects.parquet")
    paths = dict(zip(ok.column("id").to_pylist(), ok.column("path").to_pylist()))
    ref_drops = {(paths[r["id"]], r["stage"], r["reason"]) for r in ref.drops.iter_rows(named=True)
                 if r["stage"] != "mixture"}
    got = {(r["path"], r["stage"], r["reason"]) for r in rej.iter_rows(named=True)
           if r["stage"] in ("filter", "dedup") and r["reason"] != "media_dropped"}
    assert {r for r in ref_drops if r[1] == "dedup"}, "the planted copies must be found"
    assert got == ref_drops
    inter = [r for r in got if r[0].endswith(".jsonl#L1")]
    assert len(inter) == 6 and {r[2] for r in inter} == {"near_duplicate"}  # the edited copies, not other pictures
    planted_exact = {r for r in got if r[2] == "exact_duplicate"}
    assert len(planted_exact) >= 40 and {r for r in got if r[2] == "near_duplicate"}
    ref_seq = pl.from_arrow(ref.sequences.select(["id", "split", "dup_cluster"])).filter(
        ~pl.col("id").str.contains("-r"))
    mine = seq.select(["id", "split", "dup_cluster"]).filter(~pl.col("id").str.contains("-r"))
    ref_mixture_drops = set(ref.drops.filter(pl.col("stage") == "mixture")["id"])
    assert set(mine["id"]) == set(ref_seq["id"]) | ref_mixture_drops  # the plan leaves rows out; they are written
    assert not rej.filter(pl.col("stage") == "mixture").height
    both = ref_seq.join(mine, on="id", suffix="_d")
    assert (both["split"] == both["split_d"]).all() and (both["dup_cluster"] == both["dup_cluster_d"]).all()
    # every dedup detail names a kept id, one that no filter or dedup dropped
    dropped_ids = {i for i, p in paths.items() if (p, "dedup", "exact_duplicate") in got or
                   (p, "dedup", "near_duplicate") in got or any((p, "filter", r[2]) in got for r in got)}
    for detail in rej.filter((pl.col("stage") == "dedup") & (pl.col("reason") != "media_dropped"))["detail"]:
        kept_id = detail.split("kept id ")[1].split()[0].rstrip(":")
        assert kept_id in paths and kept_id not in dropped_ids
    # captions leave with their media (interleaved records have none)
    assert rej.filter(pl.col("reason") == "media_dropped").height == rej.filter(
        pl.col("stage").is_in(["filter", "dedup", "mixture"]) & (pl.col("reason") != "media_dropped")
        & ~pl.col("path").str.ends_with(".jsonl#L1")).height


def test_mixture_meets_the_reference_targets(setup):
    ok = setup["cand"].filter(pa.compute.equal(setup["cand"].column("status"), "ok"))
    ref = curate(ok, setup["recipe"]).report["mixture"]
    _, written, _ = setup["runs"][3]
    mine = written.report["mixture"]
    assert set(mine["groups"]) == set(ref["groups"])
    for g, r in ref["groups"].items():
        m = mine["groups"][g]
        assert m["available_tokens"] == r["available_tokens"] and m["target_tokens"] == r["target_tokens"]
        assert abs(m["achieved_tokens"] - m["target_tokens"]) <= 0.02 * m["target_tokens"] + 200
    d, _, _ = setup["runs"][3]
    seq = pl.read_parquet(d / "parquet" / "*.parquet").filter(pl.col("split") == "train")
    assert seq["id"].n_unique() == seq.height and (seq["repeat"] == 0).all()  # every item written once
    plan = written.mixture
    names = sorted(plan["groups"])
    flat = {"names": names, "full": [plan["groups"][g]["full"] for g in names],
            "cut": [plan["groups"][g]["cut"] for g in names]}
    groups = (seq["source"] + "/" + seq["kind"]).to_list()
    copies = copies_from_plan(groups, rank_bins(seq["id"], plan["seed"]), flat)
    read = seq.with_columns(group=pl.Series(groups), copies=pl.Series(copies)).group_by("group").agg(
        (pl.col("num_tokens").cast(pl.Int64) * pl.col("copies")).sum().alias("tokens"),
        (pl.col("copies") == 0).sum().alias("left_out"))
    for g, tokens, left_out in read.iter_rows():  # the plan's promise is what the loader will read
        assert tokens == plan["groups"][g]["achieved_tokens"] and left_out == plan["groups"][g]["rows_left_out"]
    assert any(m["rows_left_out"] for m in plan["groups"].values()) and any(m["full"] >= 2 for m in plan["groups"].values())


def test_shards_and_rejects_are_byte_identical_for_any_number_of_parts(setup):
    def fingerprint(n):
        d, written, counts = setup["runs"][n]
        return ([(e["path"], e["sha256"], e["sequences"]) for e in sorted(written.shards, key=lambda e: e["path"])],
                (d / "rejects.parquet").read_bytes(), counts, json.dumps(written.report, sort_keys=True))
    one = fingerprint(1)
    assert one[0] and all(n <= 40 for _, _, n in one[0])
    assert fingerprint(3) == one and fingerprint(7) == one
    assert fingerprint("7/fan_in=2") == one
    assert (setup["runs"]["7/fan_in=2"][1].scratch / "scan" / "exact" / "combined").is_dir()


def _tables_in(value) -> list:
    if isinstance(value, (pa.Table, pa.RecordBatch, pa.Array, pa.ChunkedArray, pl.DataFrame, pl.Series, np.ndarray)):
        return [type(value).__name__]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tables_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tables_in(v)]
    return []


def test_the_driver_receives_counts_never_tables(setup, tmp_path, monkeypatch):
    import ray

    d, _, _ = setup["runs"][3]
    fetched, real_get = [], ray.get

    def spy(obj, *args, **kwargs):
        value = real_get(obj, *args, **kwargs)
        fetched.append(value)
        return value

    monkeypatch.setattr(ray, "get", spy)
    paths = sorted(str(p) for p in (d / "parts").glob("part-*.parquet"))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "vocab.json").write_bytes((d / "vocab.json").read_bytes())
    curate_and_write(paths, setup["recipe"], out, cpus=2)
    monkeypatch.undo()
    assert len(fetched) > 20 and not [t for v in fetched for t in _tables_in(v)]
    from dataengine.curate.verdicts import SAMPLES

    # counts, a fate's bottom-k id sample (bounded per task, not by rows), a shard's manifest entries
    assert max(len(repr(v)) for v in fetched) < 2 * SAMPLES * 100


def test_shards_are_exact_slices_of_the_id_order(setup):
    d, written, _ = setup["runs"][7]
    for split in ("train", "val"):
        entries = sorted((e for e in written.shards if e["format"] == "parquet" and e["split"] == split),
                         key=lambda e: e["path"])
        ids = [i for e in entries for i in pq.read_table(d / e["path"], columns=["id"]).column("id").to_pylist()]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        assert [e["sequences"] for e in entries[:-1]] == [40] * (len(entries) - 1)


def test_packing_inside_id_ranges_covers_every_kept_row_once(setup, tmp_path):
    vocab = synthetic_vocab()
    recipe = load_recipe(tiny_recipe(tmp_path, output={"shard_rows": 16, "val_fraction": 0.2},
                                     compose={"pack_length": 600},
                                     curate={"filters": {}, "mixture": {"policy": "none"}}))
    cand = setup["cand"]
    out = {}
    for n_parts in (1, 4):
        d = tmp_path / f"pack{n_parts}"
        (d / "parts").mkdir(parents=True)
        vocab.save(d / "vocab.json")
        cuts = np.linspace(0, cand.num_rows, n_parts + 1).astype(int)
        paths = [str(d / "parts" / f"part-{k:06d}.parquet") for k in range(n_parts)]
        for k, p in enumerate(paths):
            pq.write_table(cand.slice(cuts[k], cuts[k + 1] - cuts[k]), p)
        written = curate_and_write(paths, recipe, d, cpus=2)
        assert written.mixture is None  # policy none: nothing for the loader to follow
        out[n_parts] = (d, sorted((e["path"], e["sha256"]) for e in written.shards))
    assert out[1][1] == out[4][1]
    seq = pl.read_parquet(out[4][0] / "parquet" / "*.parquet")
    docs = [doc["id"] for ds in seq["documents"].to_list() for doc in ds]
    assert len(docs) == len(set(docs)) and (seq["kind"] == "packed").any()
    assert (seq["num_tokens"] <= 600).all() or (seq.filter(pl.col("num_tokens") > 600)["documents"].list.len() == 1).all()
    ok = cand.filter(pa.compute.equal(cand.column("status"), "ok"))
    kept = set(curate(ok, recipe).sequences.column("id").to_pylist())
    assert set(docs) == kept
