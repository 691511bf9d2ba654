"""Per-sample statistics of a depth map, computed on the full-resolution decoded map.

Field names and Arrow types are in `STAT_FIELDS`; `depth_stats` computes them. Depth
values are over VALID pixels (> 0); NaN when a map has none (the decoder refuses those).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

F = pa.float64()
STAT_FIELDS: dict[str, pa.DataType] = {
    "depth_width": F,  # pixels
    "depth_height": F,  # pixels
    "depth_valid_ratio": F,  # fraction 0..1 of pixels with a valid (> 0, finite) depth
    "depth_min_m": F,  # metres, smallest valid depth
    "depth_max_m": F,  # metres, largest valid depth
    "depth_median_m": F,  # metres, median of the valid depths
}


def depth_stats(depth_HW: np.ndarray) -> dict[str, float]:
    """float metres [H, W] (0 = invalid) -> the `STAT_FIELDS` as plain Python floats."""
    d = np.asarray(depth_HW, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected a depth map [H, W] in metres, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        v = d[np.isfinite(d) & (d > 0)]
    nan = float("nan")
    return {
        "depth_width": float(d.shape[1]),
        "depth_height": float(d.shape[0]),
        "depth_valid_ratio": float(v.size / d.size) if d.size else 0.0,
        "depth_min_m": float(v.min()) if v.size else nan,
        "depth_max_m": float(v.max()) if v.size else nan,
        "depth_median_m": float(np.median(v)) if v.size else nan,
    }
