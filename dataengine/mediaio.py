"""Media writers: images, audio, video, sensor recordings and speech.

These write the demo corpus, the media used by tests, and what
``dataengine inspect --decode`` turns decoded tokens back into, so a person can
open the result in any viewer or player.

Every writer picks the format from the file extension and is deterministic
where the codec allows it: containers are written with FFmpeg's ``bitexact``
flag (no creation time, no random stream serials or segment UIDs), encoders run
on one thread, and Pillow writes no timestamps. The same input on the same
machine gives the same bytes. ``pan_zoom_frames`` turns a still photo into
frames for ``write_video``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import OutputContainer

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".gif")
SENSOR_EXTS = (".csv", ".parquet", ".npy")

_BITEXACT = {"fflags": "+bitexact"}
_CODEC_BITEXACT = {"flags": "+bitexact"}


def _ext(path: str | Path, allowed: Sequence[str], what: str) -> str:
    ext = Path(path).suffix.lower()
    if ext not in allowed:
        raise ValueError(
            f"cannot write {what} to {str(path)!r}: extension {ext or '(none)'} "
            f"is not one of {', '.join(allowed)}; rename the output file"
        )
    return ext


def _as_uint8_image(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as a uint8 array of shape HW, HW3 or HW4."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image of shape HW, HW3 or HW4, got {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------- images
def write_image(path: str | Path, img: np.ndarray, *, quality: int = 90) -> Path:
    """Write an image (uint8 HW, HW3 or HW4); the format follows the extension.

    ``.jpg``/``.jpeg`` and ``.webp`` are lossy (``quality``), ``.png`` and
    ``.bmp`` lossless, ``.gif`` palette-quantised. Alpha is dropped for formats
    that cannot hold it.
    """
    from PIL import Image

    path = Path(path)
    ext = _ext(path, IMAGE_EXTS, "an image")
    arr = _as_uint8_image(img)
    pil = Image.fromarray(arr)
    if ext in (".jpg", ".jpeg", ".bmp") and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in (".jpg", ".jpeg"):
        pil.save(path, format="JPEG", quality=quality, optimize=True)
    elif ext == ".webp":
        pil.save(path, format="WEBP", quality=quality, method=4)
    elif ext == ".png":
        pil.save(path, format="PNG", optimize=True)
    elif ext == ".bmp":
        pil.save(path, format="BMP")
    else:
        pil.save(path, format="GIF")
    return path


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write a lossless PNG from a uint8 HW3 (or HW / HW4) array."""
    return write_image(path, img)


def write_jpeg(path: str | Path, img: np.ndarray, quality: int = 90) -> Path:
    """Write a JPEG from a uint8 HW3 (or HW) array at the given quality."""
    return write_image(path, img, quality=quality)


# ---------------------------------------------------------------------- audio
def _mono_float(wave: np.ndarray) -> np.ndarray:
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (T,), got {arr.shape}")
    return np.clip(np.nan_to_num(arr), -1.0, 1.0)


def _encode_audio(container: OutputContainer, stream: AudioStream, wave: np.ndarray, sample_rate: int) -> None:
    """Resample ``wave`` to the stream's rate/format, encode it and mux the packets."""
    import av

    if wave.size == 0:
        raise ValueError("the waveform is empty: nothing to encode")

    frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    ctx = stream.codec_context
    resampler = av.AudioResampler(format=ctx.format.name, layout=ctx.layout.name, rate=ctx.sample_rate)
    fifo = av.AudioFifo()
    for out in [*resampler.resample(frame), *resampler.resample(None)]:
        fifo.write(out)
    size = ctx.frame_size or 1024
    pts = 0
    while fifo.samples > 0:
        chunk = fifo.read(min(size, fifo.samples))
        chunk.pts = pts
        chunk.time_base = Fraction(1, ctx.sample_rate)
        pts += chunk.samples
        container.mux(stream.encode(chunk))
    container.mux(stream.encode(None))


def _add_audio_stream(container: OutputContainer, codec: str, sample_rate: int) -> AudioStream:
    """Add a mono audio stream; opus runs at 48 kHz, others keep ``sample_rate``
    when the codec supports it, else the next supported rate up."""
    import av

    rates = sorted(av.codec.Codec(codec, "w").audio_rates or ())
    rate = 48000 if codec == "libopus" else sample_rate
    if rates and rate not in rates:
        rate = min((r for r in rates if r >= rate), default=rates[-1])
    stream = container.add_stream(codec, rate=rate, options=dict(_CODEC_BITEXACT))
    stream.layout = "mono"
    stream.codec_context.thread_count = 1
    if codec in ("aac", "libopus", "libmp3lame"):
        stream.bit_rate = 64000
    return stream


