"""Depth reconstruction metrics and an equal-bits baseline for judging a depth tokenizer.

Metrics (the standard monocular-depth ones; over pixels with ground truth > 0, metres):
``abs_rel`` = mean |pred - gt| / gt, ``rmse`` = sqrt(mean (pred - gt)^2) in metres,
``delta1`` = fraction with max(pred/gt, gt/pred) < 1.25. Both maps are compared at the
tokenizer's resolution: gt is ``resize_depth(map, size)``, exactly what the tokenizer sees.

Bit accounting (equal bits in TOTAL, nothing hidden on either side):

- tokenizer: ``bits`` = n_tokens * log2(codebook size) for its codes (64 * log2(1000) ~ 637.8
  with the defaults) PLUS 64 bits of side info (log_lo, log_hi: two float32). Total
  ``bits + 64``.
- baseline (`equal_bits_baseline`): a k x k thumbnail of log-depth, b bits per cell, PLUS the
  same 64 bits of range (two float32: the map's own lo/hi, the tokenizer's percentiles) PLUS
  8 bits naming its (k, b) choice, which it makes per map by trying every b in 2..12 (with
  the largest k that fits) and keeping the lowest log-depth RMSE. Constraint:
  ``k*k*b + 64 + 8 <= bits + 64``, i.e. the cells get ``bits - 8``. Its ``used_bits`` is
  ``k*k*b + 72``, never more than the tokenizer's total ``bits + 64``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dataengine.modalities.depth.decode import resize_depth
from dataengine.modalities.depth.tokenizer import log_range  # the tokenizer's percentiles: same lo/hi

RANGE_BITS = 64  # two float32 range values (log_lo, log_hi), on both sides
CHOICE_BITS = 8  # the baseline's per-map (k, b) choice: 11 b values x a few k, < 256 options
BITS_PER_CELL = range(2, 13)


def _valid(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ: resize gt with resize_depth first")
    k = np.isfinite(g) & (g > 0)
    if not k.any():
        raise ValueError("gt has no valid pixel (> 0): nothing to compare")
    return p[k], g[k]


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean |pred - gt| / gt over pixels with gt > 0 (unitless)."""
    p, g = _valid(pred, gt)
    return float(np.mean(np.abs(p - g) / g))


def rmse(pred: np.ndarray, gt: np.ndarray) -> float:
    """sqrt(mean (pred - gt)^2) over pixels with gt > 0, in metres."""
    p, g = _valid(pred, gt)
    return float(np.sqrt(np.mean((p - g) ** 2)))


def delta1(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of pixels with gt > 0 where max(pred/gt, gt/pred) < 1.25 (pred <= 0 fails)."""
    p, g = _valid(pred, gt)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(p / g, np.where(p > 0, g / p, np.inf))
    return float(np.mean(ratio < 1.25))


def _thumbnail(logd_SS: np.ndarray, valid_SS: np.ndarray, k: int) -> np.ndarray:
    """Mean log-depth of the valid pixels in each of k x k area cells; empty cells get the map's mean."""
    num = F.interpolate(torch.from_numpy(logd_SS * valid_SS)[None, None], size=(k, k), mode="area")[0, 0]
    den = F.interpolate(torch.from_numpy(valid_SS)[None, None], size=(k, k), mode="area")[0, 0]
    fill = float(logd_SS[valid_SS > 0].mean())
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, fill)).numpy()


def _upsample(cells_kk: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(cells_kk)[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def equal_bits_baseline(depth_HW: np.ndarray, bits: float, size: int) -> tuple[np.ndarray, int]:
    """Quantised log-depth thumbnail at ``bits`` of code budget -> (float32 metres [size, size], used_bits).

    ``bits`` is the tokenizer's code bits (its 64 range bits come on top, as here: see the
    module docstring). The map is resized with `resize_depth` first, like the tokenizer's input.
    """
    d = resize_depth(np.asarray(depth_HW), size).astype(np.float64)
    valid = (d > 0).astype(np.float64)
    lo, hi = log_range(d)
    logd = np.log(np.where(valid > 0, d, 1.0))
    cell_bits = math.floor(bits) - CHOICE_BITS
    best: tuple[float, np.ndarray, int] | None = None
    for b in BITS_PER_CELL:
        k = min(size, math.isqrt(max(0, cell_bits) // b))
        if k < 1:
            continue
        levels = 2 ** b - 1
        cells = _thumbnail(logd, valid, k)
        q = np.clip(np.round((cells - lo) / (hi - lo) * levels), 0, levels)
        recon_log = _upsample(lo + q / levels * (hi - lo), size)
        err = float(np.sqrt(np.mean((recon_log - logd)[valid > 0] ** 2)))
        if best is None or err < best[0]:
            best = (err, recon_log, k * k * b)
    if best is None:
        raise ValueError(f"{bits} bits cannot hold one {min(BITS_PER_CELL)}-bit cell plus "
                         f"{CHOICE_BITS} choice bits; give the baseline more bits")
    _, recon_log, used = best
    return np.exp(recon_log).astype(np.float32), int(used + RANGE_BITS + CHOICE_BITS)


def _ci95(values: list[float]) -> list[float]:
    """Normal-approximation 95% interval of the mean (deterministic); [m, m] for one item."""
    v = np.asarray(values, np.float64)
    m = float(v.mean())
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return [m - half, m + half]


def evaluate_depth(tokenizer: Any, items: list[np.ndarray]) -> dict[str, Any]:
    """Round-trip held-out metres maps through ``tokenizer``; compare with the equal-bits baseline.

    Means are over items (each item's metric over its valid pixels). Maps with no valid
    pixel inside the centre crop are skipped and counted (``skipped_no_valid``).
    """
    size = int(tokenizer.params["size"])
    gts = [resize_depth(np.asarray(m), size) for m in items]
    keep = [g for g in gts if (g > 0).any()]
    if not keep:
        raise ValueError("evaluate_depth: no held-out map has a valid pixel inside its centre crop")
    n_tokens = int(next(iter(tokenizer.tokens_per_unit().values())))
    codebook = int(tokenizer.vocab_size)
    bits = n_tokens * math.log2(codebook)
    encoded = tokenizer.encode_batch(keep)
    decoded = tokenizer.decode_batch(encoded)
    per_item, d1, bd1 = [], [], []
    for gt, pred in zip(keep, decoded):
        base, _ = equal_bits_baseline(gt, bits, size)
        per_item.append({"abs_rel": abs_rel(pred, gt), "rmse_m": rmse(pred, gt),
                         "baseline_abs_rel": abs_rel(base, gt), "baseline_rmse_m": rmse(base, gt)})
        d1.append(delta1(pred, gt))
        bd1.append(delta1(base, gt))

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in per_item]))

    used = {int(c) for codes, _ in encoded for c in np.asarray(codes).reshape(-1)}
    return {
        "items": len(keep),
        "skipped_no_valid": len(gts) - len(keep),
        "abs_rel": mean("abs_rel"),
        "rmse_m": mean("rmse_m"),
        "delta1": float(np.mean(d1)),
        "baseline_abs_rel": mean("baseline_abs_rel"),
        "baseline_rmse_m": mean("baseline_rmse_m"),
        "baseline_delta1": float(np.mean(bd1)),
        "abs_rel_ci95": _ci95([r["abs_rel"] for r in per_item]),
        "tokens_per_map": n_tokens,
        "bits_per_map": float(bits),
        "codebook_usage": len(used) / codebook,
        "per_item": per_item,
    }
