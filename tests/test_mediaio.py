"""Every writer in dataengine.mediaio produces a file that reads back correctly."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from dataengine import mediaio

SR = 22050


def _tone(seconds: float = 1.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _frames(t: int = 20, h: int = 65, w: int = 67) -> np.ndarray:
    """Moving gradient frames (odd size on purpose), so no two frames are equal."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx * 3 + i * 9) % 256, (yy * 3) % 256, np.full_like(xx, i * 10)], -1)
                     for i in range(t)]).astype(np.uint8)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decode_audio(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return stream.rate, sum(f.samples for f in c.decode(stream))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"])
def test_write_image_reads_back(tmp_path: Path, ext: str) -> None:
    img = _frames(1, 40, 50)[0]
    path = mediaio.write_image(tmp_path / f"x{ext}", img)
    with Image.open(path) as im:
        assert im.size == (50, 40)
        back = np.asarray(im.convert("RGB"))
    if ext in (".png", ".bmp"):
        assert np.array_equal(back, img)
    elif ext != ".gif":
        assert np.abs(back.astype(int) - img).mean() < 12


def test_png_jpeg_helpers_and_grey(tmp_path: Path) -> None:
    grey = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    with Image.open(mediaio.write_png(tmp_path / "g.png", grey)) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey)
    with Image.open(mediaio.write_jpeg(tmp_path / "c.jpg", _frames(1)[0], quality=70)) as im:
        assert im.format == "JPEG" and im.size == (67, 65)
    rgba = np.zeros((8, 8, 4), np.uint8)
    with Image.open(mediaio.write_image(tmp_path / "a.jpg", rgba)) as im:
        assert im.mode == "RGB"
    with pytest.raises(ValueError, match="extension"):
        mediaio.write_image(tmp_path / "x.tiff", grey)


@pytest.mark.parametrize("ext,rate", [(".wav", SR), (".flac", SR), (".ogg", 48000), (".mp3", SR)])
def test_write_audio_reads_back(tmp_path: Path, ext: str, rate: int) -> None:
    wave = _tone(1.5)
    path = mediaio.write_audio(tmp_path / f"a{ext}", wave, SR)
    got_rate, n = _decode_audio(path)
    assert got_rate == rate
    assert abs(n / got_rate - 1.5) < 0.06
    if ext in (".wav", ".flac"):
        data, sr = sf.read(str(path), dtype="float32")
        assert sr == SR and data.shape == wave.shape
        assert np.abs(data - wave).max() < 1e-3


def test_write_audio_is_deterministic_and_checks_shape(tmp_path: Path) -> None:
    for ext in (".ogg", ".mp3"):
        a = mediaio.write_audio(tmp_path / f"a{ext}", _tone(0.5), SR)
        b = mediaio.write_audio(tmp_path / f"b{ext}", _tone(0.5), SR)
        assert _sha(a) == _sha(b)
    with pytest.raises(ValueError, match="mono"):
        mediaio.write_audio(tmp_path / "s.wav", np.zeros((100, 2), np.float32), SR)


@pytest.mark.parametrize("ext,acodec", [(".mp4", "aac"), (".webm", "opus"), (".avi", "pcm_s16le")])
def test_write_video_with_audio(tmp_path: Path, ext: str, acodec: str) -> None:
    frames = _frames(20)
    path = mediaio.write_video(tmp_path / f"v{ext}", frames, 10, audio=_tone(2.0), sample_rate=SR)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    assert len(decoded) == 20
    assert decoded[0].shape == (64, 66, 3)  # odd sizes lose a row / column for 4:2:0
    assert np.abs(decoded[10].astype(int) - frames[10, :64, :66]).mean() < 20
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == acodec
        n = sum(f.samples for f in c.decode(a))
        assert abs(n / a.rate - 2.0) < 0.1


def test_write_video_silent_gif_and_deterministic(tmp_path: Path) -> None:
    frames = _frames(12, 32, 32)
    for ext in (".mp4", ".webm", ".avi"):
        a = mediaio.write_video(tmp_path / f"a{ext}", frames, 10)
        b = mediaio.write_video(tmp_path / f"b{ext}", frames, 10)
        assert _sha(a) == _sha(b), ext
        with av.open(str(a)) as c:
            assert not c.streams.audio and c.streams.video[0].frames in (0, 12)
    gif = mediaio.write_video(tmp_path / "g.gif", frames, 10)
    with Image.open(gif) as im:
        assert im.n_frames == 12 and im.size == (32, 32)
        assert abs(im.info["duration"] - 100) <= 1
    with pytest.raises(ValueError, match="GIF"):
        mediaio.write_video(tmp_path / "x.gif", frames, 10, audio=_tone(1.0), sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate"):
        mediaio.write_video(tmp_path / "x.mp4", frames, 10, audio=_tone(1.0))


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".npy"])
def test_write_sensor(tmp_path: Path, ext: str) -> None:
    values = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    chans = ["ax", "ay", "az"]
    path = mediaio.write_sensor(tmp_path / f"walk{ext}", values, chans, 10.0, label="walking")
    meta = json.loads((tmp_path / "walk.json").read_text())
    assert meta == {"label": "walking", "rate_hz": 10.0, "channels": chans}
    if ext == ".npy":
        back = np.load(path, allow_pickle=False)
        assert back.dtype == np.float32 and np.array_equal(back, values)
        return
    if ext == ".csv":
        lines = path.read_text().splitlines()
        assert lines[0] == "t,ax,ay,az" and len(lines) == 101
        table = np.loadtxt(path, delimiter=",", skiprows=1)
    else:
        t = pq.read_table(path)
        assert t.column_names == ["t", *chans]
        table = np.stack([t[c].to_numpy() for c in t.column_names], 1)
    assert table.shape == (100, 4)
    assert np.allclose(table[:, 0], np.arange(100) / 10.0)
    assert np.allclose(table[:, 1:], values, atol=1e-5)


def test_write_sensor_without_label(tmp_path: Path) -> None:
    mediaio.write_sensor(tmp_path / "r.csv", np.zeros((5, 2), np.float32), ["a", "b"], 50)
    assert json.loads((tmp_path / "r.json").read_text()) == {"rate_hz": 50.0, "channels": ["a", "b"]}
    with pytest.raises(ValueError, match="channels"):
        mediaio.write_sensor(tmp_path / "bad.csv", np.zeros((5, 2), np.float32), ["a"], 50)


def test_speak_without_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mediaio.shutil, "which", lambda name: None)
    assert mediaio.has_espeak() is False
    assert mediaio.speak("hello", tmp_path / "x.wav") is False
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.skipif(not mediaio.has_espeak(), reason="espeak-ng is not installed")
def test_speak_writes_wav(tmp_path: Path) -> None:
    path = tmp_path / "say.wav"
    assert mediaio.speak("-v this text starts with a dash, and is still spoken.", path) is True
    info = sf.info(str(path))
    assert info.samplerate > 8000 and 1.0 < info.duration < 8.0


@pytest.mark.parametrize("motion", mediaio.PAN_ZOOM)
def test_pan_zoom_frames(motion: str) -> None:
    img = _frames(1, 90, 120)[0]
    frames = mediaio.pan_zoom_frames(img, motion, 8, side=32)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])
    assert np.array_equal(frames, mediaio.pan_zoom_frames(img, motion, 8, side=32))


def test_pan_zoom_rejects_unknown_motion() -> None:
    with pytest.raises(ValueError, match="zoom_in"):
        mediaio.pan_zoom_frames(np.zeros((8, 8, 3), np.uint8), "spin", 3)
