"""Sources as URIs: dataengine.storage, discover and read_input against a real S3 server (moto, 127.0.0.1).

The same corpus on disk and under s3://bucket/corpus must give the same units, the same rejects and
the same decoded rows; objects changed after discovery are refused; unsafe keys are rejected; a Ray
worker reads S3 with the options its stage carries, not with its own environment.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import time

import pyarrow as pa
import pytest
from corpus_factory import make_mixed_corpus, tiny_recipe
from s3server import s3  # noqa: F401  (the fixture)

from dataengine import storage
from dataengine.decode import read_input
from dataengine.discover import discover
from dataengine.errors import RejectError
from dataengine.pipeline.decode_stage import DecodeStage
from dataengine.recipe import Decode, load_recipe
from dataengine.pipeline.decode_stage import decode_stage_for

CAP = Decode().max_file_bytes


def _reason(*args, **kw) -> str:
    with pytest.raises(RejectError) as info:
        read_input(*args, **kw)
    return info.value.reason


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, kw in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in kw.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("where", ["local", "s3"])
def test_storage_round_trips(where, s3, tmp_path):
    base = str(tmp_path / "store") if where == "local" else s3.uri(f"roundtrip-{time.time_ns()}")
    assert storage.is_remote(base) == (where == "s3")
    assert not storage.is_dir(base) and storage.walk(base) == []
    data = bytes(range(256)) * 40
    storage.write_bytes_atomic(storage.join(base, "a/b.bin"), data)
    storage.write_bytes_atomic(storage.join(base, "a/b.bin"), data)  # overwrite: the same bytes, whole
    with storage.open_output_stream(storage.join(base, "c.txt")) as out:
        out.write(b"hello")
    assert storage.is_dir(base) and storage.is_dir(storage.join(base, "a"))
    assert not storage.is_dir(storage.join(base, "a/b.bin"))
    assert storage.read_bytes(storage.join(base, "a/b.bin"), len(data)) == data
    with pytest.raises(storage.FileTooLarge):
        storage.read_bytes(storage.join(base, "a/b.bin"), len(data) - 1)
    assert storage.read_range(storage.join(base, "a/b.bin"), 300, 5) == data[300:305]
    listing = storage.walk(base)
    assert [(e.rel, e.size) for e in listing] == [("a/b.bin", len(data)), ("c.txt", 5)]
    assert all(e.mtime_ns > 0 for e in listing)
    assert storage.walk(base + "/") == listing  # a trailing slash names the same folder
    if where == "local":
        assert sorted(p.name for p in (tmp_path / "store" / "a").iterdir()) == ["b.bin"]  # no temp file left
    storage.remove_tree(base)
    storage.remove_tree(base)  # gone already: nothing to do
    assert storage.walk(base) == [] and not storage.is_dir(base)


def test_local_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    assert storage.normalize("in") == str(tmp_path / "in")
    assert storage.normalize(f"file://{tmp_path}/in") == str(tmp_path / "in")
    fs, path = storage.resolve("in/x.txt")
    assert path == str(tmp_path / "in" / "x.txt") and not storage.is_remote("in")
    assert storage.normalize("s3://bucket/corpus/") == "s3://bucket/corpus"
    assert storage.join("s3://bucket/corpus/", "a/b.jpg") == "s3://bucket/corpus/a/b.jpg"
    (tmp_path / "in" / "x.txt").write_bytes(b"x")
    found = discover([("s", f"file://{tmp_path}/in")], max_file_bytes=10)  # file:// roots are local roots
    assert [(u.root, u.media) for u in found.units] == [(str(tmp_path / "in"), "x.txt")]
    assert read_input(f"file://{tmp_path}/in", "x.txt", 10, found.units[0].stamps) == b"x"


def test_options_travel_and_never_show_secrets(s3):
    opts = storage.options_from_env()
    assert (opts.endpoint, opts.region, opts.access_key) == (s3.endpoint, "us-east-1", "testing")
    stage = DecodeStage(decode=Decode(), sizes={"image": 32}, modalities=frozenset({"image"}))
    assert stage.storage_options == opts  # captured where the stage is built
    for text in (repr(opts), str(opts), repr(stage)):
        assert "testing-secret" not in text and "'testing'" not in text
    assert storage.options_from_env({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b",
                                     "AWS_DEFAULT_REGION": "eu-west-1"}) == \
        storage.StorageOptions(endpoint="http://b", region="eu-west-1")


# ------------------------------------------------------------------------------------------ the corpus
@pytest.fixture(scope="module")
def corpus(s3, tmp_path_factory):
    """The mixed corpus (broken files too) plus a tar shard, an interleaved document and files discovery
    rejects, on disk and uploaded to s3://bucket/corpus."""
    root = tmp_path_factory.mktemp("s3corpus") / "corpus"
    make_mixed_corpus(root, broken=True)
    photo, wave = (root / "images/chelsea.png").read_bytes(), (root / "audio/clip0.wav").read_bytes()
    (root / "shards").mkdir()
    (root / "shards/000.tar").write_bytes(_tar([
        ("k1.png", photo, {}), ("k1.txt", b"A tabby cat, from a shard.\n", {}), ("k2.wav", wave, {}),
        ("k2.txt", b"Speech, from a shard.\n", {}), ("./k3.seg.png", b"not a png", {}),
        ("../up.txt", b"x", {}), ("l.jpg", b"", {"type": b"2", "linkname": "/etc/passwd"}),
        ("d.png", photo, {}), ("d.png", photo, {})]))
    (root / "shards/bad.tar").write_bytes(b"\x1f\x8b" + bytes(600))  # a gzip: refused, not inflated
    docs = [{"interleaved": [{"text": "A cat."}, {"image": "images/chelsea.png"}, {"text": "And speech."},
                             {"audio": "audio/clip0.wav"}, {"image": "shards/000.tar#k1.png"}]},
            {"interleaved": [{"text": "Where is it?"}, {"image": "images/nowhere.png"}]}]
    (root / "docs").mkdir()
    (root / "docs/story.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "misc/.cache").mkdir(parents=True)
    (root / "misc/.cache/skipped.txt").write_text("inside a hidden folder\n")
    (root / "misc/.DS_Store").write_bytes(b"\0")
    (root / "misc/tool.exe").write_bytes(b"MZ")
    (root / "misc/lonely.json").write_text("{}")
    n = s3.upload_tree(root, "corpus")
    assert n > 40
    return {"root": root, "uri": s3.uri("corpus")}


def _without_mtimes(stamps: str) -> dict:
    return {k: [v[0]] + v[2:] for k, v in json.loads(stamps).items()}


def test_discover_s3_equals_local(corpus):
    t0 = time.time()
    local = discover([("c", corpus["root"])], max_file_bytes=CAP)
    t1 = time.time()
    remote = discover([("c", corpus["uri"] + "/")], max_file_bytes=CAP)
    t2 = time.time()
    print(f"\ndiscover: {len(local.files)} files, local {t1 - t0:.2f}s, s3 {t2 - t1:.2f}s")
    assert len(local.units) > 30 and {u.kind for u in local.units} >= {"image", "audio", "video", "sensor",
                                                                        "text", "jsonl"}
    assert any("#" in u.media for u in local.units)  # tar members are units too
    assert len(remote.units) == len(local.units)
    for a, b in zip(local.units, remote.units):
        assert (a.root, b.root) == (str(corpus["root"]), corpus["uri"])
        for f in dataclasses.fields(a):
            if f.name not in ("root", "stamps"):
                assert getattr(a, f.name) == getattr(b, f.name), (f.name, a.media)
        assert _without_mtimes(a.stamps) == _without_mtimes(b.stamps), a.media
    assert remote.rejects == local.rejects
    assert remote.files == local.files
    reasons = {r["path"]: r["reason"] for r in remote.rejects}
    assert reasons["misc/.DS_Store"] == "hidden_file" and reasons["misc/tool.exe"] == "unsupported_extension"
    assert reasons["shards/000.tar#../up.txt"] == "unsafe_member_path"
    assert reasons["shards/000.tar#l.jpg"] == "link_member"
    assert reasons["shards/bad.tar"] == "compressed_archive"
    assert not any(".cache" in p for _, p in remote.files)


def test_decode_stage_on_s3_matches_local(corpus, tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path), inputs=[str(corpus["root"])])
    stage = decode_stage_for(recipe)
    local = discover([("c", corpus["root"])], max_file_bytes=recipe.decode.max_file_bytes)
    remote = discover([("c", corpus["uri"])], max_file_bytes=recipe.decode.max_file_bytes)
    t0 = time.time()
    a = stage(pa.Table.from_pylist([u.to_row() for u in local.units])).to_pylist()
    t1 = time.time()
    b = stage(pa.Table.from_pylist([u.to_row() for u in remote.units])).to_pylist()
    t2 = time.time()
    print(f"\ndecode stage: {len(a)} rows, local {t1 - t0:.2f}s, s3 {t2 - t1:.2f}s")
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert x == y, (x["path"], {k: (x[k], y[k]) for k in x if x[k] != y[k] and k != "arrays"})
    ok = {r["path"] for r in b if r["status"] == "ok"}
    assert {"shards/000.tar#k1.png", "shards/000.tar#k2.wav", "images/chelsea.png", "docs/story.jsonl#L1"} <= ok
    reasons = {r["path"]: r["reason"] for r in b if r["status"] == "reject"}
    assert reasons["docs/story.jsonl#L2"] == "missing_image"
    assert reasons["broken/empty_image.png"] == "empty_file"
    assert {r["content_hash"] for r in b if r["path"] == "shards/000.tar#k1.png"} == \
        {r["content_hash"] for r in b if r["path"] == "images/chelsea.png"}  # the same photo, from a shard


