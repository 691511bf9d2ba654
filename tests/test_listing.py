"""Listing as Ray tasks: the shares of a source list exactly what one walk over it lists."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus_factory import make_img2dataset_folder, make_mixed_corpus
from PIL import Image
from s3server import s3  # noqa: F401  (the fixture)

from dataengine import listing
from dataengine.discover import discover
from dataengine.pipeline.items import plan_items
from dataengine.spans import write_table

CAP = 50_000_000


def _scoped(sources, options=None):
    """Every task of the plan run in this process: (tasks, Discovered-like union)."""
    import tempfile

    work = tempfile.mkdtemp(prefix="plan-")
    tasks = listing.plan(sources, options, work)
    units, rejects, files, metadata, manifests = [], [], [], [], 0
    for t in tasks:
        f = discover([(t.source, t.root)], max_file_bytes=CAP, options=options, scope=listing.scope_of(t))
        units += f.units
        rejects += f.rejects
        files += f.files
        metadata += f.metadata
        manifests += f.manifests if t.scope is not None else 0
    return tasks, units, rejects, files, metadata, manifests


def _same(sources, options=None):
    tasks, units, rejects, files, metadata, manifests = _scoped(sources, options)
    whole = discover(sources, max_file_bytes=CAP, options=options)
    key = lambda u: u.unit_id  # noqa: E731
    assert [u.to_row() for u in sorted(units, key=key)] == [u.to_row() for u in sorted(whole.units, key=key)]
    srt = lambda rs: sorted(tuple(sorted(r.items())) for r in rs)  # noqa: E731
    assert srt(rejects) == srt(whole.rejects)
    assert sorted(files) == sorted(whole.files) and sorted(metadata) == sorted(whole.metadata)
    assert manifests == 0
    return tasks, whole


def _tar(path, members: dict[str, bytes]):
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _tree(root):
    """Folders, root files that group across names, tars with img2dataset metadata at the root, links."""
    make_mixed_corpus(root / "mixed", broken=True)
    make_img2dataset_folder(root / "nested_i2d", n_shards=2, per_shard=2, failed_per_shard=1, side=32)
    for i in range(3):  # at the root: shards beside their X.parquet / X_stats.json
        make_img2dataset_folder(root / f"tmp{i}", n_shards=1, per_shard=2, failed_per_shard=1, side=32)
        for f in (root / f"tmp{i}").iterdir():
            f.rename(root / f"{i:03d}{f.name[5:]}" if f.name.startswith("00000") else root / f.name)
        (root / f"tmp{i}").rmdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "a.b.png")
    (root / "a.b.txt").write_text("caption of a.b\n")
    (root / "a_stats.txt").write_text("a document whose name looks like shard stats\n")
    (root / "note.md").write_text("a root document\n")
    (root / ".hidden").mkdir()
    (root / ".hidden/x.txt").write_text("never listed\n")
    os.symlink(root / "mixed", root / "loop")  # a link to a folder: checked as a file, never walked
    _tar(root / "raw.tar", {"k1.txt": b"k1\n", "k2.txt": b"k2\n"})


def test_shares_list_what_one_walk_lists(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    _tree(root)
    monkeypatch.setattr(listing, "ROOT_CHUNK", 2)  # several chunks of the root's own files
    tasks, whole = _same([("a", root), ("b", root / "mixed"), ("gone", tmp_path / "absent")])
    scopes = [t.scope[0] if t.scope else None for t in tasks]
    assert scopes.count("rows") >= 4 and scopes.count("tree") >= 5 and scopes[-1] is None  # the absent source
    spans = [t.scope for t in tasks if t.scope and t.scope[0] == "rows"]  # a row span of the root's table:
    assert all(sc[1].endswith(".parquet") and 0 <= sc[2] <= sc[3] for sc in spans)  # no file names in the plan
    assert {r["reason"] for r in whole.rejects} >= {"missing_source", "download_failed", "not_a_file"}
    assert any(u.media.startswith("001.tar#") and u.source == "a" for u in whole.units)
    chunks = [listing.scope_of(t)[1] for t in tasks if t.scope and t.scope[0] == "rows"]
    chunk = next(c for c in chunks if "001.tar" in c)
    assert {"001.tar", "001.parquet", "001_stats.json"} <= set(chunk)  # a shard and its metadata stay together


def test_a_root_that_ties_shares_together_is_listed_whole(tmp_path):
    root = tmp_path / "in"
    make_img2dataset_folder(root / "00000", n_shards=1, per_shard=2, failed_per_shard=1, side=32)
    (root / "00000.parquet").write_bytes((root / "00000/00000.parquet").read_bytes())  # metadata of folder 00000/
    (root / "docs").mkdir()
    (root / "docs/a.txt").write_text("a\n")
    tasks, _ = _same([("s", root)])
    assert [t.scope for t in tasks] == [None]


def test_a_manifest_below_the_root_makes_its_source_listed_whole(tmp_path, ray_local):
    root, other = tmp_path / "m", tmp_path / "plain"
    for r in (root, other):
        (r / "pics").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 50, 0, 0)).save(r / f"pics/p{i}.png")
            (r / f"doc{i}.txt").write_text(f"document {i}\n")
    (root / "lists").mkdir()
    (root / "lists/x.manifest.jsonl").write_text('{"image": "pics/p1.png", "caption": "from the manifest"}\n')
    (root / "pics/p1.txt").write_text("a sibling the manifest row replaces\n")
    sources = [("m", root), ("plain", other)]
    tasks, *_, manifests = _scoped(sources)
    assert manifests == 1 and len(tasks) > 3
    got = listing.run_listing(sources, max_file_bytes=CAP, work=tmp_path / "work")
    assert [p["source"] for p in got.parts].count("m") == 1  # listed again, as one task
    assert sorted(os.listdir(tmp_path / "work")) == sorted(
        os.path.basename(p[k]) for p in got.parts for k in ("units_path", "rejects_path"))
    whole = discover(sources, max_file_bytes=CAP)
    rows = pa.concat_tables([listing.read_units([[p["units_path"], 0, p["units"]]]) for p in got.parts]).to_pylist()
    assert sorted(rows, key=lambda r: r["unit_id"]) == sorted((u.to_row() for u in whole.units),
                                                              key=lambda r: r["unit_id"])
    assert any(r["row"] == "lists/x.manifest.jsonl#L1" for r in rows)
    rejects = pa.concat_tables([pq.read_table(p) for p in got.reject_paths()]).to_pylist()
    assert sorted(r["path"] for r in rejects) == sorted(r["path"] for r in whole.rejects)
    assert {r["reason"] for r in rejects} == {"manifest_sibling"}
    inputs = got.inputs()
    assert (inputs["files"], inputs["sample_groups"]) == (len(whole.files), len(whole.units))
    assert inputs["by_source"] == {"m": 8, "plain": 6}  # the manifest row is an input, its file is not
    again = listing.run_listing(sources, max_file_bytes=CAP, work=tmp_path / "work")
    assert again.digest() == got.digest()
    (other / "doc0.txt").write_text("changed\n")
    assert listing.run_listing(sources, max_file_bytes=CAP, work=tmp_path / "work").digest() != got.digest()


def test_items_are_spans_that_read_back_the_units_in_order(tmp_path, monkeypatch):
    parts = []
    rows = [{f: f"{k}-{i}" if f == "unit_id" else "x" for f in listing.UNIT_SCHEMA.names} for k in range(3)
            for i in range(k * 7 + 1)]  # parts of 1, 8 and 15 units
    at = 0
    for k, n in enumerate([1, 8, 15]):
        path = tmp_path / f"units-{k}.parquet"
        write_table(pa.Table.from_pylist(rows[at:at + n], schema=listing.UNIT_SCHEMA), path, row_group_size=3)
        parts.append({"units": n, "units_path": str(path)})
        at += n
    items = plan_items(parts, 5)
    assert [i for i, _ in items] == list(range(5))
    got = [r["unit_id"] for _, spans in items for r in listing.read_units(spans).to_pylist()]
    assert got == [r["unit_id"] for r in rows]
    assert [sum(b - a for _, a, b in spans) for _, spans in items] == [5, 5, 5, 5, 4]


@pytest.mark.parametrize("chunk", [2, 1024])
def test_shares_on_s3_list_what_the_same_files_on_disk_list(tmp_path, s3, monkeypatch, chunk):  # noqa: F811
    root = tmp_path / "in"
    root.mkdir()
    _tree(root)
    (root / "loop").unlink()  # object stores have no links
    s3.upload_tree(root, f"listing{chunk}")
    monkeypatch.setattr(listing, "ROOT_CHUNK", chunk)
    remote_tasks, remote = _same([("a", s3.uri(f"listing{chunk}"))])
    local_tasks, local = _same([("a", root)])
    assert [(t.scope or (None,))[0] for t in remote_tasks] == [(t.scope or (None,))[0] for t in local_tasks]
    assert sorted(u.media for u in remote.units) == sorted(u.media for u in local.units)
    assert sorted(r["path"] for r in remote.rejects) == sorted(r["path"] for r in local.rejects)
