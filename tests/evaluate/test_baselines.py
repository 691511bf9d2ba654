"""Same-bits baselines never spend more bits than the tokens; the sensor bound holds."""
import math

import numpy as np
import pytest

from dataengine.evaluate import audio as A
from dataengine.evaluate.image import (evaluate_image, thumbnail_baseline, thumbnail_bits, thumbnail_shape,
                                      thumbnail_shapes, thumbnail_side)
from dataengine.evaluate.metrics import psnr
from dataengine.evaluate.metrics import roundtrip, token_bits
from dataengine.evaluate.sensor import evaluate_sensor, quantizer_bound


@pytest.mark.parametrize("grid,levels,side", [
    (8, [8, 5, 5, 5], 5),        # the demo: 64 tokens x log2(1000) = 637.8 bits -> 5x5 (600 bits)
    (4, [8, 5, 5, 5], 2),        # 159.4 bits -> 2x2 (96)
    (16, [8, 8, 8, 5, 5, 5], 13),  # 256 x log2(64000) = 4087.4 bits -> 13x13 (4056)
    (32, [4096], 22),            # 1024 x 12 = 12288 bits -> 22x22 (11616)
    (2, [2], 1),                 # 4 bits: below one RGB pixel; the 1-pixel floor
])
def test_thumbnail_uses_no_more_bits_than_the_tokens(grid, levels, side):
    bits = token_bits(grid * grid, [int(np.prod(levels))])
    s = thumbnail_side(bits)
    if bits >= 24:
        assert thumbnail_bits(s) <= bits < thumbnail_bits(s + 1)
        assert s * s * 24 <= bits and (s + 1) ** 2 * 24 > bits
    else:
        assert s == 1
    assert s == side


@pytest.mark.parametrize("bits", [9, 100, 384, 505.9, 506.0, 1000, 4096 * 6.0])
def test_thumbnail_shape_spends_the_budget(bits):
    h, w, b = thumbnail_shape(bits)
    total = h * w * 3 * b
    assert total <= max(bits, 9) and w in (h, h + 1) and 3 <= b <= 8
    # no other near-square shape at 3..8 bits stores more without exceeding the budget
    better = [(hh, ww, bb) for bb in range(3, 9) for hh in range(1, 80) for ww in (hh, hh + 1)
              if total < hh * ww * 3 * bb <= bits]
    assert not better, better[:3]
    if bits >= 400:
        assert total >= 0.85 * bits  # the baseline gets (nearly) the tokens' bits, not a rounded-down square


def test_quantized_thumbnail_keeps_a_flat_image_close():
    flat = np.full((32, 32, 3), 77, np.uint8)
    out = thumbnail_baseline(flat, (4, 5, 4))
    assert np.abs(out.astype(int) - 77).max() <= 256 / 16 / 2 + 1  # within half a 4-bit step


def test_thumbnail_side_is_exact_on_squares():
    for s in range(1, 40):
        assert thumbnail_side(24 * s * s) == s
        assert thumbnail_side(24 * s * s - 1) == max(1, s - 1)


def test_thumbnail_baseline_and_image_eval_bits():
    from dataengine.tokenize.image_fsq import FSQImageTokenizer

    tok = FSQImageTokenizer({"size": 32, "downsample": 8, "channels": 16})  # 16 tokens x log2(1000)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    flat = np.full((32, 32, 3), 77, np.uint8)
    assert np.array_equal(thumbnail_baseline(flat, 3), flat)  # a flat image survives any thumbnail
    out = evaluate_image(tok, imgs, roundtrip(tok, imgs), {})
    assert out["token_bits"] == pytest.approx(16 * math.log2(1000))
    h, w, b = out["baseline_shape"]
    assert [h, w, b] in [list(s) for s in thumbnail_shapes(out["token_bits"])]
    assert out["baseline_bits"] == h * w * 3 * b <= out["token_bits"]
    best = max(np.mean([psnr(i, thumbnail_baseline(i, s)) for i in imgs]) for s in thumbnail_shapes(out["token_bits"]))
    assert out["baseline_psnr"] == pytest.approx(best)  # the strongest thumbnail the bits can buy
    assert out["tokens_per_item"] == 16 and out["tokens"] == 48 and 0 < out["utilization"] <= 48 / 1000


@pytest.mark.parametrize("tokens_per_second,level_sizes", [
    (15.625, [1000]),     # mel_fsq defaults
    (150.0, [1024] * 2),  # encodec 1.5 kbps: 75 frames/s x 2 levels
    (3.0, [64]),          # a very low rate: sometimes no room for one cell
])
@pytest.mark.parametrize("seconds", [0.2, 1.0, 3.7])
def test_coarse_mel_uses_no_more_bits_than_the_tokens(tokens_per_second, level_sizes, seconds):
    n_frames = 1 + int(seconds * 16000) // A.HOP
    bits = token_bits(math.ceil(tokens_per_second * seconds), level_sizes)
    for m, t in A.coarse_mel_shapes(bits, A.N_MELS, n_frames):
        assert A.coarse_mel_bits(m, t) <= bits
        assert t == n_frames or A.coarse_mel_bits(m, t + 1) > bits  # as many frames as fit
    logmel = np.random.default_rng(0).normal(-5, 2, (A.N_MELS, n_frames)).astype(np.float32)
    rec, used, _ = A.coarse_mel_baseline(logmel, bits)
    assert used <= bits and rec.shape == logmel.shape and np.isfinite(rec).all()


def test_coarse_mel_quantisation_error_and_tiny_budgets():
    rng = np.random.default_rng(1)
    logmel = rng.normal(-4, 3, (A.N_MELS, 20)).astype(np.float32)
    full = A.coarse_mel(logmel, A.N_MELS, 20)  # no downsampling: only the 8-bit quantiser
    span = float(logmel.max() - logmel.min())
    assert np.abs(full - logmel).max() <= span / 510 + 1e-5
    assert np.allclose(A.coarse_mel(np.full((8, 5), -3.0), 2, 2), -3.0)
    assert A.coarse_mel_baseline(logmel, 50)[1] == 32   # room for the mean only
    assert A.coarse_mel_baseline(logmel, 10)[1] == 0    # not even that: silence
    assert A.mel_l1(logmel, logmel) == 0.0


def test_sensor_error_stays_within_the_quantizer_bound():
    from dataengine.tokenize.sensor_bins import SensorBinsTokenizer

    tok = SensorBinsTokenizer({"n_bins": 32, "clip": 3.0})
    rng = np.random.default_rng(2)
    items = [rng.normal(0, s, (200, 3)).astype(np.float32) * [1, 10, 0.01] for s in (1.0, 2.0)]
    items[1][5, 0] = 500.0  # far beyond the clip range: no guarantee there
    out = evaluate_sensor(tok, items, roundtrip(tok, items), {"sensor_rate_hz": 10.0})
    scales = [np.abs(x.astype(np.float64)).mean(axis=0) for x in items]
    assert out["bound"] == pytest.approx(max(quantizer_bound(tok.width, s).max() for s in scales))
    assert out["within_bound"] is True and out["max_abs_error"] <= out["bound"]
    assert out["clipped_fraction"] > 0 and out["max_abs_error_clipped"] > out["bound"]
    assert out["tokens_per_second"] == pytest.approx(30.0)  # 3 channels x 10 Hz
    assert 0 < out["rmse"] < out["max_abs_error_clipped"]
