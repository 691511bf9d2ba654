"""Image tokenizer eval: reconstruction quality against a same-bits thumbnail.

The baseline asks what the tokens' bits buy without any learning. An image's
tokens carry ``bits = tokens_per_image * log2(codebook size)``. The baseline
stores a bicubic thumbnail of side ``s = floor(sqrt(bits / 24))`` (8-bit RGB,
24 bits a pixel, at least 1), i.e. ``24 * s * s <= bits``, and upsamples it
back (bicubic) to the original size. The tokenizer should beat it: a learned
codebook that cannot beat a thumbnail of the same size is not worth its bits.
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


def thumbnail_baseline(img: np.ndarray, side: int) -> np.ndarray:
    """uint8 [H,W,3] -> bicubic thumbnail [side,side,3] (uint8) -> bicubic back to [H,W,3]."""
    img = np.asarray(img, np.uint8)
    h, w = img.shape[:2]
    thumb = Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(thumb.resize((w, h), Image.Resampling.BICUBIC), np.uint8)


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
    base_ps, base_ss, base_bits, tok_bits = [], [], [], []
    for o, r, n in zip(items, decoded, n_tokens, strict=True):
        o = match_shape(np.asarray(o, np.uint8)[..., :3], r.shape)
        bits = token_bits(n, levels)
        side = thumbnail_side(bits)
        b = thumbnail_baseline(o, side)
        base_ps.append(psnr(o, b))
        base_ss.append(ssim(o, b))
        base_bits.append(thumbnail_bits(side))
        tok_bits.append(bits)
    return {
        **q,
        "baseline_psnr": float(np.mean(base_ps)),
        "baseline_ssim": float(np.mean(base_ss)),
        "baseline_bits": float(np.mean(base_bits)),
        "baseline_side": thumbnail_side(float(np.mean(tok_bits))),
        "token_bits": float(np.mean(tok_bits)),
        "tokens_per_item": float(np.mean(n_tokens)),
        **code_stats(rt["codes"], tokenizer.vocab_size),
    }
