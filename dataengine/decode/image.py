"""Image decoding with Pillow: bytes -> uint8 RGB array [H, W, 3].

The pixel count is checked from the header before any pixel is decoded, EXIF
orientation is applied, every mode becomes RGB (alpha composited on white) and
multi-frame files (animated GIF/WebP, multi-page TIFF) give their first frame.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL import (  # noqa: F401 - importing a plugin registers it (PILLOW_FORMATS below)
    BmpImagePlugin,
    GifImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from dataengine.errors import RejectError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Pillow plugins allowed to open data: the formats of IMAGE_EXTS (the JPEG plugin also
# opens cameras' multi-picture JPEGs). Others are never tried (EPS would run Ghostscript).
PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

# Scans a progressive JPEG may hold. Encoders write about 10 (mozjpeg at most ~20); each scan
# re-walks every block, so 20,000 empty scans in 200 KB cost a minute of CPU.
MAX_JPEG_SCANS = 256

# Leading bytes of the formats we accept: tells "truncated PNG" from "not an image".
_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _failure(exc: BaseException, data: bytes, what: str) -> RejectError:
    """Name a Pillow failure: ``truncated`` when the data ends early, else ``corrupt``."""
    msg = str(exc) or type(exc).__name__
    if any(k in msg.lower() for k in ("decompressed data too large", "too much memory used in text chunks")):
        # a zTXt/iTXt/iCCP chunk that inflates to megabytes, or many that add up past 64 MB
        return RejectError("decompression_bomb", f"a compressed chunk inflates past Pillow's limit: {msg}")
    riff_short = data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 > len(data)
    if isinstance(exc, EOFError) or "truncat" in msg.lower() or riff_short:
        return RejectError("truncated", f"image data ends early ({what}): {msg}")
    return RejectError("corrupt", f"cannot {what}: {msg}")


def _diagnose(data: bytes) -> RejectError:
    """Why Pillow could not identify data that has an image signature.

    `Image.open` hides its plugins' errors; ask the plugins that accept the
    signature again to tell a cut-off header from an unsupported variant.
    """
    errors: list[str] = []
    for fmt in PILLOW_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is None or not accept(data[:16]):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                factory(io.BytesIO(data), "").close()
            except Exception as exc:  # noqa: BLE001 - only read to name the failure
                errors.append(f"{fmt}: {exc!r} {exc.__context__!r}")
    text = " ".join(errors) or "no plugin explains it"
    low = text.lower()
    if any(k in low for k in ("pixel mode", "unsupported", "not supported")):
        return RejectError("unsupported_image", f"an image variant Pillow cannot decode ({text})")
    if any(k in low for k in ("truncat", "unpack", "buffer", "eof", "no more images", "incomplete", "missing")):
        return RejectError("truncated", f"the image header is cut off ({text})")
    return RejectError("corrupt", f"the image header is damaged ({text})")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and enforce the pixel cap before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns above MAX_IMAGE_PIXELS (our cap decides),
            # and it warns about broken EXIF blocks: neither is worth a log line.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        raise RejectError("too_many_pixels", f"the header claims a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        if _looks_like_image(data):
            raise _diagnose(data) from None
        raise RejectError("not_an_image", "Pillow does not recognise this data as an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _failure(exc, data, "read the image header") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise RejectError("corrupt", f"image has size {width}x{height}")
    if width * height > max_pixels:
        raise RejectError("too_many_pixels", f"{width}x{height} is more than {max_pixels} pixels")
    return img


def _load(img: Image.Image, data: bytes) -> Image.Image:
    """Decode the first frame's pixels and apply EXIF orientation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img.seek(0)
            img.load()
        except Image.DecompressionBombError as exc:
            raise RejectError("too_many_pixels", str(exc)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _failure(exc, data, "decode the image") from None
        try:
            # A broken EXIF block must not cost the image: keep it unrotated then.
            return ImageOps.exif_transpose(img) or img
        except Exception:  # noqa: BLE001 - any EXIF parsing failure means "no orientation"
            return img


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16-bit, 32-bit or float single-channel image to uint8."""
    if mode.startswith("I;16"):
        return (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    kind = arr.dtype.kind
    arr = arr.astype(np.float64)
    if kind == "f" and not np.isfinite(arr).all():  # a raster's no-data cells: no honest grey level exists
        raise RejectError("non_finite_pixels", f"{int((~np.isfinite(arr)).sum())} of {arr.size} pixels "
                                               "are NaN or infinite")
    lo, hi = float(arr.min()), float(arr.max())
    if kind == "f" and lo >= 0.0 and hi <= 1.0:  # float images in [0, 1]
        arr = arr * 255.0
    elif lo >= 0 and hi <= 255:  # 8-bit data in a wide type
        pass
    elif lo >= 0 and hi <= 65535:  # 16-bit data
        arr = arr / 257.0
    elif hi > lo:  # anything else: stretch its range
        arr = (arr - lo) * (255.0 / (hi - lo))
    return np.clip(arr, 0, 255).round().astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an RGB uint8 array; alpha is composited on white."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _scale_to_uint8(np.asarray(img), mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def decode_image(data: bytes, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode image bytes to a uint8 RGB array [H, W, 3].

    Reject reasons: ``empty_file``, ``not_an_image``, ``too_many_pixels``,
    ``decompression_bomb`` (metadata chunks that inflate past Pillow's limits), ``too_many_scans``
    (a progressive JPEG over MAX_JPEG_SCANS), ``non_finite_pixels`` (NaN/inf in a float image),
    ``truncated``, ``corrupt``, ``unsupported_image`` (a valid file in a variant Pillow cannot
    decode, e.g. planar-separate RGB TIFF).
    """
    if not data:
        raise RejectError("empty_file", "the image file is empty")
    img = _open(data, max_pixels)
    # SOS markers (never in entropy-coded data: 0xFF is stuffed there); counted for JPEGs only
    scans = data.count(b"\xff\xda") if img.format in ("JPEG", "MPO") else 0
    if scans > MAX_JPEG_SCANS:
        img.close()
        raise RejectError("too_many_scans", f"{scans} JPEG scans (limit {MAX_JPEG_SCANS}): "
                                            "each costs a pass over the whole picture")
    try:
        img = _load(img, data)
        try:
            rgb = _to_rgb(img)
        except (OSError, ValueError) as exc:
            raise RejectError("corrupt", f"cannot convert {img.mode} image to RGB: {exc}") from None
    finally:
        img.close()
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RejectError("corrupt", f"decoded image has shape {rgb.shape}")
    return rgb


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square, then resize (bicubic) to uint8 [size, size, 3]."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3], got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(img[top:top + side, left:left + side])
    if side == size:
        return crop
    out = Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.uint8)