def write_audio(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform in [-1, 1]; the format follows the extension.

    ``.wav``: PCM 16-bit; ``.flac``: lossless 16-bit (both via soundfile);
    ``.ogg``: Opus, resampled to 48 kHz as Opus requires; ``.mp3``: LAME
    (both via PyAV; a rate LAME lacks goes up to the next one it has). The
    decoded length of lossy files can differ by a few milliseconds.
    """
    import av
    import soundfile as sf

    path = Path(path)
    ext = _ext(path, AUDIO_EXTS, "audio")
    data = _mono_float(wave)
    sample_rate = int(sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in (".wav", ".flac"):
        fmt = "WAV" if ext == ".wav" else "FLAC"
        sf.write(str(path), data, sample_rate, subtype="PCM_16", format=fmt)
        return path
    codec = "libopus" if ext == ".ogg" else "libmp3lame"
    with av.open(str(path), "w", format=ext[1:], container_options=dict(_BITEXACT)) as container:
        stream = _add_audio_stream(container, codec, sample_rate)
        _encode_audio(container, stream, data, sample_rate)
    return path


# ---------------------------------------------------------------------- video
_VIDEO_CODECS = {
    ".mp4": ("libx264", "yuv420p", "aac", {"crf": "23", "preset": "medium"}),
    ".webm": ("libvpx-vp9", "yuv420p", "libopus", {"crf": "36", "b": "0", "deadline": "good", "cpu-used": "5"}),
    ".avi": ("mjpeg", "yuvj420p", "pcm_s16le", {"q:v": "4"}),
}


def _even_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=3)
    if arr.ndim != 4 or arr.shape[3] not in (3, 4) or arr.shape[0] == 0:
        raise ValueError(f"expected frames of shape (T, H, W, 3) with T >= 1, got {arr.shape}")
    arr = arr[..., :3]
    h, w = arr.shape[1] - arr.shape[1] % 2, arr.shape[2] - arr.shape[2] % 2
    if h == 0 or w == 0:
        raise ValueError(f"frames of {arr.shape[1]}x{arr.shape[2]} are too small to encode")
    out = arr[:, :h, :w]
    if out.dtype != np.uint8:
        out = np.clip(out, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration = max(int(round(1000.0 / fps)), 10)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration, loop=0, optimize=False, disposal=1)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
) -> Path:
    """Write uint8 frames of shape (T, H, W, 3), optionally with a mono track.

    ``.mp4``: H.264 yuv420p + AAC; ``.webm``: VP9 + Opus (48 kHz); ``.avi``:
    MJPEG + PCM 16-bit; ``.gif``: Pillow, no audio (Pillow merges identical
    consecutive frames). Odd heights/widths lose their last row/column, since
    4:2:0 chroma needs even dimensions.
    """
    import av

    path = Path(path)
    ext = _ext(path, VIDEO_EXTS, "video")
    arr = _even_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".gif":
        if audio is not None:
            raise ValueError("a GIF cannot hold audio: write .mp4, .webm or .avi instead")
        _write_gif(path, arr, fps)
        return path
    if audio is not None and not sample_rate:
        raise ValueError("audio given without sample_rate: pass sample_rate=<Hz>")
    vcodec, pix_fmt, acodec, vopts = _VIDEO_CODECS[ext]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", container_options=dict(_BITEXACT)) as container:
        vstream = container.add_stream(vcodec, rate=rate, options={**vopts, **_CODEC_BITEXACT})
        vstream.width, vstream.height = arr.shape[2], arr.shape[1]
        vstream.pix_fmt = pix_fmt
        vstream.codec_context.thread_count = 1
        vstream.codec_context.time_base = Fraction(1) / rate
        astream = None
        if audio is not None:
            astream = _add_audio_stream(container, acodec, int(sample_rate or 0))
        for i, img in enumerate(arr):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            vf.pts = i
            vf.time_base = Fraction(1) / rate
            container.mux(vstream.encode(vf))
        container.mux(vstream.encode(None))
        if astream is not None and audio is not None:
            _encode_audio(container, astream, _mono_float(audio), int(sample_rate or 0))
    return path


PAN_ZOOM = ("zoom_in", "zoom_out", "pan_right", "pan_down")


def pan_zoom_frames(img: np.ndarray, motion: str, n_frames: int, side: int = 128) -> np.ndarray:
    """A slow pan or zoom (Ken Burns) over a still image: uint8 (n_frames, side, side, 3).

    ``motion`` is one of ``PAN_ZOOM``; the window eases in and out (smoothstep)
    and is resampled bilinearly, so the frames are deterministic.
    """
    from PIL import Image

    if motion not in PAN_ZOOM:
        raise ValueError(f"unknown motion {motion!r}: use one of {', '.join(PAN_ZOOM)}")
    im = Image.fromarray(_as_uint8_image(img)).convert("RGB")
    w, h = im.size
    s = min(w, h)
    full, z, p = ((w - s) / 2, (h - s) / 2, s), 0.55 * s, 0.7 * s
    inner = ((w - z) / 2, (h - z) / 2, z)
    a, b = {"zoom_in": (full, inner), "zoom_out": (inner, full),
            "pan_right": ((0, (h - p) / 2, p), (w - p, (h - p) / 2, p)),
            "pan_down": (((w - p) / 2, 0, p), ((w - p) / 2, h - p, p))}[motion]
    frames = []
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        t = t * t * (3 - 2 * t)
        x, y, z = (a[k] + (b[k] - a[k]) * t for k in range(3))
        frames.append(np.asarray(im.resize((side, side), Image.Resampling.BILINEAR, box=(x, y, x + z, y + z))))
    return np.stack(frames)


# --------------------------------------------------------------------- sensor
def write_sensor(
    path: str | Path,
    values: np.ndarray,
    channels: Sequence[str],
    rate_hz: float,
    label: str | None = None,
) -> Path:
    """Write a (T, C) recording and its ``<stem>.json`` sidecar.

    ``.csv`` and ``.parquet`` get a ``t`` column in seconds followed by one
    column per channel; ``.npy`` holds the float32 values only. The sidecar is
    ``{"label", "rate_hz", "channels"}`` (no ``label`` key when it is None).
    """
    path = Path(path)
    ext = _ext(path, SENSOR_EXTS, "a sensor recording")
    vals = np.asarray(values, dtype=np.float32)
    if vals.ndim == 1:
        vals = vals[:, None]
    channels = [str(c) for c in channels]
    if vals.ndim != 2 or vals.shape[1] != len(channels):
        raise ValueError(f"values of shape {vals.shape} do not match {len(channels)} channels")
    if "t" in channels:
        raise ValueError("a channel may not be called 't': that name is the time column")
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    path.parent.mkdir(parents=True, exist_ok=True)
    t = (np.arange(vals.shape[0], dtype=np.float64) / float(rate_hz)).round(9)
    if ext == ".npy":
        np.save(path, vals, allow_pickle=False)
    elif ext == ".csv":
        lines = [",".join(["t", *channels])]
        for ti, row in zip(t, vals):
            lines.append(",".join([f"{ti:.6g}", *(f"{v:.7g}" for v in row)]))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {"t": pa.array(t, pa.float64())}
        cols.update({c: pa.array(vals[:, i], pa.float32()) for i, c in enumerate(channels)})
        pq.write_table(pa.table(cols), path, compression="zstd")
    meta: dict[str, object] = {}
    if label is not None:
        meta["label"] = label
    meta["rate_hz"] = float(rate_hz)
    meta["channels"] = channels
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------- speech
def has_espeak() -> bool:
    """True when the ``espeak-ng`` program is on PATH."""
    return shutil.which("espeak-ng") is not None


def speak(text: str, path: str | Path, voice: str = "en", *, speed_wpm: int = 165) -> bool:
    """Speak ``text`` with espeak-ng into the WAV file ``path``.

    The text goes through stdin (never a shell, never an argument that could
    read as an option). Returns False when espeak-ng is not installed; raises
    ``RuntimeError`` when it is installed but fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-v", voice, "-s", str(int(speed_wpm)), "-w", str(path), "--stdin"]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 or not path.exists() or path.stat().st_size <= 44:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"espeak-ng failed (exit {proc.returncode}): {err or 'no audio written'}")
    return True
