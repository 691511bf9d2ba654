"""Sensor recordings: CSV / Parquet / NPY -> float32 [T, C] on a uniform time grid.

One column per channel, plus an optional time column (``t``, ``time`` or
``timestamp``, in seconds). The source rate comes from the sidecar's
``rate_hz`` or, failing that, from the time column; every channel is then
linearly interpolated onto a grid at the target `rate_hz`. A few non-finite
values are filled by interpolation; too many reject the recording.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from tokenize import TokenError

import numpy as np

from dataengine.decode.text import check_combining_marks, loads_json
from dataengine.errors import RejectError

SENSOR_EXTS = frozenset({".csv", ".parquet", ".npy"})

TIME_COLUMNS = ("t", "time", "timestamp")
MAX_SIDECAR_BYTES = 1_000_000
MAX_CHANNELS = 1024  # more columns than this is not a sensor recording (and parsing it costs seconds)
MAX_SOURCE_CELLS = 1 << 24  # rows x columns read at most: 16M float64 = 128 MB, checked from the header
MIN_RATE_HZ, MAX_RATE_HZ = 1e-6, 1e7  # a sidecar rate outside this is a typo, not a recording (1e-6 Hz: one
                                      # sample in 11 days; 10 MHz: well above any IMU, ECG or EEG)
_SIDECAR_KEYS = ("label", "rate_hz", "channels")
_MISSING = ("", "na", "n/a", "null", "none", "-")  # CSV spellings of a missing value


@dataclass
class SensorRecording:
    """A recording resampled to `rate_hz`: `values[i]` is the sample at ``i / rate_hz`` s."""

    values: np.ndarray  # float32 [T, C]
    channels: list[str]
    rate_hz: float
    label: str | None
    meta: dict = field(default_factory=dict)


def parse_sidecar(data: bytes) -> dict:
    """Parse a sidecar JSON object.

    Reject reasons: ``json_too_large`` (over MAX_SIDECAR_BYTES), ``json_too_deep``
    (nesting over text.MAX_JSON_DEPTH), ``bad_sidecar`` (anything else that is not a
    UTF-8 JSON object).
    """
    if len(data) > MAX_SIDECAR_BYTES:
        raise RejectError("json_too_large", f"sidecar is {len(data)} bytes (limit {MAX_SIDECAR_BYTES})")
    try:
        obj = loads_json(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RejectError("bad_sidecar", f"sidecar is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        reason = "json_too_deep" if "nesting" in str(exc) else "bad_sidecar"
        raise RejectError(reason, f"sidecar is not acceptable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RejectError("bad_sidecar", f"sidecar must be a JSON object, got {type(obj).__name__}")
    return obj


def _columns_from_table(names: list[str], arrays: list[np.ndarray]) -> tuple[np.ndarray | None, list[str], np.ndarray]:
    """Split named float columns into (time column or None, channel names, values [T, C])."""
    time_idx = next((i for i, n in enumerate(names) if n.strip().lower() in TIME_COLUMNS), None)
    times = arrays[time_idx] if time_idx is not None else None
    keep = [i for i in range(len(names)) if i != time_idx]
    if not keep:
        raise RejectError("bad_columns", "the file has no channel columns")
    if len(keep) > MAX_CHANNELS:
        raise RejectError("too_many_channels", f"{len(keep)} channels (limit {MAX_CHANNELS})")
    values = np.stack([arrays[i] for i in keep], axis=1)
    return times, [str(names[i]) for i in keep], values


def _read_csv(data: bytes) -> tuple[np.ndarray | None, list[str], np.ndarray]:
    import polars as pl  # noqa: PLC0415

    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]  # \n, \r\n or old-Mac \r lines
    header = data[: min(ends) if ends else len(data)]
    if header.count(b",") + 1 > MAX_CHANNELS + 1:  # + a time column; checked before the costly parse
        raise RejectError("too_many_channels", f"{header.count(b',') + 1} columns (limit {MAX_CHANNELS} channels)")
    if b"\r" in data and b"\n" not in data:  # old-Mac line endings: Polars reads only \n
        data = data.replace(b"\r", b"\n")
    lines = data.count(b"\n") + 1  # an upper bound on the rows, counted before the parse
    if lines * (header.count(b",") + 1) > MAX_SOURCE_CELLS:
        raise RejectError("too_long", f"{lines} lines x {header.count(b',') + 1} columns "
                                      f"(limit {MAX_SOURCE_CELLS} cells)")
    try:
        df = pl.read_csv(io.BytesIO(data), infer_schema_length=None, try_parse_dates=True)
    except pl.exceptions.NoDataError:
        raise RejectError("empty_file", "the CSV file has no data") from None
    except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError) as exc:
        raise RejectError("corrupt", f"cannot parse the CSV: {str(exc).splitlines()[0]}") from None
    arrays = []
    for name, dtype in df.schema.items():
        col = df[name]
        if dtype == pl.String:  # numbers written as "nan", "inf", " 1.5", or "NA" for missing
            parsed = col.str.strip_chars().cast(pl.Float64, strict=False)
            missing = col.is_null() | col.str.strip_chars().str.to_lowercase().is_in(list(_MISSING))
            if (parsed.is_null() & ~missing).any():
                raise RejectError("bad_columns", f"column {name!r} holds text: every column must be a number")
            col = parsed
        elif dtype.is_temporal():  # ISO date-times -> seconds since the first row
            micros = col.dt.epoch("us") if dtype != pl.Duration else col.dt.total_microseconds()
            col = (micros - micros.drop_nulls().first()).cast(pl.Float64) / 1e6
        elif not (dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null):
            raise RejectError("bad_columns", f"column {name!r} has type {dtype}: every column must be a number")
        arrays.append(col.cast(pl.Float64).fill_null(float("nan")).to_numpy())
    return _columns_from_table(list(df.columns), arrays)


def _read_parquet(data: bytes) -> tuple[np.ndarray | None, list[str], np.ndarray]:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata  # the footer only: row count before any page
        if meta.num_rows * max(meta.num_columns, 1) > MAX_SOURCE_CELLS:
            raise RejectError("too_long", f"the footer declares {meta.num_rows} rows x {meta.num_columns} "
                                          f"columns (limit {MAX_SOURCE_CELLS} cells)")
        if meta.num_columns > MAX_CHANNELS + 1:
            raise RejectError("too_many_channels", f"{meta.num_columns} columns (limit {MAX_CHANNELS} channels)")
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RejectError("corrupt", f"cannot read the Parquet file: {exc}") from None
    arrays = []
    for name, col in zip(table.column_names, table.columns):
        kind = col.type
        if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):  # -> seconds
            col = pc.divide(col.cast(pa.int64()).cast(pa.float64()), 10.0 ** {"s": 0, "ms": 3, "us": 6, "ns": 9}[kind.unit])
        elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise RejectError("bad_columns", f"column {name!r} has type {kind}: every column must be a number")
        arrays.append(col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64))
    if not arrays:
        raise RejectError("bad_columns", "the Parquet file has no columns")
    return _columns_from_table(table.column_names, arrays)


def _read_npy(data: bytes, sidecar: dict) -> tuple[None, list[str], np.ndarray]:
    if not data.startswith(b"\x93NUMPY"):
        raise RejectError("corrupt", "not a .npy file (no NUMPY magic)")
    _check_npy_header(data)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "pickle_not_allowed" if "pickle" in str(exc) else "corrupt"
        raise RejectError(reason, f"cannot load the .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):  # the dtype and shape were checked from the header
        raise RejectError("bad_columns", "the .npy file does not hold an array")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise RejectError("bad_shape", f"array has shape {arr.shape}; expected [time, channels]")
    names = sidecar.get("channels")
    if names is None:
        names = [f"ch{i}" for i in range(arr.shape[1])]
    elif not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) == arr.shape[1]):
        raise RejectError("bad_sidecar", f"sidecar 'channels' must list {arr.shape[1]} names (one per column)")
    return None, list(names), arr.astype(np.float64)


def _check_npy_header(data: bytes) -> None:
    """Check the header's shape against the bytes present before numpy allocates anything:
    a 100-byte file claiming a (10^12, 3) array must not reach `np.load`."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(buf, max_header_size=10_000)
    except (ValueError, OSError, EOFError, SyntaxError, TokenError, TypeError, KeyError, RecursionError) as exc:
        # the header is a Python literal: numpy parses it with `ast`, whose errors are all of these
        raise RejectError("corrupt", f"the .npy header is damaged: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        raise RejectError("pickle_not_allowed", "the .npy array holds Python objects (pickle); save numbers only")
    if dtype.kind not in "biuf":
        raise RejectError("bad_columns", f"array dtype {dtype} is not numeric")
    if len(shape) not in (1, 2):
        raise RejectError("bad_shape", f"array has shape {shape}; expected [time, channels]")
    if 0 in shape:  # (N, 0) is zero bytes on disk, but widening it to float64 allocates 8N
        raise RejectError("bad_shape", f"array has shape {shape}: no samples or no channels")
    if len(shape) == 2 and shape[1] > MAX_CHANNELS:
        raise RejectError("too_many_channels", f"{shape[1]} channels (limit {MAX_CHANNELS})")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = len(data) - buf.tell()
    if need > have:
        raise RejectError("truncated", f"the header declares shape {shape} ({need} bytes) but {have} bytes follow")
    if int(np.prod(shape, dtype=object)) > MAX_SOURCE_CELLS:
        raise RejectError("too_long", f"the header declares shape {shape} (limit {MAX_SOURCE_CELLS} cells)")


def _fill_non_finite(values: np.ndarray, names: list[str], max_ratio: float) -> int:
    """Fill NaN/inf in place by linear interpolation per channel; return how many were filled."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return 0
    ratios = bad.mean(axis=0)
    worst = int(np.argmax(ratios))
    if ratios[worst] > max_ratio:
        raise RejectError("non_finite_values",
                          f"channel {names[worst]!r} is {ratios[worst]:.0%} NaN/inf (limit {max_ratio:.0%})")
    idx = np.arange(len(values))
    for c in np.flatnonzero(bad.any(axis=0)):
        ok = ~bad[:, c]
        values[bad[:, c], c] = np.interp(idx[bad[:, c]], idx[ok], values[ok, c])
    return int(bad.sum())


def _source_times(times: np.ndarray | None, rows: int, sidecar_rate: float | None) -> np.ndarray:
    """Sample times in seconds from 0: from the sidecar rate, else from the time column."""
    if sidecar_rate is not None:
        return np.arange(rows, dtype=np.float64) / sidecar_rate
    if times is None:
        raise RejectError("unknown_rate", "no sampling rate: add \"rate_hz\" to the sidecar JSON "
                                          "or a time column (t/time/timestamp, seconds)")
    if not np.isfinite(times).all() or not (np.diff(times) > 0).all():
        raise RejectError("bad_time_column", "the time column must be finite and strictly increasing")
    return times - times[0]


def decode_sensor(data: bytes, ext: str, sidecar: dict | None, *, rate_hz: float, max_rows: int,
                  max_nan_ratio: float = 0.1, max_label_chars: int = 1_000_000) -> SensorRecording:
    """Decode a sensor recording and resample it to `rate_hz`.

    `meta` holds the sidecar's other keys plus ``source_rate_hz``,
    ``source_rows``, ``duration_s`` and ``filled_non_finite``.

    Reject reasons: ``empty_file``, ``corrupt``, ``truncated``, ``bad_columns``, ``bad_shape``,
    ``too_many_channels``, ``pickle_not_allowed``, ``json_too_deep``, ``json_too_large``,
    ``bad_sidecar``, ``unknown_rate``, ``bad_time_column``, ``non_finite_values``,
    ``too_short``, ``too_long``, ``label_too_long``, ``combining_marks``, ``unsupported_format``.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    if not data:
        raise RejectError("empty_file", "the sensor file is empty")
    sidecar = dict(sidecar or {})
    sidecar_rate = sidecar.get("rate_hz")
    if sidecar_rate is not None and (isinstance(sidecar_rate, bool) or not isinstance(sidecar_rate, (int, float))
                                     or not MIN_RATE_HZ <= sidecar_rate <= MAX_RATE_HZ):
        raise RejectError("bad_sidecar", f"sidecar rate_hz must be a number of Hz in [{MIN_RATE_HZ:g}, "
                                         f"{MAX_RATE_HZ:g}], got {sidecar_rate!r}")
    label = sidecar.get("label")
    if isinstance(label, bool) or not (label is None or isinstance(label, (str, int))):
        raise RejectError("bad_sidecar", f"sidecar label must be a string, got {label!r}")
    if isinstance(label, str) and len(label) > max_label_chars:  # it becomes the item's text
        raise RejectError("label_too_long", f"the sidecar label has {len(label)} characters "
                                            f"(limit decode.text.max_chars = {max_label_chars})")
    if isinstance(label, str):
        check_combining_marks(label)

    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext == ".csv":
        times, names, values = _read_csv(data)
    elif ext == ".parquet":
        times, names, values = _read_parquet(data)
    elif ext == ".npy":
        times, names, values = _read_npy(data, sidecar)
    else:
        raise RejectError("unsupported_format", f"{ext} is not a sensor format ({sorted(SENSOR_EXTS)})")
    rows = len(values)
    if rows < 2:
        raise RejectError("too_short", f"{rows} rows: a recording needs at least 2")

    src_t = _source_times(times, rows, float(sidecar_rate) if sidecar_rate is not None else None)
    filled = _fill_non_finite(values, names, max_nan_ratio)
    duration = float(src_t[-1])
    if not math.isfinite(duration * rate_hz):
        raise RejectError("bad_time_column", f"the recording claims to last {duration:g} s")
    out_rows = int(math.floor(duration * rate_hz + 1e-9)) + 1
    if out_rows > max_rows:  # checked before allocating the resampled array
        raise RejectError("too_long", f"{out_rows} rows at {rate_hz} Hz (limit {max_rows}); "
                                      f"the recording lasts {duration:.1f} s")
    if out_rows < 2:
        raise RejectError("too_short", f"{duration:.3g} s is less than one sample at {rate_hz} Hz")
    grid = np.arange(out_rows, dtype=np.float64) / rate_hz
    out = np.empty((out_rows, values.shape[1]), dtype=np.float32)
    for c in range(values.shape[1]):
        out[:, c] = np.interp(grid, src_t, values[:, c])

    meta = {k: v for k, v in sidecar.items() if k not in _SIDECAR_KEYS}
    meta.update(source_rate_hz=float((rows - 1) / duration), source_rows=rows,
                duration_s=duration, filled_non_finite=filled)
    return SensorRecording(values=out, channels=names, rate_hz=float(rate_hz),
                           label=None if label is None else str(label), meta=meta)
