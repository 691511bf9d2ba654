"""Video tokenizer eval: clip quality and token rate, next to frame-by-frame image tokens.

Clips are the decoded frames [T,S,S,3] sampled at the recipe's
``decode.video.fps``, so a clip lasts ``T / fps`` seconds and
``tokens_per_second = tokens / (T / fps)`` (summed over clips). PSNR pools the
MSE over all frames of a clip; SSIM is the mean over frames; both are then
averaged over clips. When the decoded clip has another frame count (a temporal
codec that pads), the first ``min(T, T')`` frames are compared.

For comparison, the same clips go frame by frame through the image tokenizer
(`frames_psnr`, `frames_ssim`, `frames_tokens_per_second`); for the `frames`
family that IS the tokenizer, so the numbers are copied.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dataengine.evaluate.metrics import code_stats, match_shape, psnr, ssim


def clip_seconds(n_frames: int, fps: float) -> float:
    """Duration of a clip of `n_frames` sampled at `fps`."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return float(n_frames) / float(fps)


def clip_quality(orig: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """(PSNR over all frames, mean SSIM over frames) of uint8 clips [T,H,W,3]."""
    orig, recon = np.asarray(orig, np.uint8), np.asarray(recon, np.uint8)
    T = min(len(orig), len(recon))
    if T == 0:
        raise ValueError("clip_quality: an empty clip")
    o = np.stack([match_shape(f[..., :3], recon.shape[1:]) for f in orig[:T]])
    r = recon[:T]
    return psnr(o, r), float(np.mean([ssim(a, b) for a, b in zip(o, r, strict=True)]))


def video_metrics(clips: list[np.ndarray], recons: list[np.ndarray], n_tokens: list[int], fps: float) -> dict:
    """psnr, ssim (means over clips) and tokens_per_second (all tokens / all seconds)."""
    qs = [clip_quality(c, r) for c, r in zip(clips, recons, strict=True)]
    seconds = sum(clip_seconds(len(c), fps) for c in clips)
    return {
        "psnr": float(np.mean([q[0] for q in qs])),
        "ssim": float(np.mean([q[1] for q in qs])),
        "tokens_per_second": float(sum(n_tokens) / seconds),
    }


def frames_baseline(image_tokenizer: Any, clips: list[np.ndarray], fps: float) -> dict:
    """The same clips through the image tokenizer, one frame at a time."""
    recons, n_tokens = [], []
    for clip in clips:
        codes_Tn = image_tokenizer.encode_images(list(np.asarray(clip)))
        recons.append(image_tokenizer.decode_images(codes_Tn, image_tokenizer.grid))
        n_tokens.append(int(codes_Tn.size))
    m = video_metrics(clips, recons, n_tokens, fps)
    return {f"frames_{k}": v for k, v in m.items()}


def evaluate_video(tokenizer: Any, items: list[np.ndarray], rt: dict, resources: dict) -> dict:
    """Metrics of a video tokenizer from a `metrics.roundtrip` result `rt` over `items`.

    `resources`: ``video_fps`` (required) and ``image_tokenizer`` (for the
    frame-by-frame comparison; the `frames` family brings its own).
    """
    fps = float(resources["video_fps"])
    n_tokens = [int(c.size) for c in rt["codes"]]
    out = video_metrics(items, rt["decoded"], n_tokens, fps)
    out["tokens_per_item"] = float(np.mean(n_tokens))
    out["frames_per_item"] = float(np.mean([len(c) for c in items]))
    out.update(code_stats(rt["codes"], tokenizer.vocab_size))
    if tokenizer.family == "frames":
        out.update({f"frames_{k}": out[k] for k in ("psnr", "ssim", "tokens_per_second")})
        return out
    image = resources.get("image_tokenizer") or getattr(tokenizer, "image", None)
    if image is None or not hasattr(image, "encode_images"):
        out["frames_error"] = "no fsq_image tokenizer to compare with (DIR/image is missing)"
        return out
    out.update(frames_baseline(image, items, fps))
    return out
