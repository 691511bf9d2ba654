"""The package surface: re-exports, the registry's kind of each extension, and real media shipped inside skimage."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dataengine.decode as decode
from dataengine import modalities
import dataengine.errors as decode_errors


@pytest.mark.parametrize("ext,modality", [
    (".jpg", "image"), (".JPEG", "image"), ("png", "image"), (".flac", "audio"), (".m4a", "audio"),
    (".mp4", "video"), (".MKV", "video"), (".csv", "sensor"), (".npy", "sensor"), (".txt", "text"),
    (".md", "text"), (".jsonl", "jsonl"), (".json", None), (".exe", None), ("", None),
])
def test_kind_of_ext(ext, modality):
    assert modalities.kind_of(ext) == modality


def test_ext_sets_do_not_overlap():
    sets = [decode.IMAGE_EXTS, decode.AUDIO_EXTS, decode.VIDEO_EXTS, decode.SENSOR_EXTS,
            decode.TEXT_EXTS, decode.JSONL_EXTS]
    assert sum(len(s) for s in sets) == len(frozenset().union(*sets))
    assert all(ext.startswith(".") and ext == ext.lower() for s in sets for ext in s)


def test_exports():
    for name in decode.__all__:
        assert callable(getattr(decode, name)) or isinstance(getattr(decode, name), frozenset)


def test_importing_the_package_does_not_pull_torch_or_decord():
    code = "import sys, dataengine.decode; print('torch' in sys.modules, 'decord' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


SKIMAGE_DATA = Path(pytest.importorskip("skimage").__file__).parent / "data"


@pytest.mark.parametrize("name,shape", [
    ("astronaut.png", (512, 512, 3)),  # RGB photo
    ("camera.png", (512, 512, 3)),  # grayscale photo
    ("hubble_deep_field.jpg", (872, 1000, 3)),
    ("no_time_for_that_tiny.gif", None),  # animated GIF: first frame
    ("multipage.tif", None),  # multi-page TIFF: first page
])
def test_real_images(name, shape):
    img = decode.decode_image((SKIMAGE_DATA / name).read_bytes())
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    if shape:
        assert img.shape == shape
    assert img.std() > 5  # real content, not a blank frame
    thumb = decode.square_resize(img, 64)
    assert thumb.shape == (64, 64, 3) and abs(float(thumb.mean()) - float(img.mean())) < 25


def test_real_tiff_variant_pillow_cannot_read_is_named():
    with pytest.raises(decode_errors.RejectError) as info:
        decode.decode_image((SKIMAGE_DATA / "multipage_rgb.tif").read_bytes())  # planar-separate RGB
    assert info.value.reason == "unsupported_image"
