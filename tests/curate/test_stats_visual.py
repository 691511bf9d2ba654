"""Image and video quality stats: behaviour on real photos (scikit-image's) and built clips."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dataengine import decode as D
from dataengine import mediaio
from dataengine.curate.stats_visual import (IMAGE_ANALYSIS_SIDE, colorfulness, gray_entropy, image_stats,
                                            laplacian_variance, video_stats)

SKIMAGE_DATA = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"


def photo(name: str) -> np.ndarray:
    with Image.open(SKIMAGE_DATA / name) as im:
        return np.asarray(im.convert("RGB"))


def test_size_and_aspect() -> None:
    s = image_stats(np.zeros((20, 30, 3), np.uint8))
    assert (s["image_width"], s["image_height"]) == (30.0, 20.0)
    assert s["image_aspect"] == pytest.approx(1.5)


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "rocket.jpg"])
def test_blur_lower_for_blurred_photo(name: str) -> None:
    sharp = photo(name)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    assert image_stats(blurred)["image_blur"] < 0.5 * image_stats(sharp)["image_blur"]


def test_blur_does_not_depend_on_file_resolution() -> None:
    img = photo("coffee.png")  # 600 x 400
    big = np.asarray(Image.fromarray(img).resize((1200, 800), Image.Resampling.LANCZOS))
    a, b = image_stats(img)["image_blur"], image_stats(big)["image_blur"]
    assert a == pytest.approx(b, rel=0.2)
    # measured at native resolution instead, the upscaled copy would look much blurrier
    gray = lambda x: x.astype(np.float32).mean(axis=2)  # noqa: E731
    assert laplacian_variance(gray(big)) < 0.5 * laplacian_variance(gray(img))


def test_laplacian_matches_a_direct_convolution() -> None:
    g = np.random.default_rng(0).random((9, 11)).astype(np.float32) * 255
    k = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    direct = np.array([[(g[i:i + 3, j:j + 3] * k).sum() for j in range(9)] for i in range(7)])
    assert laplacian_variance(g) == pytest.approx(direct.var(), rel=1e-5)


def test_colorfulness_grey_zero_vivid_high() -> None:
    gray = np.repeat(photo("camera.png")[:, :, :1], 3, axis=2)
    assert image_stats(gray)["image_colorfulness"] == pytest.approx(0.0, abs=1e-9)
    vivid = np.random.default_rng(1).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert image_stats(vivid)["image_colorfulness"] > 50
    # a real colour photo sits between grey and random colour noise
    assert 0 < image_stats(photo("coffee.png"))["image_colorfulness"] < colorfulness(vivid.astype(np.float32))


def test_entropy_flat_vs_noise() -> None:
    flat = image_stats(np.full((50, 80, 3), 128, np.uint8))
    assert flat["image_entropy"] == pytest.approx(0.0) and flat["image_blur"] == pytest.approx(0.0)
    assert gray_entropy(np.arange(256, dtype=np.float32).reshape(16, 16)) == pytest.approx(8.0)
    assert 5 < image_stats(photo("astronaut.png"))["image_entropy"] < 8


def test_grey_rgba_and_degenerate_shapes() -> None:
    g = image_stats(photo("camera.png")[:, :, 0])  # H x W grey
    assert g["image_colorfulness"] == 0.0 and g["image_blur"] > 0
    rgba = np.dstack([photo("coffee.png"), np.full((400, 600), 255, np.uint8)])
    assert image_stats(rgba)["image_blur"] == pytest.approx(image_stats(photo("coffee.png"))["image_blur"])
    line = image_stats(np.random.default_rng(2).integers(0, 256, (1, 900, 3)).astype(np.uint8))
    assert line["image_aspect"] == 900 and np.isfinite(line["image_blur"])
    with pytest.raises(ValueError, match="uint8"):
        image_stats(np.zeros((4, 4, 3), np.float32))
    assert IMAGE_ANALYSIS_SIDE == 512


# ---------------------------------------------------------------- video
def _decoded(tmp_path: Path, frames: np.ndarray, name: str) -> D.DecodedVideo:
    path = mediaio.write_video(tmp_path / name, frames, 10, None, None)
    return D.decode_video(path.read_bytes(), fps=5, max_seconds=10, max_frames=16, max_pixels=10**7,
                          sample_rate=16000)


def test_frozen_video_through_a_real_encode(tmp_path: Path) -> None:
    still = photo("chelsea.png")[:128, :128]
    frozen = _decoded(tmp_path, np.repeat(still[None], 20, axis=0), "still.mp4")
    moving = _decoded(tmp_path, mediaio.pan_zoom_frames(photo("chelsea.png"), "pan_right", 20, 128), "pan.mp4")
    f = video_stats(frozen.frames, frozen.fps, frozen.duration_s, False)
    m = video_stats(moving.frames, moving.fps, moving.duration_s, False)
    assert f["video_frozen_ratio"] == pytest.approx(1.0) and f["video_motion"] < 0.002
    assert m["video_frozen_ratio"] < 0.5 and m["video_motion"] > 10 * f["video_motion"]
    assert f["video_black_ratio"] == 0.0
    assert (m["video_width"], m["video_height"], m["video_fps"]) == (128.0, 128.0, 5.0)


def test_black_frames_and_motion_scale() -> None:
    img = photo("astronaut.png")[::4, ::4]
    frames = np.stack([img, np.zeros_like(img), np.zeros_like(img), img])
    s = video_stats(frames, 2.0, 2.0, True, width=1920, height=1080)
    assert s["video_black_ratio"] == pytest.approx(0.5)
    assert s["video_frozen_ratio"] == pytest.approx(1 / 3)  # black -> black
    assert (s["video_width"], s["video_height"], s["video_has_audio"]) == (1920.0, 1080.0, True)
    flip = np.stack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)] * 2)
    assert video_stats(flip, 1, 4, False)["video_motion"] == pytest.approx(1.0)


def test_single_frame_has_no_motion_stat() -> None:
    s = video_stats(photo("coffee.png")[None], 1.0, 0.5, False)
    assert "video_motion" not in s and "video_frozen_ratio" not in s and s["video_black_ratio"] == 0.0
