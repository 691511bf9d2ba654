"""decode_sensor on CSV / Parquet / NPY recordings, and parse_sidecar."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataengine.decode.sensor import SENSOR_EXTS, decode_sensor, parse_sidecar
from dataengine.errors import RejectError


def _csv(header: str, rows: list[tuple]) -> bytes:
    return (header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n").encode()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _reason(data: bytes, ext: str, sidecar: dict | None, **kwargs) -> RejectError:
    with pytest.raises(RejectError) as info:
        decode_sensor(data, ext, sidecar, **{"rate_hz": 10.0, "max_rows": 1000, **kwargs})
    return info.value


T50 = np.arange(100) / 50.0  # 2 s at 50 Hz
WALK = _csv("t,ax,ay", [(t, np.sin(2 * np.pi * t), 3 * t) for t in T50])


def test_exts():
    assert SENSOR_EXTS == {".csv", ".parquet", ".npy"}


def test_csv_time_column_gives_the_rate_and_is_resampled():
    rec = decode_sensor(WALK, ".csv", None, rate_hz=25.0, max_rows=1000)
    assert rec.values.dtype == np.float32 and rec.values.shape == (50, 2)
    assert rec.channels == ["ax", "ay"] and rec.rate_hz == 25.0 and rec.label is None
    grid = np.arange(50) / 25.0
    assert np.allclose(rec.values[:, 1], 3 * grid, atol=1e-5)
    assert np.allclose(rec.values[:, 0], np.sin(2 * np.pi * grid), atol=0.01)
    assert rec.meta["source_rate_hz"] == pytest.approx(50.0) and rec.meta["source_rows"] == 100


def test_sidecar_rate_label_and_meta():
    rec = decode_sensor(WALK, "csv", {"rate_hz": 100, "label": "walking", "subject": 3}, rate_hz=50.0, max_rows=1000)
    assert rec.label == "walking" and rec.meta["subject"] == 3 and "rate_hz" not in rec.meta
    assert rec.values.shape == (50, 2)  # 100 rows at 100 Hz = 0.99 s -> 50 rows at 50 Hz


def test_parquet_with_timestamp_column():
    table = pa.table({
        "timestamp": pa.array((T50 * 1e6).astype("int64")).cast(pa.timestamp("us")),
        "gyro": pa.array(np.cos(T50), pa.float32()),
        "steps": pa.array(np.arange(100), pa.int32()),
    })
    rec = decode_sensor(_parquet(table), ".parquet", None, rate_hz=10.0, max_rows=1000)
    assert rec.channels == ["gyro", "steps"] and rec.values.shape == (20, 2)
    assert np.allclose(rec.values[:, 0], np.cos(np.arange(20) / 10.0), atol=1e-3)
    assert np.allclose(rec.values[:, 1], np.arange(20) * 5)


def test_csv_with_iso_timestamps():
    rows = [(f"2024-05-01T12:00:{i // 10:02d}.{i % 10}00", i * 0.5) for i in range(40)]  # 10 Hz
    rec = decode_sensor(_csv("timestamp,temp", rows), ".csv", None, rate_hz=5.0, max_rows=100)
    assert rec.channels == ["temp"] and rec.values.shape == (20, 1)
    assert np.allclose(rec.values[:, 0], np.arange(20) * 1.0, atol=1e-4)
    assert rec.meta["source_rate_hz"] == pytest.approx(10.0)


def test_npy_one_and_two_dimensional():
    rec = decode_sensor(_npy(np.arange(40, dtype=np.int16)), ".npy", {"rate_hz": 20}, rate_hz=10.0, max_rows=1000)
    assert rec.channels == ["ch0"] and rec.values.shape == (20, 1)
    assert np.allclose(rec.values[:, 0], np.arange(20) * 2)
    arr = np.stack([np.arange(10.0), -np.arange(10.0), np.ones(10)], axis=1)
    rec = decode_sensor(_npy(arr), ".npy", {"rate_hz": 10, "channels": ["x", "y", "z"]}, rate_hz=10.0, max_rows=1000)
    assert rec.channels == ["x", "y", "z"] and np.array_equal(rec.values, arr.astype(np.float32))
    assert _reason(_npy(arr), ".npy", {"rate_hz": 10, "channels": ["x"]}).reason == "bad_sidecar"


def test_a_few_non_finite_values_are_interpolated():
    x = np.sin(np.arange(100) / 10.0)
    x[[5, 50]] = np.nan
    x[70] = np.inf
    rec = decode_sensor(_npy(x), ".npy", {"rate_hz": 10}, rate_hz=10.0, max_rows=1000)
    assert rec.meta["filled_non_finite"] == 3 and np.isfinite(rec.values).all()
    assert rec.values[50, 0] == pytest.approx((np.sin(4.9) + np.sin(5.1)) / 2, abs=1e-5)
    csv = _csv("t,x,y", [(i, "NA" if i == 3 else i, "nan" if i == 4 else 2 * i) for i in range(20)])
    rec = decode_sensor(csv, ".csv", None, rate_hz=1.0, max_rows=100)
    assert rec.values[3, 0] == 3 and rec.values[4, 1] == 8 and rec.meta["filled_non_finite"] == 2


def test_nan_filled_csv_is_rejected():
    csv = _csv("t,x,y", [(i / 10, "NaN", 1.0) for i in range(50)])
    err = _reason(csv, ".csv", None)
    assert err.reason == "non_finite_values" and "'x'" in err.detail
    half = np.ones((20, 2))
    half[:5, 1] = np.nan  # 25% of one channel
    assert _reason(_npy(half), ".npy", {"rate_hz": 10}, max_nan_ratio=0.2).reason == "non_finite_values"


def test_unknown_rate_says_how_to_fix():
    err = _reason(_csv("x,y", [(1, 2), (3, 4), (5, 6)]), ".csv", {"label": "run"})
    assert err.reason == "unknown_rate" and "rate_hz" in err.detail


def test_length_limits():
    assert _reason(WALK, ".csv", None, rate_hz=1000.0, max_rows=500).reason == "too_long"
    assert _reason(_csv("t,x", [(0, 1)]), ".csv", None).reason == "too_short"
    assert _reason(_npy(np.ones((5, 2))), ".npy", {"rate_hz": 1e6}).reason == "too_short"
    # a time column in milliseconds by mistake: rejected before allocating 2M rows
    ms = _csv("t,x", [(t * 1000, 1.0) for t in T50])
    assert _reason(ms, ".csv", None, rate_hz=1000.0, max_rows=10_000).reason == "too_long"


def test_bad_files():
    assert _reason(b"", ".csv", None).reason == "empty_file"
    assert _reason(_csv("t,x,name", [(0, 1, "a"), (1, 2, "b")]), ".csv", None).reason == "bad_columns"
    assert _reason(_csv("t,x", [(0, 1), (0, 2), (1, 3)]), ".csv", None).reason == "bad_time_column"
    assert _reason(b"a,b\n1,2\n3,4,5,6\n", ".csv", {"rate_hz": 1}).reason == "corrupt"
    assert _reason(b"PAR1 not really", ".parquet", {"rate_hz": 1}).reason == "corrupt"
    assert _reason(b"garbage", ".npy", {"rate_hz": 1}).reason == "corrupt"
    assert _reason(_npy(np.array(["a", "b"])), ".npy", {"rate_hz": 1}).reason == "bad_columns"
    assert _reason(_npy(np.ones((2, 2, 2))), ".npy", {"rate_hz": 1}).reason == "bad_shape"
    strings = _parquet(pa.table({"x": ["a", "b"]}))
    assert _reason(strings, ".parquet", {"rate_hz": 1}).reason == "bad_columns"
    assert _reason(WALK, ".csv", {"rate_hz": -5}).reason == "bad_sidecar"
    assert _reason(WALK, ".csv", {"label": ["a"]}).reason == "bad_sidecar"
    assert _reason(WALK, ".xlsx", None).reason == "unsupported_format"


def test_parse_sidecar():
    assert parse_sidecar(b'\xef\xbb\xbf{"label": "walk", "rate_hz": 50}') == {"label": "walk", "rate_hz": 50}
    bad = {b"{": "bad_sidecar", b"[1, 2]": "bad_sidecar", b"\xff\xfe": "bad_sidecar",
           b'{"a": ' * 25 + b"1" + b"}" * 25: "json_too_deep", b"[" * 100_000 + b"]" * 100_000: "json_too_deep",
           json.dumps({"pad": "x" * 1_000_001}).encode(): "json_too_large", b'{"x": NaN}': "bad_sidecar"}
    for data, reason in bad.items():
        with pytest.raises(RejectError) as info:
            parse_sidecar(data)
        assert info.value.reason == reason, data[:20]


def test_hostile_npy_and_csv_are_refused_before_allocating():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    assert _reason(buf.getvalue() + b"\0" * 64, ".npy", {"rate_hz": 1}).reason == "truncated"
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert _reason(buf.getvalue(), ".npy", {"rate_hz": 1}).reason == "pickle_not_allowed"
    wide = (",".join(f"c{i}" for i in range(2000)) + "\n" + ",".join("1" * 2000) + "\n").encode()
    assert _reason(wide, ".csv", {"rate_hz": 1}).reason == "too_many_channels"


def test_header_claims_are_capped_before_reading():
    zero_wide = _npy(np.ones((1000, 0)))  # 128 bytes on disk, 8 KB (or 8N) once widened
    assert _reason(zero_wide, ".npy", {"rate_hz": 1}).reason == "bad_shape"
    assert _reason(_npy(np.ones(4, dtype=np.complex64)), ".npy", {"rate_hz": 1}).reason == "bad_columns"
    buf = io.BytesIO()  # 20M x 1 float32: a real array over the cell cap, the header alone decides
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (20_000_000, 1)})
    assert _reason(buf.getvalue() + b"\0" * 80_000_000, ".npy", {"rate_hz": 1}).reason == "too_long"
    # a Parquet footer claiming 20M rows of one constant column (a few KB): refused from the footer
    many = pa.table({"x": pa.array(np.zeros(20_000_000, dtype=np.int8))})
    assert len(_parquet(many)) < 200_000
    assert _reason(_parquet(many), ".parquet", {"rate_hz": 1}).reason == "too_long"


def test_csv_with_old_mac_line_endings_is_read():
    rec = decode_sensor(WALK.replace(b"\n", b"\r"), ".csv", None, rate_hz=10.0, max_rows=1000)
    assert rec.channels == ["ax", "ay"] and rec.values.shape == (20, 2)


def test_absurd_rates_and_labels_are_sidecar_errors():
    tiny = _reason(WALK, ".csv", {"rate_hz": 5e-324})
    assert tiny.reason == "bad_sidecar" and "rate_hz" in str(tiny)
    assert _reason(WALK, ".csv", {"rate_hz": 1e300}).reason == "bad_sidecar"
    long = _reason(WALK, ".csv", {"label": "x" * 5000}, max_label_chars=4000)
    assert long.reason == "label_too_long" and "decode.text.max_chars" in str(long)
    assert decode_sensor(WALK, ".csv", {"label": "x" * 4000}, rate_hz=10.0, max_rows=1000,
                         max_label_chars=4000).label == "x" * 4000
    assert _reason(WALK, ".csv", {"label": "w" + "\u0301\u0316" * 40}).reason == "combining_marks"
