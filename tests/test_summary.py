"""The summary `dataengine run` prints, checked against what a real small run wrote."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from corpus_factory import TINY_TOKENIZERS, _basic_motions, _photo, tiny_recipe
from dataengine import mediaio
from dataengine.cli import main
from dataengine.summary import TOP_GROUPS, WIDTH, format_summary

MAX_LINES = 30


def _small_corpus(root: Path) -> None:
    """Photos (one too narrow, one exact copy), prose (one too short), chat, watch recordings, broken files."""
    from pydoc_data.topics import topics

    for stem, side in (("chelsea", 96), ("coffee", 128), ("rocket", 128), ("camera", 64)):
        mediaio.write_image(root / "images" / f"{stem}.png", _photo(stem, side))
        (root / "images" / f"{stem}.txt").write_text(f"A photo called {stem}, seen from close by.\n")
    shutil.copy(root / "images" / "chelsea.png", root / "images" / "chelsea_copy.png")
    (root / "text").mkdir()
    for key in ("assert", "pass", "while"):
        (root / "text" / f"{key}.txt").write_text(topics[key][:1200].strip() + "\n")
    (root / "text" / "short.txt").write_text("Too short.\n")
    (root / "text" / "empty.txt").write_text("")
    (root / "text" / "latin1.txt").write_bytes("Caf\u00e9 cr\u00e8me r\u00e9sum\u00e9.\n".encode("latin-1"))
    (root / "chat").mkdir()
    chat = [{"messages": [{"role": "user", "content": "What does a pass statement do?"},
                          {"role": "assistant", "content": "Nothing: it holds a place where a statement must be."}]},
            {"text": "Python's assert statement checks a condition while debugging."}]
    (root / "chat" / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    channels = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
    for values, label in _basic_motions(3):
        mediaio.write_sensor(root / "sensors" / f"{label}.csv", values, channels, 10.0, label)
    (root / "broken").mkdir()
    (root / "broken" / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "broken" / "empty.png").write_bytes(b"")


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_local):
    """`dataengine run ... --no-report` through the CLI: its stdout and OUT."""
    base = tmp_path_factory.mktemp("summary")
    corpus = base / "corpus"
    _small_corpus(corpus)
    tokenizers = {r: TINY_TOKENIZERS[r] for r in ("text", "image", "sensor")}
    recipe = tiny_recipe(base, tokenizers=tokenizers, curate={"filters": {"image_width": {"min": 80},
                                                                          "text_chars": {"min": 20}}})
    out = base / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["run", str(recipe), "--input", str(corpus), "--output", str(out), "--no-report"]) == 0
    return {"out": out, "stdout": stdout.getvalue(), "stats": json.loads((out / "stats.json").read_text()),
            "rejects": pl.read_parquet(out / "rejects.parquet")}


def _line(text: str, label: str) -> str:
    """The entry of `label` with its wrapped continuation lines joined."""
    lines = text.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith(label + " "))
    j = i + 1
    while j < len(lines) and lines[j].startswith(" " * 11) and lines[j].strip():
        j += 1
    return " ".join(l.strip() for l in lines[i:j])


def test_run_prints_the_summary_on_one_screen(run):
    text = format_summary(run["out"])
    printed = run["stdout"].rstrip("\n").splitlines()
    assert printed[-len(text.splitlines()) + 1:] == text.splitlines()[1:]  # line 0 carries the wall time
    assert printed[-len(text.splitlines())].startswith("run finished in ")
    assert len(text.splitlines()) <= MAX_LINES
    assert max(len(l) for l in text.splitlines()) <= WIDTH


def test_counts_match_stats_rejects_and_shards(run):
    out, stats, rej = run["out"], run["stats"], run["rejects"]
    text = format_summary(out)
    head = text.splitlines()[0]
    assert f"{stats['sequences']['total']:,} sequences" in head and f"{stats['tokens']['total']:,} tokens" in head
    assert f"{rej.height:,} rejected rows" in head
    inputs = _line(text, "inputs")
    assert f"{stats['inputs']['files']} files" in inputs
    assert f"{stats['inputs']['sample_groups']} sample groups" in inputs

    before = rej.filter(~pl.col("stage").is_in(["filter", "dedup", "mixture"]))
    assert before.height >= 3  # empty, latin-1 and noise files
    rejected = _line(text, "rejected")
    for stage, n in before.group_by("stage").len().iter_rows():
        assert f"{stage} {n}:" in rejected
        top_reason, top_n = before.filter(pl.col("stage") == stage).group_by("reason").len() \
            .sort(["len", "reason"], descending=[True, False]).row(0)
        assert f"{top_reason} {top_n}" in rejected

    items = rej.filter(pl.col("reason") != "media_dropped")  # one row per dropped item, companions aside
    n_filter = items.filter(pl.col("stage") == "filter").height
    assert n_filter >= 2  # the 64-pixel photo and the short document
    assert _line(text, "filters").startswith(f"filters    {n_filter} dropped")
    exact = items.filter(pl.col("reason") == "exact_duplicate").height
    assert exact == 1 and f"({exact} exact" in _line(text, "dedup")

    seq = pl.read_parquet(out / "parquet" / "*.parquet")
    splits = _line(text, "sequences")
    per_split = seq.group_by("split").agg(pl.len(), pl.col("num_tokens").cast(pl.Int64).sum())
    for split, n, tokens in per_split.iter_rows():
        assert f"{split} {n:,} ({tokens:,} tokens)" in splits
    shards = _line(text, "shards")
    parquet, tars = sorted((out / "parquet").glob("*.parquet")), sorted((out / "wds").glob("*.tar"))
    mb = sum(p.stat().st_size for p in parquet) / 1e6
    assert f"{len(parquet)} parquet ({mb:.2f} MB)" in shards and f"{len(tars)} webdataset" in shards

    cand = pl.read_parquet(out / "cache" / "candidates" / "*.parquet").filter(pl.col("status") == "ok")
    assert _line(text, "items").startswith(f"items      {cand.height} decoded and tokenized")
    assert f"image {cand.filter(pl.col('kind') == 'image').height}" in _line(text, "items")
    mix = stats["curate"]["mixture"]
    line = _line(text, "mixture")
    assert f"{mix['policy']} plan: {mix['totals']['available_tokens']:,} train tokens" in line
    assert f"-> {mix['totals']['achieved_tokens']:,} per epoch" in line
    assert f"{mix['totals']['rows_left_out']:,} items left out, {mix['totals']['copies']:,} reads of" in line
    for group in mix["groups"]:
        assert any(l.split()[:1] == [group] for l in text.splitlines()), group


def test_no_report_skips_the_report_and_says_how_to_build_it(run):
    assert not (run["out"] / "report.html").exists()
    joined = " ".join(l.strip() for l in format_summary(run["out"]).splitlines())  # undo the wrapping
    assert f"report    not built; `dataengine report {run['out']}` writes it" in joined
    for name in ("manifest.json", "rejects.parquet", "stats.json", "vocab.json"):
        assert str(run["out"] / name) in run["stdout"]


def test_many_long_groups_stay_on_one_screen(run, tmp_path):
    """A corpus with many sources: the largest groups only, names cut, still <= 30 lines of <= 100 columns."""
    out = tmp_path / "out"
    shutil.copytree(run["out"], out, ignore=shutil.ignore_patterns("cache", "parquet", "wds", "tokenizers",
                                                                  "report_digest.json"))
    stats = json.loads((out / "stats.json").read_text())
    group = next(iter(stats["curate"]["mixture"]["groups"].values()))
    stats["curate"]["mixture"]["groups"] = {
        f"a-very-long-source-name-number-{i:02d}/image": {**group, "available_tokens": 1000 + i}
        for i in range(15)}
    (out / "stats.json").write_text(json.dumps(stats))
    (out / "report.html").write_text("<html></html>")
    lines = format_summary(out, seconds=1.0, timings={"decode+tokenize": 2.0, "curate": 0.5}).splitlines()
    assert len(lines) <= MAX_LINES and max(len(l) for l in lines) <= WIDTH
    shown = [l for l in lines if l.startswith("    a-very-long")]
    assert len(shown) == TOP_GROUPS
    assert shown[-1].split()[0].endswith("-14/image") and shown[-1].split()[1] == "1014"  # the largest
    assert any(f"{15 - TOP_GROUPS} smaller groups" in l for l in lines)
    assert not any(l.startswith("items ") for l in lines)  # no report digest: the line is left out
    assert f"report    {out / 'report.html'}" in "\n".join(lines)
    assert "decode+tokenize 2.0s, curate 0.5s" in "\n".join(lines)
