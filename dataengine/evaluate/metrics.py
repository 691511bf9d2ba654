"""Metric helpers shared by the per-modality evaluations.

Everything here is a pure function of its arguments (no I/O, no global state)
except `roundtrip`, which times a tokenizer's encode and decode.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

PSNR_CAP_DB = 100.0  # identical inputs: JSON has no inf, so PSNR is capped here


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0, cap: float = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape arrays, at most `cap`.

    MSE is pooled over every element; identical arrays give `cap` (not inf).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse <= 0.0:
        return float(cap)
    return float(min(cap, 10.0 * math.log10(data_range**2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """SSIM of two uint8 images [H,W,3] (scikit-image, channel_axis=-1, data_range=255).

    The window is 7x7, or the largest odd size that fits an image smaller than that.
    """
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {a.shape} vs {b.shape}")
    side = min(a.shape[0], a.shape[1])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:  # too small for a window: fall back to a 1-pixel "structure" (exact match -> 1)
        return 1.0 if np.array_equal(a, b) else float(1.0 - np.mean(np.abs(a.astype(float) - b)) / data_range)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=data_range, win_size=win))


def code_counts(codes: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """Histogram of local code ids over many code arrays: int64 [vocab_size]."""
    counts = np.zeros(int(vocab_size), np.int64)
    for c in codes:
        c = np.asarray(c).reshape(-1).astype(np.int64)
        if c.size:
            counts += np.bincount(c, minlength=int(vocab_size))[: int(vocab_size)]
    return counts


def utilization(counts: np.ndarray) -> float:
    """Fraction of the codebook's codes used at least once (0 for an empty codebook)."""
    counts = np.asarray(counts)
    return float((counts > 0).sum() / counts.size) if counts.size else 0.0


def entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy (natural log) of the distribution given by a histogram; 0 when empty."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of a code histogram: K for K equally used codes, 1 for a single code.

    0.0 for an empty histogram (nothing was encoded).
    """
    return 0.0 if np.asarray(counts).sum() <= 0 else float(math.exp(entropy_nats(counts)))


def bits_per_token(level_sizes: Sequence[int]) -> float:
    """Bits one token carries: log2 of its codebook size.

    Multi-level families (EnCodec) interleave one token per level per frame, so
    a token carries the mean of log2(level size) over the levels.
    """
    sizes = [int(s) for s in level_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"level sizes must be positive, got {list(level_sizes)}")
    return float(np.mean([math.log2(s) for s in sizes]))


def token_bits(n_tokens: int, level_sizes: Sequence[int]) -> float:
    """Bits carried by `n_tokens` tokens of a tokenizer with these level sizes."""
    return float(n_tokens) * bits_per_token(level_sizes)


def match_shape(orig: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 image [H,W,3] resized (bicubic) to shape[:2] when it differs; unchanged otherwise."""
    orig = np.asarray(orig)
    if orig.shape[:2] == tuple(shape[:2]):
        return orig
    from PIL import Image

    return np.asarray(Image.fromarray(orig).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def roundtrip(tokenizer: Any, items: list, *, chunk: int = 32) -> dict:
    """Encode then decode every item, timed after one untimed warm-up item.

    Encoding goes through `encode_batch` in chunks (as the pipeline does);
    decoding is one item at a time (the contract has no batch decode).
    Returns {"codes", "sides", "decoded", "encode_items_per_s", "decode_items_per_s"}.
    """
    if not items:
        raise ValueError("roundtrip: no items")
    codes0, side0 = tokenizer.encode(items[0])
    tokenizer.decode(codes0, side0)  # warm-up: lazy init, allocator, caches
    t0 = time.perf_counter()
    encoded = []
    for i in range(0, len(items), chunk):
        encoded.extend(tokenizer.encode_batch(items[i : i + chunk]))
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = [tokenizer.decode(c, s) for c, s in encoded]
    t_dec = time.perf_counter() - t0
    return {
        "codes": [np.asarray(c) for c, _ in encoded],
        "sides": [s for _, s in encoded],
        "decoded": decoded,
        "encode_items_per_s": len(items) / max(t_enc, 1e-9),
        "decode_items_per_s": len(items) / max(t_dec, 1e-9),
    }


def code_stats(codes: Sequence[np.ndarray], vocab_size: int) -> dict:
    """Utilization and perplexity of the codes used over an eval set.

    ``tokens`` (the total) bounds utilization: fewer tokens than codes cannot use
    them all, so ``utilization_bound = min(1, tokens / codebook_size)`` says how
    much of the codebook this eval set could show at best.
    """
    counts = code_counts(codes, vocab_size)
    n = int(counts.sum())
    return {"utilization": utilization(counts), "perplexity": perplexity(counts),
            "codebook_size": int(vocab_size), "tokens": n,
            "utilization_bound": min(1.0, n / int(vocab_size)) if vocab_size else 0.0}
