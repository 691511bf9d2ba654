"""DecodeStage on a small mixed corpus (no Ray): content hashes and quality stats columns."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from corpus_factory import make_mixed_corpus
from PIL import Image

from dataengine.curate.stats import STAT_FIELDS, stats_table
from dataengine.discover import discover
from dataengine.pipeline.decode_stage import DECODED_SCHEMA, DecodeStage
from dataengine.recipe import Decode

MODALITIES = frozenset({"image", "audio", "video", "sensor", "text"})


def _stage(**kw) -> DecodeStage:
    return DecodeStage(decode=Decode(), sizes={"image": 32}, modalities=MODALITIES, **kw)


def _units(root: Path) -> pa.Table:
    found = discover([("demo", root)], max_file_bytes=Decode().max_file_bytes)
    return pa.Table.from_pylist([u.to_row() for u in found.units])


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("corpus")
    make_mixed_corpus(root)
    img = root / "images"
    shutil.copy(img / "chelsea.png", img / "chelsea_copy.png")            # the same file under another name
    with Image.open(img / "chelsea.png") as im:
        im.save(img / "chelsea_lossless.bmp")                             # the same pixels, another format
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(img / "chelsea_flipped.png")  # other pixels
    wave, sr = sf.read(str(root / "audio/clip0.wav"), dtype="int16")
    sf.write(str(root / "audio/clip0_again.flac"), wave, sr, subtype="PCM_16")  # lossless re-encode
    shutil.copy(root / "text/while.txt", root / "text/while_copy.txt")
    table = _stage()(_units(root))
    assert table.schema == DECODED_SCHEMA
    return {r["path"]: r for r in table.to_pylist()}


def test_same_payload_same_hash(decoded: dict[str, dict]) -> None:
    h = {p: r["content_hash"] for p, r in decoded.items()}
    assert h["images/chelsea.png"] == h["images/chelsea_copy.png"] == h["images/chelsea_lossless.bmp"]
    assert h["audio/clip0.wav"] == h["audio/clip0_again.flac"]
    assert h["text/while.txt"] == h["text/while_copy.txt"]


def test_different_payload_different_hash(decoded: dict[str, dict]) -> None:
    ok = {p: r for p, r in decoded.items() if r["status"] == "ok"}
    assert ok["images/chelsea.png"]["content_hash"] != ok["images/chelsea_flipped.png"]["content_hash"]
    twins = {("images/chelsea.png", "images/chelsea_copy.png"), ("images/chelsea.png", "images/chelsea_lossless.bmp"),
             ("images/chelsea_copy.png", "images/chelsea_lossless.bmp"), ("audio/clip0.wav", "audio/clip0_again.flac"),
             ("text/while.txt", "text/while_copy.txt")}
    by_hash: dict[str, list[str]] = {}
    for p, r in ok.items():
        assert len(r["content_hash"]) == 64
        by_hash.setdefault(r["content_hash"], []).append(p)
    groups = {tuple(sorted(g)) for g in by_hash.values() if len(g) > 1}
    assert {pair for g in groups for pair in zip(g, g[1:])} <= twins | {(b, a) for a, b in twins}
    assert len(by_hash) == len(ok) - 4  # the three chelsea copies are one, clip0 twins one, while twins one


def test_stats_columns(decoded: dict[str, dict]) -> None:
    prefix = {"image": "image_", "video": "video_", "audio": "audio_", "sensor": "sensor_", "text": "text_",
              "chat": "text_"}
    kinds = set()
    for path, r in decoded.items():
        stats = json.loads(r["stats"])
        if r["status"] != "ok":
            assert (r["content_hash"], stats) == ("", {}), path
            continue
        kinds.add(r["kind"])
        assert "stats_error" not in json.loads(r["meta"]), path
        assert stats and set(stats) <= set(STAT_FIELDS), path
        assert all(k.startswith((prefix[r["kind"]], "media_")) for k in stats), path
    assert kinds == set(prefix)
    table = stats_table([r["stats"] for r in decoded.values()])
    assert table.num_rows == len(decoded)


def test_stats_are_measured_before_the_resize(decoded: dict[str, dict]) -> None:
    s = json.loads(decoded["images/coffee.jpg"]["stats"])
    meta = json.loads(decoded["images/coffee.jpg"]["meta"])
    assert (s["image_width"], s["image_height"]) == (meta["width"], meta["height"]) != (32, 32)
    v = json.loads(decoded["video/cat_pan.mp4"]["stats"])
    assert v["video_width"] == 64 and v["video_has_audio"] is True and v["video_motion"] > 0
    sensor = json.loads(decoded["sensors/walking.npy"]["stats"])
    assert sensor["sensor_length"] == 100 and sensor["sensor_channels"] == 6 and sensor["sensor_nan_ratio"] == 0
    chat = json.loads(decoded["chat/chat.jsonl#L2"]["stats"])
    assert chat["text_lang"] == "en" and chat["text_words"] > 10


def test_sensor_nan_ratio_before_filling(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((100, 2))
    values[::20, 0] = np.nan  # 5 of 200 values
    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s/watch.npy", values)
    (tmp_path / "s/watch.json").write_text(json.dumps({"rate_hz": 10.0, "label": "walking"}))
    row = _stage()(_units(tmp_path)).to_pylist()[0]
    assert row["status"] == "ok"
    assert json.loads(row["stats"])["sensor_nan_ratio"] == pytest.approx(5 / 200)


def test_stats_off_keeps_the_hash(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("Some words in a document.\n")
    row = _stage(stats=False)(_units(tmp_path)).to_pylist()[0]
    assert row["stats"] == "{}" and len(row["content_hash"]) == 64
