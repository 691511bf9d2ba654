"""Curation through the real pipeline: duplicates dropped with their twin named, re-thresholding from cache."""
import json

import numpy as np
import polars as pl
import pytest

from corpus_factory import TINY_TOKENIZERS, make_duplicates_corpus, tiny_recipe
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import load_recipe


IMAGE_TEXT = {k: TINY_TOKENIZERS[k] for k in ("text", "image")}


def run_quiet(recipe, out):
    logs = []
    run_pipeline(recipe, out, log=logs.append)
    return logs


@pytest.fixture(scope="module")
def dup_run(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("dups")
    copies = make_duplicates_corpus(base / "corpus")
    recipe = load_recipe(tiny_recipe(base, tokenizers=IMAGE_TEXT, output={"val_fraction": 0.5}), inputs=[str(base / "corpus")])
    out = base / "out"
    logs = run_quiet(recipe, out)
    return {"base": base, "copies": copies, "out": out, "logs": logs, "recipe": recipe}


def outputs(out) -> pl.DataFrame:
    seq = pl.read_parquet(out / "parquet" / "*.parquet")
    return seq.with_columns(pl.col("lineage").list.first().struct.field("path").alias("path"))


def test_each_planted_copy_is_dropped_naming_its_kept_twin(dup_run):
    seq = outputs(dup_run["out"])
    rejects = pl.read_parquet(dup_run["out"] / "rejects.parquet").filter(
        (pl.col("stage") == "dedup") & (pl.col("reason") != "media_dropped"))  # not the captions that went along
    id_of = dict(zip(seq["path"], seq["id"]))
    dropped = dict(zip(rejects["path"], zip(rejects["reason"], rejects["detail"])))
    for copy, original in dup_run["copies"].items():
        pair = {copy, original}
        gone = pair & set(dropped)
        kept = pair & set(id_of)
        assert len(gone) == 1 and len(kept) == 1, f"{pair}: dropped {gone}, kept {kept}"
        reason, detail = dropped[gone.pop()]
        want = "exact_duplicate" if copy == "astronaut_copy.png" else "near_duplicate"
        assert reason == want, (copy, reason, detail)
        assert id_of[kept.pop()] in detail, f"the detail must name the kept twin: {detail}"
    assert rejects.height == len(dup_run["copies"]), rejects.to_dicts()  # distinct items are not dropped


def test_the_original_png_beats_its_jpeg_reencode(dup_run):
    paths = set(outputs(dup_run["out"])["path"])
    assert "coffee.png" in paths and "coffee_again.jpg" not in paths


def test_dedup_is_in_stats_and_rows_carry_cluster_and_stats(dup_run):
    stats = json.loads((dup_run["out"] / "stats.json").read_text())
    assert stats["curate"]["dedup"]["dropped"] == {"exact_duplicate": 1, "near_duplicate": 2}
    assert stats["rejects"]["by_stage_reason"]["dedup/media_dropped"] == 2  # the two images' captions
    seq = outputs(dup_run["out"])
    assert (seq["dup_cluster"] == seq["id"]).all()  # survivors are their clusters' kept members
    images = seq.filter(pl.col("kind") == "image")
    assert images["stats"].struct.field("image_width").is_not_null().all()
    assert (images["content_hash"].str.len_chars() == 64).all()


def test_rethresholding_reuses_the_candidates(dup_run):
    base, out = dup_run["base"], dup_run["out"]
    before = outputs(out)
    cand = pl.read_parquet(out / "cache" / "candidates" / "*.parquet").filter(pl.col("kind") == "image")
    blur = {p: json.loads(s).get("image_blur") for p, s in zip(cand["path"], cand["stats"])}
    cut = float(np.median([b for b in blur.values() if b is not None]))
    recipe = load_recipe(tiny_recipe(base, tokenizers=IMAGE_TEXT, output={"val_fraction": 0.5},
                                     curate={"filters": {"image_blur": {"min": cut}}}),
                         inputs=[str(base / "corpus")])
    logs = run_quiet(recipe, out)
    assert any("reusing" in str(line) for line in logs), logs
    after = outputs(out)
    rejects = pl.read_parquet(out / "rejects.parquet").filter(
        (pl.col("stage") == "filter") & (pl.col("reason") != "media_dropped"))
    blurry = {p for p, b in blur.items() if b is not None and b < cut}
    assert blurry and set(rejects["path"]) == blurry
    assert set(rejects["reason"]) == {"image_blur_below_min"}
    assert not blurry & set(after["path"])
    assert set(before["path"]) - blurry <= set(after["path"])  # nothing else lost


def test_a_changed_decode_setting_does_not_reuse(dup_run, tmp_path):
    base = dup_run["base"]
    recipe = load_recipe(tiny_recipe(base, tokenizers=IMAGE_TEXT, output={"val_fraction": 0.5},
                                     decode={"text": {"max_chars": 150_000, "max_record_bytes": 1_000_000}}),
                         inputs=[str(base / "corpus")])
    logs = run_quiet(recipe, dup_run["out"])
    assert not any("reusing" in str(line) for line in logs)


def test_token_shares_csv_matches_the_mixture_report(dup_run):
    import csv

    out = dup_run["out"]
    groups = json.loads((out / "stats.json").read_text())["curate"]["mixture"]["groups"]
    rows = list(csv.DictReader((out / "token_shares.csv").open()))
    assert [r["group"] for r in rows] == sorted(groups)
    for r in rows:
        g = groups[r["group"]]
        assert int(r["achieved_tokens"]) == g["achieved_tokens"]
        assert float(r["achieved_share"]) == pytest.approx(g["achieved_share"], rel=1e-5)
    assert sum(float(r["available_share"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
