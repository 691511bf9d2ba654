"""Batched encode/decode give what one item at a time gives (CPU), for every model family."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from dataengine.tokenize.masked import Unsupported, length_buckets, masked_forward


def test_mel_fsq_encode_batch_equals_one_at_a_time_for_mixed_lengths(mel_tok, make_clip):
    """Clips of many lengths (shorter than n_fft, odd frame counts, stereo) share padded buckets."""
    rng = np.random.default_rng(7)
    waves = [make_clip(rng, s, 16000) for s in (0.03, 0.5, 0.51, 0.77, 1.0, 1.3, 2.2, 2.25, 0.2, 3.0)]
    waves += [rng.standard_normal(700).astype(np.float32), np.stack([waves[3], waves[3] * 0.5], axis=1)]
    batched = mel_tok.encode_batch(waves)
    lengths = set()
    for w, (codes, side) in zip(waves, batched):
        one, one_side = mel_tok.encode(w)
        assert side == one_side
        assert codes.dtype == np.int32 and np.array_equal(codes, one)
        lengths.add(len(codes))
    assert len(lengths) >= 8  # really mixed lengths
    assert len(length_buckets([side["mel_frames"] for _, side in batched])) < len(waves)  # really batched


def test_mel_fsq_decode_batch_matches(mel_tok, make_clip):
    rng = np.random.default_rng(3)
    items = mel_tok.encode_batch([make_clip(rng, s, 16000) for s in (0.3, 0.6)])
    for (codes, side), wave in zip(items, mel_tok.decode_batch(items)):
        assert np.allclose(wave, mel_tok.decode(codes, side), atol=1e-5)


def test_fsq_image_batch_equals_one_at_a_time(image_tok, make_image):
    rng = np.random.default_rng(4)
    imgs = [make_image(rng, s) for s in (64, 64, 48, 96)] + [make_image(rng, 64)[:40]]
    batched = image_tok.encode_batch(imgs)
    for img, (codes, side) in zip(imgs, batched):
        one, one_side = image_tok.encode(img)
        assert np.array_equal(codes, one) and side == one_side
    decoded = image_tok.decode_batch(batched)
    for (codes, side), img in zip(batched, decoded):  # float summation order: +-1 level at most
        one = image_tok.decode(codes, side).astype(int)
        assert img.shape == one.shape and np.abs(img.astype(int) - one).max() <= 1


def test_frames_batch_equals_one_at_a_time(frames_tok, make_image):
    rng = np.random.default_rng(5)
    videos = [np.stack([make_image(rng) for _ in range(t)]) for t in (1, 3, 2)]
    batched = frames_tok.encode_batch(videos)
    for v, (codes, side) in zip(videos, batched):
        one, one_side = frames_tok.encode(v)
        assert np.array_equal(codes, one) and side == one_side
    for (codes, side), frames in zip(batched, frames_tok.decode_batch(batched)):
        assert frames.shape[0] == side["frames"]
        assert np.abs(frames.astype(int) - frames_tok.decode(codes, side).astype(int)).max() <= 1


def test_length_buckets():
    lengths = [10, 200, 11, 12, 13, 199, 400, 1]
    buckets = length_buckets(lengths, max_items=3)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        ls = [lengths[i] for i in b]
        assert len(b) <= 3 and max(ls) <= 1.25 * max(1, min(ls))
    assert length_buckets([]) == []


def test_masked_forward_matches_unpadded_and_refuses_the_unknown():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
                        nn.Conv1d(8, 8, 4, stride=2, padding=1), nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1))
    xs = [torch.randn(4, n) for n in (6, 10, 16)]
    x = torch.stack([nn.functional.pad(t, (0, 16 - t.shape[-1])) for t in xs])
    with torch.inference_mode():
        y, n = masked_forward(net, x, torch.tensor([6, 10, 16]))
        for i, t in enumerate(xs):
            alone = net(t[None])[0]
            assert int(n[i]) == alone.shape[-1]
            assert torch.allclose(y[i, :, : int(n[i])], alone, atol=1e-6)
        with pytest.raises(Unsupported):
            masked_forward(nn.Sequential(nn.BatchNorm1d(4)), x, torch.tensor([6, 10, 16]))
