"""Depth maps as files and pictures: 16-bit millimetre PNGs and colourised previews.

`encode_depth_png` writes the form `decode.decode_depth` reads back (".depth.png":
single-channel uint16 MILLIMETRES, 0 = invalid); `depth_preview` colours a map for
reports (near = bright, invalid = black) with a small magma-like table, numpy only.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PNG_MM = 65535  # uint16: depth PNGs hold at most 65.535 m; farther valid pixels are clipped

# Anchor colours of a magma-like perceptual colormap (black -> purple -> orange -> cream),
# sampled at equal steps of t in [0, 1]; interpolated piecewise-linearly per channel.
_MAGMA = np.array([
    [0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129],
    [181, 54, 122], [229, 80, 100], [251, 135, 97], [252, 253, 191],
], dtype=np.float64)


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """float metres [H, W] -> uint16 millimetres: rounded, valid clipped to 1..65535, invalid 0.

    Invalid: non-finite or <= 0. A positive depth under 0.5 mm becomes 1 mm (stays valid).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected a depth map [H, W] in metres, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    mm = np.clip(np.round(np.where(valid, d, 0.0) * 1000.0), 1, MAX_PNG_MM)
    return np.where(valid, mm, 0).astype(np.uint16)


def encode_depth_png(depth_m: np.ndarray) -> bytes:
    """float metres [H, W] -> bytes of a 16-bit greyscale PNG in millimetres (Pillow mode "I;16")."""
    img = Image.fromarray(depth_to_mm(depth_m))  # uint16 -> mode "I;16"
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_depth_png(path: str | Path, depth_m: np.ndarray) -> Path:
    """Write `encode_depth_png(depth_m)` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_depth_png(depth_m))
    return path


def colormap(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] (any shape) -> uint8 RGB [..., 3] through the magma-like table."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    xs = np.linspace(0.0, 1.0, len(_MAGMA))
    rgb = np.stack([np.interp(t, xs, _MAGMA[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def depth_preview(depth_m: np.ndarray) -> np.ndarray:
    """float metres [H, W] -> uint8 RGB [H, W, 3]: inverse depth, near = bright, invalid = black.

    Inverse depth is normalised per map between the 2nd and 98th percentiles of the
    valid pixels (one far outlier does not wash the picture out).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected a depth map [H, W] in metres, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), np.uint8)
    if not valid.any():
        return out
    inv = 1.0 / d[valid]
    lo, hi = np.percentile(inv, [2.0, 98.0])
    t = (inv - lo) / (hi - lo) if hi > lo else np.full_like(inv, 0.5)
    out[valid] = colormap(t)
    return out
