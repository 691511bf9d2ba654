"""Dedup in token space: exact and near clusters, the keep rule, and calibration on real media.

Calibration fixtures: a tiny fsq_image tokenizer fitted on scikit-image's photos (JPEG
re-encodes vs other photos vs crops) and a small BPE fitted on Python's own docs
(a lightly edited ~2 KB document vs other paragraphs).
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import skimage
from PIL import Image

from dataengine.curate.dedup import DedupConfig, dedup
from dataengine.errors import RecipeError

SCHEMA = {"id": pl.String, "kind": pl.String, "content_hash": pl.String, "quality": pl.Float64,
          "tokens": pl.List(pl.Int32),
          "spans": pl.List(pl.Struct({"modality": pl.String, "start": pl.Int32, "end": pl.Int32}))}
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png"]
TEXT0, MEDIA0 = 64, 5000  # fake global-id offsets of the text and media ranges


def row(id_, kind, media=None, text=None, content_hash="", quality=None):
    """A sequence row: [marker] media codes [marker] [marker] text [marker], spans excluding markers."""
    toks, spans = [], []
    for modality, codes, off in ((kind if media is not None else None, media, MEDIA0), ("text", text, TEXT0)):
        if codes is None:
            continue
        toks.append(3)
        spans.append({"modality": modality, "start": len(toks), "end": len(toks) + len(codes)})
        toks.extend((np.asarray(codes) + off).tolist())
        toks.append(4)
    return {"id": id_, "kind": kind, "content_hash": content_hash, "quality": quality,
            "tokens": toks, "spans": spans}


def frame(rows):
    return pl.DataFrame(rows, schema=SCHEMA)


def drop_map(result):
    return {r["id"]: r for r in result.drops.iter_rows(named=True)}


# ---- exact duplicates and the keep rule -------------------------------------------------
def test_exact_duplicates_keep_highest_quality_then_smallest_id():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 900, 64), rng.integers(0, 900, 64)
    rows = [row("z1", "image", a, [1, 2], "h_a", 0.2), row("y1", "image", a, [3], "h_a", 0.9),
            row("x1", "image", a, [4], "h_a", None),
            row("c2", "image", b, [1], "h_b", None), row("b2", "image", b, [1], "h_b", float("nan")),
            row("u", "image", rng.integers(0, 900, 64), [5], "", None)]
    res = dedup(frame(rows), DedupConfig(near=False))
    drops = drop_map(res)
    assert set(drops) == {"z1", "x1", "c2"}
    assert drops["z1"]["kept_id"] == "y1" and drops["x1"]["kept_id"] == "y1"
    assert drops["c2"]["kept_id"] == "b2"        # None and NaN quality both count as 0: smaller id wins
    assert all(d["reason"] == "exact_duplicate" and d["kept_id"] in d["detail"] for d in drops.values())
    cl = dict(res.cluster.iter_rows())
    assert cl["z1"] == cl["x1"] == cl["y1"] == "y1" and cl["u"] == "u"
    assert res.summary["dropped"] == {"exact_duplicate": 3, "near_duplicate": 0}
    assert res.summary["largest_clusters"][0] == {"kept_id": "y1", "kind": "image", "size": 3}


def test_empty_hash_is_never_an_exact_match_and_kinds_are_not_mixed():
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 1000, 64)
    rows = [row("a", "image", codes, [1], ""), row("b", "image", rng.integers(0, 1000, 64), [1], ""),
            row("c", "video", codes, None, "same"), row("d", "audio", codes, None, "same")]
    res = dedup(frame(rows), DedupConfig())
    assert res.drops.height == 0  # same codes/hash but another kind: not compared


def test_near_duplicate_image_with_another_caption_and_exact_chain():
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 1000, 64) for _ in range(30)]
    rows = [row(f"p{i:02d}", "image", c, rng.integers(0, 300, 12), f"h{i}", 0.5) for i, c in enumerate(base)]
    edited = base[0].copy()
    edited[[5, 30, 50]] = rng.integers(0, 1000, 3)
    rows.append(row("q_edit", "image", edited, rng.integers(0, 300, 9), "h_edit", 0.9))  # better: kept
    rows.append(row("q_copy", "image", base[0], [7, 7], "h0", 0.1))  # exact copy of p00, a near-dup
    res = dedup(frame(rows), DedupConfig())
    drops = drop_map(res)
    assert set(drops) == {"p00", "q_copy"}
    assert drops["p00"]["reason"] == "near_duplicate" and drops["p00"]["kept_id"] == "q_edit"
    assert 0.6 < drops["p00"]["jaccard"] < 1.0 and "q_edit" in drops["p00"]["detail"]
    assert drops["q_copy"]["reason"] == "exact_duplicate" and drops["q_copy"]["kept_id"] == "q_edit"
    assert "p00" in drops["q_copy"]["detail"]          # names its identical twin too
    assert res.summary["by_kind"]["image"]["near_clusters"] == 1


def test_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(2)
    base = [rng.integers(0, 1000, 64) for _ in range(20)]
    rows = [row(f"r{i}", "image", c, [1], "", None) for i, c in enumerate(base)]
    rows += [row(f"s{i}", "image", np.where(rng.random(64) < 0.03, 999, c), [2], "", None)
             for i, c in enumerate(base[:10])]
    a = dedup(frame(rows), DedupConfig())
    b = dedup(frame(rows[::-1]), DedupConfig())
    assert a.drops.height >= 8
    assert a.drops.sort("id").equals(b.drops.sort("id"))


def test_config_errors_name_the_fix():
    with pytest.raises(RecipeError, match="unknown key"):
        DedupConfig.from_dict({"ngrams": 3})
    with pytest.raises(RecipeError, match="bands and rows"):
        DedupConfig.from_dict({"bands": 4})
    assert DedupConfig.from_dict({"ngram": {"image": 3}}).ngram["text"] == 5  # partial override
    with pytest.raises(RecipeError, match="no n-gram size"):
        dedup(frame([row("a", "hologram", [1, 2, 3], None)]), DedupConfig())


# ---- calibration on real photos ------------------------------------------------------------
def _photo(name: str) -> np.ndarray:
    im = Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")
    return np.array(im)


def _jpeg(im: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=q)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def image_tok():
    import torch

    from dataengine.tokenize.image_fsq import FSQImageTokenizer

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    crops = []
    for name in PHOTOS:
        im = _photo(name)
        h, w = im.shape[:2]
        for _ in range(6):
            s = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            crops.append(np.array(Image.fromarray(im[y:y + s, x:x + s]).resize((64, 64), Image.BILINEAR)))
    params = {"steps": 60, "batch_size": 8, "channels": 32}
    return FSQImageTokenizer.fit(crops, params, seed=0, log=lambda *_: None)


def test_jpeg_reencodes_are_near_duplicates_but_other_photos_and_crops_are_not(image_tok):
    rng = np.random.default_rng(3)
    items = []  # (id, image, quality, original name or None)
    for name in PHOTOS:
        im = _photo(name)
        h, w = im.shape[:2]
        items.append((name, im, 1.0, None))
        items += [(f"{name}.q{q}", _jpeg(im, q), 0.5, name) for q in (75, 85, 90)]
        items.append((f"{name}.crop", np.ascontiguousarray(im[h // 4:, w // 4:]), 0.5, None))  # 75% crop
    codes = image_tok.encode_images([im for _, im, _, _ in items])
    rows = [row(i, "image", c, rng.integers(0, 300, 10), "", q) for (i, _, q, _), c in zip(items, codes)]
    drops = drop_map(dedup(frame(rows), DedupConfig()))
    for id_, _, _, orig in items:
        if orig is None:
            assert id_ not in drops, f"{id_} was dropped as a duplicate of {drops[id_]['kept_id']}"
        else:
            assert drops[id_]["reason"] == "near_duplicate" and drops[id_]["kept_id"] == orig


# ---- calibration on prose ------------------------------------------------------------------
@pytest.fixture(scope="module")
def prose():
    import pydoc_data.topics as topics

    text = " ".join(re.sub(r"\s+", " ", v) for _, v in sorted(topics.topics.items()))
    return text


@pytest.fixture(scope="module")
def bpe(prose):
    from dataengine.tokenize.text_bpe import BPETokenizer

    return BPETokenizer.fit([prose[i:i + 4000] for i in range(0, 400_000, 4000)], {"vocab_size": 2000},
                            seed=0, log=lambda *_: None)


def _edit(doc: str, n_words: int, rng) -> str:
    words = doc.split(" ")
    for k in rng.choice(len(words), n_words, replace=False):
        words[k] = "zebra" if words[k] != "zebra" else "yak"
    return " ".join(words)


def test_lightly_edited_document_is_a_near_duplicate_other_paragraphs_are_not(bpe, prose):
    rng = np.random.default_rng(4)
    docs = {f"doc{i}": prose[i * 2000 + 50_000:(i + 1) * 2000 + 50_000] for i in range(8)}
    docs["doc0.edit"] = _edit(docs["doc0"], 4, rng)
    docs["doc1.edit"] = _edit(docs["doc1"], 8, rng)
    rows = [row(k, "text", None, bpe.encode(v)[0], "", 1.0 if "edit" not in k else 0.0) for k, v in docs.items()]
    drops = drop_map(dedup(frame(rows), DedupConfig()))
    assert set(drops) == {"doc0.edit", "doc1.edit"}
    assert drops["doc0.edit"]["kept_id"] == "doc0" and drops["doc1.edit"]["kept_id"] == "doc1"
    assert drops["doc0.edit"]["jaccard"] > drops["doc1.edit"]["jaccard"] > 0.7


def test_chat_content_is_text_spans_only():
    rng = np.random.default_rng(5)
    turns = rng.integers(0, 1000, 300)
    rows = [row("c1", "chat", None, turns, ""), row("c2", "chat", None, turns[:-3], ""),
            row("c3", "chat", None, rng.integers(0, 1000, 300), "")]
    drops = drop_map(dedup(frame(rows), DedupConfig()))
    assert set(drops) == {"c2"} and drops["c2"]["kept_id"] == "c1"


def _interleaved(id_, text, picture=None):
    """An interleaved record: an image segment (when given), then a text segment."""
    toks, spans = [], []
    for modality, codes, off in (("image", picture, MEDIA0), ("text", text, TEXT0)):
        if codes is not None:
            spans.append({"modality": modality, "start": len(toks) + 1, "end": len(toks) + 1 + len(codes)})
            toks += [3] + (np.asarray(codes) + off).tolist() + [4]
    return {"id": id_, "kind": "interleaved", "content_hash": "", "quality": None, "tokens": toks, "spans": spans}


def test_interleaved_records_are_duplicates_only_when_their_pictures_match_too():
    rng = np.random.default_rng(7)
    text, pic_a, pic_b = rng.integers(0, 1000, 400), rng.integers(0, 900, 64), rng.integers(0, 900, 64)
    rows = [_interleaved("i1", text, pic_a), _interleaved("i2", text[:-3], pic_a),  # same picture: near-dup
            _interleaved("i3", text, pic_b),                                        # another picture: kept
            _interleaved("i4", text[:-2], pic_a[::-1].copy()),                      # same codes, other order
            _interleaved("t1", text), _interleaved("t2", text[:-2])]                # no pictures: text decides
    drops = drop_map(dedup(frame(rows), DedupConfig()))
    assert set(drops) == {"i2", "t2"}
    assert drops["i2"]["kept_id"] == "i1" and drops["t2"]["kept_id"] == "t1"
