"""Inputs that are already tables: Parquet / JSONL manifests of samples and img2dataset output folders.

Discovery and the decode stage in-process (no Ray) on one corpus holding both, local and on S3 (moto);
then one run of the real Ray pipeline, where every input must end in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus_factory import (
    TINY_TOKENIZERS,
    _basic_motions,
    _clips,
    _photo,
    make_img2dataset_folder,
    tiny_recipe,
)
from PIL import Image
from s3server import s3  # noqa: F401  (the fixture)

from dataengine import mediaio, storage
from dataengine.discover import discover
from dataengine.recipe import load_recipe
from dataengine.pipeline.decode_stage import decode_stage_for

CAP = 50_000_000
CAT, COFFEE, CLIP, WALK = "A tabby cat.", "A cup of coffee.", "Speech about the test corpus.", "walking"

# the Parquet manifest at the root: row -> expected reason (None: a sample)
PARQUET_ROWS = [
    ({"image": "media/cat.png", "caption": CAT, "metadata": {"photographer": "ann", "score": 6.5}, "license": "cc-by"},
     None),
    ({"audio": "media/clip.wav", "transcript": CLIP}, None),
    ({"sensor": "media/walk.csv", "label": WALK, "metadata": {"rate_hz": 10.0}}, None),
    ({"image": "shards/a.tar#k1.png", "caption": "A rocket, from a tar shard."}, None),
    ({"image": "https://example.com/x.jpg"}, "remote_reference"),
    ({"image": "../outside.png"}, "unsafe_path"),
    ({"image": "media/nothere.png"}, "missing_file"),
    ({"image": "media/notes.txt"}, "unsupported_extension"),
    ({"image": "media/lonely.png", "audio": "media/clip.wav"}, "multiple_media"),
    ({"caption": "Only words, no picture."}, "no_media"),
    ({"image": "media/cat.png", "caption": "The same cat again."}, "duplicate_reference"),
    ({"image": "media/link.png"}, "file_rejected"),
    ({"sensor": "i2d/00000.parquet"}, "not_an_input"),
    ({"image": "media/cat2.png", "caption": "x", "text": "y"}, "duplicate_caption"),
]
# the JSONL manifest in lists/: line -> expected reason (paths stay relative to the SOURCE ROOT)
JSONL_LINES = [
    (json.dumps({"image": "media/coffee.jpg", "caption": COFFEE, "metadata": {"photographer": "bo"}}), None),
    ("", None),  # blank: no row
    ("{not json", "bad_row"),
    ("[1, 2]", "bad_row"),
    (json.dumps({"image": "media/cat2.png", "metadata": "not json"}), "bad_metadata"),
    (json.dumps({"image": {"bytes": "iVBORw0KGgo=", "path": None}}), "embedded_media"),
    (json.dumps({"video": "media/cat2.png"}), "unsupported_extension"),
    (json.dumps({"sensor": "i2d/00001.parquet"}), "not_an_input"),
    (json.dumps({"image": "media/cat.png"}), "duplicate_reference"),  # the Parquet manifest, listed first, has it
    (json.dumps({"sensor": "media/run.csv", "label": "running", "metadata": {"label": "walking"}}),
     "conflicting_label"),
    (json.dumps({"image": "media/.secret.png"}), "hidden_file"),
    (json.dumps({"audio": "media/clip.wav", "caption": 5}), "bad_caption"),
    (json.dumps({"image": "media/cat2.png", "label": True}), "bad_label"),
    (json.dumps({"image": "media/cat2.png", "caption": "A second cat.", "key": "c2"}), None),
]


def _sensor_rows():
    values, label = _basic_motions(1)[0]
    return values[:60], label


def _write_media(root: Path, captions: bool) -> None:
    """The media both corpora share; `captions`: with the .txt / .json siblings a file group needs."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    Image.fromarray(_photo("chelsea", 64)).save(root / "media/cat.png")
    Image.fromarray(_photo("coffee", 64)).convert("RGB").save(root / "media/coffee.jpg", quality=90)
    _, wave, sr = _clips()[0]
    mediaio.write_audio(root / "media/clip.wav", wave[: sr], sr)
    values, _ = _sensor_rows()
    mediaio.write_sensor(root / "media/walk.csv", values, ("ax", "ay", "az", "gx", "gy", "gz"), 10.0, WALK)
    if captions:
        (root / "media/cat.txt").write_text(CAT + "\n")
        (root / "media/clip.txt").write_text(CLIP + "\n")
    else:  # walk.json stays: a sibling of a file the manifest has
        (root / "media/coffee.txt").write_text("A caption file beside a file the manifest has.\n")


