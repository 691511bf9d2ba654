"""decode_image / square_resize on images written by Pillow, and on broken files."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dataengine.decode.image import IMAGE_EXTS, decode_image, square_resize
from dataengine.errors import RejectError

RED = (200, 30, 60)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _reason(data: bytes, **kwargs) -> str:
    with pytest.raises(RejectError) as info:
        decode_image(data, **kwargs)
    return info.value.reason


def test_exts():
    assert {".jpg", ".png", ".webp", ".gif", ".tiff"} <= IMAGE_EXTS


@pytest.mark.parametrize("fmt,tol", [("PNG", 0), ("JPEG", 4), ("WEBP", 4), ("BMP", 0), ("GIF", 0), ("TIFF", 0)])
def test_formats_decode_to_rgb_uint8(media, fmt, tol):
    data = media.encode_image(Image.new("RGB", (40, 30), RED), fmt)
    img = decode_image(data)
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(int) - RED).max() <= tol


def test_exif_orientation_is_applied(media):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = decode_image(media.encode_image(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert img.shape == (40, 20, 3)  # portrait after rotation
    assert img[5, 10, 0] > 200 and img[5, 10, 2] < 50  # the red half is now on top
    assert img[35, 10, 2] > 200 and img[35, 10, 0] < 50


@pytest.mark.parametrize("mode,fmt,expected", [
    ("L", "PNG", (84, 84, 84)),  # ITU-R 601 luma of RED
    ("P", "PNG", RED),
    ("CMYK", "JPEG", RED),
    ("1", "PNG", (0, 0, 0)),
    ("YCbCr", "JPEG", RED),
])
def test_modes_convert_to_rgb(media, mode, fmt, expected):
    src = Image.new("RGB", (40, 30), RED)
    src = src.quantize(colors=4) if mode == "P" else src.convert(mode)  # adaptive palette: exact
    assert src.mode == mode
    img = decode_image(media.encode_image(src, fmt))
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    assert np.abs(img[10, 10].astype(int) - expected).max() <= 4


def test_alpha_is_composited_on_white(media):
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 128))
    rgba.paste((0, 0, 0, 0), (0, 0, 5, 10))  # left half fully transparent
    img = decode_image(media.encode_image(rgba, "PNG"))
    assert img.shape == (10, 10, 3)
    assert tuple(img[5, 1]) == (255, 255, 255)
    assert abs(int(img[5, 8, 0]) - 255) <= 1 and abs(int(img[5, 8, 1]) - 127) <= 2
    la = decode_image(media.encode_image(Image.new("LA", (4, 4), (0, 0)), "PNG"))
    assert (la == 255).all()
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)  # index 0 is transparent
    gif = decode_image(media.encode_image(pal, "GIF", transparency=0))
    assert tuple(gif[0, 0]) == (255, 255, 255) and tuple(gif[3, 3]) == (10, 20, 30)


def test_sixteen_bit_gray_scales_to_eight_bit(media):
    im = Image.fromarray(np.full((8, 8), 40000, np.uint16))
    img = decode_image(media.encode_image(im, "PNG"))
    assert img.shape == (8, 8, 3) and abs(int(img[0, 0, 0]) - 40000 // 257) <= 1


def test_animated_gif_and_multipage_tiff_give_first_frame(media):
    frames = [Image.new("RGB", (16, 16), (i * 60, 0, 0)) for i in range(1, 4)]
    for fmt in ("GIF", "TIFF"):
        data = media.encode_image(frames[0], fmt, save_all=True, append_images=frames[1:])
        img = decode_image(data)
        assert img.shape == (16, 16, 3) and abs(int(img[0, 0, 0]) - 60) <= 2, fmt


def test_empty_random_and_text_are_rejected(media):
    assert _reason(b"") == "empty_file"
    # formats outside IMAGE_EXTS are not even tried (EPS would start Ghostscript)
    assert _reason(media.encode_image(Image.new("RGB", (8, 8)), "PPM")) == "not_an_image"
    assert _reason(np.random.default_rng(0).bytes(4000)) == "not_an_image"
    assert _reason(b"just some text, not pixels") == "not_an_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_truncated_at_half(media, fmt):
    rng = np.random.default_rng(1)
    data = media.encode_image(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt)
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_decompression_bomb_header_is_rejected_before_decoding():
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    assert _reason(bomb) == "too_many_pixels"
    ihdr = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)  # under Pillow's limit, over ours
    small_bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    assert _reason(small_bomb, max_pixels=1_000_000) == "too_many_pixels"


def test_pixel_cap(png_bytes):
    assert decode_image(png_bytes, max_pixels=1200).shape == (30, 40, 3)
    assert _reason(png_bytes, max_pixels=1199) == "too_many_pixels"


def test_square_resize_center_crops():
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, :] = (0, 0, 255)
    img[:, 10:40] = (255, 0, 0)  # the centered 30x30 square is red
    out = square_resize(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (np.abs(out.astype(int) - (255, 0, 0)) <= 2).all()
    tall = np.zeros((50, 30, 3), np.uint8)
    tall[10:40] = 200
    assert (square_resize(tall, 30) == 200).all()  # same size: crop only
    assert square_resize(tall, 64).shape == (64, 64, 3)  # upscaling works too


def test_square_resize_rejects_bad_arrays():
    with pytest.raises(ValueError):
        square_resize(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(ValueError):
        square_resize(np.zeros((4, 4, 3), np.uint8), 0)


def test_round_trip_through_decoder(media):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(media.encode_image(Image.fromarray(arr), "PNG")), arr)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "TIFF")
    assert np.array_equal(decode_image(buf.getvalue()), arr)


def test_many_small_text_chunks_are_a_bomb(media):
    png = media.encode_image(Image.new("RGB", (8, 8)), "PNG")
    ztxt = _png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 1_000_000, 9))  # 1 KB each, 1 MB inflated
    bomb = png[:33] + ztxt * 70 + png[33:]  # after IHDR: 70 MB of text, past Pillow's 64 MB total
    assert len(bomb) < 100_000 and _reason(bomb) == "decompression_bomb"


def test_progressive_jpeg_with_thousands_of_scans_is_refused(media):
    data = media.encode_image(Image.new("RGB", (256, 256), RED), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    scan = data[last:last + 2 + int.from_bytes(data[last + 2:last + 4], "big")]  # its header, no data
    assert decode_image(data[:-2] + scan * 100 + data[-2:]).shape == (256, 256, 3)
    assert _reason(data[:-2] + scan * 20_000 + data[-2:]) == "too_many_scans"


def test_float_pixels_must_be_finite(media):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert decode_image(media.encode_image(Image.fromarray(ramp, mode="F"), "TIFF"))[7, 7, 0] == 255
    ramp[3, 3] = np.nan
    assert _reason(media.encode_image(Image.fromarray(ramp, mode="F"), "TIFF")) == "non_finite_pixels"
