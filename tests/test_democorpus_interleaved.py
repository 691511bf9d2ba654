"""The demo corpus's interleaved documents: well-formed, pointing at its own pictures, built from their captions."""
from __future__ import annotations

from pathlib import Path

from dataengine import modalities
from dataengine.decode.text import decode_jsonl
from dataengine.democorpus import write_demo_corpus


def test_illustrated_pages(tmp_path: Path) -> None:
    info = write_demo_corpus(tmp_path, speech=False, seed=1, scale=0.12)
    records = decode_jsonl(segment_exts=modalities.segment_exts(), data=(tmp_path / "images" / "illustrated.jsonl").read_bytes())
    assert len(records) == info["counts"]["interleaved"] >= 1
    for rec in records:
        assert isinstance(rec, dict), rec  # a RejectError would name the bad line
        segs = rec["interleaved"]
        images = [s["image"] for s in segs if "image" in s]
        assert 2 <= len(images) <= 3 and len(set(images)) == len(images)
        assert "text" in segs[0] and "text" in segs[-1]
        assert all(("text" in a) != ("text" in b) for a, b in zip(segs, segs[1:]))  # text and pictures alternate
        for j, ref in enumerate(images):
            assert (tmp_path / ref).is_file()
            caption = (tmp_path / ref).with_suffix(".txt").read_text(encoding="utf-8").strip()
            assert segs[2 * j + 2]["text"].startswith(caption)  # the picture is described right after it
