"""Runs against a real S3 server on 127.0.0.1: a source on s3://bucket/corpus and an OUT on s3://bucket/out
give what the same files on disk give; the remote OUT commits with manifest.json last (dataengine/publish.py)."""
import json
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine import publish
from dataengine.pipeline.run import local_output, run_pipeline
from dataengine.recipe import load_recipe
from s3server import s3  # noqa: F401 (the fixture)

quiet = dict(log=lambda *_: None)


def _objects(s3, prefix: str) -> dict[str, bytes]:  # noqa: F811
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix + "/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])
            if not o["Key"].endswith("/")]  # Arrow's empty folder markers (a delete leaves one)
    return {k[len(prefix) + 1:]: s3.client.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}


def test_run_from_s3_to_s3_equals_run_from_disk(tmp_path, s3, ray_local):  # noqa: F811
    corpus = tmp_path / "corpus"
    make_mixed_corpus(corpus, broken=True)
    s3.upload_tree(corpus, "data/corpus")
    recipe_path = tiny_recipe(tmp_path, output={"shard_rows": 8}, curate={"mixture": {"policy": "none"}},
                              execution={"work_dir": str(tmp_path / "mirrors")})
    local = run_pipeline(load_recipe(recipe_path, inputs=[str(corpus)]), tmp_path / "local", **quiet)
    remote_recipe = load_recipe(recipe_path, inputs=[s3.uri("data/corpus")])
    assert [s.name for s in remote_recipe.sources] == ["corpus"]  # named like the folder: same unit ids
    s3.put("out/manifest.json", b"{}")  # a previous output, with a shard this run does not write
    s3.put("out/parquet/train-999999.parquet", b"stale")
    remote = run_pipeline(remote_recipe, s3.uri("out"), **quiet)
    assert remote["sources"] == {"corpus": s3.uri("data/corpus")}
    assert local["totals"]["sequences"] > 10 and local["totals"]["rejects"] > 3
    assert [(s["path"], s["sha256"]) for s in remote["shards"]] == [(s["path"], s["sha256"]) for s in local["shards"]]

    objects = _objects(s3, "out")
    files = {p.relative_to(tmp_path / "local").as_posix(): p for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert set(objects) == {rel for rel in files if not rel.startswith("cache/")}  # the stale shard is gone
    for rel in [s["path"] for s in local["shards"]] + ["rejects.parquet", "stats.json", "vocab.json"]:
        assert objects[rel] == files[rel].read_bytes(), rel
    assert json.loads(objects["manifest.json"]) == remote
    mirror = local_output(remote_recipe, s3.uri("out"))
    assert mirror.parent == tmp_path / "mirrors" and (mirror / "cache").is_dir()

    # a reader that follows the manifest reads the shards straight from S3 (its own S3 client)
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key="testing", secret_key="testing-secret",
                           region="us-east-1")
    parquet = [s["path"] for s in remote["shards"] if s["format"] == "parquet"]
    got = pq.read_table([f"{s3.bucket}/out/{p}" for p in parquet], filesystem=fs)
    want = pq.read_table([str(tmp_path / "local" / p) for p in parquet])
    assert got.num_rows == remote["totals"]["sequences"] and got.equals(want)


def test_s3_output_commits_with_the_manifest_last(tmp_path, s3, ray_local, monkeypatch):  # noqa: F811
    corpus = tmp_path / "corpus"
    make_mixed_corpus(corpus)
    recipe = load_recipe(tiny_recipe(tmp_path, curate={"mixture": {"policy": "none"}},
                                     execution={"work_dir": str(tmp_path / "mirrors")}), inputs=[str(corpus)])
    first = run_pipeline(recipe, s3.uri("committed"), **quiet)
    manifest = s3.client.get_object(Bucket=s3.bucket, Key="committed/manifest.json")["Body"].read()
    assert json.loads(manifest) == first

    def killed(*_):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(publish, "_commit", killed)
    with pytest.raises(RuntimeError, match="before the commit"):
        run_pipeline(recipe, s3.uri("committed"), **quiet)
    left = _objects(s3, "committed")
    assert "manifest.json" not in left  # uploads under way or done: no reader trusts the folder
    assert {s["path"] for s in first["shards"]} <= set(left)
    monkeypatch.undo()
    lines = []
    again = run_pipeline(recipe, s3.uri("committed"), log=lines.append)
    assert any("reusing" in str(line) for line in lines)  # the mirror's cache: no second decode
    assert s3.client.get_object(Bucket=s3.bucket, Key="committed/manifest.json")["Body"].read() == manifest
    assert again == first


def test_remote_outputs_that_are_refused_before_any_work(tmp_path, s3):  # noqa: F811
    s3.put("foreign/data.bin", b"someone else's")
    with pytest.raises(publish.OutputError, match="not a dataengine output"):
        publish.check_output(s3.uri("foreign"))
    with pytest.raises(publish.OutputError, match="not the bucket itself"):
        publish.check_output(f"s3://{s3.bucket}")
    publish.check_output(s3.uri("fresh"))  # an empty prefix is fine
    recipe = load_recipe(tiny_recipe(tmp_path), inputs=[str(tmp_path / "nothing")])
    with pytest.raises(publish.OutputError):  # before tokenizers are fitted or Ray is started
        run_pipeline(recipe, s3.uri("foreign"), **quiet)
    assert not (tmp_path / "toks").exists()
    assert Path(publish.mirror_path(s3.uri("out"), tmp_path)).parent == tmp_path.resolve()
