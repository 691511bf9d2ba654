"""Depth decoding: mm PNG and metre NPY round trips, hostile bytes refused, invalid-aware resize."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dataengine.errors import RejectError
from dataengine.modalities.depth.decode import DEPTH_EXTS, decode_depth, resize_depth
from dataengine.modalities.depth.media import depth_preview, depth_to_mm, encode_depth_png, write_depth_png
from dataengine.modalities.depth.stats import STAT_FIELDS, depth_stats

MAXPIX = 1_000_000


def ramp(h: int = 30, w: int = 40) -> np.ndarray:
    """Metres 0.5..8 with a few invalid (0) pixels."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = (0.5 + 7.5 * (yy + xx) / (h + w - 2)).astype(np.float32)
    d[3, 5] = d[10, 0] = 0.0
    return d


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A PNG that claims width x height greyscale but carries no pixel data at all."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def reason(data: bytes, ext: str, **kw) -> str:
    with pytest.raises(RejectError) as info:
        decode_depth(data, ext, max_pixels=kw.pop("max_pixels", MAXPIX), **kw)
    return info.value.reason


def test_png_millimetres_round_trip():
    d = ramp()
    out = decode_depth(encode_depth_png(d), ".depth.png", max_pixels=MAXPIX)
    assert out.dtype == np.float32 and out.shape == d.shape
    np.testing.assert_array_equal(depth_to_mm(out), depth_to_mm(d))  # the same millimetres
    assert out[3, 5] == 0.0 and out[10, 0] == 0.0 and out[0, 1] > 0
    np.testing.assert_allclose(out, d, atol=5e-4)
    assert ".depth.png" in DEPTH_EXTS and ".depth.npy" in DEPTH_EXTS


def test_png_encoding_clips_and_marks_invalid(tmp_path):
    d = np.array([[0.0001, 70.0, np.nan, -1.0, 1.2344]], np.float32)
    np.testing.assert_array_equal(depth_to_mm(d), [[1, 65535, 0, 0, 1234]])
    path = write_depth_png(tmp_path / "a" / "x.depth.png", d)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    assert decode_depth(path.read_bytes(), ".DEPTH.PNG", max_pixels=MAXPIX)[0, 4] == np.float32(1.234)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", ">f4"])
def test_npy_metres_round_trip(dtype):
    d = ramp().astype(dtype)
    out = decode_depth(npy_bytes(d), ".depth.npy", max_pixels=MAXPIX)
    assert out.dtype == np.float32 and out.shape == d.shape
    np.testing.assert_array_equal(out, d.astype(np.float32))


def test_npy_fortran_order_is_fine():
    d = np.asfortranarray(ramp())
    np.testing.assert_array_equal(decode_depth(npy_bytes(d), ".depth.npy", max_pixels=MAXPIX), ramp())


def test_eight_bit_and_colour_pngs_refused():
    with pytest.raises(RejectError) as info:
        decode_depth(png_bytes(np.full((8, 8), 100, np.uint8)), ".depth.png", max_pixels=MAXPIX)
    assert info.value.reason == "unsupported_depth"
    assert "16-bit" in info.value.detail and "millimetres" in info.value.detail
    assert reason(png_bytes(np.zeros((8, 8, 3), np.uint8)), ".depth.png") == "unsupported_depth"


def test_png_bomb_refused_from_header(monkeypatch):
    def no_decoding(*_a, **_k):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    assert reason(png_header_only(5000, 5000), ".depth.png") == "too_many_pixels"  # our cap
    assert reason(png_header_only(100_000, 100_000), ".depth.png", max_pixels=10**12) == "too_many_pixels"


def test_npy_bomb_refused_from_header():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100_000, 100_000)})
    data = header.getvalue()  # magic + header, no body
    assert reason(data, ".depth.npy") == "too_many_pixels"


