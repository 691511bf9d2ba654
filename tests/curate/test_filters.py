"""Filters: recipe thresholds over stat columns; every drop names its stat, value and rule."""
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataengine.curate.filters import apply_filters, parse_filters, quality_score
from dataengine.errors import RecipeError

FIELDS = {"image_blur": pa.float64(), "image_width": pa.float64(), "text_lang": pa.string(),
          "video_has_audio": pa.bool_(), "text_chars": pa.float64()}


def frame() -> pl.DataFrame:
    return pl.DataFrame({
        "id": ["a", "b", "c", "d", "e"],
        "image_blur": [5.0, 50.0, None, 500.0, None],
        "image_width": [64.0, 20.0, None, 640.0, None],
        "text_lang": [None, None, "en", None, "de"],
        "video_has_audio": [None, None, None, None, None],
        "text_chars": [None, None, 100.0, None, 40.0],
    }, schema={"id": pl.String, "image_blur": pl.Float64, "image_width": pl.Float64, "text_lang": pl.String,
               "video_has_audio": pl.Boolean, "text_chars": pl.Float64})


def test_thresholds_drop_with_reason_and_value():
    rules = parse_filters({"image_blur": {"min": 10, "max": 400}, "text_lang": {"allow": ["en"]}}, FIELDS)
    out = apply_filters(frame(), rules)
    got = dict(zip(out["id"], out["reason"]))
    assert got == {"a": "image_blur_below_min", "d": "image_blur_above_max", "e": "text_lang_not_allowed"}
    detail = dict(zip(out["id"], out["detail"]))
    assert "image_blur=5 " in detail["a"] and "min=10" in detail["a"]
    assert "text_lang=de" in detail["e"]


def test_rules_skip_rows_without_the_stat():
    out = apply_filters(frame(), parse_filters({"text_chars": {"min": 50}}, FIELDS))
    assert out["id"].to_list() == ["e"]  # images have no text_chars: never dropped by it


def test_a_row_breaking_two_rules_is_counted_once_for_the_first():
    rules = parse_filters({"image_width": {"min": 32}, "image_blur": {"max": 10}}, FIELDS)
    out = apply_filters(frame(), rules)
    assert sorted(out["id"]) == ["b", "d"]  # b breaks both rules
    assert dict(zip(out["id"], out["reason"]))["b"] == "image_width_below_min"
    assert out["id"].n_unique() == out.height


def test_boolean_rule():
    df = frame().with_columns(pl.Series("video_has_audio", [True, False, None, True, None]))
    out = apply_filters(df, parse_filters({"video_has_audio": {"equals": True}}, FIELDS))
    assert out["id"].to_list() == ["b"] and out["reason"][0] == "video_has_audio_not_true"


@pytest.mark.parametrize("filters, words", [
    ({"image_blurr": {"min": 1}}, ["image_blurr", "did you mean 'image_blur'"]),
    ({"image_blur": {"minimum": 1}}, ["unknown rule key", "minimum"]),
    ({"image_blur": {"min": "high"}}, ["image_blur.min", "expected a number"]),
    ({"image_blur": {"min": 5, "max": 1}}, ["min=5 is above max=1"]),
    ({"text_lang": {"min": 1}}, ["string stat", "allow"]),
    ({"video_has_audio": {"equals": "yes"}}, ["true/false", "equals"]),
    ({"image_blur": 3}, ["expected a mapping"]),
])
def test_bad_rules_name_the_fix(filters, words):
    with pytest.raises(RecipeError) as e:
        parse_filters(filters, FIELDS)
    for w in words:
        assert w in str(e.value)


def test_quality_prefers_larger_then_less_compressed():
    df = pl.DataFrame({"image_width": [64.0, 64.0, 128.0], "image_height": [64.0, 64.0, 128.0],
                       "media_bytes": [9000.0, 3000.0, 10.0], "token_recon_mse": [0.5, 0.0, 0.9]})
    q = quality_score(df)
    assert np.argmax(q) == 2          # the larger copy wins whatever its file size
    assert q[0] > q[1]                # same size: the bigger file (less lossy) wins over a lower recon error
