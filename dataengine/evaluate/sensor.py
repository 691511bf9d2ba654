"""Sensor tokenizer eval: reconstruction error against the quantizer's guarantee.

`sensor_bins` scales channel c by s_c (mean |x|), clips x/s_c to [-clip, clip]
and keeps the centre of one of n uniform bins of width w = 2*clip/n. For a value
inside the clip range the error is at most ``w/2 * s_c``: that is the ``bound``
(the max over channels and items). ``max_abs_error`` and ``within_bound`` look
only at values inside the clip range (clipped ones have no guarantee; their
share and worst error are reported apart); ``rmse`` is over every value.
Recordings are resampled to ``decode.sensor.rate_hz``, so T rows last T / rate s.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dataengine.evaluate.metrics import code_stats

FLOAT32_SLACK = 4 * float(np.finfo(np.float32).eps)  # decode returns float32: allow its rounding


def quantizer_bound(bin_width: float, scale_C: np.ndarray) -> np.ndarray:
    """Per-channel worst error for in-range values: half a bin width times the scale."""
    return 0.5 * float(bin_width) * np.asarray(scale_C, np.float64)


def sensor_errors(orig_TC: np.ndarray, recon_TC: np.ndarray, scale_C: np.ndarray, clip: float,
                  bound_C: np.ndarray) -> dict:
    """Error statistics of one recording; `in_range` means |x / scale| <= clip.

    Returns sums (so recordings pool exactly) and maxima:
    {sq_sum, n, max_in, max_out, n_out, violations}.
    """
    o = np.asarray(orig_TC, np.float64).reshape(len(orig_TC), -1)
    r = np.asarray(recon_TC, np.float64).reshape(o.shape)
    s = np.asarray(scale_C, np.float64)
    err = np.abs(o - r)
    inside = np.abs(o / s) <= clip
    slack = FLOAT32_SLACK * np.maximum(np.abs(o), np.abs(r)) + 1e-12
    violations = int((inside & (err > np.asarray(bound_C) + slack)).sum())
    return {
        "sq_sum": float((err**2).sum()), "n": int(err.size),
        "max_in": float(err[inside].max()) if inside.any() else 0.0,
        "max_out": float(err[~inside].max()) if (~inside).any() else 0.0,
        "n_out": int((~inside).sum()), "violations": violations,
    }


def evaluate_sensor(tokenizer: Any, items: list[np.ndarray], rt: dict, resources: dict) -> dict:
    """Metrics of a sensor tokenizer from a `metrics.roundtrip` result `rt` over `items`.

    `resources["sensor_rate_hz"]`: the rate the recordings were resampled to.
    """
    rate = float(resources["sensor_rate_hz"])
    width, clip = getattr(tokenizer, "width", None), getattr(tokenizer, "clip", None)
    sq, n, max_in, max_out, n_out, viol, bound, seconds, n_tokens = 0.0, 0, 0.0, 0.0, 0, 0, 0.0, 0.0, 0
    for x, codes, side, dec in zip(items, rt["codes"], rt["sides"], rt["decoded"], strict=True):
        x = np.asarray(x, np.float64)
        x = x[:, None] if x.ndim == 1 else x
        scale = np.asarray(side.get("scale", np.ones(x.shape[1])), np.float64)
        b = quantizer_bound(width, scale) if width is not None else np.full(x.shape[1], np.inf)
        e = sensor_errors(x, dec, scale, clip if clip is not None else np.inf, b)
        sq, n, viol, n_out = sq + e["sq_sum"], n + e["n"], viol + e["violations"], n_out + e["n_out"]
        max_in, max_out = max(max_in, e["max_in"]), max(max_out, e["max_out"])
        bound = max(bound, float(b.max()))
        seconds += len(x) / rate
        n_tokens += int(codes.size)
    known = width is not None
    return {
        "rmse": float(np.sqrt(sq / max(n, 1))),
        "max_abs_error": max_in,
        "bound": bound if known else None,
        "within_bound": bool(viol == 0) if known else None,
        "clipped_fraction": n_out / max(n, 1),
        "max_abs_error_clipped": max_out,
        "tokens_per_second": n_tokens / seconds,
        "values": n,
        **code_stats(rt["codes"], tokenizer.vocab_size),
    }
