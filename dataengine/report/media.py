"""Media for the report: originals read back from the input folders, encoded small and deterministically.

Originals are decoded with the pipeline's own decoders (`dataengine.decode`),
at the rate and length the run recorded in the row's meta, so they line up
with the reconstructions. Encoders: PNG and GIF by Pillow (no timestamps),
WAV (PCM 16-bit) by soundfile.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dataengine import decode as D
from dataengine import mediaio

THUMB = 128          # px, the side of image and video thumbnails
REPORT_VIDEO_SIDE = 2 * THUMB  # video frames are decoded with at most this short side (never at 4K)
MAX_AUDIO_S = 4.0    # seconds of audio embedded per player
MAX_GIF_FRAMES = 24


def source_file(sources: dict[str, Path], source: str, rel: str) -> Path | None:
    """The original file of a lineage path (`file.jsonl#L3` -> `file.jsonl`); None if it is gone."""
    root = sources.get(source)
    if root is None:
        return None
    path = Path(root) / rel.split("#", 1)[0]
    return path if path.is_file() else None


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img[..., :3] if img.ndim == 3 else img).astype(np.uint8)).save(
        buf, format="PNG", optimize=False)
    return buf.getvalue()


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """An animated GIF through `mediaio.write_video` (the writer `inspect --decode` uses)."""
    frames = np.asarray(frames)
    if len(frames) > MAX_GIF_FRAMES:  # keep the clip's duration, show fewer frames
        idx = np.linspace(0, len(frames) - 1, MAX_GIF_FRAMES).round().astype(int)
        fps = fps * MAX_GIF_FRAMES / len(frames)
        frames = frames[idx]
    with tempfile.TemporaryDirectory() as d:
        path = mediaio.write_video(Path(d) / "clip.gif", frames, max(fps, 0.5))
        return path.read_bytes()


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    x = np.clip(np.nan_to_num(np.asarray(wave, np.float32).reshape(-1)), -1.0, 1.0)
    x = x[: int(MAX_AUDIO_S * sample_rate)]
    buf = io.BytesIO()
    sf.write(buf, x, int(sample_rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def square(img: np.ndarray, side: int = THUMB) -> np.ndarray:
    """The tokenizer's view: centre-cropped square (`decode.square_resize`), at `side` px."""
    return D.square_resize(np.ascontiguousarray(img[..., :3]).astype(np.uint8), side)


def thumbnail(img: np.ndarray, side: int = THUMB) -> np.ndarray:
    """Aspect-preserving thumbnail, longest side `side`."""
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    im.thumbnail((side, side), Image.Resampling.BICUBIC)
    return np.asarray(im)


def upscale(img: np.ndarray, side: int = THUMB) -> np.ndarray:
    """A small reconstruction enlarged with nearest neighbours (its pixels stay visible)."""
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return np.asarray(im.resize((side, side), Image.Resampling.NEAREST))


_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


def spectrogram_png(wave: np.ndarray, sample_rate: int, width: int = 240, height: int = 64) -> bytes:
    """Log-magnitude spectrogram (0..sample_rate/2 bottom to top), viridis-like, as PNG."""
    x = np.asarray(wave, np.float64).reshape(-1)[: int(MAX_AUDIO_S * sample_rate)]
    n_fft, hop = 512, max(64, len(x) // width)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1)).T[::-1]            # freq_F x time_T, low frequencies at the bottom
    db = 20 * np.log10(mag + 1e-6)
    db = np.clip((db - (db.max() - 70)) / 70, 0, 1)              # 70 dB of range
    pos = db * (len(_VIRIDIS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (pos - lo)[..., None]
    rgb = (_VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac).round().astype(np.uint8)
    im = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return png_bytes(np.asarray(im))


def decode_original(kind: str, path: Path, meta: dict, *, sample_rate: int, sidecar_path: Path | None = None):
    """The original media of an item, decoded as the run decoded it (see the row's meta).

    image: uint8 [H, W, 3]; video: (frames uint8 [T, H, W, 3], fps); audio: float32 [N];
    sensor: (values float32 [T, C], channel names).
    """
    data = path.read_bytes()
    if kind == "image":
        return D.decode_image(data)
    if kind == "video":
        fps = float(meta.get("fps") or 2.0)
        n = int(meta.get("frames") or 8)
        v = D.decode_video(data, fps=fps, max_seconds=n / fps + 1e-3, max_frames=n, max_pixels=8_294_400,
                           sample_rate=sample_rate, short_side=REPORT_VIDEO_SIDE)
        return v.frames, v.fps
    if kind == "audio":
        wave, _ = D.decode_audio(data, sample_rate=sample_rate, max_seconds=MAX_AUDIO_S)
        return wave
    if kind == "sensor":
        sidecar = D.parse_sidecar(sidecar_path.read_bytes()) if sidecar_path else None
        rate = float(meta.get("rate_hz") or 10.0)
        rec = D.decode_sensor(data, path.suffix, sidecar, rate_hz=rate, max_rows=1 << 20, max_nan_ratio=1.0)
        return np.asarray(rec.values, np.float32), list(rec.channels)
    raise ValueError(f"no original decoder for kind {kind!r}")


def read_text(path: Path, limit: int = 2000) -> str:
    """The first `limit` characters of a text file (undecodable bytes replaced: this is for display)."""
    with open(path, "rb") as f:
        raw = f.read(limit * 4)
    return raw.decode("utf-8", errors="replace")[:limit]
