"""decode_audio on tones written with PyAV / soundfile, and on broken files."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import soundfile as sf

from dataengine.decode import audio as audio_mod
from dataengine.decode.audio import AUDIO_EXTS, decode_audio, decode_audio_track
from dataengine.decode.containers import VIDEO_FORMATS, Refused
from dataengine.errors import RejectError

SR = 16000


def _reason(data: bytes, **kwargs) -> RejectError:
    with pytest.raises(RejectError) as info:
        decode_audio(data, sample_rate=SR, max_seconds=kwargs.pop("max_seconds", 10.0), **kwargs)
    return info.value


def test_exts():
    assert {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a"} <= AUDIO_EXTS


@pytest.mark.parametrize("fmt,codec,rate,channels", [
    ("wav", "pcm_s16le", 16000, 1),
    ("flac", "flac", 22050, 2),
    ("ogg", "libopus", 48000, 1),
    ("mp3", "libmp3lame", 44100, 2),
    ("ipod", "aac", 24000, 1),  # .m4a
])
def test_codecs_decode_to_mono_at_target_rate(media, fmt, codec, rate, channels):
    data = media.encode_audio(fmt, codec, rate=rate, seconds=1.0, channels=channels)
    x, info = decode_audio(data, sample_rate=SR, max_seconds=10.0)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - SR) <= 0.07 * SR  # codec priming / padding: a few ms either way
    assert np.abs(x).max() <= 1.0 and 0.4 <= np.abs(x).max() <= 0.6
    assert abs(media.dominant_hz(x, SR) - media.TONE_HZ) < 5
    assert info["source_rate"] == rate and info["channels"] == channels
    assert info["truncated"] is False and abs(info["duration_s"] - 1.0) < 0.07


def test_soundfile_written_float_wav_and_flac():
    t = np.arange(8000) / 8000
    x = (0.25 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    for fmt, subtype in [("WAV", "FLOAT"), ("FLAC", "PCM_16")]:
        buf = io.BytesIO()
        sf.write(buf, np.stack([x, x], 1), 8000, format=fmt, subtype=subtype)
        y, info = decode_audio(buf.getvalue(), sample_rate=SR, max_seconds=5)
        assert len(y) == 2 * len(x) and info["source_rate"] == 8000 and info["channels"] == 2
        # resampled 8 kHz -> 16 kHz: every other sample is an original one
        assert np.abs(y[1000:15000:2] - x[500:7500]).max() < 0.01


def test_max_seconds_bounds_decoding(media):
    data = media.encode_audio("wav", "pcm_s16le", rate=22050, seconds=3.0)
    x, info = decode_audio(data, sample_rate=SR, max_seconds=0.5)
    assert len(x) == SR // 2
    assert info["truncated"] is True and abs(info["duration_s"] - 3.0) < 0.01


def test_soundfile_fallback_when_pyav_cannot_open(media, monkeypatch):
    def refuse(data, formats):
        raise Refused(None, "pretend FFmpeg does not know this format")

    monkeypatch.setattr(audio_mod, "open_container", refuse)
    x, info = decode_audio(media.encode_audio("wav", "pcm_s16le", rate=SR, seconds=0.5), sample_rate=SR, max_seconds=5)
    assert len(x) == SR // 2 and info["codec"] == "soundfile"
    assert _reason(b"random bytes " * 50).reason == "corrupt"  # neither can read it


def test_empty_random_and_wrong_kind(png_bytes):
    assert _reason(b"").reason == "empty_file"
    assert _reason(np.random.default_rng(0).bytes(5000)).reason == "corrupt"
    wrong = _reason(png_bytes)  # a PNG named .wav
    assert wrong.reason == "no_audio_stream" and "video" in wrong.detail


@pytest.mark.parametrize("fmt,codec,rate", [
    ("wav", "pcm_s16le", 16000), ("flac", "flac", 22050), ("ogg", "libopus", 48000), ("ipod", "aac", 16000),
])
def test_truncated_at_half(media, fmt, codec, rate):
    data = media.encode_audio(fmt, codec, rate=rate, seconds=1.0)
    assert _reason(data[: len(data) // 2]).reason == "truncated"


def test_non_finite_and_empty_streams():
    buf = io.BytesIO()
    x = np.zeros(1000, np.float32)
    x[10] = np.nan
    sf.write(buf, x, 8000, format="WAV", subtype="FLOAT")
    assert _reason(buf.getvalue()).reason == "non_finite_values"
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, np.float32), 8000, format="WAV")
    assert _reason(buf.getvalue()).reason == "empty_audio"


def test_audio_track_of_a_container(media):
    with_audio = media.encode_video("mp4", "libx264", "aac", frames=10)
    x, info = decode_audio_track(with_audio, sample_rate=SR, max_seconds=10, formats=VIDEO_FORMATS)
    assert abs(len(x) - SR) < 0.1 * SR and abs(media.dominant_hz(x, SR) - media.TONE_HZ) < 5
    silent = media.encode_video("mp4", "libx264", None, frames=10)
    assert decode_audio_track(silent, sample_rate=SR, max_seconds=10, formats=VIDEO_FORMATS) is None
    assert _reason(silent).reason == "no_audio_stream"


def test_odd_and_impossible_sample_rates(media):
    t = np.arange(22051) / 22051
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22051, format="WAV")
    start = time.perf_counter()
    x, info = decode_audio(buf.getvalue(), sample_rate=SR, max_seconds=5)
    assert time.perf_counter() - start < 5  # plain sinc resampling of 22051 -> 16000 Hz takes ~30 s
    assert info["source_rate"] == 22051 and abs(len(x) - SR) <= 2
    assert abs(media.dominant_hz(x, SR) - 440) < 3
    buf = io.BytesIO()
    sf.write(buf, np.zeros(500, np.float32), 500, format="WAV")
    assert _reason(buf.getvalue()).reason == "bad_sample_rate"



def test_wav_headers_that_contradict_themselves():
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(np.arange(SR) / 10)).astype(np.float32), SR, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()
    assert wav[36:40] == b"data"
    streamed = b"RIFF\xff\xff\xff\xff" + wav[8:40] + b"\xff\xff\xff\xff" + wav[44:]  # "length unknown"
    x, info = decode_audio(streamed, sample_rate=SR, max_seconds=10.0)
    assert info["duration_s"] == pytest.approx(1.0) and x.size == SR
    four_gb = wav[:40] + (0xF000_0000).to_bytes(4, "little") + wav[44:]
    err = _reason(four_gb)
    assert err.reason == "bad_header" and str(0xF000_0000) in str(err)
    no_channels = wav[:22] + b"\0\0" + wav[24:]
    assert _reason(no_channels).reason == "bad_header"
