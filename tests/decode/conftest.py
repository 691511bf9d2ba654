"""Media written inside the tests (PyAV, Pillow, soundfile): no files on disk needed."""
from __future__ import annotations

import io
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

TONE_HZ = 440.0


def encode_audio(fmt: str, codec: str, *, rate: int, seconds: float = 1.0, channels: int = 1,
                 amplitude: float = 0.5) -> bytes:
    """A sine tone at TONE_HZ encoded with PyAV into `fmt` / `codec`."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        t = np.arange(int(rate * seconds)) / rate
        x = np.repeat((amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None], channels, 0)
        sample_fmt = stream.codec_context.format.name
        step = stream.codec_context.frame_size or 1024
        for start in range(0, x.shape[1], step):
            chunk = x[:, start:start + step]
            arr = chunk if sample_fmt.endswith("p") else chunk.T.reshape(1, -1)
            if sample_fmt.startswith("s16"):
                arr = (arr * 32767).astype(np.int16)
            elif sample_fmt.startswith("s32"):
                arr = (arr * (2**31 - 1)).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=sample_fmt,
                                               layout=stream.layout.name)
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def frame_colour(i: int) -> tuple[int, int, int]:
    """The colour of frame i in the test videos: red fixed, green ramps, blue fixed."""
    return (200, (i * 8) % 256, 40)


def encode_video(fmt: str, vcodec: str, acodec: str | None = None, *, frames: int = 30, fps: int = 10,
                 width: int = 64, height: int = 48, pix_fmt: str = "yuv420p", audio_rate: int = 16000) -> bytes:
    """`frames` solid-colour frames (see frame_colour) and optionally a tone of the same length."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        video = container.add_stream(vcodec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        audio = None
        if acodec:
            audio = container.add_stream(acodec, rate=audio_rate)
            audio.layout = "mono"
        for i in range(frames):
            img = np.empty((height, width, 3), np.uint8)
            img[:] = frame_colour(i)
            container.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(video.encode(None))
        if audio is not None:
            n = int(audio_rate * frames / fps)
            x = (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / audio_rate)).astype(np.float32)
            step = audio.codec_context.frame_size or 1024
            for start in range(0, n, step):
                frame = av.AudioFrame.from_ndarray(x[None, start:start + step], format="flt", layout="mono")
                frame.sample_rate, frame.pts = audio_rate, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return buf.getvalue()


def encode_image(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.fixture(scope="session")
def videos() -> dict[str, bytes]:
    """3 s test videos at 10 fps, 64x48, in the containers the pipeline meets."""
    return {
        "mp4_h264_aac": encode_video("mp4", "libx264", "aac"),
        "webm_vp9_opus": encode_video("webm", "libvpx-vp9", "libopus", audio_rate=48000),
        "avi_mjpeg": encode_video("avi", "mjpeg", pix_fmt="yuvj420p"),
        "avi_mpeg4": encode_video("avi", "mpeg4"),
        "mkv_h264_flac": encode_video("matroska", "libx264", "flac"),
    }


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return encode_image(Image.new("RGB", (40, 30), (200, 30, 60)), "PNG")


@pytest.fixture(scope="session")
def media() -> SimpleNamespace:
    """The helpers above, as a fixture (importing `conftest` by name is fragile)."""
    return SimpleNamespace(encode_audio=encode_audio, encode_video=encode_video, encode_image=encode_image,
                           frame_colour=frame_colour, dominant_hz=dominant_hz, TONE_HZ=TONE_HZ)
