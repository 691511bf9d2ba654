"""Metric helpers on hand-built inputs with known answers."""
import math

import numpy as np
import pytest

from dataengine.evaluate.metrics import (
    PSNR_CAP_DB, bits_per_token, code_counts, code_stats, entropy_nats, perplexity, psnr, ssim, token_bits,
    utilization,
)
from dataengine.evaluate.video import clip_quality, clip_seconds, evaluate_video, video_metrics


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == PSNR_CAP_DB
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    assert psnr(np.zeros((4, 4, 3)), np.full((4, 4, 3), 255.0)) == pytest.approx(0.0)
    b = a.copy()
    b[0, 0, 0] += 16  # MSE 256 / 192
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 192)))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:4])


def test_ssim_identical_is_one_and_noise_is_lower():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32)
    a = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1).astype(np.uint8)  # a smooth gradient
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < 0.5 < ssim(a, np.clip(a.astype(int) + 2, 0, 255).astype(np.uint8))
    assert ssim(a[:5, :5], a[:5, :5]) == pytest.approx(1.0)  # window shrinks to fit


def test_histogram_utilization_and_perplexity():
    counts = code_counts([np.array([0, 1, 1]), np.array([3])], 4)
    assert counts.tolist() == [1, 2, 0, 1]
    assert utilization(counts) == 0.75
    assert perplexity(np.full(16, 5)) == pytest.approx(16.0)  # uniform over K codes -> K
    assert perplexity(np.array([7, 0, 0])) == pytest.approx(1.0)
    assert perplexity(np.zeros(3)) == 0.0 and entropy_nats(np.zeros(3)) == 0.0
    assert entropy_nats(np.array([1, 1])) == pytest.approx(math.log(2))
    stats = code_stats([np.arange(10)], 20)
    assert stats["utilization"] == 0.5 and stats["perplexity"] == pytest.approx(10) and stats["tokens"] == 10
    assert stats["utilization_bound"] == 0.5  # 10 tokens can show at most 10 of 20 codes
    assert code_stats([np.zeros(50, np.int64)], 20)["utilization_bound"] == 1.0


def test_bits_per_token():
    assert bits_per_token([1000]) == pytest.approx(math.log2(1000))
    assert bits_per_token([1024] * 8) == 10.0  # EnCodec: one token per level per frame
    assert token_bits(64, [1000]) == pytest.approx(64 * math.log2(1000))
    with pytest.raises(ValueError):
        bits_per_token([])


def test_video_metrics_and_the_frame_by_frame_comparison():
    from dataengine.tokenize.image_fsq import FSQImageTokenizer

    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert clip_quality(clip, clip) == (PSNR_CAP_DB, pytest.approx(1.0))
    assert clip_quality(clip, clip[:2])[0] == PSNR_CAP_DB  # a shorter decode: common frames
    assert clip_seconds(4, 2.0) == 2.0
    m = video_metrics([clip], [clip], [4 * 16], fps=2.0)
    assert m["tokens_per_second"] == 32.0

    image = FSQImageTokenizer({"size": 32, "channels": 16})  # untrained: only shapes matter here

    class Temporal:  # a stand-in for a non-`frames` video family
        family, vocab_size = "temporal_stub", 1000

    rt = {"codes": [np.zeros(20, np.int32)], "decoded": [clip // 2]}
    out = evaluate_video(Temporal(), [clip], rt, {"video_fps": 2.0, "image_tokenizer": image})
    assert out["tokens_per_second"] == 10.0 and out["frames_tokens_per_second"] == 32.0
    for k in ("psnr", "ssim", "frames_psnr", "frames_ssim", "utilization", "perplexity"):
        assert math.isfinite(out[k]), k
