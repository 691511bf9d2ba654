"""Image tokenizer eval: reconstruction quality against a same-bits thumbnail.

The baseline asks what the tokens' bits buy without any learning. An image's
tokens carry ``bits = tokens_per_image * log2(codebook size)``. The baseline
stores a bicubic thumbnail of h x w pixels (w = h or h + 1) with `b` bits per
RGB channel (3 to 8), the shape that spends the most of those bits without
exceeding them (`thumbnail_shape`), and upsamples it back (bicubic) to the
original size. The tokenizer should beat it: a learned codebook that cannot
beat a thumbnail of the same size is not worth its bits.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from dataengine.evaluate.metrics import code_stats, match_shape, psnr, ssim, token_bits

RGB_BITS = 24  # 8-bit RGB


def thumbnail_side(bits: float, *, bits_per_pixel: int = RGB_BITS) -> int:
    """Largest square thumbnail side whose pixels fit in `bits`: floor(sqrt(bits / bpp)), at least 1.

    Exact integer arithmetic, so ``side**2 * bits_per_pixel <= bits`` whenever
    ``bits >= bits_per_pixel`` (below that the 1-pixel minimum exceeds the budget).
    """
    if bits < 0:
        raise ValueError(f"bits must be >= 0, got {bits}")
    return max(1, math.isqrt(int(math.floor(bits / bits_per_pixel))))


def thumbnail_bits(side: int, *, bits_per_pixel: int = RGB_BITS) -> int:
    """Bits stored by a side x side thumbnail."""
    return int(side) * int(side) * int(bits_per_pixel)


def thumbnail_shapes(bits: float) -> list[tuple[int, int, int]]:
    """For each of 3..8 bits per channel, the (h, w, bits) near-square RGB thumbnail (w = h or h + 1)
    that stores the most bits without exceeding `bits` (1x1 at least)."""
    if bits < 0:
        raise ValueError(f"bits must be >= 0, got {bits}")
    shapes = []
    for bpc in range(3, 9):
        best = (0, 1, 1)
        h = max(1, math.isqrt(int(bits // (3 * bpc))))
        for hh in (h - 1, h, h + 1):
            for ww in (hh, hh + 1):
                if hh >= 1 and best[0] < hh * ww * 3 * bpc <= bits:
                    best = (hh * ww * 3 * bpc, hh, ww)
        shapes.append((best[1], best[2], bpc))
    return shapes


def thumbnail_shape(bits: float) -> tuple[int, int, int]:
    """The candidate of `thumbnail_shapes` that stores the most bits (more pixels on a tie)."""
    return max(thumbnail_shapes(bits), key=lambda s: (min(s[0] * s[1] * 3 * s[2], bits), s[0] * s[1]))


def thumbnail_baseline(img: np.ndarray, side: int | tuple[int, int, int]) -> np.ndarray:
    """uint8 [H,W,3] -> bicubic thumbnail (h x w, quantized to b bits per channel) -> bicubic back to [H,W,3].

    `side` is a square side at 8 bits, or a `thumbnail_shape` (h, w, b).
    """
    th, tw, bpc = (side, side, 8) if isinstance(side, int) else side
    img = np.asarray(img, np.uint8)
    h, w = img.shape[:2]
    thumb = np.asarray(Image.fromarray(img).resize((tw, th), Image.Resampling.BICUBIC), np.float64)
    step = 256 / 2 ** bpc
    thumb = np.clip((np.floor(thumb / step) + 0.5) * step, 0, 255).astype(np.uint8) if bpc < 8 else thumb.astype(np.uint8)
    return np.asarray(Image.fromarray(thumb).resize((w, h), Image.Resampling.BICUBIC), np.uint8)


def image_quality(originals: list[np.ndarray], recons: list[np.ndarray]) -> dict:
    """Mean PSNR and SSIM over pairs (originals resized to the reconstruction's size if needed)."""
    ps, ss = [], []
    for o, r in zip(originals, recons, strict=True):
        r = np.asarray(r, np.uint8)
        o = match_shape(np.asarray(o, np.uint8)[..., :3], r.shape)
        ps.append(psnr(o, r))
        ss.append(ssim(o, r))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def evaluate_image(tokenizer: Any, items: list[np.ndarray], rt: dict, resources: dict) -> dict:
    """Metrics of an image tokenizer from a `metrics.roundtrip` result `rt` over `items`."""
    decoded = [np.asarray(d, np.uint8) for d in rt["decoded"]]
    levels = tokenizer.level_sizes()
    n_tokens = [int(c.size) for c in rt["codes"]]
    q = image_quality(items, decoded)
    # every candidate shape (3..8 bits per channel) within each image's bits; the best mean PSNR is the
    # baseline: the strongest thumbnail those bits can buy, one shape rule for the whole set
    originals = [match_shape(np.asarray(o, np.uint8)[..., :3], r.shape) for o, r in zip(items, decoded, strict=True)]
    tok_bits = [token_bits(n, levels) for n in n_tokens]
    best = None
    for k in range(6):
        shapes = [thumbnail_shapes(bits)[k] for bits in tok_bits]
        bases = [thumbnail_baseline(o, sh) for o, sh in zip(originals, shapes)]
        ps = float(np.mean([psnr(o, b) for o, b in zip(originals, bases)]))
        if best is None or ps > best[0]:
            best = (ps, shapes, bases)
    ps, shapes, bases = best
    return {
        **q,
        "baseline_psnr": ps,
        "baseline_ssim": float(np.mean([ssim(o, b) for o, b in zip(originals, bases)])),
        "baseline_bits": float(np.mean([h * w * 3 * b for h, w, b in shapes])),
        "baseline_shape": list(shapes[0]),  # [height, width, bits per channel] of the first item
        "token_bits": float(np.mean(tok_bits)),
        "tokens_per_item": float(np.mean(n_tokens)),
        **code_stats(rt["codes"], tokenizer.vocab_size),
    }
