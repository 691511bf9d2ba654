"""Interleaved documents (text with pictures and sound, MMC4 / OBELICS style), from .jsonl to shards.

The run fits tiny text, image and audio tokenizers on a small corpus, so the
sequence's spans can be checked against the tokenizers themselves: text spans
decode back to the document's texts in order, and image spans hold exactly the
codes the image tokenizer gives the referenced files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from corpus_factory import TINY_TOKENIZERS, make_duplicates_corpus, tiny_recipe
from PIL import Image

from dataengine import modalities
from dataengine import decode as D
from dataengine.compose.sequence import MARKERS, compose_interleaved
from dataengine.compose.tasks import ComposeConfig, choose_tasks
from dataengine.decode.text import decode_jsonl
from dataengine.errors import RejectError

GOOD = [
    {"interleaved": [{"text": "A tabby cat looks up at the camera."}, {"image": "photos/astronaut.png"},
                     {"text": "Then a cup of coffee on a red saucer."}, {"image": "photos/coffee.png", "alt": "cup"},
                     {"text": "And that is the whole page."}], "meta": {"url": "https://example.org/page"}},
    {"interleaved": [{"image": "photos/rocket.png"}, {"text": "A rocket waits on the launch pad at night."},
                     {"audio": "sounds/tone.wav"}, {"text": "The countdown tone rings out."}]},
]
# (record, reason) for every line that must be rejected; line numbers follow GOOD's
HOSTILE = [
    ({"interleaved": [{"text": "Where is it?"}, {"image": "photos/nowhere.png"}]}, "missing_image"),
    ({"interleaved": [{"image": "../outside.png"}]}, "unsafe_path"),
    ({"interleaved": [{"image": "/etc/hostname.png"}]}, "unsafe_path"),
    ({"interleaved": [{"image": "photos/escape.png"}]}, "symlink_outside_root"),
    ({"interleaved": [{"text": "Broken:"}, {"image": "photos/noise.jpg"}]}, "not_an_image"),
    ({"interleaved": []}, "no_segments"),
    ({"interleaved": [{"text": "A clip:"}, {"video": "clips/a.mp4"}]}, "bad_segment"),
    ({"interleaved": [{"image": "photos/coffee.png"}] * 4}, "too_many_media"),
    ({"interleaved": [{"image": "https://example.org/cat.jpg"}]}, "remote_reference"),
    ({"interleaved": [{"image": "photos/.hidden.png"}]}, "hidden_file"),
    ({"interleaved": [{"image": "photos/astronaut.txt"}]}, "unsupported_extension"),
]


FS_REASONS = {"missing_image", "symlink_outside_root", "not_an_image"}  # found only by reading the files


def test_decode_jsonl_checks_segments() -> None:
    lines = [json.dumps(GOOD[0])] + [json.dumps(r) for r, _ in HOSTILE]
    out = decode_jsonl(segment_exts=modalities.segment_exts(), data="\n".join(lines).encode(), max_interleaved_media=3)
    good = out[0]
    assert good["interleaved"][3] == {"image": "photos/coffee.png", "alt": "cup"} and good["line"] == 1
    assert good["meta"] == {"url": "https://example.org/page"}
    for i, ((_, reason), entry) in enumerate(zip(HOSTILE, out[1:]), start=2):
        if reason in FS_REASONS:  # well-formed: the decode stage refuses it when it reads the file
            assert isinstance(entry, dict) and entry["line"] == i, (i, entry)
        else:
            assert isinstance(entry, RejectError) and entry.reason == reason, (i, reason, entry)
            assert entry.detail.startswith(f"line {i}:") and entry.line == i
    (both,) = decode_jsonl(segment_exts=modalities.segment_exts(), data=json.dumps({"text": "a", "interleaved": [{"text": "b"}]}).encode())
    assert isinstance(both, RejectError) and both.reason == "bad_record"
    (blank,) = decode_jsonl(segment_exts=modalities.segment_exts(), data=json.dumps({"interleaved": [{"text": "  "}]}).encode())
    assert isinstance(blank, RejectError) and blank.reason == "bad_segment"


def test_compose_interleaved_layout(text_vocab, bpe) -> None:
    texts = ["A red ball.", "Next to a small dog."]
    img = np.arange(6, dtype=np.int64)
    parts = [("text", "text", np.asarray(bpe.encode(texts[0])[0]), {}), ("image", "image", img, {"grid": [2, 3]}),
             ("text", "text", np.asarray(bpe.encode(texts[1])[0]), {})]
    b = compose_interleaved(text_vocab, parts)
    toks = b.tokens()
    sp = text_vocab.special
    assert toks[0] == sp("<|bos|>") and toks[-1] == sp("<|eos|>")
    assert [s["modality"] for s in b.spans] == ["text", "image", "text"]
    for span, side in zip(b.spans, b.side):
        begin, end = MARKERS[span["modality"]]
        assert toks[span["start"] - 1] == sp(begin) and toks[span["end"]] == sp(end)
        assert side["modality"] == span["modality"]
    decoded = [bpe.decode(text_vocab.to_local("text", toks[s["start"]:s["end"]]), {})
               for s in b.spans if s["modality"] == "text"]
    assert decoded == texts
    assert list(text_vocab.to_local("image", toks[b.spans[1]["start"]:b.spans[1]["end"]])) == list(img)
    assert b.targets == [{"start": 0, "end": len(toks)}]  # pretraining: loss everywhere
    with pytest.raises(ValueError, match="at least one segment"):
        compose_interleaved(text_vocab, [])
    assert choose_tasks(ComposeConfig(), "interleaved", ["a", "b"], 0, [True, False]) == ["interleaved"] * 2


def _corpus(root: Path, outside: Path) -> dict[str, str]:
    """Photos with captions, documents, a tone, and the interleaved .jsonl; {record path: expected reason}."""
    make_duplicates_corpus(root / "photos")  # photos with captions and prose docs (enough to fit tokenizers)
    (root / "photos" / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    Image.new("RGB", (8, 8)).save(outside / "outside.png")
    os.symlink(outside / "outside.png", root / "photos" / "escape.png")
    (root / "sounds").mkdir()
    t = np.arange(16000) / 16000
    sf.write(str(root / "sounds" / "tone.wav"), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (root / "sounds" / "tone.txt").write_text("A steady 440 Hz tone.\n")
    (root / "docs").mkdir()
    lines = [json.dumps(r) for r in GOOD] + [json.dumps(r) for r, _ in HOSTILE]
    (root / "docs" / "pages.jsonl").write_text("\n".join(lines) + "\n")
    (root / "docs" / "again.jsonl").write_text(json.dumps(GOOD[0]) + "\n")  # an exact copy of page 1
    return {f"docs/pages.jsonl#L{i}": reason for i, (_, reason) in enumerate(HOSTILE, start=len(GOOD) + 1)}


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_local):
    from dataengine.pipeline.run import run_pipeline
    from dataengine.recipe import load_recipe

    base = tmp_path_factory.mktemp("interleaved")
    outside = tmp_path_factory.mktemp("outside")
    corpus = base / "corpus"
    expected = _corpus(corpus, outside)
    toks = {k: TINY_TOKENIZERS[k] for k in ("text", "image", "audio")}
    path = tiny_recipe(base, tokenizers=toks, decode={"text": {"max_interleaved_media": 3}},
                       curate={"filters": {}, "mixture": {"policy": "none"}})
    recipe = load_recipe(path, inputs=[str(corpus)])
    run_pipeline(recipe, base / "out", log=lambda *_: None)
    out = base / "out"
    seq = pl.read_parquet(out / "parquet" / "*.parquet")  # path: the input a row is about (its first lineage entry)
    seq = seq.with_columns(path=pl.col("lineage").list.first().struct.field("path"))
    return {"out": out, "corpus": corpus, "seq": seq, "expected": expected,
            "rejects": pl.read_parquet(out / "rejects.parquet")}


def _load(out: Path):
    from dataengine.pipeline.tokenize_stage import load_tokenizers
    from dataengine.vocab import Vocab

    vocab = Vocab.load(out / "vocab.json")
    return vocab, load_tokenizers(out / "tokenizers", sorted(vocab.tokenizers))


def _page(run, i: int) -> dict:
    """The sequence of GOOD[i]; page 1 also lies in docs/again.jsonl, and dedup keeps one copy of the two."""
    paths = ["docs/pages.jsonl#L1", "docs/again.jsonl#L1"] if i == 0 else [f"docs/pages.jsonl#L{i + 1}"]
    (row,) = run["seq"].filter(pl.col("path").is_in(paths)).iter_rows(named=True)
    return row


def test_sequence_decodes_back_to_the_document(run) -> None:
    vocab, toks = _load(run["out"])
    assert run["seq"].filter(pl.col("kind") == "interleaved").height == len(GOOD)
    size = int(toks["image"].params["size"])
    for i, record in enumerate(GOOD):
        row, segments = _page(run, i), record["interleaved"]
        assert row["task"] == "interleaved" and row["kind"] == "interleaved"
        tokens = np.asarray(row["tokens"])
        assert tokens[0] == vocab.special("<|bos|>") and tokens[-1] == vocab.special("<|eos|>")
        assert [s["modality"] for s in row["spans"]] == [next(k for k in ("text", "image", "audio") if k in s)
                                                         for s in segments]
        assert row["target_spans"] == [{"start": 0, "end": len(tokens)}]
        assert [lin["path"] for lin in row["lineage"]] == [row["path"]]  # the pictures are accounted for apart
        for span, seg in zip(row["spans"], segments):
            ids = tokens[span["start"]:span["end"]]
            if "text" in seg:
                assert toks["text"].decode(vocab.to_local("text", ids), {}) == seg["text"]
            elif "image" in seg:
                img = D.square_resize(D.decode_image((run["corpus"] / seg["image"]).read_bytes()), size)
                assert vocab.to_local("image", ids).tolist() == np.asarray(toks["image"].encode(img)[0]).tolist()
            else:
                assert set(vocab.modality_of(ids)) == {"audio"} and len(ids) > 0
        meta = json.loads(row["meta"])
        assert [s.get("image") for s in meta["segments"]] == [s.get("image") for s in segments]
        joined = "\n\n".join(s["text"] for s in segments if "text" in s)
        assert meta["text"] == joined and row["stats"]["text_chars"] == len(joined)


def test_the_image_span_matches_the_image_sample(run) -> None:
    """The same picture, as a page's segment and as its own image sample, has the same codes."""
    seq = run["seq"]
    page = _page(run, 0)
    (photo,) = seq.filter(pl.col("path") == "photos/coffee.png").iter_rows(named=True)
    seg = page["spans"][3]  # GOOD[0]'s segment 3 is photos/coffee.png
    img = next(s for s in photo["spans"] if s["modality"] == "image")
    assert page["tokens"][seg["start"]:seg["end"]] == photo["tokens"][img["start"]:img["end"]]


