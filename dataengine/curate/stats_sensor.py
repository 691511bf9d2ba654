"""Quality stats of a sensor recording: length, rate, non-finite values and flat channels."""
from __future__ import annotations

import warnings

import numpy as np

FLAT_STD = 1e-6  # relative std under which a sensor channel is flat


def sensor_stats(values_TC: np.ndarray, rate_hz: float, nan_ratio: float | None) -> dict:
    """Length, rate, NaN and flat-channel ratios of a recording (float [T, C] at `rate_hz`).

    `nan_ratio` is the non-finite fraction BEFORE filling (None: computed from `values_TC`).
    """
    v = np.asarray(values_TC, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"expected sensor values [T, C], got shape {v.shape}")
    finite = np.isfinite(v)
    if nan_ratio is None:
        nan_ratio = float(1.0 - finite.mean()) if v.size else 0.0
    out = {"sensor_length": float(v.shape[0]), "sensor_rate_hz": float(rate_hz),
           "sensor_channels": float(v.shape[1]), "sensor_nan_ratio": float(nan_ratio)}
    if rate_hz > 0:
        out["sensor_duration_s"] = max(0, v.shape[0] - 1) / float(rate_hz)
    if v.size:
        x = np.where(finite, v, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: nan std, counted as flat below
            std_C, scale_C = np.nanstd(x, axis=0), np.nanmean(np.abs(x), axis=0)
        flat_C = ~(std_C > FLAT_STD * np.maximum(1.0, np.nan_to_num(scale_C)))
        out["sensor_flat_ratio"] = float(flat_C.mean())
    return out




def sensor_item_stats(values_TC: np.ndarray, meta: dict) -> dict:
    channels = values_TC.shape[1] if values_TC.ndim == 2 else 1
    rows = meta.get("source_rows")
    nan_ratio = meta.get("nan_ratio")
    if nan_ratio is None and rows and meta.get("filled_non_finite") is not None:
        nan_ratio = meta["filled_non_finite"] / (rows * channels)
    out = sensor_stats(values_TC, float(meta["rate_hz"]), nan_ratio)
    if rows:  # describe the source recording, not its resampling to the tokenizer's rate
        rate = float(meta.get("source_rate_hz") or meta["rate_hz"])
        out.update(sensor_length=float(rows), sensor_rate_hz=rate)
        if meta.get("duration_s") is not None:
            out["sensor_duration_s"] = float(meta["duration_s"])
    return out