def test_pickled_object_and_non_float_npy_refused():
    obj = np.empty((2, 2), dtype=object)
    obj[:] = 1.0
    assert reason(npy_bytes(obj, allow_pickle=True), ".depth.npy") == "unsupported_depth"
    assert reason(npy_bytes(np.ones((4, 4), np.int32)), ".depth.npy") == "unsupported_depth"
    assert reason(b"\x80\x04\x95" + b"\x00" * 40, ".depth.npy") == "corrupt"  # a raw pickle stream


def test_three_d_npy_refused():
    assert reason(npy_bytes(np.ones((4, 4, 1), np.float32)), ".depth.npy") == "unsupported_depth"


def test_nan_negative_inf_and_far_become_invalid():
    d = np.array([[1.0, np.nan, -2.0], [np.inf, 2000.0, 3.0]], np.float64)
    out = decode_depth(npy_bytes(d), ".depth.npy", max_pixels=MAXPIX)
    np.testing.assert_array_equal(out, [[1.0, 0, 0], [0, 0, 3.0]])
    out = decode_depth(npy_bytes(d), ".depth.npy", max_pixels=MAXPIX, max_depth_m=2.0)
    np.testing.assert_array_equal(out, [[1.0, 0, 0], [0, 0, 0]])


def test_all_invalid_rejected():
    assert reason(npy_bytes(np.full((4, 4), np.nan, np.float32)), ".depth.npy") == "no_valid_depth"
    assert reason(encode_depth_png(np.zeros((4, 4), np.float32)), ".depth.png") == "no_valid_depth"


def test_truncated_empty_and_wrong_suffix_rejected():
    png, npy = encode_depth_png(ramp()), npy_bytes(ramp())
    for cut in (png[: len(png) // 2], png[:20], png[:-30]):
        assert reason(cut, ".depth.png") in ("truncated", "corrupt")
    for cut in (npy[: len(npy) // 2], npy[:40], npy[:5]):
        assert reason(cut, ".depth.npy") in ("truncated", "corrupt")
    assert reason(npy[:-4], ".depth.npy") == "truncated"
    assert reason(npy + b"xx", ".depth.npy") == "corrupt"
    assert reason(b"", ".depth.png") == "empty_file"
    assert reason(npy, ".depth.exr") == "unsupported_depth"
    assert reason(b"not a png at all", ".depth.png") == "corrupt"


def test_resize_ignores_invalid_pixels():
    d = np.zeros((60, 60), np.float32)
    d[:, 27:] = 3.7  # left part invalid; the boundary is not aligned with the 60 -> 16 windows
    out = resize_depth(d, 16)
    assert out.dtype == np.float32 and out.shape == (16, 16)
    assert set(np.unique(out).tolist()) == {0.0, float(np.float32(3.7))}
    assert (out[:, :7] == 0).all() and (out[:, 8:] == np.float32(3.7)).all()
    # a window half 2 m, half invalid averages to 2, not 1
    e = np.zeros((4, 4), np.float32)
    e[:, :1] = 2.0
    np.testing.assert_array_equal(resize_depth(e, 2), [[2.0, 0.0], [2.0, 0.0]])


def test_resize_crops_centre_and_upsamples_nearest():
    d = ramp(30, 40)
    np.testing.assert_array_equal(resize_depth(d, 30), d[:, 5:35])
    small = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(resize_depth(small, 8), np.repeat(np.repeat(small, 2, 0), 2, 1))
    np.testing.assert_array_equal(resize_depth(d, 12), resize_depth(d, 12))
    with pytest.raises(ValueError):
        resize_depth(np.ones((2, 2, 2)), 4)


def test_stats_and_preview():
    d = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    s = depth_stats(d)
    assert set(s) == set(STAT_FIELDS)
    assert s == {"depth_width": 2.0, "depth_height": 2.0, "depth_valid_ratio": 0.75,
                 "depth_min_m": 1.0, "depth_max_m": 4.0, "depth_median_m": 2.0}
    rgb = depth_preview(ramp())
    assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3)
    assert (rgb[3, 5] == 0).all()  # invalid: black
    assert rgb[0, 0].astype(int).sum() > rgb[-1, -1].astype(int).sum()  # near is brighter