# ----------------------------------------------------------------------------------- changes and safety
def test_changed_objects_are_refused_at_read_time(s3):
    s3.put("changes/a.txt", b"hello")
    s3.put("changes/same.txt", b"12345")
    s3.put("changes/s.tar", _tar([("k.txt", b"member", {})]))
    root = s3.uri("changes")
    found = discover([("c", root)], max_file_bytes=100)
    units = {u.media: u for u in found.units}
    assert read_input(root, "a.txt", 100, units["a.txt"].stamps) == b"hello"
    assert read_input(root, "s.tar#k.txt", 100, units["s.tar#k.txt"].stamps) == b"member"
    assert read_input(root, "s.tar#k.txt", 100) == b"member"  # no stamp: found by listing the headers
    assert _reason(root, "a.txt", 4) == "file_too_large"
    time.sleep(1.1)  # LastModified counts seconds: a same-size rewrite a second later is seen by its mtime
    s3.put("changes/a.txt", b"hello world")
    s3.put("changes/same.txt", b"54321")
    s3.put("changes/s.tar", _tar([("k.txt", b"MEMBER", {})]))
    assert _reason(root, "a.txt", 100, units["a.txt"].stamps) == "changed_since_discovery"
    assert _reason(root, "same.txt", 100, units["same.txt"].stamps) == "changed_since_discovery"
    assert _reason(root, "s.tar#k.txt", 100, units["s.tar#k.txt"].stamps) == "changed_since_discovery"
    assert read_input(root, "a.txt", 100) == b"hello world"  # no stamp: no check
    s3.client.delete_object(Bucket=s3.bucket, Key="changes/a.txt")
    assert _reason(root, "a.txt", 100, units["a.txt"].stamps) == "vanished"
    s3.put("changes/e.txt", b"")
    assert _reason(root, "e.txt", 100) == "empty_file"