def test_hostile_records_are_rejects_with_reasons(run) -> None:
    rej = run["rejects"]
    for path, reason in run["expected"].items():
        rows = rej.filter(pl.col("path") == path)
        assert rows["reason"].to_list() == [reason], (path, rows.to_dicts())
        assert rows["detail"][0].startswith(f"line {path.rsplit('#L', 1)[1]}:")
    used = {lin["path"] for lins in run["seq"]["lineage"].to_list() for lin in lins}
    assert not used & set(rej["path"].to_list())
    # page 1 and its copy hash the same (texts and pixels): one survives, the other names it
    kept = _page(run, 0)
    twin = ({"docs/pages.jsonl#L1", "docs/again.jsonl#L1"} - {kept["path"]}).pop()
    (dup,) = rej.filter(pl.col("path") == twin).to_dicts()
    assert dup["reason"] == "exact_duplicate" and kept["id"] in dup["detail"]
    assert {"photos/coffee.png", "photos/rocket.png", "sounds/tone.wav"} <= used  # still samples of their own


def test_inspect_renders_the_document(run, tmp_path) -> None:
    from dataengine.inspect import decode_sequence

    vocab, toks = _load(run["out"])
    row = _page(run, 0)
    written = decode_sequence(row, vocab, toks, tmp_path)
    pngs = sorted(p for p in written if p.suffix == ".png")
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (32, 32)
    doc = (tmp_path / "document.md").read_text()
    texts = [s["text"] for s in GOOD[0]["interleaved"] if "text" in s]
    assert [doc.index(t) for t in texts] == sorted(doc.index(t) for t in texts)
    assert doc.index(texts[0]) < doc.index(f"]({pngs[0].name})") < doc.index(texts[1])
