"""Depth map decoding: bytes -> float32 [H, W] metric depth in METRES (0.0 = invalid).

Two on-disk forms (compound suffixes, `DEPTH_EXTS`):

- ``.depth.png``: a single-channel 16-bit greyscale PNG in MILLIMETRES, 0 = invalid
  (the KITTI / NYU / ScanNet convention). Read with Pillow from memory only; the
  pixel count is checked from the header before any pixel is decoded. 8-bit PNGs
  are refused: their scale (mm? cm? a normalised visualisation?) is ambiguous.
- ``.depth.npy``: a 2-D float16/32/64 NumPy array in METRES. The header is parsed and
  checked (ndim, dtype, pixel count, byte count) before the array is loaded, and it
  is loaded with ``allow_pickle=False``.

Non-finite, negative and values above ``max_depth_m`` become 0 (invalid); a map
without a single valid pixel is refused. `resize_depth` crops and resizes a map
for a tokenizer while ignoring invalid pixels.

Reject reasons: ``empty_file``, ``truncated``, ``corrupt``, ``too_many_pixels``,
``unsupported_depth`` (wrong mode, dtype, rank or suffix), ``no_valid_depth``.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib import format as npy_format
from PIL import Image
from PIL import UnidentifiedImageError

from dataengine.errors import RejectError

DEPTH_EXTS = (".depth.png", ".depth.npy")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Pillow modes of single-channel integer PNGs: 16-bit greyscale ("I;16*"), or 32-bit "I".
_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_NPY_DTYPES = ("float16", "float32", "float64")


def _png_depth_mm(data: bytes, max_pixels: int) -> np.ndarray:
    """16-bit greyscale PNG bytes -> float64 millimetres [H, W]."""
    if not data.startswith(PNG_MAGIC):
        raise RejectError("corrupt", "a .depth.png file must start with the PNG signature; "
                                     "save depth as a 16-bit greyscale PNG in millimetres")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning: our cap decides
        try:
            img = Image.open(io.BytesIO(data), formats=("PNG",))
        except Image.DecompressionBombError as exc:
            raise RejectError("too_many_pixels", f"the header claims a decompression bomb: {exc}") from None
        except UnidentifiedImageError as exc:
            raise RejectError("corrupt", f"the PNG header is damaged or cut off: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _failure(exc, "read the PNG header") from None
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise RejectError("corrupt", f"depth PNG has size {width}x{height}")
        if width * height > max_pixels:
            raise RejectError("too_many_pixels", f"{width}x{height} is more than {max_pixels} pixels")
        if img.mode not in _INT_MODES:
            bits = "an 8-bit" if img.mode in ("L", "P", "1") else f"a '{img.mode}'"
            raise RejectError("unsupported_depth", f"{bits} PNG: depth PNGs are single-channel 16-bit "
                                                   "greyscale in millimetres (0 = invalid); re-save as "
                                                   "uint16 mm, or as .depth.npy float metres")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                img.load()
                arr = np.asarray(img)
            except Image.DecompressionBombError as exc:
                raise RejectError("too_many_pixels", str(exc)) from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise _failure(exc, "decode the PNG") from None
    finally:
        img.close()
    if arr.ndim != 2 or arr.shape != (height, width):
        raise RejectError("corrupt", f"decoded depth PNG has shape {arr.shape}, header says {height}x{width}")
    return arr.astype(np.float64)


def _failure(exc: BaseException, what: str) -> RejectError:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncat" in msg.lower():
        return RejectError("truncated", f"depth data ends early ({what}): {msg}")
    return RejectError("corrupt", f"cannot {what}: {msg}")


def _npy_depth_m(data: bytes, max_pixels: int) -> np.ndarray:
    """.npy bytes -> float64 metres [H, W]; the header is checked before loading."""
    fp = io.BytesIO(data)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise RejectError("unsupported_depth", f".npy format version {version}: save with np.save "
                                                   "(version 1.0 or 2.0)")
    except RejectError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/SyntaxError/EOFError/...
        short = len(data) < 16 or isinstance(exc, EOFError) or "EOF" in str(exc)
        reason = "truncated" if short and data.startswith(b"\x93NUMPY"[: len(data)]) else "corrupt"
        raise RejectError(reason, f"not a readable .npy header: {exc}") from None
    if dtype.hasobject or dtype.name not in _NPY_DTYPES:
        raise RejectError("unsupported_depth", f"dtype {dtype.str}: depth .npy must be float16/32/64 "
                                               "metres (no object or integer arrays)")
    if len(shape) != 2:
        raise RejectError("unsupported_depth", f"shape {shape}: depth .npy must be 2-D [H, W] "
                                               "(squeeze channel axes; one map per file)")
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise RejectError("corrupt", f"depth map has shape {shape}")
    if h * w > max_pixels:
        raise RejectError("too_many_pixels", f"{h}x{w} is more than {max_pixels} pixels")
    body, expected = len(data) - fp.tell(), h * w * dtype.itemsize
    if body < expected:
        raise RejectError("truncated", f"the .npy body has {body} bytes, its header promises {expected}")
    if body > expected:
        raise RejectError("corrupt", f"the .npy body has {body} bytes, its header promises {expected} "
                                     "(trailing data)")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any numpy failure on these bytes is bad input
        raise RejectError("corrupt", f"cannot load the .npy array: {exc}") from None
    return np.ascontiguousarray(arr, dtype=np.float64)  # Fortran order / big-endian: fine


def sanitize_depth(depth: np.ndarray, max_depth_m: float = 1000.0) -> np.ndarray:
    """float metres -> float32 with non-finite, <= 0 and > ``max_depth_m`` set to 0 (invalid)."""
    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(d) | (d < 0) | (d > max_depth_m)
    d = np.where(bad, 0.0, d)
    return d.astype(np.float32)


def decode_depth(data: bytes, ext: str, *, max_pixels: int, max_depth_m: float = 1000.0) -> np.ndarray:
    """Decode ``.depth.png`` (uint16 mm) or ``.depth.npy`` (float m) bytes to float32 [H, W] metres.

    0.0 marks an invalid pixel. Raises `RejectError` for anything that is not a
    clean depth map (see the module docstring for the reasons).
    """
    ext = ext.lower()
    if ext not in DEPTH_EXTS:
        raise RejectError("unsupported_depth", f"suffix '{ext}' is not a depth map; use one of {DEPTH_EXTS}")
    if not data:
        raise RejectError("empty_file", "the depth file is empty")
    if ext == ".depth.png":
        depth_m = _png_depth_mm(data, max_pixels) / 1000.0
    else:
        depth_m = _npy_depth_m(data, max_pixels)
    depth = sanitize_depth(depth_m, max_depth_m)
    if not (depth > 0).any():
        raise RejectError("no_valid_depth", f"none of the {depth.size} pixels holds a depth in "
                                            f"(0, {max_depth_m}] m")
    return depth


def resize_depth(depth_HW: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to float32 [size, size] metres, ignoring invalid pixels.

    The crop is `dataengine.decode.image.square_resize`'s. Downsampling: each output pixel is
    the mean of the VALID source pixels in its area window (area pooling of depth*valid over
    area pooling of valid, in float64), 0 where none is valid. Upsampling: nearest neighbour.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    d = np.asarray(depth_HW)
    if d.ndim != 2 or min(d.shape) < 1:
        raise ValueError(f"expected a depth map [H, W], got shape {d.shape}")
    h, w = d.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = sanitize_depth(d[top:top + side, left:left + side], np.inf).astype(np.float64)
    if side == size:
        return crop.astype(np.float32)
    if side < size:  # nearest: output row i reads source row floor(i * side / size)
        idx = (np.arange(size) * side) // size
        return crop[idx][:, idx].astype(np.float32)
    valid = (crop > 0).astype(np.float64)
    num_11HW = F.interpolate(torch.from_numpy(crop * valid)[None, None], size=(size, size), mode="area")
    den_11HW = F.interpolate(torch.from_numpy(valid)[None, None], size=(size, size), mode="area")
    num, den = num_11HW[0, 0].numpy(), den_11HW[0, 0].numpy()
    out = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    return out.astype(np.float32)
