"""decode_video on clips written with PyAV (3 s, 10 fps, 64x48; frame i has colour frame_colour(i))."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dataengine.decode import video as video_mod
from dataengine.decode.video import VIDEO_EXTS, DecodedVideo, decode_video
from dataengine.errors import RejectError

SR = 16000
KW = dict(fps=2.0, max_seconds=60.0, max_frames=100, max_pixels=1_000_000, sample_rate=SR)
HAS_AUDIO = {"mp4_h264_aac": True, "webm_vp9_opus": True, "avi_mjpeg": False, "avi_mpeg4": False,
             "mkv_h264_flac": True}


def _reason(data: bytes, **kwargs) -> RejectError:
    with pytest.raises(RejectError) as info:
        decode_video(data, **{**KW, **kwargs})
    return info.value


def _assert_colours(media, v: DecodedVideo, source_indices: list[int]) -> None:
    """Sampled frame k must show source frame source_indices[k] (greens are 8 apart)."""
    assert len(v.frames) == len(source_indices)
    for frame, i in zip(v.frames, source_indices):
        assert np.abs(frame[24, 32].astype(int) - media.frame_colour(i)).max() <= 4, (i, frame[24, 32])


def test_exts():
    assert {".mp4", ".webm", ".avi", ".mov", ".mkv"} <= VIDEO_EXTS


@pytest.mark.parametrize("name", sorted(HAS_AUDIO))
def test_containers_sample_frames_and_audio(media, videos, name):
    v = decode_video(videos[name], **KW)
    assert v.frames.dtype == np.uint8 and v.frames.shape == (6, 48, 64, 3)  # 3 s at 2 fps, not resized
    assert v.fps == 2.0 and abs(v.duration_s - 3.0) < 0.05 and v.truncated is False
    _assert_colours(media, v, [0, 5, 10, 15, 20, 25])
    if HAS_AUDIO[name]:
        assert v.audio is not None and v.audio.dtype == np.float32 and v.sample_rate == SR
        assert abs(len(v.audio) - 3 * SR) <= 0.03 * SR
        assert abs(media.dominant_hz(v.audio, SR) - media.TONE_HZ) < 5
    else:
        assert v.audio is None


def test_max_seconds_and_max_frames_cut_frames_and_audio(media, videos):
    data = videos["mp4_h264_aac"]
    v = decode_video(data, **{**KW, "max_seconds": 1.2})
    _assert_colours(media, v, [0, 5, 10])
    assert v.truncated is True and abs(v.duration_s - 3.0) < 0.05
    assert len(v.audio) == int(1.2 * SR)
    v = decode_video(data, **{**KW, "max_frames": 4})
    _assert_colours(media, v, [0, 5, 10, 15])
    assert v.truncated is True and len(v.audio) == 2 * SR  # 4 frames at 2 fps cover 2 s


def test_fps_above_source_rate_takes_every_frame(media, videos):
    v = decode_video(videos["webm_vp9_opus"], **{**KW, "fps": 30.0})
    assert v.fps == 10.0  # never duplicates frames
    _assert_colours(media, v, list(range(30)))


@pytest.mark.parametrize("name", ["mp4_h264_aac", "webm_vp9_opus", "avi_mjpeg"])
def test_decord_backend_gives_the_same_frames(media, videos, name):
    v = decode_video(videos[name], **KW, backend="decord")
    _assert_colours(media, v, [0, 5, 10, 15, 20, 25])
    assert v.truncated is False and (v.audio is not None) == HAS_AUDIO[name]
    cut = decode_video(videos[name], **{**KW, "max_seconds": 1.2}, backend="decord")
    _assert_colours(media, cut, [0, 5, 10])
    assert cut.truncated is True
    with pytest.raises(ValueError):
        decode_video(videos[name], **KW, backend="opencv")


def test_decord_backend_falls_back_to_pyav(media, videos, monkeypatch):
    frames = [Image.new("RGB", (32, 32), (i * 50, 0, 0)) for i in range(5)]
    gif = media.encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert video_mod._frames_decord(gif, 10.0, 60.0, 100, (-1, -1)) is None  # decord cannot open a GIF
    v = decode_video(gif, **{**KW, "fps": 10.0}, backend="decord")
    assert [int(f[0, 0, 0]) for f in v.frames] == [0, 50, 100, 150, 200]
    monkeypatch.setattr(video_mod, "_frames_decord", lambda *a, **k: None)
    _assert_colours(media, decode_video(videos["avi_mpeg4"], **KW, backend="decord"), [0, 5, 10, 15, 20, 25])


def test_animated_gif_decodes_as_video(media):
    frames = [Image.new("RGB", (32, 32), (i * 50, 0, 0)) for i in range(5)]
    gif = media.encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    v = decode_video(gif, **{**KW, "fps": 10.0})
    assert v.frames.shape == (5, 32, 32, 3) and v.audio is None and v.fps == 10.0
    assert [int(f[0, 0, 0]) for f in v.frames] == [0, 50, 100, 150, 200]
    v = decode_video(gif, **{**KW, "fps": 5.0})  # every other frame
    assert [int(f[0, 0, 0]) for f in v.frames] == [0, 100, 200]


def test_damaged_chunk_table_is_a_reject_not_a_crash(videos):
    """One byte of the MP4 chunk-offset table (stco) set wrong. decord alone segfaults on
    exactly this file (found by fuzzing); both backends must answer with a RejectError."""
    data = bytearray(videos["mp4_h264_aac"])
    stco = data.index(b"stco") - 4  # the video track's table comes first
    data[stco + 16 + 5 * 4 + 1] = 239  # 6th chunk offset now points far past the end
    for backend in ("pyav", "decord"):
        assert _reason(bytes(data), backend=backend).reason == "corrupt"


def test_broken_inputs(videos, png_bytes, media):
    assert _reason(b"").reason == "empty_file"
    assert _reason(np.random.default_rng(0).bytes(5000)).reason == "corrupt"
    assert _reason(png_bytes).reason == "not_a_video"
    audio_only = media.encode_audio("ogg", "libopus", rate=48000, seconds=0.5)
    assert _reason(audio_only).reason == "no_video_stream"
    for name in ("mp4_h264_aac", "webm_vp9_opus", "avi_mjpeg", "mkv_h264_flac"):
        data = videos[name]
        assert _reason(data[: len(data) // 2]).reason == "truncated", name


def test_pixel_cap_is_checked_before_decoding(videos, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("frames were decoded")

    monkeypatch.setattr(video_mod, "_frames_decord", no_decoding)
    monkeypatch.setattr(video_mod, "_frames_pyav", no_decoding)
    for backend in ("pyav", "decord"):
        err = _reason(videos["mp4_h264_aac"], max_pixels=64 * 48 - 1, backend=backend)
        assert err.reason == "too_many_pixels" and "64x48" in err.detail


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_short_side_scales_the_frames_down_never_up(media, videos, backend):
    v = decode_video(videos["mp4_h264_aac"], **KW, backend=backend, short_side=24)
    assert v.frames.shape == (6, 24, 32, 3) and (v.width, v.height) == (64, 48)  # aspect kept, native size told
    assert np.abs(v.frames[2, 12, 16].astype(int) - media.frame_colour(10)).max() <= 6
    same = decode_video(videos["mp4_h264_aac"], **KW, backend=backend, short_side=480)
    assert same.frames.shape == (6, 48, 64, 3)


def test_a_tiny_file_declaring_4k_frames_is_decoded_small(tmp_path):
    """A few KB of H.264 at 3840x2160: the sampled frames are converted at the short side asked for,
    so the decode's peak memory is a few 4K frames inside FFmpeg, not 41 of them in RGB (1 GB)."""
    import subprocess
    import sys

    from corpus_factory import tiny_4k_clip

    path = tiny_4k_clip(tmp_path / "4k.mp4")
    assert path.stat().st_size < 200_000
    code = ("from dataengine.decode.video import decode_video; "
            f"v = decode_video(open({str(path)!r}, 'rb').read(), fps=10.0, max_seconds=10.0, max_frames=41, "
            "max_pixels=8_294_400, sample_rate=16000, short_side=128); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
            "print(v.frames.shape, v.width, v.height, int(hwm) // 1024)")  # not ru_maxrss: it keeps the forked parent's
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shape, width, height, peak_mib = done.stdout.rsplit(" ", 3)
    assert shape == "(41, 128, 228, 3)" and (width, height) == ("3840", "2160")
    assert int(peak_mib) < 500, f"peak RSS {peak_mib} MiB decoding a tiny 4K video of {path.stat().st_size} B"
