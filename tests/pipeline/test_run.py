"""The integration test: the real Ray pipeline on a small corpus with broken files."""
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import webdataset as wds

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine.compose.tasks import KIND_TASKS
from dataengine.inspect import decode_to, summary_lines
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import load_recipe
from dataengine.vocab import Vocab


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("run")
    corpus = base / "corpus"
    expected = make_mixed_corpus(corpus, broken=True)
    # several shards even for a small corpus; no filter or mixture drops: every good file must arrive
    recipe_path = tiny_recipe(base, output={"shard_rows": 8}, curate={"filters": {}, "mixture": {"policy": "none"}})
    recipe = load_recipe(recipe_path, inputs=[str(corpus)])
    out1, out2 = base / "out1", base / "out2"
    m1 = run_pipeline(recipe, out1, log=lambda *_: None)
    m2 = run_pipeline(recipe, out2, log=lambda *_: None)
    return {"corpus": corpus, "expected": expected, "out": out1, "m1": m1, "m2": m2, "base": base}


def sequences(out: Path) -> pl.DataFrame:
    return pl.scan_parquet(str(out / "parquet" / "*.parquet")).collect()


def test_every_input_is_in_exactly_one_place(run):
    seq = sequences(run["out"])
    rejects = pl.read_parquet(run["out"] / "rejects.parquet")
    used = {lin["path"] for lins in seq["lineage"].to_list() for lin in lins}
    rejected = set(rejects["path"].to_list())
    assert not used & rejected, f"in both an output and the rejects: {used & rejected}"
    for path, fate in run["expected"].items():
        in_out = path in used or any(u.startswith(path + "#") for u in used)
        in_rej = path in rejected or any(r.startswith(path + "#") for r in rejected)
        assert in_out or in_rej, f"{path} is lost"
        if fate == "ok":
            assert in_out, f"{path} should have made it: {rejects.filter(pl.col('path') == path).to_dicts()}"
        else:
            assert in_rej and not in_out, f"{path} ({fate}) should be rejected"
            reason = rejects.filter(pl.col("path") == path)["reason"].to_list()
            assert reason and all(reason), f"{path} rejected without a reason"
    assert rejects["reason"].null_count() == 0 and (rejects["detail"].str.len_chars() > 0).all()


def test_every_modality_and_task_is_present(run):
    seq = sequences(run["out"])
    mods = {m for ms in seq["modalities"].to_list() for m in ms}
    assert mods == {"text", "image", "video", "audio", "sensor"}
    assert set(seq["kind"]) == {"image", "audio", "video", "sensor", "text", "chat"}
    for kind, tasks in KIND_TASKS.items():  # every task is one its kind allows (instructions: KIND_instruct)
        allowed = {t if t != "instruct" else f"{kind}_instruct" for t in tasks}
        assert set(seq.filter(pl.col("kind") == kind)["task"]) <= allowed, kind
    video = seq.filter(pl.col("kind") == "video")
    assert any("audio" in m for m in video["modalities"].to_list()), "the video with sound lost its audio track"


def test_token_ids_lie_in_their_modality_range(run):
    vocab = Vocab.load(run["out"] / "vocab.json")
    seps = {vocab.special("<|frame_sep|>"), vocab.special("<|row_sep|>")}
    for row in sequences(run["out"]).iter_rows(named=True):
        toks = np.asarray(row["tokens"])
        assert toks.min() >= 0 and toks.max() < vocab.size
        assert len(toks) == row["num_tokens"]
        for span in row["spans"]:
            ids = toks[span["start"]:span["end"]]
            ids = ids[~np.isin(ids, list(seps))]
            assert set(vocab.modality_of(ids)) == {span["modality"]}, (row["task"], span)


def test_readers_agree(run):
    import ray

    out = run["out"]
    seq = sequences(out)
    total_tokens = int(seq["num_tokens"].cast(pl.Int64).sum())
    tars = sorted(str(p) for p in (out / "wds").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert sorted(s["__key__"] for s in samples) == sorted(seq["id"].to_list())
    assert sum(len(s["tokens.npy"]) for s in samples) == total_tokens
    rd = ray.data.read_parquet(str(out / "parquet"))
    assert rd.count() == seq.height
    rw = ray.data.read_webdataset(str(out / "wds"))
    assert rw.count() == seq.height
    n = duckdb.sql(f"select count(*), sum(len(tokens)) from read_parquet('{out}/parquet/*.parquet')").fetchall()[0]
    assert n == (seq.height, total_tokens)
    manifest = run["m1"]
    assert manifest["totals"]["sequences"] == seq.height and manifest["totals"]["tokens"] == total_tokens
    assert sum(s["sequences"] for s in manifest["shards"] if s["format"] == "parquet") == seq.height


def test_two_runs_write_identical_shards(run):
    sums = lambda m: [(s["path"], s["sha256"]) for s in m["shards"]]  # noqa: E731
    assert len(sums(run["m1"])) > 2
    assert sums(run["m1"]) == sums(run["m2"])
    assert (run["out"] / "rejects.parquet").read_bytes() == (run["base"] / "out2" / "rejects.parquet").read_bytes()
    assert not list(run["base"].glob(".out1.staging-*")), "staging folder left behind"


def test_inspect_decodes_every_modality(run, tmp_path):
    lines = summary_lines(run["out"])
    assert "sequences" in lines[0] and any("rejects by stage/reason" in l for l in lines)
    written = decode_to(run["out"], 12, tmp_path, log=lambda *_: None)
    suffixes = {p.suffix for p in written}
    assert {".png", ".gif", ".wav", ".csv", ".txt"} <= suffixes
    from PIL import Image
    import soundfile as sf

    png = next(p for p in written if p.suffix == ".png")
    assert Image.open(png).size == (32, 32)
    wav = next(p for p in written if p.suffix == ".wav")
    assert sf.info(str(wav)).samplerate == 16000 and sf.info(str(wav)).frames > 1000
    text = next(p for p in written if p.name == "sequence.txt").read_text()
    assert text.startswith("<|bos|>")


def test_what_the_dvc_stages_read_from_out_is_what_a_run_writes(run):
    """dvc.yaml's build stage declares what `dataengine run` writes into out/demo, and later stages read
    inside it: each such path must exist in a real OUT (a renamed output otherwise breaks `make demo`
    only at the stage that reads it)."""
    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    name = lambda o: o if isinstance(o, str) else next(iter(o))  # noqa: E731
    build = stages["build_corpus"]
    written = {name(o) for o in build.get("outs", []) + build.get("metrics", [])}
    later = {name(o) for n, s in stages.items() if n != "build_corpus" for o in s.get("outs", [])}
    read = {d for n, s in stages.items() if n != "build_corpus" for d in s.get("deps", [])
            if isinstance(d, str) and d.startswith("out/demo/")
            and not any(d == o or d.startswith(o + "/") for o in later)}  # made by another stage
    paths = written | read
    assert len(paths) > 8
    missing = sorted(p for p in paths if not (run["out"] / p[len("out/demo/"):]).exists())
    assert not missing, f"dvc.yaml names {missing} in out/demo, which `dataengine run` does not write"
    assert read <= {d for d in read if any(d == w or d.startswith(w + "/") for w in written)}, \
        f"a stage reads {sorted(read - written)} from out/demo, which build_corpus does not declare"