def _tar(path: Path, members: dict[str, bytes]) -> None:
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def make_corpus(root: Path, *, link: bool = True) -> dict:
    _write_media(root, captions=False)
    Image.fromarray(_photo("astronaut", 48)).save(root / "media/lonely.png")  # in no manifest: its own sample
    Image.fromarray(_photo("camera", 48)).save(root / "media/cat2.png")
    Image.fromarray(_photo("camera", 32)).save(root / "media/.secret.png")
    (root / "media/notes.txt").write_text("A text document, not an image.\n")
    values, _ = _sensor_rows()
    mediaio.write_sensor(root / "media/run.csv", values[::-1].copy(), ("ax", "ay", "az", "gx", "gy", "gz"), 10.0,
                         "running")
    if link:
        (root.parent / "outside.png").write_bytes((root / "media/cat.png").read_bytes())
        os.symlink(root.parent / "outside.png", root / "media/link.png")
    import io

    buf = io.BytesIO()
    Image.fromarray(_photo("rocket", 48)).save(buf, format="PNG")
    _tar(root / "shards/a.tar", {"k1.png": buf.getvalue(), "k1.txt": b"A caption member beside it.\n"})
    i2d = make_img2dataset_folder(root / "i2d", n_shards=2, per_shard=2, failed_per_shard=1, side=48)
    rows = [r for r, _ in PARQUET_ROWS]
    schema = pa.schema([(c, pa.string()) for c in ("image", "audio", "sensor", "caption", "transcript", "text",
                                                   "label", "license")]
                       + [("metadata", pa.struct([("photographer", pa.string()), ("score", pa.float64()),
                                                  ("rate_hz", pa.float64())]))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "samples.manifest.parquet")
    (root / "lists").mkdir()
    (root / "lists/more.manifest.jsonl").write_text("".join(line + "\n" for line, _ in JSONL_LINES))
    expect = {f"samples.manifest.parquet#R{i}": why for i, (_, why) in enumerate(PARQUET_ROWS)}
    expect.update({f"lists/more.manifest.jsonl#L{i}": why for i, (line, why) in enumerate(JSONL_LINES, 1) if line})
    return {"rows": expect, "i2d": i2d}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("tables")
    root, twin = base / "corpus", base / "twin"
    info = make_corpus(root)
    _write_media(twin, captions=True)  # the same files as file groups: .txt captions, walk.json sidecar
    recipe = load_recipe(tiny_recipe(base), inputs=[str(root)])
    found = discover([("c", root)], max_file_bytes=CAP)
    stage = decode_stage_for(recipe)
    decoded = stage(pa.Table.from_pylist([u.to_row() for u in found.units])).to_pylist()
    twin_found = discover([("t", twin)], max_file_bytes=CAP)
    twin_rows = stage(pa.Table.from_pylist([u.to_row() for u in twin_found.units])).to_pylist()
    return {"root": root, "base": base, "found": found, "decoded": decoded, "twin": twin_rows, "stage": stage, **info}


def test_every_row_is_a_sample_or_a_reject_with_its_reason(corpus):
    found = corpus["found"]
    rows = {u.row: u for u in found.units if u.row}
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    for ref, why in corpus["rows"].items():
        if why is None:
            assert ref in rows and ref not in reasons, ref
        else:
            assert reasons.get(ref) == why and ref not in rows, (ref, reasons.get(ref))
    assert all(r["detail"] for r in found.rejects)
    u = rows["samples.manifest.parquet#R0"]
    assert (u.kind, u.media, u.caption, u.sidecar) == ("image", "media/cat.png", None, None)
    assert json.loads(u.inline) == {"caption": CAT, "metadata": {"license": "cc-by", "photographer": "ann",
                                                                  "score": 6.5}}
    assert set(json.loads(u.stamps)) == {"media/cat.png", "samples.manifest.parquet"}
    assert rows["samples.manifest.parquet#R3"].media == "shards/a.tar#k1.png"
    assert json.loads(rows["lists/more.manifest.jsonl#L14"].inline)["metadata"] == {"key": "c2"}


def test_referenced_files_are_not_counted_twice(corpus):
    found = corpus["found"]
    media = [u.media for u in found.units]
    assert len(media) == len(set(media))
    by_media = {u.media: u for u in found.units}
    for path in ("media/cat.png", "media/coffee.jpg", "media/clip.wav", "media/walk.csv", "shards/a.tar#k1.png"):
        assert by_media[path].row, f"{path} should be its manifest row's sample, not a file group"
    assert by_media["media/lonely.png"].row is None and by_media["media/notes.txt"].kind == "text"
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    for sibling in ("media/coffee.txt", "media/walk.json", "shards/a.tar#k1.txt"):
        assert reasons[sibling] == "manifest_sibling", sibling
    assert reasons["media/link.png"] == "symlink_outside_root"
    # every listed input is used by one unit or rejected, never both; manifests and shard metadata are neither
    used = [p for u in found.units for _, p in u.files()]
    assert len(used) == len(set(used)) and not set(used) & set(reasons)
    assert sorted(used + [r["path"] for r in found.rejects]) == sorted(p for _, p in found.files)
    assert {p for _, p in found.metadata} == {f"i2d/{m}" for m in corpus["i2d"]["metadata"]}
    assert not {"samples.manifest.parquet", "lists/more.manifest.jsonl"} & {p for _, p in found.files}


def test_img2dataset_folder_gives_its_samples_and_failed_downloads(corpus):
    found, i2d = corpus["found"], corpus["i2d"]
    units = {u.media: u for u in found.units if u.media.startswith("i2d/")}
    assert set(units) == {f"i2d/{ref}" for ref in i2d["ok"]}
    for ref, u in units.items():
        assert (u.kind, u.caption, u.sidecar) == ("image", ref[:-4] + ".txt", ref[:-4] + ".json")
    rejects = [r for r in found.rejects if r["path"].startswith("i2d/")]
    assert sorted(r["path"] for r in rejects) == sorted(f"i2d/{ref}" for ref in i2d["failed"])
    assert {r["reason"] for r in rejects} == {"download_failed"}
    assert all("https://images.example.org/" in r["detail"] for r in rejects)
    ok = {r["path"]: r for r in corpus["decoded"] if r["status"] == "ok"}
    for ref, caption in i2d["ok"].items():
        meta = json.loads(ok[f"i2d/{ref}"]["meta"])
        assert meta["text"] == caption and meta["sidecar"]["status"] == "success"


def test_a_success_row_without_its_member_is_missing_from_shard(tmp_path):
    make_img2dataset_folder(tmp_path / "i2d", n_shards=1, per_shard=1, failed_per_shard=1, side=32)
    table = pq.read_table(tmp_path / "i2d/00000.parquet").to_pylist()
    table.append({**table[0], "key": "000000099", "url": "https://images.example.org/lost.jpg"})
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "i2d/00000.parquet")
    found = discover([("s", tmp_path)], max_file_bytes=CAP)
    assert sorted((r["path"], r["reason"]) for r in found.rejects) == [
        ("i2d/00000.tar#000000001", "download_failed"), ("i2d/00000.tar#000000099", "missing_from_shard")]
    assert [u.media for u in found.units] == ["i2d/00000.tar#000000000.jpg"]


