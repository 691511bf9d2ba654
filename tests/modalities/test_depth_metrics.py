"""Depth metrics by hand, the equal-bits baseline's budget, and evaluate_depth's report."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dataengine.modalities.depth.decode import resize_depth
from dataengine.modalities.depth.metrics import abs_rel, delta1, equal_bits_baseline, evaluate_depth, rmse
from dataengine.modalities.depth.tokenizer import FSQDepthTokenizer

GT = np.array([[1.0, 2.0], [4.0, 0.0]], np.float32)  # the 0 is invalid: never compared
PRED = np.array([[1.5, 2.0], [2.0, 9.0]], np.float32)
TOKENIZER_BITS = [16 * math.log2(1000), 64 * math.log2(1000), 40.0, 9.0 + 8.0 + 2.0]


def plane(h: int = 40, w: int = 48, tilt: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (1.0 + tilt * yy / h + 0.5 * xx / w).astype(np.float32)


def test_metrics_by_hand():
    assert abs_rel(PRED, GT) == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert rmse(PRED, GT) == pytest.approx(math.sqrt((0.25 + 0.0 + 4.0) / 3))
    assert delta1(PRED, GT) == pytest.approx(1 / 3)  # ratios 1.5, 1.0, 2.0
    assert delta1(np.array([[1.2, -1.0]]), np.array([[1.0, 1.0]])) == 0.5  # pred <= 0 fails
    with pytest.raises(ValueError):
        abs_rel(PRED, GT[:1])
    with pytest.raises(ValueError):
        rmse(PRED, np.zeros_like(GT))


@pytest.mark.parametrize("bits", TOKENIZER_BITS)
def test_baseline_respects_its_budget(bits):
    recon, used = equal_bits_baseline(plane(), bits, 32)
    assert recon.dtype == np.float32 and recon.shape == (32, 32) and (recon > 0).all()
    assert isinstance(used, int)
    assert used <= bits + 64  # cells + 64 range bits + 8 choice bits: within the tokenizer's total
    assert used <= bits + 64 + 8


def test_baseline_too_few_bits_raises():
    with pytest.raises(ValueError):
        equal_bits_baseline(plane(), 9.0, 32)


def test_baseline_is_exact_for_a_constant_map():
    recon, _ = equal_bits_baseline(np.full((40, 48), 3.0, np.float32), 16 * math.log2(1000), 32)
    np.testing.assert_allclose(recon, 3.0, rtol=1e-6)


def test_baseline_improves_with_bits():
    gt = plane(64, 64)
    gt[:20, 10:30] = 0.8  # an edge the thumbnail has to resolve
    gt32 = resize_depth(gt, 32)
    errs = [abs_rel(equal_bits_baseline(gt, bits, 32)[0], gt32) for bits in (60, 600)]
    assert errs[1] < errs[0]


def test_evaluate_depth_report():
    tok = FSQDepthTokenizer({"size": 32, "downsample": 8, "channels": 16})  # untrained is enough here
    items = [plane(tilt=t) for t in (1.0, 2.0, 4.0)] + [np.zeros((10, 40), np.float32)]
    items[-1][:, :2] = 5.0  # valid only outside the centre crop: skipped, counted
    r = evaluate_depth(tok, items)
    keys = {"items", "abs_rel", "rmse_m", "delta1", "baseline_abs_rel", "baseline_rmse_m", "baseline_delta1",
            "abs_rel_ci95", "tokens_per_map", "bits_per_map", "codebook_usage", "per_item"}
    assert keys <= set(r)
    assert r["items"] == 3 and r["skipped_no_valid"] == 1 and len(r["per_item"]) == 3
    assert r["tokens_per_map"] == 16 and r["bits_per_map"] == pytest.approx(16 * math.log2(1000))
    for k in keys - {"items", "abs_rel_ci95", "per_item", "tokens_per_map"}:
        assert type(r[k]) is float and math.isfinite(r[k]), k
    lo, hi = r["abs_rel_ci95"]
    assert lo <= r["abs_rel"] <= hi and all(type(v) is float for v in (lo, hi))
    assert 0 < r["codebook_usage"] <= 1
    assert all(type(v) is float and math.isfinite(v) for row in r["per_item"] for v in row.values())
    assert r == evaluate_depth(tok, items)  # deterministic
