"""A run whose source is s3://bucket/corpus (a real S3 server on 127.0.0.1) writes what the same files on disk give."""
import json

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import load_recipe
from s3server import s3  # noqa: F401 (the fixture)


def test_run_from_s3_equals_run_from_disk(tmp_path, s3, ray_local):  # noqa: F811
    corpus = tmp_path / "corpus"
    make_mixed_corpus(corpus, broken=True)
    s3.upload_tree(corpus, "data/corpus")
    recipe_path = tiny_recipe(tmp_path, output={"shard_rows": 8}, curate={"mixture": {"policy": "none"}})
    local = run_pipeline(load_recipe(recipe_path, inputs=[str(corpus)]), tmp_path / "local", log=lambda *_: None)
    remote_recipe = load_recipe(recipe_path, inputs=[s3.uri("data/corpus")])
    assert [s.name for s in remote_recipe.sources] == ["corpus"]  # named like the folder: same unit ids
    remote = run_pipeline(remote_recipe, tmp_path / "remote", log=lambda *_: None)
    assert remote["sources"] == {"corpus": s3.uri("data/corpus")}
    assert local["totals"]["sequences"] > 10 and local["totals"]["rejects"] > 3
    assert [(s["path"], s["sha256"]) for s in remote["shards"]] == [(s["path"], s["sha256"]) for s in local["shards"]]
    assert (tmp_path / "remote" / "rejects.parquet").read_bytes() == (tmp_path / "local" / "rejects.parquet").read_bytes()
    stats = [json.loads((tmp_path / o / "stats.json").read_text()) for o in ("local", "remote")]
    assert stats[0] == stats[1]