def test_img2dataset_files_format_reads_the_same(tmp_path):
    """`--output_format files`: a folder NNNNN/ of KEY.jpg/.txt/.json instead of the tar."""
    import tarfile

    info = make_img2dataset_folder(tmp_path / "i2d", n_shards=1, per_shard=2, failed_per_shard=1, side=32)
    with tarfile.open(tmp_path / "i2d/00000.tar") as tf:
        tf.extractall(tmp_path / "i2d/00000", filter="data")
    (tmp_path / "i2d/00000.tar").unlink()
    found = discover([("s", tmp_path)], max_file_bytes=CAP)
    assert sorted(u.media for u in found.units) == sorted(f"i2d/{r.replace('.tar#', '/')}" for r in info["ok"])
    assert [(r["path"], r["reason"]) for r in found.rejects] == [("i2d/00000/000000002", "download_failed")]
    assert sorted(p for _, p in found.metadata) == ["i2d/00000.parquet", "i2d/00000_stats.json"]


def test_decoded_rows_carry_the_manifest_text_and_metadata(corpus):
    rows = {r["path"]: r for r in corpus["decoded"]}
    twin = {r["path"]: r for r in corpus["twin"]}
    for path, text in (("media/cat.png", CAT), ("media/clip.wav", CLIP), ("media/walk.csv", WALK)):
        r, t = rows[path], twin[path]
        assert r["status"] == t["status"] == "ok", (r["reason"], r["detail"], t["reason"])
        assert r["content_hash"] == t["content_hash"], path  # the same file, read through a manifest
        meta, tmeta = json.loads(r["meta"]), json.loads(t["meta"])
        assert meta["text"] == tmeta["text"] == text
        roles = {lin["path"]: lin["role"] for lin in json.loads(r["lineage"])}
        assert roles[path] == "media" and "manifest" in roles.values()
    assert json.loads(rows["media/cat.png"]["meta"])["sidecar"] == {"license": "cc-by", "photographer": "ann",
                                                                   "score": 6.5}
    walk, twalk = json.loads(rows["media/walk.csv"]["meta"]), json.loads(twin["media/walk.csv"]["meta"])
    assert walk["sidecar"] == {"label": WALK, "rate_hz": 10.0} and walk["label"] == twalk["label"] == WALK
    assert walk["rate_hz"] == twalk["rate_hz"]
    assert json.loads(rows["media/coffee.jpg"]["meta"])["text"] == COFFEE
    assert json.loads(rows["shards/a.tar#k1.png"]["meta"])["text"] == "A rocket, from a tar shard."
    assert not [r for r in corpus["decoded"] if r["status"] != "ok"]


