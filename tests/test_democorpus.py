"""The demo corpus (counts, conventions, determinism) and the mixed test corpus."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from dataengine import mediaio
from dataengine.democorpus import write_demo_corpus
from dataengine.errors import RecipeError

from corpus_factory import make_mixed_corpus

MEDIA = {".jpg": "image", ".png": "image", ".wav": "audio", ".flac": "audio", ".ogg": "audio", ".mp3": "audio",
         ".mp4": "video", ".webm": "video", ".csv": "sensor", ".parquet": "sensor", ".npy": "sensor"}


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    info = write_demo_corpus(out)
    return out, info, time.perf_counter() - t0


def test_full_corpus_counts_and_size(full: tuple[Path, dict, float]) -> None:
    out, info, seconds = full
    c = info["counts"]
    assert 60 <= c["image"] <= 100 and c["sensor"] == 80 and c["video"] == 8
    assert 20 <= c["audio"] <= 28 and c["text"] == 120 and 140 <= c["chat"] <= 160
    assert info["audio_source"] == ("espeak-ng" if mediaio.has_espeak() else "pygame")
    assert info["bytes"] < 30_000_000 and seconds < 90
    files = [p for p in out.rglob("*") if p.is_file()]
    assert info["files"] == len(files)
    assert {p.relative_to(out).parts[0] for p in files} == {"images", "audio", "video", "sensors", "text", "chat"}
    found = {k: 0 for k in ("image", "audio", "video", "sensor")}
    for p in files:
        kind = MEDIA.get(p.suffix)
        if kind:
            found[kind] += 1
            sidecar = ".json" if kind == "sensor" else ".txt"
            assert p.with_suffix(sidecar).is_file(), f"{p} has no {sidecar}"
    assert found == {k: c[k] for k in found}
    assert len(list((out / "text").iterdir())) == c["text"]
    assert any(p.suffix == ".md" for p in (out / "text").iterdir())


def test_full_corpus_content(full: tuple[Path, dict, float]) -> None:
    out, _, _ = full
    for p in (out / "text").iterdir():
        assert 100 < len(p.read_text(encoding="utf-8")) <= 4000
    records = [json.loads(line) for line in (out / "chat" / "instructions.jsonl").read_text().splitlines()]
    chats = [r for r in records if "messages" in r]
    assert any("text" in r for r in records)
    assert any(r["messages"][0]["role"] == "system" for r in chats)
    assert any(len(r["messages"]) >= 4 for r in chats)
    for r in chats:
        assert r["messages"][-1]["role"] == "assistant" and all(m["content"] for m in r["messages"])
    for p in sorted((out / "audio").glob("*.wav"))[:3]:
        assert sf.info(str(p)).duration < 8.5
    video = sorted((out / "video").glob("*.mp4"))[0]
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio
        frames = list(c.decode(video=0))
        assert 20 <= len(frames) <= 40 and frames[0].width == 128
    assert len(list((out / "video").glob("*.webm"))) == 1
    meta = json.loads(next((out / "sensors").glob("*.json")).read_text())
    assert meta["rate_hz"] == 10.0 and len(meta["channels"]) == 6
    assert {json.loads(p.read_text())["label"] for p in (out / "sensors").glob("*.json")} == \
        {"walking", "resting", "running", "badminton"}
    arr = np.load(next((out / "sensors").glob("*.npy")), allow_pickle=False)
    assert arr.shape == (100, 6)
    with Image.open(out / "images" / "chelsea.jpg") as im:
        assert im.mode == "RGB"
    assert "tabby cat" in (out / "images" / "chelsea.txt").read_text()


def test_small_corpus_is_byte_deterministic(tmp_path: Path) -> None:
    a = write_demo_corpus(tmp_path / "a", speech=False, seed=3, scale=0.12)
    b = write_demo_corpus(tmp_path / "b", speech=False, seed=3, scale=0.12)
    assert a == b and a["audio_source"] == "pygame"
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    assert all(v >= 1 for v in a["counts"].values())
    c = write_demo_corpus(tmp_path / "c", speech=False, seed=4, scale=0.12)
    assert _hashes(tmp_path / "c") != _hashes(tmp_path / "a")
    assert c["counts"]["sensor"] == a["counts"]["sensor"]


@pytest.mark.skipif(not mediaio.has_espeak(), reason="espeak-ng is not installed")
def test_small_speech_corpus_is_byte_deterministic(tmp_path: Path) -> None:
    a = write_demo_corpus(tmp_path / "a", speech=True, seed=0, scale=0.1)
    b = write_demo_corpus(tmp_path / "b", speech=True, seed=0, scale=0.1)
    assert a["audio_source"] == "espeak-ng"
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_refuses_non_empty_folder_and_bad_scale(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RecipeError, match="not empty"):
        write_demo_corpus(tmp_path, speech=False, scale=0.05)
    with pytest.raises(RecipeError, match="scale"):
        write_demo_corpus(tmp_path / "new", scale=0)
    info = write_demo_corpus(tmp_path, speech=False, scale=0.05, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine" and info["counts"]["image"] >= 1


def test_mixed_corpus(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    fates = make_mixed_corpus(tmp_path / "m")
    assert time.perf_counter() - t0 < 10
    root = tmp_path / "m"
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(fates) == on_disk
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 2_000_000
    kinds = {f for f in fates.values() if f != "ok"}
    assert kinds == {f"reject:{k}" for k in ("truncated", "empty", "random_bytes", "wrong_extension",
                                             "invalid_utf8", "bomb", "nan", "no_rate")}
    exts = {Path(p).suffix for p, f in fates.items() if f == "ok"}
    assert {".png", ".jpg", ".webp", ".bmp", ".wav", ".flac", ".ogg", ".mp3", ".mp4", ".webm", ".avi",
            ".csv", ".parquet", ".npy", ".json", ".txt", ".jsonl"} <= exts
    with pytest.raises(Image.DecompressionBombError):
        Image.open(root / "broken" / "bomb.png")
    with pytest.raises(OSError):
        with Image.open(root / "broken" / "truncated_photo.jpg") as im:
            im.load()
    lines = (root / "chat" / "chat.jsonl").read_text().splitlines()
    assert len(lines) == 4
    bad = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad += 1
    assert bad == 1
    with av.open(str(root / "video" / "cat_pan.mp4")) as c:
        assert c.streams.audio and c.streams.video
    clean = make_mixed_corpus(tmp_path / "clean", broken=False)
    assert all(f == "ok" for f in clean.values()) and not (tmp_path / "clean" / "broken").exists()
