"""Image and video quality stats over decoded uint8 pixels (numpy, and Pillow for resizing).

Every stat that looks at pixel structure (blur, entropy, motion, black and
frozen frames) is measured on grey at a fixed ANALYSIS size, not at the
file's resolution, so one photo saved at 1024 px and at 4096 px scores the
same and a threshold means the same thing for every input. Images smaller
than the analysis size are upscaled: a thumbnail scores as blurry as it looks
when shown at that size. Colourfulness, a statistic of pixel values, is
estimated on a strided subsample (longest side 256..511 px).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_ANALYSIS_SIDE = 512  # longest side of the image that blur/colourfulness/entropy are measured on
COLOR_SAMPLE_SIDE = 256   # colourfulness: strided subsample with a longest side of at least this
VIDEO_ANALYSIS_SIDE = 128  # longest side of the frames that motion/black/frozen are measured on
BLACK_PIXEL = 0.10         # ffmpeg blackdetect's pix_th: a pixel darker than 10% of full scale is black
BLACK_PICTURE = 0.98       # ffmpeg blackdetect's pic_th: a frame with >= 98% black pixels is black
FROZEN_MAFD = 0.002        # mean abs frame difference (0..1) below this (~half a grey level): frozen


def _as_hwc(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] with C in {1, 3}: drops alpha, adds the channel axis of a grey image."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image [H, W, 1|3|4], got {img.dtype} {img.shape}")
    return img[:, :, :3] if img.shape[2] == 4 else img


def _analysis_size(h: int, w: int, side: int) -> tuple[int, int]:
    """(width, height) with the longest side = `side`, aspect kept, each at least 3 px."""
    scale = side / max(h, w)
    return max(3, round(w * scale)), max(3, round(h * scale))


def analysis_gray(img_HWC: np.ndarray, side: int) -> np.ndarray:
    """float32 [h, w] luma (BT.601, 0..255) at the analysis size: Pillow converts to grey,
    then resizes in float (bilinear, antialiased when shrinking), so no second rounding."""
    h, w, c = img_HWC.shape
    grey = Image.fromarray(np.ascontiguousarray(img_HWC[:, :, 0]) if c == 1 else img_HWC).convert("L")
    size = _analysis_size(h, w, side)
    if (w, h) == size:
        return np.asarray(grey, dtype=np.float32)
    return np.asarray(grey.convert("F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _subsample(img_HWC: np.ndarray, side: int) -> np.ndarray:
    """Every k-th pixel, k the largest stride keeping the longest side >= `side` (for statistics)."""
    k = max(1, max(img_HWC.shape[:2]) // side)
    return img_HWC[::k, ::k]


def laplacian_variance(gray_HW: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels (Pech-Pacheco et al. 2000)."""
    g = gray_HW.astype(np.float32, copy=False)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def colorfulness(rgb_HW3: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M on 0..255 RGB: 0 for grey, ~100+ for vivid."""
    r, g, b = (rgb_HW3[:, :, i].astype(np.float32, copy=False) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    sd = np.hypot(rg.std(dtype=np.float64), yb.std(dtype=np.float64))
    return float(sd + 0.3 * np.hypot(rg.mean(dtype=np.float64), yb.mean(dtype=np.float64)))


def gray_entropy(gray_HW: np.ndarray) -> float:
    """Shannon entropy (bits, 0..8) of the 256-bin grey-level histogram."""
    hist = np.bincount(np.clip(np.rint(gray_HW), 0, 255).astype(np.uint8).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def image_stats(img_HWC_uint8: np.ndarray) -> dict:
    """Size, blur, colourfulness and entropy of one decoded image (uint8 [H, W, C])."""
    img = _as_hwc(img_HWC_uint8)
    h, w = img.shape[:2]
    gray = analysis_gray(img, IMAGE_ANALYSIS_SIDE)
    out = {"image_width": float(w), "image_height": float(h), "image_aspect": w / h,
           "image_blur": laplacian_variance(gray), "image_entropy": gray_entropy(gray)}
    # colourfulness is a statistic of pixel values (means and deviations), not of structure:
    # a strided subsample estimates it without a resize
    out["image_colorfulness"] = colorfulness(_subsample(img, COLOR_SAMPLE_SIDE)) if img.shape[2] == 3 else 0.0
    return out


def video_stats(frames_THWC_uint8: np.ndarray, fps: float, duration_s: float, has_audio: bool,
                width: int | None = None, height: int | None = None) -> dict:
    """Duration, rate, size, motion, black and frozen frames of sampled video frames.

    `frames_THWC_uint8` are the decoded frames sampled at `fps` (uint8 [T, H, W, 3]);
    `duration_s` is the source's duration; `width`/`height` default to the frames'.
    Motion and frozen frames compare each sampled frame with the previous sampled one.
    """
    frames = frames_THWC_uint8
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"expected uint8 frames [T, H, W, C] with T >= 1, got {frames.dtype} {frames.shape}")
    out = {"video_duration_s": float(duration_s), "video_fps": float(fps),
           "video_width": float(width if width is not None else frames.shape[2]),
           "video_height": float(height if height is not None else frames.shape[1]),
           "video_has_audio": bool(has_audio)}
    # one PIL resize per sampled frame (a handful per clip), then everything is vectorised over T
    gray_THW = np.stack([analysis_gray(_as_hwc(f), VIDEO_ANALYSIS_SIDE) for f in frames]) / 255.0
    black_T = (gray_THW < BLACK_PIXEL).mean(axis=(1, 2)) >= BLACK_PICTURE
    out["video_black_ratio"] = float(black_T.mean())
    if len(gray_THW) > 1:
        mafd_T = np.abs(np.diff(gray_THW, axis=0)).mean(axis=(1, 2))  # [T-1]
        out["video_motion"] = float(mafd_T.mean())
        out["video_frozen_ratio"] = float((mafd_T < FROZEN_MAFD).mean())
    return out  # one sampled frame: motion and frozen are unknown (null)