def test_a_manifest_changed_after_discovery_is_refused_at_decode(corpus, tmp_path):
    root = tmp_path / "c"
    (root / "media").mkdir(parents=True)
    Image.fromarray(_photo("chelsea", 32)).save(root / "media/a.png")
    (root / "m.manifest.jsonl").write_text(json.dumps({"image": "media/a.png", "caption": "old"}) + "\n")
    found = discover([("c", root)], max_file_bytes=CAP)
    (root / "m.manifest.jsonl").write_text(json.dumps({"image": "media/a.png", "caption": "new!"}) + "\n")
    out = corpus["stage"](pa.Table.from_pylist([u.to_row() for u in found.units])).to_pylist()
    assert [(r["path"], r["reason"]) for r in out] == [("media/a.png", "changed_since_discovery"),
                                                       ("m.manifest.jsonl#L1", "media_rejected")]


def test_a_broken_manifest_is_one_reject(tmp_path):
    (tmp_path / "empty.manifest.jsonl").write_text("\n\n")
    (tmp_path / "bad.manifest.parquet").write_bytes(b"PAR1 not really")
    found = discover([("c", tmp_path)], max_file_bytes=CAP)
    assert sorted((r["path"], r["reason"]) for r in found.rejects) == [
        ("bad.manifest.parquet", "corrupt_manifest"), ("empty.manifest.jsonl", "empty_manifest")]
    assert not found.units


def test_a_manifest_damaged_midway_takes_no_file(tmp_path):
    (tmp_path / "media").mkdir()
    for name in ("a", "b"):
        Image.fromarray(_photo("chelsea", 32)).save(tmp_path / f"media/{name}.png")
    rows = [{"image": "media/a.png", "caption": "A." * 200}, {"image": "media/b.png", "caption": "B." * 200}]
    path = tmp_path / "m.manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1, compression="snappy")
    col = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    at = col.data_page_offset + 8
    data[at:at + 64] = b"\xff" * 64  # the second row group's caption page
    path.write_bytes(bytes(data))
    found = discover([("c", tmp_path)], max_file_bytes=CAP)
    assert [(r["path"], r["reason"]) for r in found.rejects] == [("m.manifest.parquet", "corrupt_manifest")]
    assert "after row 0" in found.rejects[0]["detail"]  # row 0 was read, and gave its file back
    assert sorted((u.media, u.row) for u in found.units) == [("media/a.png", None), ("media/b.png", None)]


