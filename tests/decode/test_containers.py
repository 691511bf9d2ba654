"""Containers: only the modality's demuxers, no protocols, and what refused bytes are named."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from dataengine.decode.audio import decode_audio
from dataengine.decode.containers import AUDIO_FORMATS, VIDEO_FORMATS, Refused, open_container, sniff
from dataengine.decode.video import decode_video
from dataengine.errors import RejectError

VIDEO_KW = dict(fps=5.0, max_seconds=5.0, max_frames=20, max_pixels=1 << 20, sample_rate=16000)


@pytest.fixture
def playlist(tmp_path, monkeypatch):
    """A concat playlist naming a picture relative to the working folder, which holds it."""
    Image.new("RGB", (16, 16), (201, 17, 99)).save(tmp_path / "secret.png")
    monkeypatch.chdir(tmp_path)
    return b"ffconcat version 1.0\nfile 'secret.png'\n"


def test_ffmpeg_left_alone_follows_the_playlist(playlist):
    """The threat is real in this FFmpeg: probed freely, 41 bytes decode a file they only name."""
    with av.open(io.BytesIO(playlist)) as c:
        frame = next(c.decode(video=0))
    assert frame.to_ndarray(format="rgb24")[0, 0].tolist() == [201, 17, 99]


def test_references_are_refused_by_name(playlist):
    for data in (playlist, b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nm=audio 9 RTP/AVP 0\n",
                 b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n", b"rtsp://127.0.0.1:9/live\n",
                 b'<?xml version="1.0"?>\n<MPD type="static"></MPD>\n', b"[playlist]\nFile1=a.ogg\n"):
        for decode in (lambda d: decode_video(d, **VIDEO_KW), lambda d: decode_audio(d, sample_rate=16000, max_seconds=5)):
            with pytest.raises(RejectError) as err:
                decode(data)
            assert err.value.reason == "unsupported_container", (data[:20], err.value)
            assert "never followed" in err.value.detail


def test_no_protocol_even_for_an_allowed_demuxer(playlist):
    """Were a demuxer that opens nested inputs allowed, it would still get no protocol to open them."""
    with pytest.raises((Refused, RejectError)):
        with open_container(playlist, ("concat",)) as c:
            next(c.decode(video=0))


def test_sniff_names_what_the_bytes_are(media, png_bytes):
    wav = media.encode_audio("wav", "pcm_s16le", rate=16000, seconds=0.2)
    assert sniff(png_bytes) == ("image", "a PNG image")
    assert sniff(wav) == ("audio", "a WAV file")
    assert sniff(np.random.default_rng(0).bytes(500)) is None
    assert sniff(b"\xef\xbb\xbf  #EXTM3U\n")[0] == "reference"  # a BOM and blanks do not hide it
    with pytest.raises(RejectError) as err:  # a WAV is not a video container
        decode_video(wav, **VIDEO_KW)
    assert err.value.reason == "no_video_stream" and "WAV" in err.value.detail
    assert set(VIDEO_FORMATS) & set(AUDIO_FORMATS) == {"mov", "matroska"}  # MP4/M4A and MKV/WebM carry both


def test_a_video_container_is_not_audio(videos):
    with pytest.raises(RejectError) as err:
        decode_audio(videos["avi_mjpeg"], sample_rate=16000, max_seconds=5)
    assert err.value.reason == "unsupported_container" and "AVI" in err.value.detail