def test_unsafe_keys_are_rejected(s3):
    for key in ("unsafe/x/../y.txt", "unsafe/a//b.txt", "unsafe/back\\slash.txt", "unsafe/./dot.txt",
                "unsafe/ok.txt", "unsafe/.h.txt", "unsafe/.hidden/z.txt", "secret.txt"):
        s3.put(key, b"x")
    root = s3.uri("unsafe")
    found = discover([("u", root)], max_file_bytes=100)
    reasons = {r["path"]: r["reason"] for r in found.rejects}
    assert reasons == {"x/../y.txt": "unsafe_path", "a//b.txt": "unsafe_path", "back\\slash.txt": "unsafe_path",
                       "./dot.txt": "unsafe_path", ".h.txt": "hidden_file", ".hidden": "hidden_folder"}
    assert [u.media for u in found.units] == ["ok.txt"]
    for rel in ("../secret.txt", "x/../y.txt", "/secret.txt", "a//b.txt", "back\\slash.txt"):
        assert _reason(root, rel, 100) == "unsafe_path", rel
    assert _reason(root, "x", 100) == "not_a_file"  # a prefix, not an object
    assert discover([("m", s3.uri("absent"))], max_file_bytes=10).rejects[0]["reason"] == "missing_source"


# ------------------------------------------------------------------------------------------- on Ray
def test_ray_worker_reads_s3_with_the_stage_options(corpus, ray_local):
    """The worker's own environment points at a dead endpoint with no keys: only the options the
    stage carries reach the server."""
    ray = ray_local
    found = discover([("c", corpus["uri"])], max_file_bytes=CAP)
    units = [u.to_row() for u in found.units if u.media.startswith(("images/", "shards/000.tar#k1"))]
    stage = DecodeStage(decode=Decode(), sizes={"image": 32}, modalities=frozenset({"image", "text"}))
    expected = stage(pa.Table.from_pylist(units)).to_pylist()

    @ray.remote(num_cpus=0.5)
    def in_worker(stage, units):
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
        os.environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:9",  # nothing listens there
                          AWS_EC2_METADATA_DISABLED="true")  # no instance-metadata probe for keys either
        try:
            from dataengine import storage as st
            env = st.options_from_env()
            rows = stage(pa.Table.from_pylist(units)).to_pylist()
            blind = dataclasses.replace(stage, storage_options=env)(pa.Table.from_pylist(units[:1])).to_pylist()
            return os.getpid(), repr(env), rows, blind
        finally:
            for k in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED"):
                os.environ.pop(k)
            os.environ.update(saved)

    t0 = time.time()
    pid, env, rows, blind = ray.get(in_worker.remote(stage, units))
    print(f"\nray task: {len(rows)} rows in {time.time() - t0:.1f}s")
    assert pid != os.getpid() and "127.0.0.1:9" in env and "keys=default chain" in env
    assert rows == expected and any(r["status"] == "ok" for r in rows)
    assert blind[0]["status"] == "reject" and blind[0]["reason"] == "unreadable"  # its own environment: no way in