def test_s3_discovery_and_decode_equal_local(corpus, s3, tmp_path):
    local_root = tmp_path / "corpus"  # S3 has no symlinks: the same corpus without media/link.png
    shutil.copytree(corpus["root"], local_root, ignore=lambda d, names: [n for n in names if n == "link.png"])
    s3.upload_tree(local_root, "tables")
    uri = s3.uri("tables")
    local = discover([("c", local_root)], max_file_bytes=CAP)
    remote = discover([("c", uri)], max_file_bytes=CAP)
    assert len(remote.units) == len(local.units) and any(u.row for u in remote.units)
    for a, b in zip(local.units, remote.units):
        for f in dataclasses.fields(a):
            if f.name not in ("root", "stamps"):
                assert getattr(a, f.name) == getattr(b, f.name), (f.name, a.media)
        assert set(json.loads(a.stamps)) == set(json.loads(b.stamps))
    assert remote.rejects == local.rejects and remote.files == local.files and remote.metadata == local.metadata
    assert {r["path"]: r["reason"] for r in remote.rejects}["samples.manifest.parquet#R11"] == "missing_file"
    stage = dataclasses.replace(corpus["stage"], storage_options=storage.options_from_env())  # the S3 endpoint
    a = stage(pa.Table.from_pylist([u.to_row() for u in local.units if u.row][:3])).to_pylist()
    b = stage(pa.Table.from_pylist([u.to_row() for u in remote.units if u.row][:3])).to_pylist()
    assert all(r["status"] == "ok" for r in b), [(r["path"], r["reason"], r["detail"]) for r in b]
    assert [(r["path"], r["status"], r["content_hash"], r["meta"]) for r in a] == \
        [(r["path"], r["status"], r["content_hash"], r["meta"]) for r in b]


# ------------------------------------------------------------------------------------ the real pipeline
def test_pipeline_puts_every_input_in_exactly_one_place(tmp_path_factory, ray_local):
    from dataengine.pipeline.run import run_pipeline

    base = tmp_path_factory.mktemp("tables_run")
    root = base / "corpus"
    info = make_corpus(root)
    tokenizers = {"text": TINY_TOKENIZERS["text"], "sensor": TINY_TOKENIZERS["sensor"],
                  "image": {**TINY_TOKENIZERS["image"], "params": {**TINY_TOKENIZERS["image"]["params"], "steps": 5}}}
    recipe = load_recipe(tiny_recipe(base, tokenizers=tokenizers, curate={
        "filters": {}, "mixture": {"policy": "none"}, "dedup": {"exact": False, "near": False}}), inputs=[str(root)])
    t0 = time.time()
    run_pipeline(recipe, base / "out", log=lambda *_: None, report=False)
    print(f"\npipeline: {time.time() - t0:.1f}s")
    seq = pl.scan_parquet(str(base / "out/parquet/*.parquet")).collect()
    rejects = pl.read_parquet(base / "out/rejects.parquet")
    used = [lin["path"] for lins in seq["lineage"].to_list() for lin in lins]
    rejected = rejects["path"].to_list()
    assert len(used) == len(set(used)) and len(rejected) == len(set(rejected))
    assert not set(used) & set(rejected), set(used) & set(rejected)
    places = set(used) | set(rejected)
    # every file on disk is in an output's lineage or in rejects.parquet (a container: through its rows /
    # members); the img2dataset metadata files are in neither
    metadata = {f"i2d/{m}" for m in info["i2d"]["metadata"]}
    on_disk = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    assert metadata <= set(on_disk)
    for path in on_disk:
        hits = [x for x in places if x == path or x.startswith(path + "#")]
        assert bool(hits) != (path in metadata), (path, hits[:3])
    # every manifest row and every attempted download: a sample, or a reject with its reason
    got = dict(zip(rejected, rejects["reason"].to_list()))
    # no audio tokenizer here: the audio row's file is rejected (no_tokenizer) and the row with it
    assert (got["media/clip.wav"], got["samples.manifest.parquet#R1"]) == ("no_tokenizer", "media_rejected")
    for ref, why in {**info["rows"], "samples.manifest.parquet#R1": "media_rejected"}.items():
        assert (ref in used) if why is None else (got.get(ref) == why), (ref, got.get(ref))
    assert {f"i2d/{ref}" for ref in info["i2d"]["ok"]} <= set(used)
    assert {got[f"i2d/{ref}"] for ref in info["i2d"]["failed"]} == {"download_failed"}
    assert rejects["reason"].null_count() == 0 and (rejects["detail"].str.len_chars() > 0).all()
    kinds = dict(zip(seq["id"].to_list(), seq["kind"].to_list()))
    assert {"image", "sensor"} <= set(kinds.values())
