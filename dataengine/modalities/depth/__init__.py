"""Depth maps (4M's depth): per-pixel metric depth, alone or aligned with the photo it belongs to.

`scene.depth.png` (16-bit, millimetres) or `scene.depth.npy` (float32, metres) beside `scene.jpg`
(and `scene.txt`) form ONE sample group: an image item that carries its depth map, so it can become
``image_to_depth`` or ``depth_to_image`` as well as the image's own tasks; a depth map with no image
beside it is a sample of kind ``depth``. Codes come from `fsq_depth` (tokenizer.py), a small FSQ
autoencoder over log-depth with its own vocabulary range; eval is AbsRel and RMSE in metres against an
equal-bits thumbnail (metrics.py); inspect writes decoded maps back as 16-bit PNGs (media.py).

This package registers through entry points (pyproject.toml: ``dataengine.modalities`` and
``dataengine.tokenizers``), exactly as a third-party modality would: nothing outside this folder
names it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataengine.modalities.depth.decode import DEPTH_EXTS, decode_depth, resize_depth
from dataengine.modalities.depth.media import write_depth_png
from dataengine.modalities.depth.metrics import evaluate_depth
from dataengine.modalities.depth.stats import STAT_FIELDS, depth_stats
from dataengine.modalities.spec import DecodeContext, Decoded, Modality


@dataclass
class DepthDecode:
    max_pixels: int = 40_000_000   # the image limit: a depth map is at most its photo's size
    max_depth_m: float = 1000.0    # farther values are invalid (sky, sensor overflow)


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    c = ctx.config.depth
    ext = next((e for e in DEPTH_EXTS if path.lower().endswith(e)), "")
    depth = decode_depth(data, ext, max_pixels=c.max_pixels, max_depth_m=c.max_depth_m)
    meta["depth_width"], meta["depth_height"] = int(depth.shape[1]), int(depth.shape[0])
    return Decoded({"depth": resize_depth(depth, ctx.sizes["depth"])}, {"depth": depth}, {})


def log_mse(original: np.ndarray, decoded: np.ndarray, tok=None) -> float:
    """MSE of natural-log depth over the valid pixels of the original (scale-free, like AbsRel)."""
    a, b = np.asarray(original, np.float64), np.asarray(decoded, np.float64)
    valid = (a > 0) & (b > 0)
    if not valid.any():
        raise ValueError("no valid depth pixel to compare")
    return float(np.mean((np.log(a[valid]) - np.log(b[valid])) ** 2))


def write_decoded(stem: Path, value, side: dict, meta: dict, tok) -> Path:
    return write_depth_png(stem.with_suffix(".depth.png"), value)


SPEC = Modality(
    name="depth", array="depth", extensions=DEPTH_EXTS,
    markers=("<|depth_start|>", "<|depth_end|>"), paired_text="caption",
    tasks=("depth_to_caption", "caption_to_depth", "depth"),
    default_tasks={"depth_to_caption": 0.5, "caption_to_depth": 0.5},
    # with its photo: estimate depth (understanding) and render from depth (generation) in equal parts,
    # each as likely as a caption task (4M trains every direction between aligned modalities)
    host_tasks={"image": {"image_to_depth": 0.4, "depth_to_image": 0.4}},
    aligns_with=("image",),
    ngram=2, threshold=0.5,  # a depth grid is an image-like code grid: the image's shingles and threshold
    stat_fields=STAT_FIELDS,
    decode_config=DepthDecode, decode=decode, stats=lambda full, smeta: depth_stats(full["depth"]),
    size_param="size", fit_items=lambda arr: {"depth": [arr]},
    recon_mse=log_mse, recon_unit="log-depth MSE", write_decoded=write_decoded, picture=True,
    evaluate=lambda tok, items, rt, resources: evaluate_depth(tok, items),
    eval_keys=("abs_rel", "baseline_abs_rel", "rmse_m", "baseline_rmse_m", "delta1", "codebook_usage",
               "tokens_per_map"),
    color="#8c6d31",
)
