"""The stats contract: STAT_FIELDS, item_stats dispatch, sensor and token stats, JSON/Arrow round trip, hash."""
from __future__ import annotations

import inspect
import json
import re

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dataengine import modalities
from dataengine.curate import stats as S
from dataengine.curate.stats_sensor import sensor_stats

PREFIXES = tuple(f"{m}_" for m in modalities.names()) + ("token_", "media_")


def test_stat_fields_are_flat_prefixed_typed_and_commented() -> None:
    assert all(k.startswith(PREFIXES) for k in S.STAT_FIELDS)
    assert set(S.STAT_FIELDS.values()) == {pa.float64(), pa.bool_(), pa.string()}
    assert S.STATS_SCHEMA.names == list(S.STAT_FIELDS)
    folder = Path(modalities.__file__).parent
    source = inspect.getsource(S) + "".join(p.read_text() for p in sorted(folder.rglob("*.py")))
    for key in S.STAT_FIELDS:  # each declaration line (stats.py or the modality's module) says what it measures
        line = re.search(rf'^\s*"{key}": [FBS],\s*#\s*(\S.*)$', source, re.M)
        assert line and len(line.group(1)) > 5, key
    for m in modalities.registry().values():  # a modality's stats carry its name
        assert all(k.startswith(m.name + "_") for k in m.stat_fields), m.name
    required = {"image_width", "image_height", "image_aspect", "image_blur", "image_colorfulness", "image_entropy",
                "video_duration_s", "video_fps", "video_width", "video_height", "video_motion", "video_black_ratio",
                "video_frozen_ratio", "video_has_audio", "audio_duration_s", "audio_rms_dbfs", "audio_silence_ratio",
                "audio_clipping_ratio", "audio_speech_ratio", "audio_vad", "sensor_length", "sensor_rate_hz",
                "sensor_nan_ratio", "sensor_flat_ratio", "text_chars", "text_words", "text_mean_word_len",
                "text_symbol_ratio", "text_non_alpha_ratio", "text_dup_line_ratio", "text_dup_ngram_ratio",
                "text_lang", "text_lang_score", "token_unique_ratio", "token_recon_mse"}
    assert required <= set(S.STAT_FIELDS)


def test_sensor_stats_nan_and_flat_channels() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200, 4))
    v[:, 1] = 9.81  # a constant channel (gravity on a resting axis)
    s = sensor_stats(v, 50.0, 0.02)
    assert s["sensor_flat_ratio"] == pytest.approx(0.25)
    assert (s["sensor_length"], s["sensor_rate_hz"], s["sensor_nan_ratio"]) == (200.0, 50.0, 0.02)
    assert s["sensor_duration_s"] == pytest.approx(199 / 50)
    v[:10, 0] = np.nan  # given None, the ratio is measured on the values
    assert sensor_stats(v, 50.0, None)["sensor_nan_ratio"] == pytest.approx(10 / 800)
    v[:, 2] = 1e-9 * rng.standard_normal(200)  # tiny noise around zero is flat too
    assert sensor_stats(v, 50.0, 0.0)["sensor_flat_ratio"] == pytest.approx(0.5)


def test_sensor_item_describes_the_source_recording() -> None:
    values = np.random.default_rng(1).standard_normal((101, 3)).astype(np.float32)  # resampled to 10 Hz
    meta = {"rate_hz": 10.0, "source_rows": 500, "source_rate_hz": 50.0, "duration_s": 9.98, "filled_non_finite": 30}
    s = S.item_stats("sensor", {"sensor": values}, meta)
    assert (s["sensor_length"], s["sensor_rate_hz"], s["sensor_duration_s"]) == (500.0, 50.0, 9.98)
    assert s["sensor_nan_ratio"] == pytest.approx(30 / 1500) and s["sensor_channels"] == 3.0


def test_token_stats() -> None:
    assert S.token_stats(np.full(50, 7), 1024, None) == {"token_unique_ratio": 1 / 50, "token_codebook_usage": 1 / 1024}
    s = S.token_stats(np.arange(64).reshape(8, 8), 256, 0.0125)
    assert (s["token_unique_ratio"], s["token_codebook_usage"], s["token_recon_mse"]) == (1.0, 0.25, 0.0125)
    assert S.token_stats(np.zeros(0, np.int32), 16, float("nan")) == {}


def _items() -> dict[str, tuple[dict, dict]]:
    rng = np.random.default_rng(2)
    t = np.arange(16000) / 16000
    return {
        "image": ({"image": rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)}, {}),
        "video": ({"frames": rng.integers(0, 256, (4, 36, 48, 3)).astype(np.uint8)},
                  {"fps": 2.0, "duration_s": 2.0, "has_audio": False}),
        "audio": ({"audio": (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)},
                  {"sample_rate": 16000, "duration_s": 12.5}),
        "sensor": ({"sensor": rng.standard_normal((30, 2)).astype(np.float32)}, {"rate_hz": 10.0}),
        "text": ({}, {"text": "A short English sentence about a cat sitting on the mat."}),
        "chat": ({}, {"messages": [{"role": "user", "content": "How does a while loop end?"},
                                   {"role": "assistant", "content": "When its condition becomes false."}]}),
    }


def test_item_stats_every_kind_round_trips_as_typed_columns() -> None:
    rows = []
    for kind, (arrays, meta) in _items().items():
        s = S.item_stats(kind, arrays, meta)
        prefix = "text_" if kind == "chat" else kind + "_"
        assert s and all(k.startswith(prefix) for k in s), kind
        rows.append(S.stats_json(s))
    assert json.loads(rows[2])["audio_duration_s"] == 12.5  # the source's duration, not the decoded span
    assert "video_width" in json.loads(rows[1]) and json.loads(rows[1])["video_width"] == 48.0
    table = S.stats_table(rows + ["{}", ""])
    assert table.schema == S.STATS_SCHEMA and table.num_rows == 8
    assert table["image_width"].to_pylist()[0] == 60.0
    assert table["text_lang"].to_pylist()[4:6] == ["en", "en"]
    assert table["video_has_audio"].to_pylist()[1] is False
    assert table["image_blur"].null_count == 7
    assert S.stats_table([]).num_rows == 0
    with pytest.raises(ValueError, match="unknown row kind"):
        S.item_stats("hologram", {}, {})


def test_clean_stats_drops_nulls_and_rejects_unknown_keys() -> None:
    assert S.clean_stats({"image_blur": np.float32(2.5), "image_entropy": float("nan"), "image_width": None,
                          "video_has_audio": np.bool_(True)}) == {"image_blur": 2.5, "video_has_audio": True}
    with pytest.raises(KeyError, match="STAT_FIELDS"):
        S.clean_stats({"image_sharpness": 1.0})
    json.loads(S.stats_json({"audio_rms_dbfs": float("-inf")}))  # strict JSON: never NaN/Infinity


def test_content_hash() -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert S.content_hash({"image": a}) == S.content_hash({"image": np.asfortranarray(a)})  # layout-free
    assert S.content_hash({"image": a}) != S.content_hash({"image": a.reshape(3, 2, 4)})   # shape counts
    assert S.content_hash({"image": a}) != S.content_hash({"image": a.astype(np.int16)})   # dtype counts
    assert S.content_hash({"image": a}) != S.content_hash({"frames": a})                   # name counts
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert S.content_hash({"image": a}) != S.content_hash({"image": b})
    assert S.content_hash(text="Caf\u00e9") == S.content_hash(text="Cafe\u0301")  # NFC
    assert S.content_hash(text="a") != S.content_hash(text="b")
